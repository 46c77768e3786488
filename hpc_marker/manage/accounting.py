"""Accounting: where a run's GPU-hours went, per conversion task and in total, and what they cost.

Each job a conversion task ran as (its current one, the ones `resume` and next rounds replaced, and each time
Slurm requeued one: `sacct -D`) held an allocation for `elapsed × GPUs` (the quantity Slurm accounts: ElapsedRaw
× AllocTRES gres/gpu); each is accounted (a row of `gpu_tasks`). That time is cut into, adding up to it exactly:

  startup     job start → its first item started (environment, models, inference server), less the LLM wait
              (an item starts once its worker has loaded: runtime/workpool.py)
  converting  items in flight (the union of its items' intervals), less the LLM wait
  llm_wait    waiting on the LLM service: for it to answer at start (the task's stop record), and within items
              (each commit line's seconds its worker waited on the LLM, as a share of the items' time)
  draining    the gaps between its items (claiming, placing outputs, a replaced worker's load), and the tail of a
              task that stopped early (time limit, cancelled, an error, requeued)
  idle        its share done, nothing left to steal, still holding the GPU: last commit → job end

Queue wait (submit → start) is no GPU time and is reported apart. The scheduler's clock comes from the run's
executor (the same sacct query that `status` asks the states with: `Observation.clocks`; finished jobs kept in
the run folder); where it keeps none (the local executor) the task's own clock stands for it (its stop record,
else its heartbeat; its current job only): elapsed × 1 GPU, said as the source `local clock`. `account_task`,
`task_clocks` and `run_totals` are pure; `run_accounting` gathers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from hpc_marker.manage.settled import Settled
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import DONE, LLM_SERVICE, RUNNING, TaskStop
from hpc_marker.util.errors import Refused

if TYPE_CHECKING:
    import pandas as pd

    from hpc_marker.slurm.parse import JobClock

logger = logging.getLogger(__name__)

COMPONENTS = ("startup", "converting", "llm_wait", "draining", "idle")
SACCT, LOCAL = "sacct", "local clock"
STARTUP_ADVICE, LLM_ADVICE, IDLE_ADVICE = 0.20, 0.20, 0.10  # shares of the GPU time past which status advises


@dataclass(frozen=True)
class TaskClock:
    """What one task's clocks say: its allocation (scheduler's or its own) and its items' times."""

    task: int
    job_id: str
    start: float
    end: float  # now, while it runs
    gpus: int
    source: str  # SACCT or LOCAL
    running: bool = False
    submit: float | None = None
    first_started: float | None = None  # its first item's start (None: it converted nothing)
    last_finished: float | None = None
    busy: float = 0.0  # seconds with an item in flight
    llm_wait: float = 0.0  # of `busy`: waiting on the LLM service
    stopped_early: bool = False  # time limit, cancelled, an error, requeued: its tail is draining, not idle
    service_wait: float = 0.0  # before its first item: waiting for the LLM service to answer


@dataclass(frozen=True)
class TaskAccount:
    """One task's allocation and its parts, in seconds of wall time (GPU-seconds: × gpus)."""

    task: int
    job_id: str
    source: str
    gpus: int
    start: float
    queue_wait: float
    elapsed: float
    startup: float
    converting: float
    llm_wait: float
    draining: float
    idle: float


def account_task(clock: TaskClock) -> TaskAccount:
    """The task's allocation cut into COMPONENTS (they add up to `elapsed`). Pure."""
    elapsed = max(0.0, clock.end - clock.start)
    queue_wait = max(0.0, clock.start - clock.submit) if clock.submit is not None else 0.0
    parts = dict.fromkeys(COMPONENTS, 0.0)
    if clock.first_started is None:  # nothing converted (yet): all of it went to starting up
        parts["llm_wait"] = min(clock.service_wait, elapsed)
        parts["startup"] = elapsed - parts["llm_wait"]
    else:
        first = min(max(clock.first_started, clock.start), clock.end)
        last = min(max(clock.last_finished or first, first), clock.end)
        busy = min(clock.busy, last - first)
        llm, waited = min(clock.llm_wait, busy), min(clock.service_wait, first - clock.start)
        tail = clock.end - last
        parts.update(
            startup=first - clock.start - waited,
            converting=busy - llm,
            llm_wait=llm + waited,
            draining=last - first - busy,
        )
        if clock.running:
            parts["converting"] += tail  # items in flight since its last commit
        elif clock.stopped_early:
            parts["draining"] += tail
        else:
            parts["idle"] = tail
    return TaskAccount(
        clock.task,
        clock.job_id,
        clock.source,
        clock.gpus,
        clock.start,
        queue_wait,
        elapsed,
        **{k: round(v, 3) for k, v in parts.items()},
    )


