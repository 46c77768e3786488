"""What every job of a run runs: one pickled call per sbatch (an array, a service replica, the collector) or per
local start, loaded and run by `python -u -m hpc_marker.util.jobrun JOBS [--call NAME --index N --limit S]`.

- On Slurm (`JOBS` alone): the call is `JOBS/<id>.call`, `<id>` the array's job id (SLURM_ARRAY_JOB_ID) or the
  job's (SLURM_JOB_ID); the submitter renames it into place once sbatch has answered, so the runner waits for it a
  while. An array task appends `tasks[SLURM_ARRAY_TASK_ID]` (its global task index) to the call's arguments.
  Slurm writes the logs (the script's --output/--error) and enforces the time limit.
- Locally (`--call NAME`): the call is `JOBS/NAME`, `--index N` picks `tasks[N]`; the job id is this process's pid,
  its logs `JOBS/<pid>_0_log.out/.err` (opened here, first thing); `--limit S` is the job's time limit: USR2
  LOCAL_SIGNAL_LEAD_S before it (array tasks only, as on Slurm), SIGTERM at it and SIGKILL to the job's process
  group KILL_WAIT_S after (what submitit's local controller did, so local runs keep their time limit).
The job's id goes to HPCMARKER_JOB_ID (`job_id`). Exit 0 when the call returns; otherwise Python's traceback on
stderr and a non-zero exit. No result file: the exit code (Slurm's job state, a local `submit`'s wait) says it.
Nothing is imported here beyond the standard library until the call is loaded; the call's environment (JobCall.environ:
the collector's asks for Arrow's jemalloc pool, util/memory.py) is set before.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNNER_MODULE = "hpc_marker.util.jobrun"
JOB_ID_ENV = "HPCMARKER_JOB_ID"
CALL_SUFFIX = ".call"
CALL_WAIT_S = 60.0  # a Slurm job may start before its submitter has renamed its call into place
LOCAL_SIGNAL_LEAD_S = 30  # a local job's USR2 comes this long before its time limit (as submitit's controller sent it)
KILL_WAIT_S = 30  # after the time limit's SIGTERM, the job's processes are killed (Slurm's KillWait)


@dataclass(frozen=True)
class JobCall:
    """One job's (or one array's) call: `function(*args)`, plus the task index for an array task or local task."""

    function: Callable[..., Any]
    args: tuple[Any, ...]
    tasks: Mapping[int, int] | None = None  # array index -> the index appended to args (None: nothing appended)
    environ: Mapping[str, str] | None = None  # set (where not set already) before the function's module is imported


def job_logs(jobs: Path, job_id: str) -> tuple[Path, Path]:
    """(stdout, stderr) of job `job_id` ('123', '123_4' or a local pid) in the run's jobs folder, named as
    submitit named them (so run folders of either kind read the same)."""
    return jobs / f"{job_id}_0_log.out", jobs / f"{job_id}_0_log.err"


def runner_command(python: str, jobs: Path, *local: str) -> list[str]:
    """The argv of a job: the runner on the run's jobs folder (Slurm), with a local start's options (`local_args`)."""
    return [python, "-u", "-m", RUNNER_MODULE, str(jobs), *local]


def local_args(call: str, index: int | None, limit_s: int | None) -> list[str]:
    """The runner's options for a local start: its call file's name, its index, its time limit in seconds."""
    return ["--call", call, *(["--index", str(index)] if index is not None else [])] + (
        ["--limit", str(limit_s)] if limit_s else []
    )


def write_call(path: Path, call: JobCall) -> None:
    """Pickle `call` to `path` (stdlib pickle: functions by reference; one create): its environment, then the call
    itself pickled again, so that the environment can be set before loading the call imports the function's module
    (and what that imports: pyarrow reads ARROW_DEFAULT_MEMORY_POOL once, when it is imported)."""
    with open(path, "wb") as fh:
        pickle.dump(
            (dict(call.environ or {}), pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)),
            fh,
            protocol=pickle.HIGHEST_PROTOCOL,
        )


def load_call(path: Path, environ: MutableMapping[str, str] | None = None) -> JobCall:
    """The call in `path`; its environment goes into `environ` (where not set there already) first."""
    with open(path, "rb") as fh:
        loaded = pickle.load(fh)
    if isinstance(loaded, JobCall):  # written before calls carried an environment (a job queued across an upgrade)
        return loaded
    wanted, payload = loaded
    target = os.environ if environ is None else environ
    for key, value in wanted.items():
        target.setdefault(key, value)
    call = pickle.loads(payload)
    if not isinstance(call, JobCall):
        raise TypeError(f"{path}: not a job call ({type(call).__name__})")
    return call


def slurm_job_id(environ: Mapping[str, str]) -> str | None:
    """This job's id as Slurm knows it ('123_4' for an array task), or None outside Slurm."""
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return environ.get("SLURM_JOB_ID") or None


