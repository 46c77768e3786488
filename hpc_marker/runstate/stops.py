"""Task stops: each task's own structured record of why it stopped (progress/stop-<i>.json).

A task writes its record when it starts (cause `running`), padded to a fixed size, and overwrites
it in place, at the same size, when it stops: `done` (nothing of its own left to take), or why it
stopped early (time limit near, preempted, storage full, cancelled, its engine or its inference server or the
LLM service unusable, the LLM service's server or model unable to answer the run's requests, its engine's
caches missing on the node, an error). The file's space is
taken when the task starts, so a full disk cannot keep the task from saying why it stopped. A task
killed without a word (SIGKILL, out of memory, node lost, Slurm's own time limit) leaves `running`;
`status` then takes the cause from the scheduler's job state. One small file per task: the run
folder's cost per item is unchanged.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hpc_marker.engines.base import EngineCacheMissing
from hpc_marker.util.text import one_line

# What a task says about itself (the first two are not problems).
RUNNING, DONE = "running", "done"
TIME_LIMIT, STORAGE_FULL, CANCELLED = "time_limit", "storage_full", "cancelled"
ENGINE, INFERENCE, LLM_SERVICE, ERROR = "engine", "inference", "llm_service", "error"
ENGINE_CACHE = "engine_cache"  # the engine is installed, but its fonts or weights are not on the node
PREEMPTED = "preempted"  # its USR2 came from Slurm preempting the job, not from its time limit (runtime/preempt.py)
LLM_UNFIT = "llm_unfit"  # the LLM service answers, but its server or model cannot answer the run's requests
CAUSES = (
    RUNNING,
    DONE,
    TIME_LIMIT,
    PREEMPTED,
    STORAGE_FULL,
    CANCELLED,
    ENGINE,
    ENGINE_CACHE,
    INFERENCE,
    LLM_SERVICE,
    LLM_UNFIT,
    ERROR,
)
RECORD_BYTES = 2048  # the file's fixed size: room for a one-line detail of ~1,800 characters
_DETAIL_CHARS = 1500


@dataclass(frozen=True)
class TaskStop:
    """Why task `task` stopped (or `running`: it has not said yet)."""

    task: int
    cause: str  # one of CAUSES
    detail: str = ""  # one line: what happened, in the task's words
    job_id: str = ""
    host: str = ""
    started: float = 0.0
    stopped: float | None = None
    llm_wait: float = 0.0  # seconds it waited for the LLM service to answer before its first item (accounting)


def engine_stop(engine: str, host: str, exc: Exception) -> tuple[str, str]:
    """(cause, one line) for an engine that cannot start on this node: its caches (`hpcmarker prefetch`
    fills them) or anything else. Pure."""
    cause = ENGINE_CACHE if isinstance(exc, EngineCacheMissing) else ENGINE
    return cause, f"engine {engine!r} cannot run on {host}: {one_line(exc)}"


def stop_path(folder: Path, task: int) -> Path:
    return Path(folder) / f"stop-{task}.json"


def _padded(stop: TaskStop) -> bytes:
    """The record at exactly RECORD_BYTES (its detail cut where a long or non-ASCII one would not fit). Pure."""
    while True:
        data = json.dumps(asdict(stop), ensure_ascii=False).encode()
        if len(data) < RECORD_BYTES or not stop.detail:
            return data + b" " * (RECORD_BYTES - 1 - len(data)) + b"\n"
        stop = replace(stop, detail=stop.detail[: len(stop.detail) * 3 // 4] + "…")


class StopRecord:
    """The task's record, open for its whole life: written when it starts, overwritten when it stops."""

    def __init__(self, folder: Path, task: int, job_id: str, host: str) -> None:
        self.running = TaskStop(task, RUNNING, job_id=job_id, host=host, started=time.time())
        self.llm_wait = 0.0  # the task sets it once its LLM service answers; its stop says it
        self.path = stop_path(folder, task)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            before = os.pread(self._fd, RECORD_BYTES, 0)  # the record of an earlier run (requeued, resumed), read here
            self.first_start = not before  # no earlier run of this task
            self.earlier = _parsed(before) if before else None  # None too where it is torn
            os.pwrite(self._fd, _padded(self.running), 0)  # the space it will need at the end, taken now
            os.ftruncate(self._fd, RECORD_BYTES)
            os.fsync(self._fd)
        except OSError:
            os.close(self._fd)
            raise

    def stop(self, cause: str, detail: str = "") -> TaskStop:
        """Say why the task stops (once; in place, at the same size, so a full disk cannot refuse it)."""
        stop = TaskStop(
            self.running.task,
            cause,
            one_line(detail)[:_DETAIL_CHARS] if detail else "",
            self.running.job_id,
            self.running.host,
            self.running.started,
            time.time(),
            round(self.llm_wait, 3),
        )
        if self._fd >= 0:
            try:
                os.pwrite(self._fd, _padded(stop), 0)
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1
        return stop


def read_stops(folder: Path) -> dict[int, TaskStop]:
    """Every task's record (tasks that never started have none; a torn record counts as none)."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith("stop-") and n.endswith(".json")]
    except FileNotFoundError:
        return {}
    stops = {}
    for name in names:
        stop = _read(Path(folder) / name)
        if stop is not None:
            stops[stop.task] = stop
    return stops


def read_stop(folder: Path, task: int) -> TaskStop | None:
    """Task `task`'s record (None: none, or torn)."""
    return _read(stop_path(folder, task))


def _read(path: Path) -> TaskStop | None:
    try:
        return _parsed(path.read_bytes())
    except OSError:
        return None


def _parsed(data: bytes) -> TaskStop | None:
    try:
        return TaskStop(**json.loads(data.decode("utf-8")))
    except (ValueError, TypeError):
        return None