def _wall(accounts: list[TaskAccount]) -> float | None:
    """First task start to last task end (what `estimate` predicts as its wall_seconds)."""
    return round(max(a.start + a.elapsed for a in accounts) - min(a.start for a in accounts), 1) if accounts else None


def _per_gpu_hour(count: int, gpu_hours: float) -> float | None:
    return round(count / gpu_hours, 1) if gpu_hours > 0 else None


def run_totals(
    accounts: list[TaskAccount],
    pages: int,
    documents: int,
    llm_gpu_seconds: float | None = None,
    price: float | None = None,
) -> dict:
    """The run's totals (status --json's and summary.json's top-level keys) from its tasks' accounts. Pure."""
    allocated = sum(a.elapsed * a.gpus for a in accounts)
    gpu_hours = allocated / 3600
    parts = {name: sum(getattr(a, name) * a.gpus for a in accounts) / 3600 for name in COMPONENTS}
    llm_hours = llm_gpu_seconds / 3600 if llm_gpu_seconds is not None else None
    cost = (gpu_hours + (llm_hours or 0.0)) * price if price is not None else None
    sources = sorted({a.source for a in accounts})
    return {
        "gpu_hours": round(gpu_hours, 4),
        "gpu_efficiency": round(parts["converting"] / allocated * 3600, 3) if allocated else None,
        "pages_per_gpu_hour": _per_gpu_hour(pages, gpu_hours),
        "documents_per_gpu_hour": _per_gpu_hour(documents, gpu_hours),
        "llm_gpu_hours": round(llm_hours, 4) if llm_hours is not None else None,
        "gpu_hour_price": price,
        "cost": round(cost, 4) if cost is not None else None,
        "cost_per_million_pages": round(cost / pages * 1e6, 2) if cost is not None and pages else None,
        "gpu_time": {name: round(hours, 4) for name, hours in parts.items()},
        "queue_wait_hours": round(sum(a.queue_wait for a in accounts) / 3600, 4),
        "allocation_wall_seconds": _wall(accounts),
        "gpu_accounting_source": " and ".join(sources) if sources else None,
    }


def advice(totals: dict) -> list[str]:
    """One line per figure past its threshold, each naming the option to change. Pure."""
    gpu_hours = totals.get("gpu_hours") or 0.0
    if not gpu_hours:
        return []
    share = {name: hours / gpu_hours for name, hours in totals["gpu_time"].items()}
    lines = []
    if share["startup"] > STARTUP_ADVICE:
        lines.append(
            f"start-up took {share['startup']:.0%} of the GPU time: fewer, longer tasks load the models fewer "
            "times (a smaller --gpus, or a larger --min-task-pages)"
        )
    if share["llm_wait"] > LLM_ADVICE:
        lines.append(
            f"tasks waited on the LLM service for {share['llm_wait']:.0%} of the GPU time: more --llm-replicas, "
            "or a larger --llm-parallel"
        )
    if share["idle"] > IDLE_ADVICE:
        lines.append(
            f"GPUs sat idle at the end for {share['idle']:.0%} of the GPU time (tasks done, nothing left to steal): "
            "a smaller --split-pages keeps the last items short (with --steal), or fewer --gpus"
        )
    return lines


def _hours(hours: float) -> str:
    return f"{hours:,.2f}" if hours >= 1 else f"{hours:.2g}"


def cost_lines(totals: dict) -> list[str]:
    """The human status's line of GPU-hours (and its advice), from `run_totals`' dict. Pure."""
    if totals.get("gpu_hours") is None or not totals.get("gpu_accounting_source"):  # no task has started
        return []
    line = f"GPU: {_hours(totals['gpu_hours'])} GPU-hours ({totals['gpu_accounting_source']})"
    if totals["gpu_efficiency"] is not None:
        line += f", {totals['gpu_efficiency']:.0%} converting"
    if totals["pages_per_gpu_hour"] is not None:
        line += f", {totals['pages_per_gpu_hour']:,.0f} pages/GPU-hour"
    if totals.get("llm_gpu_hours"):
        line += f"; LLM service {_hours(totals['llm_gpu_hours'])} GPU-hours"
    if totals.get("cost") is not None:
        line += f"; cost {totals['cost']:,.2f}"
        if totals.get("cost_per_million_pages") is not None:
            line += f" ({totals['cost_per_million_pages']:,.2f} per 10^6 pages)"
    return [line, *(f"advice: {text}" for text in totals.get("gpu_advice", []))]


