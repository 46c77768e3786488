"""Status: where a run stands, from its tasks' commit logs and stop records and the scheduler's job states.

Counts come per share (the items planned for each task, whoever converted them): from the
collector's summary.json once the run is collected, else from the tasks' compact commit logs
(runstate/progress.py), never from the JSON manifests, so a run of 10^6 items answers in a second
or two. `status_of` is pure (record, shares, counts, job states, stop records, now) -> RunStatus,
its state and reasons decided by verdict.py; `load_status` gathers those inputs, and notices a
wedged run (a job pending forever with DependencyNeverSatisfied), cancelling what it left queued
when asked; manage/statustable.py draws them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace

from hpc_marker.executors import executor_for
from hpc_marker.executors.base import Observation
from hpc_marker.manage.cancel import mark_cancelled
from hpc_marker.manage.failures import FailedDocument, failed_documents
from hpc_marker.manage.followups import FollowUpRun, unfinished_follow_ups
from hpc_marker.manage.rounds import grown_tasks, last_note, round_count, round_lines, task_rounds
from hpc_marker.manage.settled import Settled
from hpc_marker.manage.tally import RunProgress, ShareCounts, read_progress
from hpc_marker.manage.verdict import ACTIVE_STATES, RunFacts, TaskView, Verdict, verdict
from hpc_marker.planning.store import ShareSummary, load_summary
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.progress import read_heartbeats
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import RUNNING, TaskStop, read_stops
from hpc_marker.util.frames import working_seconds


@dataclass
class TaskStatus:
    task: int
    job_id: str
    state: str
    items: int
    ok: int
    failed: int
    pending: int
    pages: int
    pages_done: int
    activity: str = "-"  # from the task's heartbeat: working, waiting, exited (or - before it started)
    partial: int = 0  # items whose pages all finished, some lost
    round: int = 1  # the last round that ran the task (manage/rounds.py)
    grown: bool = False  # added by `hpcmarker grow`: no share of its own (what it converts counts in the shares')


@dataclass
class RunStatus:
    run_id: str
    run_dir: str
    executor: str
    state: str
    items: int
    ok: int
    failed: int
    pending: int
    pages: int
    pages_done: int
    elapsed_seconds: float | None
    pages_per_second: float | None
    eta_seconds: float | None
    collector: str
    degraded: int = 0  # items whose LLM refinement was partial
    failed_over: int = 0  # items with LLM requests moved to another replica
    partial: int = 0  # items converted but for lost pages (bisected)
    lost_pages: list[str] = field(default_factory=list)
    text_layer: dict = field(default_factory=dict)  # pages flagged empty or garbled, and in how many documents/items
    output_flags: dict = field(default_factory=dict)  # documents (items before collection) with each output flag
    llm: dict | None = None  # service state, requests, tokens/s, failures
    tasks: list[TaskStatus] = field(default_factory=list)
    torn_manifest_lines: list[str] = field(default_factory=list)
    wedged: str | None = None  # one line when a job of the run can never start (see wedge.py)
    headline: str = ""  # the state in one line, with counts and causes (verdict.py)
    reasons: list[str] = field(default_factory=list)  # one line per distinct cause, with its count and fix
    next: str | None = None  # the exact next command, when there is one
    causes: dict[str, list[int]] = field(default_factory=dict)  # why tasks stopped early: cause -> tasks
    rounds: int = 1  # rounds of arrays submitted (manage/rounds.py)
    grown: int = 0  # tasks `hpcmarker grow` added (each TaskStatus says whether it grew)
    round_lines: list[str] = field(default_factory=list)  # from round 2 on: each round and what ended it
    exit_code: int = 0  # what `status` exits with (verdict.py: 0, 3 failed items, 4 incomplete)
    failed_documents: list[FailedDocument] = field(default_factory=list)  # the first few, with reasons (failures.py)
    failed_documents_total: int = 0
    follow_ups: list[FollowUpRun] = field(default_factory=list)  # the --out's unfinished follow-up runs (followups.py)
    cost: dict = field(default_factory=dict)  # GPU-hours and cost (accounting.py): top-level keys of the JSON
    clocks: dict | None = None  # the scheduler's clocks (Observation.clocks), asked with the states: for accounting

    def to_json(self) -> dict:
        data = asdict(replace(self, clocks=None))
        data.pop("clocks")
        return {**data, **data.pop("cost")}


def status_of(
    record: RunRecord,
    shares: list[ShareSummary],
    progress: RunProgress,
    seen: Observation | dict[str, str],
    now: float,
    collected: bool = False,
    activities: dict[int, str] | None = None,
    stops: dict[int, TaskStop] | None = None,
) -> RunStatus:
    """The run's status from its plan, progress, the scheduler's view (an Observation, or just job
    states) and the tasks' stop records. Pure."""
    seen = seen if isinstance(seen, Observation) else Observation(dict(seen))
    states = seen.states
    tasks = task_statuses(record, shares, progress, states, activities or {})
    pages = sum(s.pages for s in shares)
    pages_done = sum(t.pages_done for t in tasks)
    active = any(t.state in ACTIVE_STATES for t in tasks)
    elapsed = working_seconds(
        progress.first_started,
        progress.last_finished,
        progress.busy_seconds,
        now,
        [s.started for s in (stops or {}).values() if s.cause == RUNNING] if active else None,
    )
    rate = pages_done / elapsed if elapsed and pages_done else None
    remaining = pages - pages_done
    collect_ids = record.jobs.get("collect", [])
    collector = states.get(collect_ids[0], "UNKNOWN") if collect_ids else "-"
    items, failed, pending = sum(t.items for t in tasks), sum(t.failed for t in tasks), sum(t.pending for t in tasks)
    judged = _judge(record, tasks, progress, seen, stops or {}, collected, collector)
    return RunStatus(
        run_id=record.run_id,
        run_dir="",
        executor=record.executor,
        state=judged.state,
        items=items,
        ok=sum(t.ok for t in tasks),
        failed=failed,
        pending=pending,
        pages=pages,
        pages_done=pages_done,
        elapsed_seconds=round(elapsed, 1) if elapsed is not None else None,
        pages_per_second=round(rate, 2) if rate else None,
        eta_seconds=round(remaining / rate, 1) if rate and remaining > 0 and active else None,
        collector=collector,
        degraded=sum(c.degraded for c in progress.shares.values()),
        tasks=tasks,
        partial=sum(t.partial for t in tasks),
        lost_pages=list(progress.lost_pages),
        text_layer=dict(progress.text_layer),
        output_flags=dict(progress.output_flags),
        torn_manifest_lines=list(progress.torn_lines),
        wedged=seen.wedged,
        headline=judged.headline,
        reasons=judged.lines(record.run_id),
        next=judged.next,
        causes={r.cause: list(r.tasks) for r in judged.reasons if r.tasks},
        rounds=round_count(record),
        grown=sum(t.grown for t in tasks),
        exit_code=judged.exit_code,
    )


