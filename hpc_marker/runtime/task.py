"""Run task: what one array task does.

The task caps threads to its CPU share and starts `workers_per_gpu` worker processes (workpool.py).
It claims batches of work (scheduler.py: its own share in order, then, with stealing, other tasks'
batches from their tails, and batches of tasks that died), converts their items, commits each one
exactly once (runstate/claims.py), and renames the output into place (finishing.py). A PDF that
fails is recorded and the task goes on. An item past its time limit (limits.py) ends only its own
worker and is recorded `timeout`; a worker that dies (a crash, the out-of-memory killer) is
replaced and its item tried once more. SIGTERM (scancel, preemption) or SIGINT (Ctrl-C) stops the
task at once and gives its batches back. USR2 (time limit near) or a full output disk lets the items
in flight finish, takes no new ones and gives the rest of the batches back; after a full disk the
task exits non-zero. Whatever ends it, the task says why in its stop record (runstate/stops.py):
done, time limit, storage full, cancelled, its engine, inference server or LLM service unusable.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import submitit

from hpc_marker.engines import (
    EngineError,
    EngineUnavailable,
    check_engine,
    check_node,
    engine_startup_seconds,
    output_settings,
)
from hpc_marker.planning.bisect import BISECTED, can_bisect, halves
from hpc_marker.planning.plan import WorkItem
from hpc_marker.planning.store import load_share, load_summary
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import FAILURE_STATUSES, ManifestWriter
from hpc_marker.runstate.output import document_stem
from hpc_marker.runstate.permissions import file_mode_mask
from hpc_marker.runstate.progress import CommitLog
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import (
    CANCELLED,
    DONE,
    ENGINE,
    ENGINE_CACHE,
    ERROR,
    INFERENCE,
    LLM_SERVICE,
    STORAGE_FULL,
    TIME_LIMIT,
    StopRecord,
    engine_stop,
)
from hpc_marker.runtime.finishing import Finisher
from hpc_marker.runtime.inference import InferenceServerFailed, InferenceSettings, task_inference_server
from hpc_marker.runtime.limits import parse_item_timeout, parse_memory
from hpc_marker.runtime.mps import task_mps
from hpc_marker.runtime.scheduler import Batch, Scheduler, idle_poll_seconds
from hpc_marker.runtime.sizing import choose_workers
from hpc_marker.runtime.threads import cap_threads, task_cpus, threads_per_worker
from hpc_marker.runtime.worker import OutputUnwritable, convert_to_staging, init_worker
from hpc_marker.runtime.workpool import DIED, OK, TIMEOUT, WorkerPool
from hpc_marker.util.text import one_line, plural

if TYPE_CHECKING:
    from hpc_marker.llm.client import LlmAccess

MAX_ATTEMPTS_AFTER_CRASH = 2


@dataclass
class TaskResult:
    task: int
    ok: int
    failed: int
    stolen: int
    seconds: float
    stopped: str = DONE  # why it stopped (runstate/stops.py)
    reason: str = ""  # in one line, when it stopped early

    def sentence(self) -> str:
        """The result as the task log says it."""
        stolen = f" ({self.stolen} of them from other tasks' shares)" if self.stolen else ""
        why = "" if self.stopped == DONE else f"; stopped early: {self.stopped.replace('_', ' ')}"
        return (
            f"{plural(self.ok + self.failed, 'item')} finished{stolen}: {self.ok} ok, {self.failed} failed, "
            f"in {self.seconds:.1f} s{why}"
        )


STORAGE_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class TaskStopped(BaseException):
    """SIGTERM (scancel, preemption, a local cancel) or SIGINT (Ctrl-C): stop now, give the claims back."""


class CannotStart(Exception):
    """The task cannot convert anything here: `cause` (runstate/stops.py) and a one-line reason."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def _raise_stopped(signum: int, _frame) -> None:
    # One-shot: Slurm signals every process of the job and a local controller forwards its own signal,
    # so a second SIGTERM (or a SIGINT after it) often follows; it must not interrupt the release of the claims.
    for stopping in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stopping, signal.SIG_IGN)
    raise TaskStopped(signal.Signals(signum).name)


def current_job_id() -> str:
    """This job's id as the scheduler knows it ('123_4' for an array task), from submitit's own job
    environment; `local-<pid>` when not started by submitit (a task run by hand)."""
    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:
        return f"local-{os.getpid()}"


def _log(task: int, message: str) -> None:
    print(f"[hpcmarker task {task}] {time.strftime('%H:%M:%S')} {message}", flush=True)


