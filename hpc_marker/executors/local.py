"""The local executor: the same run on this machine (no Slurm).

Each task is its own process: our job runner (util/jobrun.py) on one call file for all the tasks started together,
in a session of its own, writing its own logs (executors/localprocs.py: start_job); the waiting `submit` reads
the jobs' exit codes (no result files). A run is fitted to this machine (`fit`): marker gets a GPU per task where there
are GPUs (the caller's CUDA_VISIBLE_DEVICES, else those the driver lists), everything else runs on
the CPU (CUDA_VISIBLE_DEVICES empty), each task pinned to its share of the cores, tasks × workers within
them; a task `grow` adds takes a GPU no running task holds (refused in one line where none is free). The
collector runs when the tasks are over. `submit` waits for the run, so one command gives
Markdown; a Ctrl-C or a `cancel` at any moment ends every process of the run.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from hpc_marker.executors.base import (
    ROLES,
    Fit,
    GrowRefused,
    JobsSeen,
    Observation,
    RunJobs,
    WaitHook,
    job_logs,
    live_job_ids,
    service_replicas,
)
from hpc_marker.executors.localprocs import (
    SERVICE_STOP_GRACE_S,
    end_run,
    grow_lock,
    grown_alive,
    grown_machine,
    job_running,
    local_call,
    local_pids,
    run_processes,
    start_job,
    unlock,
)
from hpc_marker.executors.machine import Machine, fit_machine, pinned, this_machine
from hpc_marker.runstate.layout import RUNS_SUBDIR, RunPaths
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import DONE, read_stop
from hpc_marker.runtime.sizing import local_fit_note
from hpc_marker.slurm.arrays import ArrayLayout, single_array
from hpc_marker.slurm.parse import JobClock, parse_time_limit
from hpc_marker.util.errors import Refused
from hpc_marker.util.jobrun import JobCall
from hpc_marker.util.memory import arrow_pool_environment
from hpc_marker.util.processes import (
    terminate_tree,
)

logger = logging.getLogger(__name__)
COLLECT_TIME_MIN = 30
POLL_S = 1.0  # how often a waiting submit looks at its jobs (the collector: twice as often); tests look more often
CANCEL_CHECK_S = 5.0  # how often it looks for a `cancel` mark that cancel's own scan may have raced


class LocalRunFailed(Refused):
    """The local collector could not finish (one line; the run folder keeps the details)."""


class LocalCancelFailed(Refused):
    """A process of the run outlived SIGKILL (one line naming it)."""


def _job_problem(paths: RunPaths, job: subprocess.Popen) -> str | None:
    """None when a finished local job succeeded (exit 0), else the last line of its stderr (its traceback's)."""
    if job.returncode == 0:
        return None
    try:
        lines = [line.strip() for line in job_logs(paths, str(job.pid))[1].read_text(errors="replace").splitlines()]
    except OSError:
        lines = []
    said = [line for line in lines if line]
    if said:
        return said[-1]
    return f"killed by {signal.Signals(-job.returncode).name}" if job.returncode < 0 else f"exit code {job.returncode}"


@contextmanager
def _sigint_held() -> Iterator[None]:
    """While the run's processes are started: a SIGINT (Ctrl-C) is held, not lost, and acted on when the block
    ends (KeyboardInterrupt there). It is blocked meanwhile, so the kernel keeps it pending, and every process
    started here inherits the block across exec: the run's processes never act on a Ctrl-C themselves (no
    KeyboardInterrupt traceback from a job, no task left half-stopped); `submit` ends them."""
    held: list[int] = []
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started to ignore it (nohup, `&` in a script): so do they
        yield
        return
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending one runs the handler above now
        signal.signal(signal.SIGINT, previous)
        if held:
            raise KeyboardInterrupt


def _jobs_folder(record: RunRecord) -> Path:
    return RunPaths(Path(record.out_dir) / RUNS_SUBDIR / record.run_id).jobs


def _started(ids: dict[str, list[str]], role: str, job: subprocess.Popen, seen: JobsSeen | None) -> None:
    """Record a job the moment it starts, so that `cancel`, `status` and an interrupted submit find it."""
    ids.setdefault(role, []).append(str(job.pid))
    if seen:
        seen({name: list(values) for name, values in ids.items()})


def _said_done(paths: RunPaths, task: int, job_id: str) -> bool:
    """Task `task`'s own stop record says that its job `job_id` ended done (no result file: this is how a local
    job nobody waits for any more tells that it completed; one read, only for a task whose share is not done)."""
    stop = read_stop(paths.progress, task)
    return stop is not None and stop.job_id == job_id and stop.cause == DONE


def _all_ids(ids: dict[str, list[str]]) -> list[str]:
    return [job_id for values in ids.values() for job_id in values]


def _cancelled(paths: RunPaths) -> bool:
    """`hpcmarker cancel` marked the run (its mark file comes first, before it ends the processes): one stat."""
    return paths.cancel_mark.exists()


class _CancelWatch:
    """Looks for the run's `cancel` mark (`_cancelled`: one stat) at most every `every_s` seconds, the first
    time at once."""

    def __init__(self, paths: RunPaths, every_s: float) -> None:
        self.paths, self.every_s = paths, every_s
        self.looked: float | None = None

    def seen(self) -> bool:
        """The mark is there (False also when it is not time to look again)."""
        now = time.monotonic()
        if self.looked is not None and now - self.looked < self.every_s:
            return False
        self.looked = now
        return _cancelled(self.paths)


class LocalExecutor:
    name = "local"
    waits = True

    def check_resources(self, partition: str | None, gpus: int) -> str | None:
        this_machine()
        return partition

    def fit(self, gpus: int, workers_per_gpu: int, engine: str, mps: str = "auto") -> Fit:
        """No more tasks than this machine holds: marker a GPU each where there are GPUs, else (and the CPU
        engines) a share of the cores each, tasks × workers within the cores; a note where that is fewer."""
        machine = this_machine()
        fitted = fit_machine(gpus, workers_per_gpu, engine, machine, mps)
        return Fit(fitted.tasks, local_fit_note(fitted, gpus, engine, len(machine.cores), list(machine.gpus)))

    def check_scripts(self, scripts: dict[str, str]) -> None:
        """Nothing to ask: the scripts are not used here (each task is a process of this machine)."""

    def task_arrays(self, record: RunRecord, tasks: list[int], other_jobs: int) -> ArrayLayout:
        """Every task at once, one process each: --gpus already bounds them here (--max-running is Slurm's).
        Tasks added while the run's tasks run (`grow`): GrowRefused where this machine has no free GPU for each."""
        if record.jobs.get("convert"):  # a new run's or a resume's tasks: none of the run's tasks is running
            grown_machine(_jobs_folder(record), record, len(tasks))
        note = (
            (
                f"note: --max-running {record.max_running} applies to Slurm runs; here each of the {len(tasks)} "
                "tasks runs at once (--gpus sets how many)"
            )
            if record.max_running
            else None
        )
        return ArrayLayout(single_array(tasks).arrays, note)

    def submit(
        self,
        paths: RunPaths,
        record: RunRecord,
        scripts: dict[str, str],
        layout: ArrayLayout,
        jobs: RunJobs,
        progress: WaitHook | None = None,
        seen: JobsSeen | None = None,
    ) -> dict[str, list[str]]:
        """Run the service (if any), the tasks of `layout` and then the collector here; returns their job ids.
        Each job is recorded (`seen`) the moment it starts. A Ctrl-C at any moment, even while the jobs start,
        ends every process of the run before KeyboardInterrupt goes on; a `cancel` meanwhile stops the starting."""
        ids: dict[str, list[str]] = {}
        try:
            tasks = self._start(paths, record, layout, jobs, ids, seen)
            lock = None  # held from the moment every task (grown ones too) is over until the collector is recorded
            cancel = _CancelWatch(paths, CANCEL_CHECK_S)  # not every poll: a stat each time
            while lock is None:
                if all(job.poll() is not None for job in tasks):
                    lock = grow_lock(paths)
                    if grown_alive(paths, ids):
                        lock = unlock(lock)  # a `grow` added tasks meanwhile: wait for them too
                if lock is None:
                    if cancel.seen():  # `hpcmarker cancel` may have missed a job that started as it looked
                        end_run(paths.jobs, _all_ids(ids))
                    if progress:
                        progress(paths)
                    time.sleep(POLL_S)
            try:
                with _sigint_held():
                    collect = JobCall(jobs.collect, (str(paths.root),), environ=arrow_pool_environment())
                    call = local_call(paths.jobs, "collect", collect)
                    job = start_job(paths.jobs, call, None, COLLECT_TIME_MIN * 60, "")
                    _started(ids, "collect", job, seen)
            except OSError as exc:  # its call is written into the run folder first
                raise LocalRunFailed(f"cannot start the collector: {exc.strerror}") from None
            finally:
                unlock(lock)
            while job.poll() is None:
                time.sleep(POLL_S / 2)
        except KeyboardInterrupt:
            with _sigint_held():  # a second Ctrl-C must not cut the ending short
                end_run(paths.jobs, _all_ids(ids))
            raise
        problem = _job_problem(paths, job)
        if problem:
            raise LocalRunFailed(f"the collector failed: {problem} (log: {job_logs(paths, str(job.pid))[1]})")
        return ids

    def grow(
        self,
        paths: RunPaths,
        record: RunRecord,
        scripts: dict[str, str],
        layout: ArrayLayout,
        jobs: RunJobs,
        seen: JobsSeen | None = None,
    ) -> list[str]:
        """Start the tasks of `layout` while a task of the round still runs; the `submit` waiting for the round
        waits for them too before it starts the collector (both under the run's grow lock)."""
        lock = grow_lock(paths)
        try:
            if not any(job_running(pid, paths.jobs) for pid in local_pids(record.jobs.get("convert", []))):
                raise GrowRefused(f"run {record.run_id} is not running any more: none of its tasks is running")
            machine = grown_machine(paths.jobs, record, len(layout.tasks))  # again: a `grow` beside may have won
            ids: dict[str, list[str]] = {}
            self._start(paths, record, layout, replace(jobs, service=None), ids, seen, machine)
        finally:
            unlock(lock)
        return ids.get("convert", [])

    @staticmethod
    def _start(
        paths: RunPaths,
        record: RunRecord,
        layout: ArrayLayout,
        jobs: RunJobs,
        ids: dict[str, list[str]],
        seen: JobsSeen | None,
        machine: Machine | None = None,
    ) -> list[subprocess.Popen]:
        """Start the service (each replica) and the tasks of `layout` on `machine` (default: all of this one), each
        recorded as it starts; a Ctrl-C meanwhile is held until all are started (then KeyboardInterrupt); a run
        cancelled meanwhile starts no more."""
        machine = machine or this_machine()
        fitted = fit_machine(len(layout.tasks), record.workers_per_gpu, record.engine, machine, record.mps)
        limit_s = (parse_time_limit(record.time_limit) or 60) * 60
        tasks: list[subprocess.Popen] = []
        root = (str(paths.root),)
        with _sigint_held():
            if record.llm and jobs.service is not None:  # the service first (each replica); the tasks wait for it
                replicas = range(service_replicas(record))
                call = local_call(paths.jobs, "service", JobCall(jobs.service, root, {r: r for r in replicas}))
                for replica in replicas:
                    _started(ids, "service", start_job(paths.jobs, call, replica, limit_s, ""), seen)
            call = local_call(paths.jobs, "convert", JobCall(jobs.convert, root, {i: i for i in layout.tasks}))
            try:
                for slot, index in enumerate(layout.tasks):
                    if _cancelled(paths):  # before each: a task started after `cancel` looked would outlive it
                        break
                    # a GPU each; otherwise CUDA_VISIBLE_DEVICES is empty: the CPU
                    gpus = str(fitted.gpus[slot % len(fitted.gpus)]) if fitted.gpus else ""
                    with pinned(machine, fitted, slot):
                        tasks.append(start_job(paths.jobs, call, index, limit_s, gpus))
                    _started(ids, "convert", tasks[-1], None)
            finally:  # the tasks recorded once, when all have started (Ctrl-C is held until then)
                if seen and tasks:
                    seen({name: list(values) for name, values in ids.items()})
        return tasks

    def observe(
        self, paths: RunPaths, record: RunRecord, finished_tasks: set[int], collected: bool, cancel_wedged: bool = False
    ) -> Observation:
        states = {}
        for role in ROLES:
            for index, job_id in enumerate(record.jobs.get(role, [])):
                if job_id.isdigit() and job_running(int(job_id), paths.jobs):
                    states[job_id] = "RUNNING"
                elif role == "convert" and index in finished_tasks:
                    states[job_id] = "COMPLETED"  # its share is done: its exit file is not read
                elif role == "convert" and _said_done(paths, index, job_id):
                    states[job_id] = "COMPLETED"  # it ended as it should (a grown task has no share to finish)
                elif role in ("collect", "service") and collected:
                    states[job_id] = "COMPLETED"
                else:
                    states[job_id] = "CANCELLED" if record.cancelled else "FAILED"
        return Observation(states)

    def clocks(self, paths: RunPaths, record: RunRecord) -> dict[str, tuple[JobClock, ...]]:
        return {}  # no scheduler's accounting here: each task's own clock (its stop record) stands for it

    def active(self, record: RunRecord) -> list[str]:
        """The run's processes alive now: its recorded jobs, and any job runner on its jobs folder."""
        return [str(pid) for pid in run_processes(_jobs_folder(record), live_job_ids(record))]

    def cancel(self, record: RunRecord) -> list[str]:
        """End every process of the run (recorded or found on its jobs folder); the ids of those that were alive.
        LocalCancelFailed where one outlives SIGKILL (a process stuck in the kernel)."""
        jobs, ids = _jobs_folder(record), live_job_ids(record)
        ended = end_run(jobs, ids)
        if left := run_processes(jobs, ids):
            raise LocalCancelFailed(
                f"processes {', '.join(map(str, left))} of run {record.run_id} are still alive after SIGKILL"
            )
        return [str(pid) for pid in ended]

    def stop_service(self, record: RunRecord) -> list[str]:
        ids = record.jobs.get("service", [])
        for pid in local_pids(ids):
            killed = terminate_tree(pid, grace_s=SERVICE_STOP_GRACE_S)
            if killed:
                logger.warning(
                    f"LLM service processes {killed} ignored SIGTERM for {SERVICE_STOP_GRACE_S:g}s and were killed"
                )
        return ids