def task_statuses(
    record: RunRecord,
    shares: list[ShareSummary],
    progress: RunProgress,
    states: dict[str, str],
    activities: dict[int, str],
) -> list[TaskStatus]:
    """One TaskStatus per planned task (its job and state, what is finished of its share), then per grown one. Pure."""
    task_ids, rounds = record.jobs.get("convert", []), task_rounds(record)
    tasks = []
    for share in shares:
        done = progress.shares.get(share.index, ShareCounts())
        job_id = task_ids[share.index] if share.index < len(task_ids) else "-"
        tasks.append(
            TaskStatus(
                task=share.index,
                job_id=job_id,
                state=states.get(job_id, "UNKNOWN"),
                items=share.items,
                ok=done.ok,
                failed=done.failed,
                pending=max(0, share.items - done.ok - done.failed - done.partial),
                pages=share.pages,
                pages_done=done.pages_done,
                activity=activities.get(share.index, "-"),
                partial=done.partial,
                round=rounds.get(share.index, 1),
            )
        )
    for index in grown_tasks(record):
        job_id = task_ids[index] if index < len(task_ids) else "-"
        state, activity = states.get(job_id, "UNKNOWN"), activities.get(index, "-")
        tasks.append(TaskStatus(index, job_id, state, 0, 0, 0, 0, 0, 0, activity, round=rounds[index], grown=True))
    return tasks


