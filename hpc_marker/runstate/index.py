"""The user's run index: every run submitted, so `status`, `cancel` and the rest find the latest one."""

from __future__ import annotations

import os
from pathlib import Path

from hpc_marker.runstate.layout import RunPaths
from hpc_marker.util.errors import UserError


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


def known_runs() -> list[RunPaths]:
    """Runs in the index that still exist, oldest first."""
    index = _index_file()
    if not index.exists():
        return []
    lines = [line.strip() for line in index.read_text(encoding="utf-8").splitlines()]
    return [RunPaths(Path(line)) for line in lines if line and (Path(line) / "run.json").exists()]


def resolve_run(name: str | None) -> RunPaths:
    """A run folder path, a run id from the index, or (None) the latest run."""
    if name:
        candidate = Path(name)
        if (candidate / "run.json").exists():
            return RunPaths(candidate.resolve())
        for paths in reversed(known_runs()):
            if paths.run_id == name:
                return paths
        raise RunNotFound(f"{name}: no such run (give a run id or a run folder)")
    runs = known_runs()
    if not runs:
        raise RunNotFound("no runs yet: start one with `hpcmarker submit`")
    return runs[-1]
