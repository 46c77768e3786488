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


def _read(paths: RunPaths) -> dict:
    """run.json as written; {} when it cannot be read."""
    try:
        data = json.loads(paths.record.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _ran(data: dict) -> bool:
    """Whether a run record holds jobs: the run was given to its executor (a submission that died before,
    or that the scheduler refused, holds none)."""
    return bool(data.get("submitted") or any((data.get("jobs") or {}).values()))


def ran(paths: RunPaths) -> bool:
    """Whether the run's jobs were recorded, so it is a run of its --out and not a submission that died."""
    return _ran(_read(paths))


def runs_of_out(out: Path) -> list[RunPaths]:
    """The runs in an --out folder that were submitted, oldest first (by their record's creation time)."""
    folder = Path(out) / RUNS_SUBDIR
    found = []
    for run in folder.iterdir() if folder.is_dir() else []:
        data = _read(RunPaths(run))
        if _ran(data):
            found.append((data.get("created", 0.0), RunPaths(run.resolve())))
    return [paths for _, paths in sorted(found, key=lambda pair: pair[0])]


def first_of_lineage(paths: RunPaths) -> RunPaths:
    """The run that `paths` is a follow-up of (`retry --select`), and that one's, up to the first run;
    `paths` itself when it is no follow-up."""
    seen = {paths.run_id}
    while (parent := (_read(paths).get("parent") or {}).get("run_id")) and parent not in seen:
        above = RunPaths(paths.root.parent / parent)
        if not above.record.exists():
            break
        seen.add(parent)
        paths = above
    return paths


def latest_of_out(out: Path) -> RunPaths | None:
    """The run active in an --out folder, else its latest; only runs whose jobs were recorded."""
    current = holder(out)
    if current is not None and ran(active := RunPaths((Path(out) / RUNS_SUBDIR / current.run_id).resolve())):
        return active
    runs = runs_of_out(out)
    return runs[-1] if runs else None


def resolve_run(name: str | None, *, lineage: bool = False) -> RunPaths:
    """A run folder path, an --out folder (`latest_of_out`), a run id from the index, or (None) the latest
    run. With `lineage`, an --out folder or None stands for the first run of that run's lineage (what
    `export` reads, with its follow-ups)."""
    if name:
        candidate = Path(name)
        if (candidate / "run.json").exists():
            return RunPaths(candidate.resolve())
        if (candidate / RUNS_SUBDIR).is_dir() and (latest := latest_of_out(candidate)) is not None:
            return first_of_lineage(latest) if lineage else latest
        for paths in reversed(known_runs()):
            if paths.run_id == name:
                return paths
        raise RunNotFound(f"{name}: no such run (give a run id, a run folder, or an --out folder with runs)")
    runs = known_runs()
    if not runs:
        raise RunNotFound("no runs yet: start one with `hpcmarker submit`")
    return first_of_lineage(runs[-1]) if lineage else runs[-1]
