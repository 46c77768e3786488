"""Local: the same run on this machine through submitit's local executor (no Slurm).

Each task is its own process with its own CUDA_VISIBLE_DEVICES (taken from the caller's
CUDA_VISIBLE_DEVICES when set, else 0..N-1; empty with --gpus 0); the collector runs when
the tasks are over. `submit_local` waits for the run, so one command gives Markdown.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import submitit

from hpc_marker.manage.collect import collect_run
from hpc_marker.runstate.record import RunPaths, RunRecord
from hpc_marker.runtime.task import run_task
from hpc_marker.submission.launch import LaunchError, parse_time_limit
from hpc_marker.util.processes import terminate_tree


def local_devices(gpus: int, visible: str | None) -> list[int]:
    """Device index for each GPU slot: the caller's CUDA_VISIBLE_DEVICES, else 0..gpus-1."""
    if gpus < 1:
        return []
    if visible:
        try:
            return [int(x) for x in visible.split(",") if x.strip()]
        except ValueError:
            raise LaunchError(f"CUDA_VISIBLE_DEVICES={visible!r}: local runs need device numbers") from None
    return list(range(gpus))


def submit_local(paths: RunPaths, record: RunRecord, progress: Callable[[RunPaths], None] | None = None,
                 indices: list[int] | None = None) -> dict[str, list[str]]:
    """Run the tasks (all, or `indices`) and then the collector here; returns their job ids."""
    devices = local_devices(record.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    timeout_min = parse_time_limit(record.time_limit)
    service_ids: list[str] = []
    if record.llm:  # the service first; the tasks wait for it to answer
        from hpc_marker.llm.service import serve_llm

        executor = submitit.LocalExecutor(folder=paths.jobs)
        executor.update_parameters(timeout_min=timeout_min, gpus_per_node=0)
        service_ids = [executor.submit(serve_llm, str(paths.root)).job_id]
        record.jobs = dict(record.jobs, service=service_ids)
        paths.save_record(record)
    jobs = []
    for index in indices if indices is not None else range(record.tasks):
        executor = submitit.LocalExecutor(folder=paths.jobs)
        if devices:
            executor.update_parameters(timeout_min=timeout_min, gpus_per_node=1,
                                       visible_gpus=[devices[index % len(devices)]])
        else:
            executor.update_parameters(timeout_min=timeout_min, gpus_per_node=0)
        jobs.append(executor.submit(run_task, str(paths.root), index))
    ids = {"convert": [job.job_id for job in jobs], "collect": []}
    if service_ids:
        ids["service"] = service_ids
    if indices is None:
        record.jobs = ids
        paths.save_record(record)  # so `hpcmarker cancel` can find the processes meanwhile
    try:
        while not all(job.done() for job in jobs):
            if progress:
                progress(paths)
            time.sleep(1.0)
    except KeyboardInterrupt:
        for job_id in [job.job_id for job in jobs] + service_ids:
            terminate_tree(int(job_id))
        raise
    for index, job in zip(indices if indices is not None else range(record.tasks), jobs):
        problem = _job_problem(job)
        if problem:
            print(f"hpcmarker: task {index} failed: {problem}", file=sys.stderr, flush=True)
    collector = submitit.LocalExecutor(folder=paths.jobs)
    collector.update_parameters(timeout_min=30)
    try:
        job = collector.submit(collect_run, str(paths.root))
    except OSError as exc:  # submitit writes the job's pickle into the run folder first
        raise LocalRunFailed(f"cannot start the collector: {exc.strerror} ({exc.filename})") from None
    ids["collect"] = [job.job_id]
    while not job.done():
        time.sleep(0.5)
    problem = _job_problem(job)
    if problem:
        raise LocalRunFailed(f"the collector failed: {problem} (log: {job.paths.stdout})")
    return ids


class LocalRunFailed(Exception):
    """The local collector could not finish (one line; the run folder keeps the details)."""


def _job_problem(job: submitit.Job) -> str | None:
    """The last line of a finished local job's error, or None when it succeeded."""
    try:
        job.result()
    except Exception as exc:  # submitit wraps the job's own exception, or says it left no result
        lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("-")]
        return lines[-1] if lines else type(exc).__name__
    return None
