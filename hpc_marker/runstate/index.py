"""The user's run index: every run submitted, so `status`, `cancel` and the rest find the latest one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hpc_marker.runstate.layout import RUNS_SUBDIR, RunPaths
from hpc_marker.runstate.outlock import holder
from hpc_marker.util.errors import UserError
from hpc_marker.util.files import atomic_write


class RunNotFound(UserError):
    """No run matches what the user named."""


def state_dir() -> Path:
    """Where the user's run index lives ($HPCMARKER_STATE_DIR, else XDG state home)."""
    explicit = os.environ.get("HPCMARKER_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hpcmarker"


def _index_file() -> Path:
    return state_dir() / "runs.txt"


def register_run(paths: RunPaths) -> None:
    index = _index_file()
    index.parent.mkdir(parents=True, exist_ok=True)
    with index.open("a", encoding="utf-8") as fh:
        fh.write(str(paths.root.resolve()) + "\n")


def forget_run(paths: RunPaths) -> None:
    """Take a run out of the index (a submission that left nothing)."""
    index = _index_file()
    if not index.exists():
        return
    gone = str(paths.root.resolve())
    lines = index.read_text(encoding="utf-8").splitlines()
    atomic_write(index, "".join(f"{line}\n" for line in lines if line.strip() != gone))


def known_runs() -> list[RunPaths]:
    """Runs in the index that still exist, oldest first."""
    index = _index_file()
    if not index.exists():
        return []
    lines = [line.strip() for line in index.read_text(encoding="utf-8").splitlines()]
    return [RunPaths(Path(line)) for line in lines if line and (Path(line) / "run.json").exists()]


def runs_of_out(out: Path) -> list[RunPaths]:
    """The runs in an --out folder, oldest first (by their record's creation time)."""
    folder = Path(out) / RUNS_SUBDIR
    found = []
    for run in folder.iterdir() if folder.is_dir() else []:
        try:
            found.append((json.loads((run / "run.json").read_text()).get("created", 0.0), RunPaths(run.resolve())))
        except (OSError, ValueError):
            continue
    return [paths for _, paths in sorted(found, key=lambda pair: pair[0])]


def resolve_run(name: str | None) -> RunPaths:
    """A run folder path, an --out folder (the run active there, else its latest), a run id from the index,
    or (None) the latest run."""
    if name:
        candidate = Path(name)
        if (candidate / "run.json").exists():
            return RunPaths(candidate.resolve())
        if (candidate / RUNS_SUBDIR).is_dir():
            current = holder(candidate)
            if current is not None and (candidate / RUNS_SUBDIR / current.run_id / "run.json").exists():
                return RunPaths((candidate / RUNS_SUBDIR / current.run_id).resolve())
            runs = runs_of_out(candidate)
            if runs:
                return runs[-1]
        for paths in reversed(known_runs()):
            if paths.run_id == name:
                return paths
        raise RunNotFound(f"{name}: no such run (give a run id, a run folder, or an --out folder with runs)")
    runs = known_runs()
    if not runs:
        raise RunNotFound("no runs yet: start one with `hpcmarker submit`")
    return runs[-1]
