"""Run task: what one array task does.

The task caps threads to its CPU share and starts `workers_per_gpu` worker processes (workpool.py).
It then claims items (its own share first, then, with stealing, other tasks' unfinished items),
converts them, commits each one exactly once (claims.py), and renames the output into place.
Finally it appends one manifest line per item. A PDF that fails is recorded and the task goes on.
An item past its time limit (limits.py) ends only its own worker and is recorded `timeout`; a
worker that dies (a crash, the out-of-memory killer) is replaced and its item tried once more.
SIGTERM (scancel, preemption) stops the task at once and gives its claims back. USR2 (time limit
near) or a full output disk lets the items in flight finish and takes no new ones; after a full
disk the task exits non-zero so the run shows as incomplete.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from collections import Counter, deque
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from hpc_marker.engines import EngineError, EngineOptions, EngineUnavailable, check_engine, engine_startup_seconds
from hpc_marker.planning.plan import Plan, WorkItem, claim_order, items_by_document
from hpc_marker.runstate.claims import Claim, ClaimBoard
from hpc_marker.runstate.finish import final_dir, merge_if_complete, place_committed
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import FAILURE_STATUSES, ManifestRecord, append_record
from hpc_marker.runstate.output import document_stem
from hpc_marker.runstate.permissions import file_mode_mask
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runtime.inference import InferenceSettings, task_inference_server
from hpc_marker.runtime.limits import parse_item_timeout, parse_memory
from hpc_marker.runtime.mps import task_mps
from hpc_marker.runtime.sizing import choose_workers
from hpc_marker.runtime.threads import cap_threads, task_cpus, threads_per_worker
from hpc_marker.runtime.worker import OutputUnwritable, convert_to_staging, init_worker
from hpc_marker.runtime.workpool import DIED, OK, TIMEOUT, WorkerPool
from hpc_marker.util.text import one_line

MAX_ATTEMPTS_AFTER_CRASH = 2


@dataclass
class TaskResult:
    task: int
    ok: int
    failed: int
    stolen: int
    seconds: float


class TaskStopped(BaseException):
    """SIGTERM (scancel, preemption, a local cancel): stop now, give the claims back."""


def _raise_stopped(signum: int, _frame) -> None:
    # One-shot: Slurm signals every process of the job and a local controller forwards its own signal,
    # so a second SIGTERM often follows; it must not interrupt the release of the claims.
    signal.signal(signum, signal.SIG_IGN)
    raise TaskStopped(signal.Signals(signum).name)


def current_job_id() -> str:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID") or f"local-{os.getpid()}"


def _log(task: int, message: str) -> None:
    print(f"[hpcmarker task {task}] {time.strftime('%H:%M:%S')} {message}", flush=True)


def run_task(run_dir: str, task_index: int) -> TaskResult:
    """Entry point of one array task (called through submitit, or directly)."""
    paths = RunPaths(Path(run_dir))
    record = paths.load_record()
    with file_mode_mask(record.umask):  # outputs are private unless the run asked otherwise
        return _run_task(paths, record, task_index)


def _run_task(paths: RunPaths, record: RunRecord, task_index: int) -> TaskResult:
    plan = Plan.load(paths.plan)
    docs = items_by_document(plan)
    own_ids = {item.item_id for item in plan.tasks[task_index].items}
    manifest = paths.task_manifest(task_index)
    candidates = deque(claim_order(plan, task_index, steal=record.steal))

    cpus = task_cpus()
    workers = choose_workers(record.workers_per_gpu or None, record.engine, cpus,
                             log=lambda line: _log(task_index, line))  # 0 on the record: auto
    workers = max(1, min(workers, len(candidates)))
    threads = threads_per_worker(cpus, workers)
    cap_threads(threads)
    options = dict(record.engine_options, threads=threads)
    host = socket.gethostname()
    context = dict(engine=record.engine, host=host, gpu=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                   job_id=current_job_id(), task=task_index)
    board = ClaimBoard(paths.claims, owner=f"{host}:{os.getpid()}:task-{task_index}", lease_s=record.lease_seconds)
    _log(task_index, f"{len(own_ids)} own items, stealing {'on' if record.steal else 'off'}; {cpus} CPUs, "
         f"{workers} workers x {threads} threads, CUDA_VISIBLE_DEVICES={context['gpu'] or '(none)'}")
    counts: Counter[str] = Counter()
    storage_errors: list[str] = []

    def finish(item: WorkItem, claim: Claim, status: str, error: str | None, started: float,
               staging: Path | None, degraded: str | None = None, llm_failover: str | None = None) -> None:
        final = final_dir(paths, record, item)
        output = str(final / f"{document_stem(item.pdf)}.md") if staging else None
        finished = time.time()
        entry = ManifestRecord(item_id=item.item_id, pdf=item.pdf, page_start=item.page_start,
                               page_stop=item.page_stop, pages=item.pages, status=status, error=error,
                               seconds=round(finished - started, 3), output=output, started=started,
                               finished=finished, degraded=degraded, llm_failover=llm_failover, **context)
        try:
            committed = board.commit(claim, dict(asdict(entry), staging=str(staging) if staging else None))
        except OSError as exc:  # the claims folder cannot take the record (disk full, quota, storage gone)
            storage_errors.append(f"cannot record {item.pdf}: {exc.strerror}")
            _log(task_index, f"{storage_errors[-1]}; taking no more items (the claim is given back)")
            board.release(claim)
            draining.append(storage_errors[-1])
            if staging:
                shutil.rmtree(staging, ignore_errors=True)
            return
        if not committed:
            _log(task_index, f"lost    {item.pdf} [{item.page_label()}]: another task finished it")
            if staging:
                shutil.rmtree(staging, ignore_errors=True)
            return
        try:
            if staging:
                place_committed(staging, final)
            append_record(manifest, entry)
        except OSError as exc:  # committed: the collector places the output and recovers the record
            storage_errors.append(f"cannot place or record {item.pdf}: {exc.strerror}")
            _log(task_index, f"{storage_errors[-1]}; it is committed, the collector finishes it; "
                             "taking no more items")
            draining.append(storage_errors[-1])
        counts[status] += 1
        counts["stolen"] += item.item_id not in own_ids
        _log(task_index, f"{status:7} {item.pdf} [{item.page_label()}] {finished - started:.2f}s"
             + (f" -- {error}" if error else "") + (f" (LLM degraded: {degraded})" if degraded else "")
             + (f" (LLM: {llm_failover})" if llm_failover else ""))
        if item.is_part and status == "ok":
            merged = merge_if_complete(paths, record, docs[item.doc_id], board)
            if merged:
                _log(task_index, f"merged  {item.pdf} ({item.parts} parts)")

    start = time.time()
    draining: list[str] = []  # USR2, or storage gone: finish what is in flight, take nothing new
    # Ours from the start: submitit's own USR2 handler would requeue the job (or fail it) instead.
    signal.signal(signal.SIGTERM, _raise_stopped)  # submitit bypasses SIGTERM; a cancelled task must stop
    signal.signal(signal.SIGUSR2, lambda *_: draining.append("time limit near (USR2)"))
    server = ExitStack()  # this task's helpers (LLM relay, MPS, marker 2.x's server), stopped however it ends
    try:
        _prepare(record, paths, task_index, options, host, workers, server)
    except TaskStopped as stop:
        server.close()
        _log(task_index, f"stopped by {stop} before taking any item")
        raise SystemExit(128 + signal.SIGTERM) from None
    limit = parse_item_timeout(record.item_timeout)
    _log(task_index, f"item time limit: {limit.describe()}" + (f", worker memory {record.worker_memory}"
                                                               if record.worker_memory else ""))
    memory = parse_memory(record.worker_memory) if record.worker_memory else None
    pool = WorkerPool(workers, initializer=init_worker, initargs=(record.engine, options, threads, memory),
                      startup_allowance_s=engine_startup_seconds(record.engine))
    attempts: Counter[str] = Counter()
    inflight: dict[str, tuple[WorkItem, Claim]] = {}
    announced = False  # the log has said why no new items are taken
    try:
        os.environ.update(server.enter_context(task_mps(record.mps or "off", record.engine, workers,
                                                        log=lambda line: _log(task_index, line))))
        os.environ.update(server.enter_context(task_inference_server(
            InferenceSettings.from_record(record.inference), paths.logs / f"inference-task-{task_index}.log",
            log=lambda line: _log(task_index, line), workers=workers)))  # before any worker is spawned
        board.start_heartbeat()
        while True:
            held_back: list[WorkItem] = []  # claimed by a live task: look again later
            while candidates and pool.idle() and not draining:
                item = candidates.popleft()
                claim = board.try_claim(item.item_id)
                if claim is None:
                    if not board.is_done(item.item_id):
                        held_back.append(item)
                    continue
                if item.scan_error:
                    finish(item, claim, item.scan_status, item.scan_error, time.time(), None)
                    continue
                pool.submit(item.item_id, convert_to_staging,
                            (str(Path(record.pdfs_root) / item.pdf), item.page_start, item.page_stop,
                             str(paths.staging), f"{item.item_id}-g{claim.generation}", document_stem(item.pdf)),
                            timeout_s=limit.for_pages(item.pages))
                inflight[item.item_id] = (item, claim)
            candidates.extend(held_back)
            if draining and not announced:
                announced = True
                _log(task_index, f"taking no new items: {draining[0]}; {len(inflight)} in flight finish first")
            if not inflight:
                if draining or not candidates:
                    break
                time.sleep(min(2.0, record.lease_seconds / 4))  # others hold the rest: wait for them or their leases
                continue
            for outcome in pool.wait():
                item, claim = inflight.pop(outcome.key)
                started = time.time() - outcome.seconds
                if outcome.kind == OK:
                    staging, degraded, llm_failover = outcome.result
                    finish(item, claim, "ok", None, started, Path(staging), degraded, llm_failover)
                elif outcome.kind == TIMEOUT:
                    finish(item, claim, "timeout", f"no result after {outcome.seconds:.0f} s (item limit "
                           f"{limit.describe()}; --item-timeout): its worker was ended", started, None)
                elif outcome.kind == DIED:
                    attempts[item.item_id] += 1
                    _log(task_index, f"worker died on {item.pdf} [{item.page_label()}]: {outcome.died_reason()}")
                    if attempts[item.item_id] < MAX_ATTEMPTS_AFTER_CRASH:
                        board.release(claim)
                        candidates.appendleft(item)
                    else:
                        finish(item, claim, "failed", outcome.died_reason(), started, None)
                else:
                    error = outcome.error
                    if isinstance(error, MemoryError):
                        reason = f"out of memory (worker memory limit {record.worker_memory})"
                    elif isinstance(error, (EngineError, EngineUnavailable)):
                        reason = str(error)
                    else:  # anything else is this item's failure, not the task's
                        reason = one_line(error, with_type=True)
                    finish(item, claim, "failed", reason, started, None)
                    if isinstance(error, OutputUnwritable) and error.storage_full:
                        storage_errors.append(f"storage full: {error}")
                        _log(task_index, "taking no more items: the output storage is full")
                        draining.append(storage_errors[-1])
    except TaskStopped as stop:
        _log(task_index, f"stopped by {stop}: giving back {len(inflight)} claimed items")
        pool.close(grace_s=5)
        board.release_all()
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        board.stop_heartbeat()
        pool.close()
        server.close()

    if pool.replaced:
        _log(task_index, f"{pool.replaced} workers were replaced (timed out, died or ran out of memory)")
    result = TaskResult(task=task_index, ok=counts["ok"], failed=sum(counts[s] for s in FAILURE_STATUSES),
                        stolen=counts["stolen"], seconds=round(time.time() - start, 3))
    _log(task_index, f"done: {result}")
    if storage_errors:  # exit non-zero: the run is not complete, and the scheduler should say so
        raise RuntimeError(f"task {task_index} stopped early: {storage_errors[0]}; free space, then: "
                           f"hpcmarker retry {record.run_id}")
    return result


def _prepare(record: RunRecord, paths: RunPaths, task_index: int, options: dict, host: str, workers: int,
             helpers: ExitStack) -> None:
    """Before any item: the engine can run here, and the LLM service (if any) answers; `options` gains it."""
    try:
        check_engine(record.engine, EngineOptions.from_json(options))
    except EngineUnavailable as exc:
        raise RuntimeError(f"engine {record.engine!r} cannot run on {host}: {exc}") from None
    if record.llm:
        options["llm"] = _llm_options(record, paths, task_index, workers, helpers)


def _llm_options(record: RunRecord, paths: RunPaths, task_index: int, workers: int, helpers: ExitStack) -> dict:
    """Wait for a replica of the LLM service; with several, start the task's relay to them (failover);
    the workers' LLM settings, with the run's concurrency budget."""
    from hpc_marker.llm.budget import plan_budget
    from hpc_marker.llm.client import ServiceUnavailable, wait_for_service
    from hpc_marker.llm.replicas import task_relay

    llm, log = record.llm or {}, (lambda line: _log(task_index, line))
    replicas = int(llm.get("replicas", 1))
    log(f"waiting up to {llm['wait_timeout_s']:g}s for the LLM service"
        + (f" (any of {replicas} replicas)" if replicas > 1 else ""))
    try:
        endpoint = wait_for_service(paths.root, timeout_s=llm["wait_timeout_s"], replicas=replicas)
    except ServiceUnavailable as exc:
        log(f"giving up: {exc}")
        raise RuntimeError(str(exc)) from None
    log(f"LLM service answers at {endpoint.url} ({endpoint.server} replica {endpoint.replica}, model {endpoint.model})")
    budget = plan_budget(llm["parallel"], replicas, record.tasks, workers, llm["request_timeout_s"],
                         per_worker=llm.get("concurrency"))
    log(f"LLM budget: {budget.describe()}")
    if replicas > 1:  # the relay's own limit must not cut a request that only waits at a replica's front
        endpoint = helpers.enter_context(task_relay(paths.root, replicas, task_index, endpoint.server, endpoint.model,
                                                    budget.timeout_s + 60, log=log))
    return {"url": endpoint.url, "model": endpoint.model, "secret": endpoint.secret, "server": endpoint.server,
            "task": str(task_index), "max_concurrency": budget.max_concurrency, "timeout_s": budget.timeout_s,
            "max_retries": budget.max_retries}


if __name__ == "__main__":  # debugging aid: python -m hpc_marker.runtime.task RUN_DIR INDEX
    print(run_task(sys.argv[1], int(sys.argv[2])))
