"""Runs: the run directory, its record (run.json), and finding runs again.

A run lives in `OUT/.hpcmarker/runs/<run-id>/`:
  run.json     the RunRecord (settings and job ids)
  plan.json    the Plan
  scripts/     the rendered sbatch scripts, exactly as submitted
  jobs/        submitit's folder (pickles, per-job logs)
  manifests/   task-<i>.jsonl, one JSON line per work item
  claims/      who converts which item, and which items are done (see claims.py)
  staging/     outputs being written, renamed into place when whole
  parts/       finished parts of split PDFs, until they are merged into one document
  logs/        task logs gathered by the collector
  manifest.csv, summary.json   written by the collector
Each new run's path is appended to the user's run index so `status`/`cancel` find the latest.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from hpc_marker.util.files import atomic_write

P = ParamSpec("P")
R = TypeVar("R")

RUNS_SUBDIR = Path(".hpcmarker") / "runs"
# --permissions: who may read the Markdown a run writes (the run folder itself is always private)
PERMISSIONS = {"private": 0o077, "group": 0o027, "world": 0o022}


PRIVATE = PERMISSIONS["private"]


def private_files(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator: everything `function` creates (run folder files, job logs) is the user's alone."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with file_mode_mask(PRIVATE):
            return function(*args, **kwargs)

    return wrapper


@contextmanager
def file_mode_mask(mask: int) -> Iterator[None]:
    """Create files and folders under umask `mask` inside the block (restored afterwards)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


class RunNotFound(Exception):
    """No run matches what the user named."""


@dataclass
class RunRecord:
    """Everything about a run that later commands need, stored as run.json."""

    run_id: str
    created: float
    pdfs_root: str
    out_dir: str
    engine: str
    engine_options: dict[str, Any]
    executor: str  # "slurm" or "local"
    tasks: int
    gpus: int
    workers_per_gpu: int
    cpus_per_task: int
    template: str
    partition: str | None = None
    mem: str | None = None
    time_limit: str = "04:00:00"
    steal: bool = True  # tasks take over other tasks' unfinished items
    lease_seconds: float = 120.0  # a claim not renewed for this long is taken over
    split_pages: int | None = None  # None: derived from the plan; 0: never split
    item_timeout: str = "auto"  # limits.parse_item_timeout: auto, off, SECONDS or SECONDS/page
    worker_memory: str | None = None  # address-space cap per worker (CPU engines), e.g. "8G"
    umask: int = 0o077  # files of the run and its outputs: private unless --permissions says otherwise
    llm: dict[str, Any] | None = None  # the LLM service: model, gpus, parallel, ctx, options, timeouts
    inference: dict[str, Any] | None = None  # marker 2.x's per-task server (inference.InferenceSettings.to_record)
    profile: str = "generic"
    # From the profile, for the templates: gres, account, qos, constraint, setup lines, llm_gres_type, vars.
    job_settings: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # role -> job ids
    submitted: float | None = None
    cancelled: float | None = None


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def claims(self) -> Path:
        return self.root / "claims"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def parts(self) -> Path:
        return self.root / "parts"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def manifest_csv(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def task_manifest(self, index: int) -> Path:
        return self.manifests / f"task-{index}.jsonl"

    def create(self) -> None:
        """Make the run folder tree, private to the user."""
        for folder in (self.root, self.scripts, self.jobs, self.manifests, self.claims, self.staging,
                       self.parts, self.logs):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)  # mkdir's mode is filtered by the umask

    def load_record(self) -> RunRecord:
        return RunRecord(**json.loads(self.record.read_text()))

    def save_record(self, record: RunRecord) -> None:
        atomic_write(self.record, json.dumps(asdict(record), indent=1) + "\n")


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


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
