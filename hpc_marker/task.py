"""Run task: what one array task does.

The task caps threads to its CPU share and starts `workers_per_gpu` worker processes. It then
claims items (its own share first, then, with stealing, other tasks' unfinished items), converts
them, commits each one exactly once (claims.py), and renames the output into place. Finally it
appends one manifest line per item. A PDF that fails is recorded and the task goes on; a worker
that dies is replaced. SIGTERM (scancel, preemption) stops the task at once and gives its claims
back. USR2 (time limit near) lets the items in flight finish and takes no new ones.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

from .claims import Claim, ClaimBoard
from .engines import EngineError, EngineOptions, EngineUnavailable, check_engine
from .finish import final_dir, merge_if_complete, place_committed
from .manifest import ManifestRecord, append_record
from .output import document_stem
from .plan import Plan, WorkItem, claim_order, items_by_document
from .runs import RunPaths
from .threads import cap_threads, task_cpus, threads_per_worker
from .worker import convert_to_staging, init_worker

MAX_ATTEMPTS_AFTER_CRASH = 2
WORKER_DIED = "worker process died while converting it (crashed or killed, often out of memory)"


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def run_task(run_dir: str, task_index: int) -> TaskResult:
    """Entry point of one array task (called through submitit, or directly)."""
    paths = RunPaths(Path(run_dir))
    record = paths.load_record()
    plan = Plan.load(paths.plan)
    docs = items_by_document(plan)
    own_ids = {item.item_id for item in plan.tasks[task_index].items}
    manifest = paths.task_manifest(task_index)
    candidates = deque(claim_order(plan, task_index, steal=record.steal))

    cpus = task_cpus()
    workers = max(1, min(record.workers_per_gpu, len(candidates)))
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

    def finish(item: WorkItem, claim: Claim, status: str, error: str | None, started: float,
               staging: Path | None, degraded: str | None = None) -> None:
        final = final_dir(paths, record, item)
        output = str(final / f"{document_stem(item.pdf)}.md") if staging else None
        finished = time.time()
        entry = ManifestRecord(item_id=item.item_id, pdf=item.pdf, page_start=item.page_start,
                               page_stop=item.page_stop, pages=item.pages, status=status, error=error,
                               seconds=round(finished - started, 3), output=output, started=started,
                               finished=finished, degraded=degraded, **context)
        if not board.commit(claim, dict(asdict(entry), staging=str(staging) if staging else None)):
            _log(task_index, f"lost    {item.pdf} [{item.page_label()}]: another task finished it")
            if staging:
                shutil.rmtree(staging, ignore_errors=True)
            return
        if staging:
            place_committed(staging, final)
        append_record(manifest, entry)
        counts[status] += 1
        counts["stolen"] += item.item_id not in own_ids
        _log(task_index, f"{status:7} {item.pdf} [{item.page_label()}] {finished - started:.2f}s"
             + (f" -- {error}" if error else "") + (f" (LLM degraded: {degraded})" if degraded else ""))
        if item.is_part and status == "ok":
            merged = merge_if_complete(paths, record, docs[item.doc_id], board)
            if merged:
                _log(task_index, f"merged  {item.pdf} ({item.parts} parts)")

    start = time.time()
    try:
        check_engine(record.engine, EngineOptions.from_json(options))
    except EngineUnavailable as exc:
        raise RuntimeError(f"engine {record.engine!r} cannot run on {host}: {exc}") from None
    if record.llm:
        from .llm.client import ServiceUnavailable, wait_for_service

        _log(task_index, f"waiting up to {record.llm['wait_timeout_s']:g}s for the LLM service")
        try:
            endpoint = wait_for_service(paths.root, timeout_s=record.llm["wait_timeout_s"])
        except ServiceUnavailable as exc:
            _log(task_index, f"giving up: {exc}")
            raise RuntimeError(str(exc)) from None
        _log(task_index, f"LLM service answers at {endpoint.url} (model {endpoint.model})")
        options["llm"] = {"url": endpoint.url, "model": endpoint.model, "secret": endpoint.secret,
                          "task": str(task_index), "concurrency": record.llm["concurrency"],
                          "timeout_s": record.llm["request_timeout_s"]}

    draining = []  # USR2: finish what is in flight, take nothing new
    signal.signal(signal.SIGTERM, _raise_stopped)  # submitit bypasses SIGTERM; a cancelled task must stop
    signal.signal(signal.SIGUSR2, lambda *_: draining.append(True))
    ctx = multiprocessing.get_context("spawn")

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                                   initargs=(record.engine, options, threads))

    attempts: Counter[str] = Counter()
    inflight: dict[Future, tuple[WorkItem, Claim, float]] = {}
    board.start_heartbeat()
    pool = new_pool()
    try:
        while True:
            held_back: list[WorkItem] = []  # claimed by a live task: look again later
            while candidates and len(inflight) < workers and not draining:
                item = candidates.popleft()
                claim = board.try_claim(item.item_id)
                if claim is None:
                    if not board.is_done(item.item_id):
                        held_back.append(item)
                    continue
                if item.scan_error:
                    finish(item, claim, "failed", item.scan_error, time.time(), None)
                    continue
                future = pool.submit(convert_to_staging, str(Path(record.pdfs_root) / item.pdf), item.page_start,
                                     item.page_stop, str(paths.staging), f"{item.item_id}-g{claim.generation}",
                                     document_stem(item.pdf))
                inflight[future] = (item, claim, time.time())
            candidates.extend(held_back)
            if not inflight:
                if draining or not candidates:
                    break
                time.sleep(min(2.0, record.lease_seconds / 4))  # others hold the rest: wait for them or their leases
                continue
            finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                item, claim, started = inflight.pop(future)
                try:
                    staging, degraded = future.result()
                    finish(item, claim, "ok", None, started, Path(staging), degraded)
                except (EngineError, EngineUnavailable) as exc:
                    finish(item, claim, "failed", str(exc), started, None)
                except BrokenProcessPool:
                    broken = True
                    attempts[item.item_id] += 1
                    if attempts[item.item_id] < MAX_ATTEMPTS_AFTER_CRASH and workers > 1:
                        board.release(claim)
                        candidates.appendleft(item)
                    else:
                        finish(item, claim, "failed", WORKER_DIED, started, None)
                except Exception as exc:  # anything else is this item's failure, not the task's
                    finish(item, claim, "failed", _first_line(exc), started, None)
            if broken:
                for item, claim, _started in inflight.values():
                    board.release(claim)
                    candidates.appendleft(item)
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    except TaskStopped as stop:
        _log(task_index, f"stopped by {stop}: giving back {len(inflight)} claimed items")
        _stop_workers(pool)
        board.release_all()
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        board.stop_heartbeat()
        pool.shutdown(wait=True, cancel_futures=True)

    result = TaskResult(task=task_index, ok=counts["ok"], failed=counts["failed"], stolen=counts["stolen"],
                        seconds=round(time.time() - start, 3))
    _log(task_index, f"done: {result}")
    return result


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public accessor
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)


if __name__ == "__main__":  # debugging aid: python -m hpc_marker.task RUN_DIR INDEX
    print(run_task(sys.argv[1], int(sys.argv[2])))
