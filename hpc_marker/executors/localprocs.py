"""The processes of a local run and the turns `grow` and a waiting `submit` take (executors/local.py uses them).

A run's jobs are processes of our job runner (util/jobrun.py), each started here in a session of its own on the
run's jobs folder (its pid is its job id; it writes its own logs); ending the run ends every such process with its
descendants. `grow` and the waiting `submit` take turns on
RUN/grow.lock; a task `grow` adds takes a GPU no running task holds (executors/machine.py).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import uuid
from pathlib import Path

from hpc_marker.executors.base import GrowRefused
from hpc_marker.executors.machine import Machine, gpus_for_grown, held_gpus, this_machine
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import RunRecord
from hpc_marker.util.jobrun import CALL_SUFFIX, RUNNER_MODULE, JobCall, local_args, runner_command, write_call
from hpc_marker.util.processes import process_runs, process_tree, processes_with_arg, terminate_trees

SERVICE_STOP_GRACE_S = 30.0  # the service stops its server (up to 10 s) and removes its secret before exiting
STOP_GRACE_S = SERVICE_STOP_GRACE_S  # what a run's processes get to stop before SIGKILL (the service among them)
END_ROUNDS = 3
GROW_LOCK = "grow.lock"  # in the run folder: `grow` and the waiting submit take turns


def local_call(jobs: Path, role: str, call: JobCall) -> str:
    """Pickle the call of a local start's jobs (every task, or every replica, started together: one file) into the
    jobs folder; its name there, for `start_job`."""
    name = f"local-{role}-{uuid.uuid4().hex[:12]}{CALL_SUFFIX}"
    write_call(jobs / name, call)
    return name


def start_job(jobs: Path, call: str, index: int | None, limit_s: int | None, gpus: str) -> subprocess.Popen:
    """Start one job of a local run: the runner on call file `call` (index `index`, time limit `limit_s`), in a
    session of its own, with CUDA_VISIBLE_DEVICES `gpus` (empty: the CPU); it opens its own logs. Inherits this
    process's CPU affinity and signal mask."""
    argv = runner_command(sys.executable, jobs.expanduser().absolute(), *local_args(call, index, limit_s))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus)
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)


def local_pids(ids: list[str]) -> list[int]:
    return [int(jid) for jid in ids if jid.isdigit()]


def grown_machine(jobs: Path, record: RunRecord, tasks: int) -> Machine | None:
    """This machine as `tasks` more tasks of `record`'s run may use it while its tasks run: the GPUs none of
    them holds (None: none runs, nothing held). GrowRefused where the run's tasks use GPUs and too few are free."""
    running = [pid for pid in local_pids(record.jobs.get("convert", [])) if job_running(pid, jobs)]
    if not running:
        return None
    machine = gpus_for_grown(this_machine(), held_gpus(running), tasks, record.engine, record.mps or "off")
    if isinstance(machine, str):
        raise GrowRefused(f"run {record.run_id} cannot grow by {tasks} here: {machine}")
    return machine


def job_running(pid: int, jobs: Path) -> bool:
    """A job of this run is running as `pid`: the job runner, started on the run's jobs folder."""
    return process_runs(pid, str(jobs))


def grow_lock(paths: RunPaths) -> int:
    """Hold the run's grow lock (RUN/grow.lock): a `grow` starting tasks and the waiting `submit` deciding that
    the round is over take turns. Its descriptor, for `unlock`."""
    fd = os.open(paths.root / GROW_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def unlock(fd: int | None) -> None:
    """Let the grow lock go (closing its descriptor); None, for `lock = unlock(lock)`."""
    if fd is not None:
        os.close(fd)


def grown_alive(paths: RunPaths, ids: dict[str, list[str]]) -> bool:
    """A task `grow` added to the round (recorded, not one of `ids`) is still running."""
    try:
        recorded = paths.load_record().jobs.get("convert", [])
    except (OSError, ValueError, TypeError):
        return False
    ours = set(ids.get("convert", []))
    return any(job_running(pid, paths.jobs) for pid in local_pids([jid for jid in recorded if jid not in ours]))


def run_processes(jobs: Path, ids: list[str]) -> list[int]:
    """The run's processes alive now: its recorded jobs, and whatever job runner runs on its jobs folder, recorded
    or not (a job started as someone looked)."""
    recorded = [pid for pid in local_pids(ids) if job_running(pid, jobs)]
    theirs = {p for pid in recorded for p in process_tree(pid)}  # a recorded job's own processes are not news
    found = processes_with_arg(str(jobs.expanduser().absolute()), also=RUNNER_MODULE)  # the folder as started
    return recorded + [pid for pid in found if pid not in theirs]


def end_run(jobs: Path, ids: list[str]) -> list[int]:
    """End every process of the run (each with its descendants) until none is left; the ids of those found.
    A task told to stop gives its claims back and records why (it may take a moment to start listening)."""
    ended: list[int] = []
    for _ in range(END_ROUNDS):  # a job may start while the others are ended
        alive = run_processes(jobs, ids)
        if not alive:
            break
        ended += alive
        terminate_trees(alive, grace_s=STOP_GRACE_S)
    return list(dict.fromkeys(ended))
