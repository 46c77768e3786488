"""Logs: the log a user wants, found from the run's record, without hunting for paths.

  --task I    task I's job log (stdout, then stderr; the collector's copy in RUN/logs once the job's
              own file is gone) and its inference server's log, if it had one
  --service   the LLM service's job log(s) and the servers' logs in RUN/llm/
  (neither)   the first task that stopped early, as its own stop record says; else the task that tried the
              first failed document (its log has the item's line and reason: manage/failures.py); else
              the collector's log, else task 0's

`--follow` prints what the files gain until none of the run's jobs is queued or running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.executors import executor_for
from hpc_marker.executors.base import job_logs
from hpc_marker.manage.failures import failed_documents
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import DONE, RUNNING, read_stops
from hpc_marker.util.errors import UserError

ACTIVE_CHECK_S = 5.0  # how often --follow asks the scheduler whether the run is still going


class NoSuchLog(UserError):
    """The log asked for does not exist (no such task, no service)."""


@dataclass(frozen=True)
class LogFile:
    label: str  # 'task 3 stdout (job 123_3)'
    path: Path


def task_logs(paths: RunPaths, record: RunRecord, task: int) -> list[LogFile]:
    jobs = record.jobs.get("convert", [])
    count = max(record.tasks, len(jobs))  # with the tasks `hpcmarker grow` added
    if not 0 <= task < count:
        raise NoSuchLog(f"--task {task}: run {record.run_id} has tasks 0 to {count - 1}")
    files = []
    if task < len(jobs):
        out, err = job_logs(paths, jobs[task])
        gathered = (paths.logs / f"task-{task}.out", paths.logs / f"task-{task}.err")
        for kind, own, copy in (("stdout", out, gathered[0]), ("stderr", err, gathered[1])):
            files.append(
                LogFile(f"task {task} {kind} (job {jobs[task]})", own if own.exists() or not copy.exists() else copy)
            )
    inference = paths.logs / f"inference-task-{task}.log"
    if inference.exists():
        files.append(LogFile(f"task {task} inference server", inference))
    return files


def service_logs(paths: RunPaths, record: RunRecord) -> list[LogFile]:
    if not record.llm:
        raise NoSuchLog(f"run {record.run_id} has no LLM service (it was submitted without --llm)")
    files = []
    for job_id in record.jobs.get("service", []):
        out, err = job_logs(paths, job_id)
        files += [LogFile(f"service stdout (job {job_id})", out), LogFile(f"service stderr (job {job_id})", err)]
    files += [LogFile(f"service {path.stem}", path) for path in sorted((paths.root / "llm").glob("*.log"))]
    return files


def default_logs(paths: RunPaths, record: RunRecord) -> list[LogFile]:
    stopped = sorted(task for task, stop in read_stops(paths.progress).items() if stop.cause not in (RUNNING, DONE))
    if stopped:
        return task_logs(paths, record, stopped[0])
    failed, _ = failed_documents(paths, limit=1)
    if failed and failed[0].task is not None and 0 <= failed[0].task < record.tasks:
        return task_logs(paths, record, failed[0].task)
    collect = record.jobs.get("collect", [])
    if collect and job_logs(paths, collect[0])[0].exists():
        out, err = job_logs(paths, collect[0])
        return [
            LogFile(f"collector stdout (job {collect[0]})", out),
            LogFile(f"collector stderr (job {collect[0]})", err),
        ]
    return task_logs(paths, record, 0)


def choose_logs(paths: RunPaths, task: int | None, service: bool) -> list[LogFile]:
    record = paths.load_record()
    if service:
        return service_logs(paths, record) + (task_logs(paths, record, task) if task is not None else [])
    return task_logs(paths, record, task) if task is not None else default_logs(paths, record)


def header(log: LogFile) -> str:
    there = "" if log.path.exists() else " (not written yet)"
    return f"==> {log.label}: {log.path}{there} <=="


def show(logs: list[LogFile], write: Callable[[str], None]) -> dict[Path, int]:
    """Write each log whole under its header; returns how far each was read."""
    read = {}
    for log in logs:
        write(header(log) + "\n")
        data = _read_from(log.path, 0)
        write(data.decode(errors="replace"))
        if data and not data.endswith(b"\n"):
            write("\n")
        read[log.path] = len(data)
    return read


def follow(paths: RunPaths, logs: list[LogFile], write: Callable[[str], None], interval_s: float = 1.0) -> None:
    """`show`, then what the logs gain, until none of the run's jobs is queued or running."""
    read = show(logs, write)
    record = paths.load_record()
    executor = executor_for(record.executor)
    last_check, going = 0.0, True
    current = logs[-1].path if logs else None
    while going:
        if time.monotonic() - last_check >= ACTIVE_CHECK_S:
            going, last_check = bool(executor.active(record)), time.monotonic()
        for log in logs:
            data = _read_from(log.path, read[log.path])
            if data:
                if current != log.path and len(logs) > 1:
                    write(f"\n{header(log)}\n")
                current = log.path
                read[log.path] += len(data)
                write(data.decode(errors="replace"))
        if going:
            time.sleep(interval_s)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()
    except FileNotFoundError:
        return b""
