"""Task start: what a task decides and checks before its first item.

`TaskSetup.for_task`: the task's share of the plan (none for a task `hpcmarker grow` added), its CPUs, workers
and threads (sizing.py, threads.py), the workers' engine options and the context each of its records carries.
`prepare`: the engine can run on this node and the LLM service (if the run has one) answers; the workers'
options gain its settings (and the task's relay, with several replicas) and the task's share of the LLM budget
(`task_budget`: a grown task's counts the tasks that exist as it starts). `start_servers`: after the task's
start-up jitter (`jitter_delay`: a delay below --start-jitter, fixed per task, so that many tasks starting at once
do not load their weights in the same second), the task's MPS daemon and marker 2.x's inference server, before any
worker is spawned. `CannotStart` says why a task cannot convert anything here.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpc_marker.config.types import parse_start_jitter
from hpc_marker.engines import (
    EngineUnavailable,
    check_engine,
    check_node,
    output_settings,
)
from hpc_marker.planning.plan import TaskPlan
from hpc_marker.planning.store import ShareSummary, load_share, load_summary
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.progress import read_grown
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import INFERENCE, LLM_SERVICE, LLM_UNFIT, engine_stop
from hpc_marker.runtime.inference import InferenceServerFailed, InferenceSettings, task_inference_server
from hpc_marker.runtime.mps import task_mps
from hpc_marker.runtime.sizing import choose_workers
from hpc_marker.runtime.threads import cap_threads, task_cpus, threads_per_worker
from hpc_marker.util.jobrun import job_id
from hpc_marker.util.text import one_line

if TYPE_CHECKING:
    from hpc_marker.llm.budget import Budget
    from hpc_marker.llm.client import LlmAccess

logger = logging.getLogger(__name__)


class CannotStart(Exception):
    """The task cannot convert anything here: `cause` (runstate/stops.py) and a one-line reason."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def current_job_id() -> str:
    """This job's id as the scheduler knows it ('123_4' for an array task; a local job's pid), as the job runner
    (util/jobrun.py) set it, else from Slurm's environment; `local-<pid>` outside any job (a task run by hand)."""
    return job_id() or f"local-{os.getpid()}"


@dataclass(frozen=True)
class TaskSetup:
    """What a task decided before its first item."""

    index: int
    summaries: list[ShareSummary]  # every task's share of the plan, in short
    own: TaskPlan  # this task's share
    cpus: int
    workers: int
    threads: int  # per worker
    options: dict  # the workers' engine options: the run's, with their threads and the outputs' settings
    context: dict  # engine, host, gpu, job_id, task: the same on every record of this task

    @property
    def host(self) -> str:
        return self.context["host"]

    @classmethod
    def for_task(cls, paths: RunPaths, record: RunRecord, index: int) -> TaskSetup:
        """Task `index`'s share, workers and threads (its threads are capped now, before any engine loads)."""
        summaries = load_summary(paths.plan)
        grown = index >= len(summaries)  # added by `hpcmarker grow`: no share, it steals its items
        own = TaskPlan(index) if grown else load_share(paths.plan, summaries[index])
        cpus = task_cpus()
        workers = choose_workers(record.workers_per_gpu or None, record.engine, cpus)  # 0: auto
        workers = max(1, min(workers, max(record.items if grown else len(own.items), 1)))
        threads = threads_per_worker(cpus, workers)
        cap_threads(threads)
        options = dict(
            record.engine_options.to_json(),
            threads=threads,  # what the workers get; the settings go in each output
            quality=record.quality.to_json() if record.quality else None,  # the output flags' thresholds (quality/)
            output_settings=output_settings(record.engine, record.engine_options, record.llm),
        )
        context = dict(
            engine=record.engine,
            host=socket.gethostname(),
            gpu=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            job_id=current_job_id(),
            task=index,
        )
        return cls(index, summaries, own, cpus, workers, threads, options, context)

    def describe(self, batches: int, steal: bool) -> str:
        """The task log's first line about it."""
        return (
            f"{len(self.own.items)} own items in {batches} batches, stealing {'on' if steal else 'off'}; "
            f"{self.cpus} CPUs, {self.workers} workers x {self.threads} threads, "
            f"CUDA_VISIBLE_DEVICES={self.context['gpu'] or '(none)'}"
        )


def prepare(record: RunRecord, paths: RunPaths, setup: TaskSetup, helpers: ExitStack) -> dict:
    """Before any item: the engine can run here, and the LLM service (if any) answers. The workers' options
    (with the LLM's settings); what it starts (the LLM relay) goes on `helpers`. CannotStart says why not."""
    options = dict(setup.options)
    engine_options, mode = record.engine_options, record.inference.mode if record.inference else "off"
    try:  # check_node: caches, binaries, before any worker or server starts (a server of its own: its weights only)
        check_engine(record.engine, engine_options)
        check_node(record.engine, engine_options, server=mode != "off" and not os.environ.get("SURYA_INFERENCE_URL"))
    except EngineUnavailable as exc:
        logger.error("giving up: engine %r cannot run here: %s", record.engine, one_line(exc))
        raise CannotStart(*engine_stop(record.engine, setup.host, exc)) from None
    if record.llm:
        options["llm"] = _llm_options(record, paths, setup, helpers)
    return options