def job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The id of the job this process runs in: what the runner set (HPCMARKER_JOB_ID), else Slurm's, else None."""
    environ = os.environ if environ is None else environ
    return environ.get(JOB_ID_ENV) or slurm_job_id(environ)


def _wait_for(path: Path, wait_s: float) -> Path:
    deadline = time.monotonic() + wait_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    return path


def _own_logs(jobs: Path) -> None:
    """This local job's stdout/stderr go to its two log files (appended: a pid may come again)."""
    for fd, path in zip((1, 2), job_logs(jobs, str(os.getpid())), strict=True):
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, fd)
        os.close(log)


def _arm_limit(limit_s: int, warn: bool) -> None:
    """Slurm's time limit, locally: USR2 ahead of it (`warn`: an array task, the only job whose script asks
    Slurm for --signal), SIGTERM at it, SIGKILL to the whole job after KILL_WAIT_S."""
    me = os.getpid()
    steps = (
        *([(max(0, limit_s - LOCAL_SIGNAL_LEAD_S), lambda: os.kill(me, signal.SIGUSR2))] if warn else []),
        (limit_s, lambda: os.kill(me, signal.SIGTERM)),
        (limit_s + KILL_WAIT_S, lambda: os.killpg(os.getpgid(me), signal.SIGKILL)),
    )
    for delay, act in steps:
        timer = threading.Timer(delay, act)
        timer.daemon = True
        timer.start()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {RUNNER_MODULE}", description="run one hpcmarker job")
    parser.add_argument("jobs", type=Path, help="the run's jobs folder")
    parser.add_argument("--call", help="the call file's name in JOBS (a local start; default: Slurm's job id)")
    parser.add_argument("--index", type=int, help="the array index of a local start")
    parser.add_argument("--limit", type=int, help="a local start's time limit in seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.call:  # a local start: this process is the job
        _own_logs(args.jobs)
        os.environ[JOB_ID_ENV] = str(os.getpid())
        if args.limit:
            _arm_limit(args.limit, warn=args.index is not None)
        path, index = args.jobs / args.call, args.index
    else:
        environ = os.environ
        base = environ.get("SLURM_ARRAY_JOB_ID") or environ.get("SLURM_JOB_ID")
        if not base:
            sys.exit(f"{RUNNER_MODULE}: no --call and no Slurm job id (SLURM_JOB_ID) in the environment")
        os.environ[JOB_ID_ENV] = slurm_job_id(environ) or base
        path = _wait_for(args.jobs / f"{base}{CALL_SUFFIX}", CALL_WAIT_S)
        task = environ.get("SLURM_ARRAY_TASK_ID")
        index = int(task) if task else None
    call = load_call(path)
    extra = () if call.tasks is None or index is None else (call.tasks[index],)
    call.function(*call.args, *extra)
    return 0


if __name__ == "__main__":  # run as hpc_marker.util.jobrun, not __main__: the pickled JobCall is that module's
    from hpc_marker.util.jobrun import main as run_job

    sys.exit(run_job())
