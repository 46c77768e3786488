"""The output folder's active run: `OUT/.hpcmarker/active` names the one run writing into OUT.

`submit` (and `resume`) take the folder before anything is queued, and refuse while the run it
names is still active (the caller decides what active means: the run's jobs, asked of its
executor); a holder that is no longer active is replaced. A run gives the folder back when it
ends: a local run when `submit` returns, a Slurm run when its collector has run, any run when it
is cancelled. Taking the folder is atomic on shared filesystems: a stale holder is renamed away
(only one renamer wins) and the new one created exclusively.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.util.errors import UserError

ACTIVE_FILE = Path(".hpcmarker") / "active"


class FolderBusy(UserError):
    """Another run of this --out is still active: one line naming it."""


@dataclass(frozen=True)
class Holder:
    run_id: str
    since: float  # when it took the folder


def active_path(out: Path) -> Path:
    return Path(out) / ACTIVE_FILE


def holder(out: Path) -> Holder | None:
    """The run that holds `out`, if any."""
    path = active_path(out)
    try:
        run_id = path.read_text(encoding="utf-8").strip()
        since = path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Holder(run_id, since) if run_id else None


def _create(path: Path, run_id: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, f"{run_id}\n".encode())
    finally:
        os.close(fd)
    return True


def acquire(out: Path, run_id: str, still_active: Callable[[Holder], list[str]]) -> None:
    """Make `run_id` the holder of `out`. FolderBusy when another run holds it and `still_active` (the
    holder's active jobs, or a word for what it is doing) is not empty."""
    path = active_path(out)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _ in range(3):
        if _create(path, run_id):
            return
        current = holder(out)
        if current is None:
            continue  # given back meanwhile
        if current.run_id == run_id:
            return
        busy = still_active(current)
        if busy:
            raise FolderBusy(
                f"--out {out}: run {current.run_id} is still active there ({', '.join(busy)}); wait for "
                f"it, or `hpcmarker cancel {current.run_id}`, or --force-concurrent to run both at once"
            )
        stale = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, stale)  # of two submitters replacing a stale holder, one wins here
        except FileNotFoundError:
            continue
        stale.unlink(missing_ok=True)
    raise FolderBusy(f"--out {out}: another submission is taking this folder right now; try again")


def release(out: Path, run_id: str) -> bool:
    """Give `out` back if `run_id` holds it; True when it did."""
    current = holder(out)
    if current is None or current.run_id != run_id:
        return False
    active_path(out).unlink(missing_ok=True)
    return True


def age(current: Holder, now: float | None = None) -> float:
    return (now if now is not None else time.time()) - current.since