def run_task(run_dir: str, task_index: int) -> TaskResult:
    """Entry point of one array task (called through submitit, or directly)."""
    paths = RunPaths(Path(run_dir))
    record = paths.load_record()
    with file_mode_mask(record.umask):  # outputs are private unless the run asked otherwise
        try:
            stops = StopRecord(paths.progress, task_index, current_job_id(), socket.gethostname())
        except OSError as exc:  # a full disk from the start: nothing can be converted or recorded
            raise RuntimeError(f"task {task_index} cannot write to its run folder: {exc.strerror}") from None
        try:
            result = _run_task(paths, record, task_index, stops.first_start)
        except TaskStopped as stop:
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
        return result


def _run_task(paths: RunPaths, record: RunRecord, task_index: int, first_start: bool = False) -> TaskResult:
    summaries = load_summary(paths.plan)
    own = load_share(paths.plan, summaries[task_index])
    log = lambda line: _log(task_index, line)  # noqa: E731
    cpus = task_cpus()
    workers = choose_workers(record.workers_per_gpu or None, record.engine, cpus, log=log)  # 0 on the record: auto
    workers = max(1, min(workers, max(len(own.items), 1)))
    threads = threads_per_worker(cpus, workers)
    cap_threads(threads)
    options = dict(
        record.engine_options.to_json(),
        threads=threads,  # what the workers get; the settings go in each output
        quality=record.quality.to_json() if record.quality else None,  # the output flags' thresholds (quality/)
        output_settings=output_settings(record.engine, record.engine_options, record.llm),
    )
    host = socket.gethostname()
    context = dict(
        engine=record.engine,
        host=host,
        gpu=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        job_id=current_job_id(),
        task=task_index,
    )
    board = ClaimBoard(paths.root, owner=f"{host}:{os.getpid()}:task-{task_index}", lease_s=record.lease_seconds)
    inflight: dict[str, tuple[WorkItem, Batch]] = {}
    scheduler = Scheduler(
        task_index,
        summaries,
        own,
        board,
        paths.plan,
        paths.progress,
        steal=record.steal,
        lease_s=record.lease_seconds,
        inflight=lambda: list(inflight),
        first_start=first_start,
    )
    log(
        f"{len(own.items)} own items in {len(scheduler.own)} batches, stealing {'on' if record.steal else 'off'}; "
        f"{cpus} CPUs, {workers} workers x {threads} threads, CUDA_VISIBLE_DEVICES={context['gpu'] or '(none)'}"
    )
    start = time.time()
    # USR2, or storage gone: finish what is in flight, take nothing new; (cause, one line) of each
    draining: list[tuple[str, str]] = []
    # Ours from the start: submitit's own USR2 handler would requeue the job (or fail it) instead.
    signal.signal(signal.SIGTERM, _raise_stopped)  # submitit bypasses SIGTERM; a cancelled task must stop
    signal.signal(signal.SIGINT, _raise_stopped)  # Ctrl-C on a local run reaches every task
    signal.signal(signal.SIGUSR2, lambda *_: draining.append((TIME_LIMIT, "time limit near (USR2)")))
    server = ExitStack()  # this task's helpers (LLM relay, MPS, marker 2.x's server), stopped however it ends
    try:
        _prepare(record, paths, task_index, options, host, workers, server)
    except TaskStopped as stop:
        server.close()
        log(f"stopped by {stop} before taking any item")
        raise
    except Exception:  # CannotStart, a bug: what _prepare started (the LLM relay) stops too
        server.close()
        raise
    limit = parse_item_timeout(record.item_timeout)
    log(
        f"item time limit: {limit.describe()}"
        + (f", worker memory {record.worker_memory}" if record.worker_memory else "")
    )
    memory = parse_memory(record.worker_memory) if record.worker_memory else None
    pool = WorkerPool(
        workers,
        initializer=init_worker,
        initargs=(record.engine, options, threads, memory),
        startup_allowance_s=engine_startup_seconds(record.engine),
    )
    finisher = Finisher(
        paths,
        record,
        board,
        ManifestWriter(paths.task_manifest(task_index)),
        CommitLog(paths.progress, task_index),
        context,
        log,
    )
    crashes: dict[str, int] = {}
    queue: deque[tuple[WorkItem, Batch]] = deque()  # claimed, not yet given to a worker
    announced = False  # the log has said why no new items are taken
    poll_s = idle_poll_seconds(record.lease_seconds)

    def settle(
        item: WorkItem,
        batch: Batch,
        status: str,
        error: str | None,
        started: float,
        staging: Path | None = None,
        degraded: str | None = None,
        flags: dict | None = None,
        children: list[WorkItem] | None = None,
        llm_failover: str | None = None,
    ) -> None:
        if (
            finisher.finish(item, batch.share, status, error, started, staging, degraded, flags, children, llm_failover)
            and children
        ):
            batch.left.update(child.item_id for child in children)
            queue.extendleft((child, batch) for child in reversed(children))
        if finisher.storage_errors and not draining:
            draining.append((STORAGE_FULL, finisher.storage_errors[-1]))
        done_with(item, batch)

    def fail(item: WorkItem, batch: Batch, status: str, error: str, started: float) -> None:
        """Several pages: bisected (its halves go first in the queue, in its batch); one page: lost."""
        if record.bisect and can_bisect(item):
            settle(item, batch, BISECTED, f"{status}: {error}", started, children=halves(item))
        else:
            settle(item, batch, status, error, started)

    def done_with(item: WorkItem, batch: Batch) -> None:
        batch.left.discard(item.item_id)
        if not batch.left and not board.lost(batch.lease):
            board.finish(batch.lease)

    def take_batch() -> bool:
        batch = scheduler.next_batch()
        if batch is None:
            return False
        for item in batch.items:
            done = None if batch.fresh else board.done_record(item.item_id)
            if done is None:
                queue.append((item, batch))
                continue
            batch.left.discard(item.item_id)  # finished by an earlier holder of the batch
            if done.get("status") == BISECTED:  # ... which may not have finished every half of it
                for half in finisher.unfinished_halves(item):
                    batch.left.add(half.item_id)
                    queue.append((half, batch))
        if not batch.left:
            board.finish(batch.lease)
        return True

    def give_back_queued() -> None:
        for batch in {id(b): b for _, b in queue}.values():
            if not any(b is batch for _, b in inflight.values()):
                board.release(batch.lease)
        queue.clear()

    try:
        os.environ.update(server.enter_context(task_mps(record.mps or "off", record.engine, workers, log=log)))
        try:
            os.environ.update(
                server.enter_context(
                    task_inference_server(
                        record.inference or InferenceSettings(),
                        paths.logs / f"inference-task-{task_index}.log",
                        log=log,
                        workers=workers,
                    )
                )
            )  # before any worker is spawned
        except InferenceServerFailed as exc:
            log(f"giving up: {exc}")
            raise CannotStart(INFERENCE, str(exc)) from None
        board.on_beat = scheduler.write
        scheduler.write()
        board.start_heartbeat()
        while True:
            while pool.idle() and not draining and (queue or take_batch()):
                if not queue:
                    continue
                item, batch = queue.popleft()
                if board.lost(batch.lease):  # taken over by another task (our lease had expired)
                    continue
                if item.scan_error:
                    settle(item, batch, item.scan_status, item.scan_error, time.time())
                    continue
                pool.submit(
                    item.item_id,
                    convert_to_staging,
                    (
                        str(Path(record.pdfs_root) / item.pdf),
                        item.page_start,
                        item.page_stop,
                        str(paths.staging),
                        item.item_id,
                        document_stem(item.pdf, item.out_name),
                    ),
                    timeout_s=limit.for_pages(item.pages),
                )
                inflight[item.item_id] = (item, batch)
            if draining:
                give_back_queued()
                if not announced:
                    announced = True
                    log(f"taking no new items: {draining[0][1]}; {len(inflight)} in flight finish first")
            if not inflight:
                if draining:
                    break
                if queue:
                    continue
                if not scheduler.should_wait():
                    break
                scheduler.idle()
                time.sleep(poll_s)  # others hold the rest: wait for them, or for a dead task's leases to expire
                continue
            for outcome in pool.wait():
                item, batch = inflight.pop(outcome.key)
                started = time.time() - outcome.seconds
                if outcome.kind == OK:
                    staging, degraded, llm_failover, flags = outcome.result
                    settle(item, batch, "ok", None, started, Path(staging), degraded, flags, llm_failover=llm_failover)
                elif outcome.kind == TIMEOUT:
                    fail(
                        item,
                        batch,
                        "timeout",
                        f"no result after {outcome.seconds:.0f} s (item limit "
                        f"{limit.describe()}; --item-timeout): its worker was ended",
                        started,
                    )
                elif outcome.kind == DIED:
                    crashes[item.item_id] = crashes.get(item.item_id, 0) + 1
                    log(f"worker died on {item.pdf} [{item.page_label()}]: {outcome.died_reason()}")
                    if crashes[item.item_id] < MAX_ATTEMPTS_AFTER_CRASH:
                        queue.appendleft((item, batch))
                    else:
                        fail(item, batch, "failed", outcome.died_reason(), started)
                elif isinstance(outcome.error, EngineUnavailable):  # no engine in that worker: the task stops
                    draining.append(engine_stop(record.engine, host, outcome.error))  # the item stays pending
                else:
                    error = outcome.error
                    if isinstance(error, MemoryError):
                        reason = f"out of memory (worker memory limit {record.worker_memory})"
                    elif isinstance(error, EngineError):
                        reason = str(error)
                    else:  # anything else is this item's failure, not the task's
                        reason = one_line(error, with_type=True)
                    if isinstance(error, OutputUnwritable) or reason.startswith("encrypted"):
                        settle(item, batch, "failed", reason, started)  # not a page's failure: no bisection
                    else:
                        fail(item, batch, "failed", reason, started)
                    if isinstance(error, OutputUnwritable) and error.storage_full and not draining:
                        finisher.storage_errors.append(f"storage full: {error}")
                        log("taking no more items: the output storage is full")
                        draining.append((STORAGE_FULL, finisher.storage_errors[-1]))
    except TaskStopped as stop:
        log(f"stopped by {stop}: giving back {len(board.held())} batches ({len(inflight)} items in flight)")
        pool.close(grace_s=5)
        board.release_all()
        raise
    finally:
        board.stop_heartbeat()
        pool.close()
        server.close()
        for last_write in (finisher.manifest.close, finisher.commits.close, board.release_all, scheduler.exit):
            try:  # board.release_all: what is still held was not finished, others may take it at once
                last_write()
            except OSError as exc:  # a full disk keeps the last lines from landing: the reason to stop
                if exc.errno not in STORAGE_FULL_ERRNOS:
                    raise
                finisher.storage_errors.append(f"storage full: cannot record the task's end: {exc.strerror}")

    if pool.replaced:
        log(f"{plural(pool.replaced, 'worker')} replaced (timed out, died or ran out of memory)")
    counts = finisher.counts
    cause, reason = draining[0] if draining else (DONE, "")
    if finisher.storage_errors:
        cause, reason = STORAGE_FULL, finisher.storage_errors[0]
    result = TaskResult(
        task=task_index,
        ok=counts["ok"],
        failed=sum(counts[s] for s in FAILURE_STATUSES),
        stolen=counts["stolen"],
        seconds=round(time.time() - start, 3),
        stopped=cause,
        reason=reason,
    )
    log(f"done: {result.sentence()}")
    return result


