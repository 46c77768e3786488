"""Run task: what one array task does.

The task caps threads to its CPU share and starts `workers_per_gpu` worker processes (workpool.py).
It claims batches of work (scheduler.py: its own share in order, then, with stealing, other tasks'
batches from their tails, and batches of tasks that died), converts their items, commits each one
exactly once (runstate/claims.py), and renames the output into place (commits.py). A PDF that
fails is recorded and the task goes on. An item past its time limit (limits.py) ends only its own
worker and is recorded `timeout`; a worker that dies (a crash, the out-of-memory killer) is
replaced and its item tried once more (taskloop.py). SIGTERM (scancel, the kill after a preemption) or
SIGINT (Ctrl-C) stops the task at once and gives its batches back. USR2 (time limit near, or Slurm
preempting the job) or a full output disk lets the items in flight finish, takes no new ones and gives
the rest of the batches back; after a full disk the task exits non-zero; a preempted task on a preemptible
profile then waits for Slurm's kill, so that Slurm requeues it (preempt.py). Whatever ends it, the task says
why in its stop record (runstate/stops.py): done, time limit, preempted, storage full, cancelled, its engine,
inference server or LLM service unusable.

`run_task(run_dir, task_index)` is the entry point the jobs call (through the job runner, util/jobrun.py, on Slurm
and locally).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import FAILURE_STATUSES
from hpc_marker.runstate.permissions import file_mode_mask
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import (
    CANCELLED,
    DONE,
    ENGINE,
    ENGINE_CACHE,
    ERROR,
    PREEMPTED,
    STORAGE_FULL,
    TIME_LIMIT,
    StopRecord,
)
from hpc_marker.runtime.preempt import (
    USR2_REASON,
    await_kill,
    preemption_reason,
    usr2_preemption,
    waits_for_requeue,
)
from hpc_marker.runtime.scheduler import Scheduler
from hpc_marker.runtime.startup import CannotStart, TaskSetup, current_job_id, prepare, start_servers
from hpc_marker.runtime.taskloop import Phase, TaskLoop
from hpc_marker.runtime.worker import STORAGE_FULL_ERRNOS
from hpc_marker.slurm.parse import Preemption
from hpc_marker.util.logs import configure
from hpc_marker.util.text import one_line, plural

logger = logging.getLogger(__name__)


@dataclass
class TaskResult:
    task: int
    ok: int
    failed: int
    stolen: int
    seconds: float
    stopped: str = DONE  # why it stopped (runstate/stops.py)
    reason: str = ""  # in one line, when it stopped early
    preemption: Preemption | None = None  # Slurm's word, when its USR2 came from a preemption (preempt.py)

    def sentence(self) -> str:
        """The result as the task log says it."""
        stolen = f" ({self.stolen} of them from other tasks' shares)" if self.stolen else ""
        why = "" if self.stopped == DONE else f"; stopped early: {self.stopped.replace('_', ' ')}"
        return (
            f"{plural(self.ok + self.failed, 'item')} finished{stolen}: {self.ok} ok, {self.failed} failed, "
            f"in {self.seconds:.1f} s{why}"
        )


class TaskStopped(BaseException):
    """SIGTERM (scancel, preemption, a local cancel) or SIGINT (Ctrl-C): stop now, give the claims back."""

    preemption: Preemption | None = None  # killed at the end of a preemption's grace while it drained


class _StopSignals:
    """The task's SIGTERM (scancel, a local cancel, the kill after a preemption) and SIGINT (Ctrl-C on a local run)
    handler, installed before its stop record says `running`: from then on either raises TaskStopped, so a task
    stopped while it starts says `cancelled`, never `running` (which means killed without a word). While the
    record is written (`holding`) the signal is kept and raised by `release`. One-shot: Slurm signals every
    process of the job (a local cancel the whole process tree), so a second SIGTERM (or a SIGINT after it) often
    follows; it must not interrupt the release of the claims. The job runner (util/jobrun.py) installs no
    handler: these are the job's only ones."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.holding, self.pending = True, ""
        for stopping in self.SIGNALS:
            signal.signal(stopping, self)

    def __call__(self, signum: int, _frame) -> None:
        for stopping in self.SIGNALS:
            signal.signal(stopping, signal.SIG_IGN)
        if self.holding:
            self.pending = signal.Signals(signum).name
            return
        raise TaskStopped(signal.Signals(signum).name)

    def release(self) -> None:
        """Stop holding: a signal that came meanwhile is raised now."""
        self.holding = False
        if self.pending:
            raise TaskStopped(self.pending)


def _open_record(paths: RunPaths, task_index: int) -> tuple[StopRecord, _StopSignals]:
    """The task's stop record, saying `running`, with the handler that will make it say `cancelled` holding."""
    handler = _StopSignals()
    try:
        return StopRecord(paths.progress, task_index, current_job_id(), socket.gethostname()), handler
    except OSError as exc:  # a full disk from the start: nothing can be converted or recorded
        raise RuntimeError(f"task {task_index} cannot write to its run folder: {exc.strerror}") from None


def _catch_usr2(phase: Phase) -> None:
    signal.signal(signal.SIGUSR2, lambda *_: phase.drain(TIME_LIMIT, USR2_REASON))