def _judge(
    record: RunRecord,
    tasks: list[TaskStatus],
    progress: RunProgress,
    seen: Observation,
    stops: dict[int, TaskStop],
    collected: bool,
    collector: str,
) -> Verdict:
    """The run's state, headline, reasons and next command (verdict.py) from the facts gathered here."""
    others = {job_id: f"{role} {job_id}" for role in ("service", "collect") for job_id in record.jobs.get(role, [])}
    return verdict(
        RunFacts(
            run_id=record.run_id,
            time_limit=record.time_limit,
            mem=record.mem,
            cancelled=record.cancelled is not None,
            tasks=tuple(TaskView(t.task, t.job_id, t.state, t.pending) for t in tasks),
            stops=stops,
            items=sum(t.items for t in tasks),
            pending=sum(t.pending for t in tasks),
            failed=sum(t.failed for t in tasks),
            collected=collected,
            collector=collector,
            partial=sum(t.partial for t in tasks),
            **(progress.retry or {}),
            pending_reasons=seen.pending,
            other_jobs=others,
            wedged=bool(seen.wedged) and not seen.cancelled,
        )
    )


def load_status(paths: RunPaths, cancel_wedged: bool = False, follow_ups: bool = True) -> RunStatus:
    record = paths.load_record()
    shares = load_summary(paths.plan)
    progress = read_progress(paths, failed_over=bool(record.llm) and record.llm.replicas > 1)
    finished = {
        s.index
        for s in shares
        if (c := progress.shares.get(s.index)) is not None and c.ok + c.failed + c.partial >= s.items
    }
    collected = paths.summary.exists()
    settled = Settled.from_summary(json.loads(paths.summary.read_text(encoding="utf-8"))) if collected else None
    asked = record if settled is None else replace(record, jobs={**record.jobs, "convert": []})  # settled: not asked
    seen = executor_for(record.executor).observe(paths, asked, finished, collected, cancel_wedged=cancel_wedged)
    if seen.cancelled:
        mark_cancelled(paths)
        record = paths.load_record()
    if settled is not None:  # a collected run: no per-task file is read (manage/settled.py)
        seen.states.update(settled.job_states)
        activities, stops = settled.activities, settled.stops
    else:
        activities = {task: beat.state for task, beat in read_heartbeats(paths.progress).items()}
        stops = read_stops(paths.progress)
    status = status_of(
        record, shares, progress, seen, time.time(), collected=collected, activities=activities, stops=stops
    )
    status.run_dir, status.clocks = str(paths.root), seen.clocks
    status.round_lines, status.reasons = round_lines(record), status.reasons + last_note(record, status.state)
    if record.llm:
        from hpc_marker.llm.metrics import service_summary, throughput_bound

        service_ids = record.jobs.get("service", [])
        metrics = service_summary(paths.root, record.llm.replicas) or {}
        metrics.pop("timeline", None)
        states = [seen.states.get(jid, "UNKNOWN") for jid in service_ids]
        for row in metrics.get("replicas", []):
            row["job_id"] = service_ids[row["replica"]] if row["replica"] < len(service_ids) else "-"
            row["state"] = states[row["replica"]] if row["replica"] < len(states) else "UNKNOWN"
        status.llm = dict(
            metrics,
            model=record.llm.model,
            server=record.llm.server,
            service=", ".join(dict.fromkeys(states)) if states else "-",
            bound=throughput_bound(metrics, status.pages_done, status.pages_per_second, whole_run=collected),
        )
        status.failed_over = progress.failed_over
    if status.failed:
        status.failed_documents, status.failed_documents_total = failed_documents(paths)
    if follow_ups:
        status.follow_ups = unfinished_follow_ups(paths, record.out_dir, lambda other: load_status(other, False, False))
    return status