def _item_times(commits: pd.DataFrame | None, start: float, end: float, running: bool) -> dict:
    """TaskClock's item fields from the task's commit lines of one allocation (items it started in it): first
    start, last finish, the time an item was in flight, and the share of that spent waiting on the LLM. Pure."""
    if commits is None or not len(commits):
        return {}
    from hpc_marker.runstate.progress import REOPENED
    from hpc_marker.util.frames import busy_seconds

    own = commits[(commits["status"] != REOPENED) & (commits["started"] >= start - 1.0)]
    if not running:
        own = own[own["started"] <= end]
    if not len(own):
        return {}
    busy = busy_seconds(own["started"], own["finished"], idle_gap_s=0.0)
    spans = float((own["finished"] - own["started"]).sum())
    waited = float(own["llm_s"].sum()) if "llm_s" in own else 0.0  # summed over its workers, as are the spans
    return dict(
        first_started=float(own["started"].min()),
        last_finished=float(own["finished"].max()),
        busy=busy,
        llm_wait=busy * min(1.0, waited / spans) if spans > 0 else 0.0,
    )


def task_clock(
    task: int,
    job_id: str,
    scheduler: JobClock | None,
    stop: TaskStop | None,
    commits: pd.DataFrame | None,
    now: float,
    heartbeat: float | None = None,
    over: bool = False,
) -> TaskClock | None:
    """One allocation's clocks: the scheduler's where it has one (`over`: an earlier run of a requeued job),
    else the task's own (its stop record; its heartbeat's time while it says `running`); None for a task that
    has not started. The stop record counts where it was written in this allocation. Pure."""
    if scheduler is not None and scheduler.start is not None:
        running = not over and not scheduler.finished
        end = (scheduler.end or scheduler.start + scheduler.elapsed) if not running else now
        start, gpus, source = scheduler.start, scheduler.gpus or 1, SACCT
        if stop is not None and not start - 1.0 <= stop.started <= end:
            stop = None  # another allocation's record
    elif stop is not None:
        running = stop.cause == RUNNING
        start, end, gpus, source = stop.started, stop.stopped or heartbeat or now, 1, LOCAL
    else:
        return None
    end = max(start, end or now)
    if stop is not None:
        early = stop.cause not in (RUNNING, DONE)
        waited = end - start if stop.cause == LLM_SERVICE else stop.llm_wait  # gave up waiting: all of it
    else:
        early, waited = scheduler is not None and not running and scheduler.state != "COMPLETED", 0.0
    return TaskClock(
        task,
        job_id,
        start,
        end,
        gpus,
        source,
        running=running,
        submit=scheduler.submit if scheduler is not None else None,
        stopped_early=early,
        service_wait=waited,
        **_item_times(commits, start, end, running),
    )


def task_clocks(
    task: int,
    jobs: list[str],
    clocks: dict[str, tuple[JobClock, ...]],
    stop: TaskStop | None,
    commits: pd.DataFrame | None,
    now: float,
    heartbeat: float | None = None,
) -> list[TaskClock]:
    """Every allocation of the task's jobs (oldest first) that started, by the scheduler's clocks; where it has
    none for any of them, the task's own clock of its current job. Pure."""
    runs = [(jid, run) for jid in jobs for run in clocks.get(jid, ()) if run.start is not None]
    if not runs:
        own = task_clock(task, jobs[-1], None, stop, commits, now, heartbeat) if jobs else None
        return [own] if own is not None else []
    last = len(runs) - 1
    return [
        clock
        for n, (jid, run) in enumerate(runs)
        if (clock := task_clock(task, jid, run, stop, commits, now, heartbeat, over=n < last)) is not None
    ]