@contextmanager
def _task_log(task_index: int) -> Iterator[None]:
    """The task's log lines in the jobs' format (util/logs.py: `DATE TIME INFO task N: message` on stdout, the
    task's log), unless whoever started the task configured logging already (JobEntry does)."""
    package = logging.getLogger("hpc_marker")
    if package.handlers:
        yield
        return
    level = package.level
    handler = configure(0, job=f"task {task_index}")
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def run_task(run_dir: str, task_index: int) -> TaskResult:
    """Entry point of one array task (called through the job runner, or directly)."""
    paths = RunPaths(Path(run_dir))
    record = paths.load_record()
    with _task_log(task_index), file_mode_mask(record.umask):  # outputs are private unless the run asked otherwise
        stops, stopping = _open_record(paths, task_index)
        earlier = stops.earlier  # its record from before a requeue or a resume
        if earlier is not None and earlier.cause == PREEMPTED:
            logger.info("started again after a preemption: %s", earlier.detail)
        try:
            stopping.release()  # a cancel that came while the record was written is raised here
            result = _run_task(paths, record, task_index, stops)
        except TaskStopped as stop:
            if stop.preemption is not None:
                grace = "killed at the end of its grace before it had drained"
                stops.stop(PREEMPTED, f"{preemption_reason(stop.preemption)}; {grace}")
            else:
                stops.stop(CANCELLED, f"cancelled (stopped by {stop})")
            raise SystemExit(128 + signal.SIGTERM) from None
        except CannotStart as exc:
            stops.stop(exc.cause, str(exc))
            raise RuntimeError(str(exc)) from None
        except OSError as exc:  # the storage filled where the task had no other way to say so
            if exc.errno not in STORAGE_FULL_ERRNOS:
                stops.stop(ERROR, one_line(exc, with_type=True))
                raise
            stops.stop(STORAGE_FULL, f"storage full: {exc.strerror}")
            raise RuntimeError(
                f"task {task_index} stopped early: storage full ({exc.strerror}); free space, then: "
                f"hpcmarker retry {record.run_id}"
            ) from None
        except Exception as exc:  # a bug: recorded, and it keeps its traceback
            stops.stop(ERROR, one_line(exc, with_type=True))
            raise
        stops.stop(result.stopped, result.reason)
        if result.stopped in (STORAGE_FULL, ENGINE, ENGINE_CACHE):  # exit non-zero: the run is not complete
            fix = f"; free space, then: hpcmarker retry {record.run_id}" if result.stopped == STORAGE_FULL else ""
            raise RuntimeError(f"task {task_index} stopped early: {result.reason}{fix}")  # the scheduler says so too
        if result.preemption is not None and waits_for_requeue(result.preemption, record.job_settings.preemptible):
            _stay_for_requeue(result.preemption)
        return result


def _stay_for_requeue(found: Preemption) -> None:
    """A drained preempted task stays until Slurm kills it at the end of its grace, which requeues the job."""
    try:
        await_kill(found)
    except TaskStopped:  # the kill: the job is requeued (PreemptMode=REQUEUE); its stop record is written already
        raise SystemExit(128 + signal.SIGTERM) from None


def _run_task(paths: RunPaths, record: RunRecord, task_index: int, stops: StopRecord) -> TaskResult:
    setup = TaskSetup.for_task(paths, record, task_index)
    board = ClaimBoard(paths.root, owner=f"{setup.host}:{os.getpid()}:task-{task_index}", lease_s=record.lease_seconds)
    scheduler = Scheduler(
        task_index,
        setup.summaries,
        setup.own,
        board,
        paths.plan,
        paths.progress,
        steal=record.steal,
        lease_s=record.lease_seconds,
        first_start=stops.first_start,
    )
    logger.info(setup.describe(len(scheduler.own), record.steal))
    start = time.time()
    phase = Phase()  # USR2 drains the task from now on, even while it waits for its LLM service
    _catch_usr2(phase)
    helpers = ExitStack()  # this task's helpers (LLM relay, MPS, marker 2.x's server), stopped however it ends
    options = _prepared(record, paths, setup, helpers)
    stops.llm_wait = options["llm"].waited_s if options.get("llm") else 0.0  # GPU time spent on it: accounting
    loop = TaskLoop(paths, record, setup, board, scheduler, phase, options)
    try:
        try:
            start_servers(record, paths, setup, helpers)  # before any worker is spawned
            loop.run()
        except TaskStopped as stop:
            loop.stop(str(stop))
            raise
        finally:
            loop.close(helpers)  # a kill may come while the workers are ended, too
    except TaskStopped as stop:
        if phase.cause == TIME_LIMIT:  # killed after a USR2: a preemption's grace may have ended
            stop.preemption = usr2_preemption(start, record.time_limit)
        raise
    if loop.pool.replaced:
        logger.info("%s replaced (timed out, died or ran out of memory)", plural(loop.pool.replaced, "worker"))
    counts = loop.finisher.counts
    cause, reason = loop.stopped()
    found = usr2_preemption(start, record.time_limit) if cause == TIME_LIMIT else None  # or the time limit near
    if found is not None:
        cause, reason = PREEMPTED, preemption_reason(found)
    result = TaskResult(
        task=task_index,
        ok=counts["ok"],
        failed=sum(counts[s] for s in FAILURE_STATUSES),
        stolen=counts["stolen"],
        seconds=round(time.time() - start, 3),
        stopped=cause,
        reason=reason,
        preemption=found,
    )
    logger.info("done: %s", result.sentence())
    return result


def _prepared(record: RunRecord, paths: RunPaths, setup: TaskSetup, helpers: ExitStack) -> dict:
    """startup.prepare; what it started (the LLM relay) stops if it fails or the task is stopped meanwhile."""
    try:
        return prepare(record, paths, setup, helpers)
    except TaskStopped as stop:
        helpers.close()
        logger.warning("stopped by %s before taking any item", stop)
        raise
    except Exception:  # CannotStart, a bug
        helpers.close()
        raise


if __name__ == "__main__":  # debugging aid: python -m hpc_marker.runtime.task RUN_DIR INDEX
    logger.warning("%s", run_task(sys.argv[1], int(sys.argv[2])).sentence())