def _llm_options(record: RunRecord, paths: RunPaths, setup: TaskSetup, helpers: ExitStack) -> LlmAccess:
    """Wait for a replica of the LLM service; with several, start the task's relay to them (failover);
    the workers' LLM settings, with the run's concurrency budget."""
    from hpc_marker.llm.client import LlmAccess, ServiceUnavailable, ServiceUnfit, wait_for_service
    from hpc_marker.llm.replicas import task_relay

    llm = record.llm
    assert llm is not None  # prepare asks only for a run with an LLM service
    replicas = llm.replicas
    logger.info(
        "waiting up to %gs for the LLM service%s",
        llm.wait_timeout_s,
        f" (any of {replicas} replicas)" if replicas > 1 else "",
    )
    started = time.monotonic()
    try:
        endpoint = wait_for_service(paths.root, timeout_s=llm.wait_timeout_s, replicas=replicas)
    except ServiceUnavailable as exc:
        logger.error("giving up: %s", exc)
        raise CannotStart(LLM_SERVICE, str(exc)) from None
    except ServiceUnfit as exc:  # the service's capability check failed: no other round can cure it (manage/rounds)
        logger.error("giving up: %s", exc)
        raise CannotStart(LLM_UNFIT, str(exc)) from None
    logger.info(
        "LLM service answers at %s (%s replica %s, model %s)",
        endpoint.url,
        endpoint.server,
        endpoint.replica,
        endpoint.model,
    )
    budget = task_budget(record, paths, setup)
    logger.info("LLM budget: %s", budget.describe())
    if replicas > 1:  # the relay's own limit must not cut a request that only waits at a replica's front
        endpoint = helpers.enter_context(
            task_relay(
                paths.root,
                replicas,
                setup.index,
                endpoint.server,
                endpoint.model,
                budget.timeout_s + 60,
            )
        )
    return LlmAccess(
        endpoint,
        task=str(setup.index),
        max_concurrency=budget.max_concurrency,
        timeout_s=budget.timeout_s,
        max_retries=budget.max_retries,
        waited_s=round(time.monotonic() - started, 3),
    )


def task_budget(record: RunRecord, paths: RunPaths, setup: TaskSetup) -> Budget:
    """This task's share of the run's LLM concurrency budget (llm/budget.py), from the tasks that exist as it
    starts: a task `grow` added takes what the plan's tasks leave (every task in progress/grown.txt counts); a
    task of the plan counts the grown tasks of the round as run.json lists them."""
    from hpc_marker.llm.budget import grown_budget, plan_budget

    llm = record.llm
    assert llm is not None
    shape = (llm.parallel, llm.replicas)
    limits = dict(per_worker=llm.concurrency, max_running=record.max_running)
    if setup.index >= len(setup.summaries):  # grown: no share of the plan
        grown = len(set(read_grown(paths.progress)) | {setup.index})
        return grown_budget(*shape, record.tasks, grown, setup.workers, llm.request_timeout_s, **limits)
    grown = len(record.rounds[-1].grown) if record.rounds else 0
    return plan_budget(*shape, record.tasks, setup.workers, llm.request_timeout_s, grown=grown, **limits)


def jitter_delay(run_id: str, index: int, jitter_s: float) -> float:
    """Task `index`'s start-up delay in [0, jitter_s): random, but the same whenever that task of that run starts
    (seeded by both), so a task's log and a rerun agree. Pure."""
    return random.Random(f"{run_id}/task-{index}").random() * jitter_s if jitter_s > 0 else 0.0


def wait_start_jitter(record: RunRecord, index: int) -> float:
    """Sleep this task's start-up delay (--start-jitter, resolved for the run's task count); the seconds slept."""
    jitter_s = parse_start_jitter(record.start_jitter, record.tasks)
    delay = jitter_delay(record.run_id, index, jitter_s)
    if delay > 0:
        logger.info(
            "start-up jitter: waiting %.1f s (--start-jitter %s: below %g s)", delay, record.start_jitter, jitter_s
        )
        time.sleep(delay)
    return delay


def start_servers(record: RunRecord, paths: RunPaths, setup: TaskSetup, helpers: ExitStack) -> None:
    """After the task's start-up jitter, the task's MPS daemon and marker 2.x's inference server (each where the run
    asks for it), on `helpers`, their settings in this process's environment (the workers inherit it). CannotStart:
    no server."""
    wait_start_jitter(record, setup.index)
    os.environ.update(helpers.enter_context(task_mps(record.mps or "off", record.engine, setup.workers)))
    try:
        server = task_inference_server(
            record.inference or InferenceSettings(),
            paths.logs / f"inference-task-{setup.index}.log",
            workers=setup.workers,
        )
        os.environ.update(helpers.enter_context(server))
    except InferenceServerFailed as exc:
        logger.error("giving up: %s", exc)
        raise CannotStart(INFERENCE, str(exc)) from None
