"""Run task: what one array task does with its share of the plan.

The task caps threads to its CPU share, starts `workers_per_gpu` worker processes (each
creates its engine, and so its models, once), converts its items with at most one item per
worker in flight, and appends one manifest line per item. A PDF that fails is recorded and
the task goes on; a worker that dies is replaced. Items already recorded `ok` in this task's
manifest (a requeued task) are not converted again.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from .engines import EngineError, EngineOptions, EngineUnavailable, check_engine, create_engine
from .manifest import ManifestRecord, append_record, read_manifest
from .output import write_document
from .plan import Plan, WorkItem
from .runs import RunPaths
from .threads import cap_threads, task_cpus, threads_per_worker

MAX_ATTEMPTS_AFTER_CRASH = 2


@dataclass
class TaskResult:
    task: int
    ok: int
    failed: int
    skipped: int
    pages: int
    seconds: float


# ---- worker process side -------------------------------------------------------------

_ENGINE = None
_ENGINE_SPEC: tuple[str, dict] | None = None


class TaskStopped(BaseException):
    """SIGTERM (scancel, preemption, a local cancel): stop now, leave the rest for a resume."""


def _raise_stopped(signum: int, _frame) -> None:
    raise TaskStopped(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """Linux: have the kernel SIGTERM this worker when its task process dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_worker(engine_name: str, options: dict, threads: int) -> None:
    _die_with_parent()
    cap_threads(threads)
    global _ENGINE, _ENGINE_SPEC
    _ENGINE = None
    _ENGINE_SPEC = (engine_name, options)


def _convert_in_worker(pdf_path: str, relpath: str, page_start: int, page_stop: int, out_root: str) -> str:
    """Convert one item and write its output; returns the Markdown path."""
    global _ENGINE
    if _ENGINE is None:
        assert _ENGINE_SPEC is not None
        name, options = _ENGINE_SPEC
        _ENGINE = create_engine(name, EngineOptions.from_json(options))
    doc = _ENGINE.convert(Path(pdf_path), range(page_start, page_stop))
    try:
        return str(write_document(Path(out_root), relpath, doc))
    except OSError as exc:
        raise EngineError(f"cannot write output: {exc.strerror} ({exc.filename})") from None


# ---- task side -------------------------------------------------------------------------


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
    task = Plan.load(paths.plan).tasks[task_index]
    manifest = paths.task_manifest(task_index)
    done = {r.item_id for r in read_manifest(manifest).records if r.status == "ok"}
    todo = deque(item for item in task.items if item.item_id not in done)

    cpus = task_cpus()
    workers = max(1, min(record.workers_per_gpu, len(todo)))
    threads = threads_per_worker(cpus, workers)
    cap_threads(threads)
    options = dict(record.engine_options, threads=threads)
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    context = dict(engine=record.engine, host=socket.gethostname(), gpu=gpu, job_id=current_job_id(), task=task_index)
    _log(task_index, f"{len(todo)} items to do ({len(done)} already done), {cpus} CPUs, "
         f"{workers} workers x {threads} threads, CUDA_VISIBLE_DEVICES={gpu or '(none)'}")

    def write(item: WorkItem, status: str, error: str | None, started: float, output: str | None) -> None:
        finished = time.time()
        append_record(manifest, ManifestRecord(
            item_id=item.item_id, pdf=item.pdf, page_start=item.page_start, page_stop=item.page_stop,
            pages=item.pages, status=status, error=error, seconds=round(finished - started, 3),
            output=output, started=started, finished=finished, **context))
        counts[status] += 1
        _log(task_index, f"{status:6} {item.pdf} [{item.page_label()}] {finished - started:.2f}s"
             + (f" -- {error}" if error else ""))

    counts: Counter[str] = Counter()
    start = time.time()
    try:
        check_engine(record.engine, EngineOptions.from_json(options))
    except EngineUnavailable as exc:
        for item in todo:
            write(item, "failed", f"engine unavailable: {exc}", time.time(), None)
        raise RuntimeError(f"engine {record.engine!r} cannot run on {context['host']}: {exc}") from None

    ctx = multiprocessing.get_context("spawn")
    attempts: Counter[str] = Counter()

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(record.engine, options, threads))

    # submitit bypasses SIGTERM (it waits for USR2); a cancelled task must stop instead.
    signal.signal(signal.SIGTERM, _raise_stopped)
    pool = new_pool()
    inflight: dict[Future, tuple[WorkItem, float]] = {}
    try:
        while todo or inflight:
            while todo and len(inflight) < workers:
                item = todo.popleft()
                if item.scan_error:
                    write(item, "failed", item.scan_error, time.time(), None)
                    continue
                pdf_path = str(Path(record.pdfs_root) / item.pdf)
                future = pool.submit(_convert_in_worker, pdf_path, item.pdf, item.page_start,
                                     item.page_stop, record.out_dir)
                inflight[future] = (item, time.time())
            if not inflight:
                continue
            finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                item, started = inflight.pop(future)
                try:
                    write(item, "ok", None, started, future.result())
                except EngineError as exc:
                    write(item, "failed", str(exc), started, None)
                except EngineUnavailable as exc:
                    write(item, "failed", f"engine unavailable: {exc}", started, None)
                    for rest in todo:
                        write(rest, "failed", f"engine unavailable: {exc}", time.time(), None)
                    todo.clear()
                except BrokenProcessPool:
                    broken = True
                    attempts[item.item_id] += 1
                    if attempts[item.item_id] < MAX_ATTEMPTS_AFTER_CRASH and workers > 1:
                        todo.appendleft(item)
                    else:
                        write(item, "failed", "worker process died while converting it "
                              "(crashed or killed, often out of memory)", started, None)
                except Exception as exc:  # anything else is this item's failure, not the task's
                    write(item, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                          started, None)
            if broken:
                for future, (item, _started) in inflight.items():
                    todo.appendleft(item)
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    except TaskStopped as stop:
        _log(task_index, f"stopped by {stop}: {len(todo) + len(inflight)} items left unconverted")
        _stop_workers(pool)
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    result = TaskResult(task=task_index, ok=counts["ok"], failed=counts["failed"], skipped=len(done),
                        pages=sum(i.pages for i in task.items), seconds=round(time.time() - start, 3))
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