def run_accounting(
    paths: RunPaths,
    record: RunRecord,
    pages: int,
    documents: int,
    price: float | None = None,
    clocks: dict[str, tuple[JobClock, ...]] | None = None,
    settled: Settled | None = None,
) -> dict:
    """The run's GPU accounting (`run_totals`, its advice and each allocation's account), from the executor's
    clocks (`clocks`, where `status` asked them with the states; else one scheduler query at most), the tasks'
    stop records, heartbeats (`settled`'s, where the collector read them already) and commit logs."""
    from hpc_marker.executors import executor_for
    from hpc_marker.executors.base import task_jobs
    from hpc_marker.runstate.progress import commits_by_task, read_heartbeats
    from hpc_marker.runstate.stops import read_stops

    now = time.time()
    if clocks is None:
        try:
            clocks = executor_for(record.executor).clocks(paths, record)
        except Refused as exc:  # the scheduler's accounting did not answer: the tasks' own clocks stand for it
            logger.warning(f"no scheduler accounting ({exc}); GPU time from the tasks' own clocks")
            clocks = {}
    if settled is not None:
        stops, updated = settled.stops, settled.updated
    else:
        stops = read_stops(paths.progress)
        updated = {task: beat.updated for task, beat in read_heartbeats(paths.progress).items()}
    commits = commits_by_task(paths.progress, ["status", "started", "finished", "llm_s"])  # what _item_times reads
    accounts = []
    for task, jobs in sorted(task_jobs(record).items()):
        for clock in task_clocks(task, jobs, clocks, stops.get(task), commits.get(task), now, updated.get(task)):
            accounts.append(account_task(clock))
    service = [run for jid in record.jobs.get("service", []) for run in clocks.get(jid, ())]
    llm_seconds = sum(c.elapsed * c.gpus for c in service) if service else (0.0 if not record.llm else None)
    totals = run_totals(accounts, pages, documents, llm_seconds, price if price is not None else profile_price(record))
    totals["gpu_advice"] = advice(totals)
    totals["gpu_tasks"] = [asdict(a) for a in accounts]
    return totals


def profile_price(record: RunRecord) -> float | None:
    """The run's profile's `gpu_hour_price`, if it sets one (and the profile is still configured)."""
    from hpc_marker.planning.rates import configured_price

    return configured_price(record.profile)


def account_status(paths: RunPaths, status, price: float | None = None) -> dict:
    """`run_accounting` for `status` (a manage.status.RunStatus): pages done, and documents done (summary.json's
    once collected, else the items finished ok or partial)."""
    documents = status.ok + status.partial
    record = paths.load_record()
    if paths.summary.exists():
        import json

        summary = json.loads(paths.summary.read_text(encoding="utf-8"))
        documents = summary.get("documents_ok", documents)
        if isinstance(summary.get("gpu_tasks"), list):  # collected: the tasks' accounts as the collector made them
            accounts = [TaskAccount(**account) for account in summary["gpu_tasks"]]  # no per-task file read
            llm = summary["llm_gpu_hours"] * 3600 if summary.get("llm_gpu_hours") is not None else None
            totals = run_totals(
                accounts, status.pages_done, documents, llm, price if price is not None else profile_price(record)
            )
            return dict(totals, gpu_advice=advice(totals), gpu_tasks=summary["gpu_tasks"])
    return run_accounting(paths, record, status.pages_done, documents, price, status.clocks)


def collected_accounting(paths: RunPaths, record: RunRecord, summary: dict) -> dict:
    """summary.json's accounting (the collector's one call), and the run's rate recorded for `estimate`
    (planning/rates.py) when it converted pages."""
    from hpc_marker.planning.rates import Rate, rate_key, record_rate

    pages, documents = summary.get("pages_ok", 0), summary.get("documents_ok", 0)
    totals = run_accounting(paths, record, pages, documents, settled=Settled.from_summary(summary))
    gpu_seconds = totals["gpu_hours"] * 3600
    if summary.get("pages_ok") and gpu_seconds > 0:
        key = rate_key(record.engine, record.engine_options.to_json(), record.llm.model if record.llm else None)
        sample = Rate(
            key,
            summary["pages_ok"],
            gpu_seconds,
            totals["gpu_time"]["startup"] * 3600,
            totals["gpu_time"]["idle"] * 3600,
            len({row["task"] for row in totals["gpu_tasks"]}),
        )
        rate = record_rate(sample)
        logger.info(f"rate recorded for estimate: {rate.pages_per_gpu_second:.3g} pages/GPU-second ({key})")
    return totals