def _prepare(
    record: RunRecord, paths: RunPaths, task_index: int, options: dict, host: str, workers: int, helpers: ExitStack
) -> None:
    """Before any item: the engine can run here, and the LLM service (if any) answers; `options` gains it.
    CannotStart says why not."""
    engine_options, mode = record.engine_options, record.inference.mode if record.inference else "off"
    try:  # check_node: caches, binaries, before any worker or server starts (a server of its own: its weights only)
        check_engine(record.engine, engine_options)
        check_node(record.engine, engine_options, server=mode != "off" and not os.environ.get("SURYA_INFERENCE_URL"))
    except EngineUnavailable as exc:
        _log(task_index, f"giving up: engine {record.engine!r} cannot run here: {one_line(exc)}")
        raise CannotStart(*engine_stop(record.engine, host, exc)) from None
    if record.llm:
        options["llm"] = _llm_options(record, paths, task_index, workers, helpers)


def _llm_options(record: RunRecord, paths: RunPaths, task_index: int, workers: int, helpers: ExitStack) -> LlmAccess:
    """Wait for a replica of the LLM service; with several, start the task's relay to them (failover);
    the workers' LLM settings, with the run's concurrency budget."""
    from hpc_marker.llm.budget import plan_budget
    from hpc_marker.llm.client import LlmAccess, ServiceUnavailable, wait_for_service
    from hpc_marker.llm.replicas import task_relay

    llm, log = record.llm, (lambda line: _log(task_index, line))
    assert llm is not None  # _prepare asks only for a run with an LLM service
    replicas = llm.replicas
    log(
        f"waiting up to {llm.wait_timeout_s:g}s for the LLM service"
        + (f" (any of {replicas} replicas)" if replicas > 1 else "")
    )
    try:
        endpoint = wait_for_service(paths.root, timeout_s=llm.wait_timeout_s, replicas=replicas)
    except ServiceUnavailable as exc:
        log(f"giving up: {exc}")
        raise CannotStart(LLM_SERVICE, str(exc)) from None
    log(f"LLM service answers at {endpoint.url} ({endpoint.server} replica {endpoint.replica}, model {endpoint.model})")
    budget = plan_budget(
        llm.parallel,
        replicas,
        record.tasks,
        workers,
        llm.request_timeout_s,
        per_worker=llm.concurrency,
        max_running=record.max_running,
    )
    log(f"LLM budget: {budget.describe()}")
    if replicas > 1:  # the relay's own limit must not cut a request that only waits at a replica's front
        endpoint = helpers.enter_context(
            task_relay(
                paths.root, replicas, task_index, endpoint.server, endpoint.model, budget.timeout_s + 60, log=log
            )
        )
    return LlmAccess(
        endpoint,
        task=str(task_index),
        max_concurrency=budget.max_concurrency,
        timeout_s=budget.timeout_s,
        max_retries=budget.max_retries,
    )


if __name__ == "__main__":  # debugging aid: python -m hpc_marker.runtime.task RUN_DIR INDEX
    print(run_task(sys.argv[1], int(sys.argv[2])))
