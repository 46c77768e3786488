"""Status: where a run stands, from its tasks' commit logs and stop records and the scheduler's job states.

Counts come per share (the items planned for each task, whoever converted them): from the
collector's summary.json once the run is collected, else from the tasks' compact commit logs
(runstate/progress.py), never from the JSON manifests, so a run of 10^6 items answers in a second
or two. `summarize` is pure (record, shares, counts, job states, stop records, now) -> RunStatus,
its state and reasons decided by verdict.py; `load_status` gathers those inputs, and notices a
wedged run (a job pending forever with DependencyNeverSatisfied), cancelling what it left queued
when asked; `status_table` draws them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from rich.table import Table

from hpc_marker.executors import executor_for
from hpc_marker.executors.base import Observation
from hpc_marker.manage.cancel import mark_cancelled
from hpc_marker.manage.verdict import ACTIVE_STATES, OVER_STATES, RunFacts, TaskView, verdict
from hpc_marker.planning.bisect import BISECTED, SUB_MARK
from hpc_marker.planning.store import ShareSummary, load_summary
from hpc_marker.runstate.documents import token_counts
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.progress import (
    DEGRADED,
    FAILED_OVER,
    REOPENED,
    latest_commits,
    read_commits,
    read_heartbeats,
)
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import TaskStop, read_stops
from hpc_marker.runstate.subitems import PARTIAL, fold_commits
from hpc_marker.slurm.parse import index_ranges

if TYPE_CHECKING:  # pandas loads only where commit logs are read: a collected run's status needs none
    import pandas as pd


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


@dataclass(frozen=True)
class ShareCounts:
    """What is finished of one task's share."""

    ok: int = 0
    failed: int = 0
    pages_done: int = 0
    degraded: int = 0
    partial: int = 0  # items whose pages all finished, some lost (bisected: runstate/subitems.py)


@dataclass(frozen=True)
class Progress:
    """What the run has done so far, from summary.json or the commit logs."""

    shares: dict[int, ShareCounts]
    first_started: float | None
    last_finished: float | None
    torn_lines: list[str] = field(default_factory=list)
    failed_over: int = 0  # items with LLM requests moved to another replica (counted only when asked)
    text_layer: dict = field(default_factory=dict)  # empty and garbled pages (summary.json's, or the commit logs')
    lost_pages: list[str] = field(default_factory=list)  # "book.pdf page 8: timeout" (or by document id before collection)
    retry: dict | None = None  # summary.json's retry outlook (collect.retry_outlook); None before collection


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
    llm: dict | None = None  # service state, requests, tokens/s, failures
    tasks: list[TaskStatus] = field(default_factory=list)
    torn_manifest_lines: list[str] = field(default_factory=list)
    wedged: str | None = None  # one line when a job of the run can never start (see wedge.py)
    headline: str = ""  # the state in one line, with counts and causes (verdict.py)
    reasons: list[str] = field(default_factory=list)  # one line per distinct cause, with its count and fix
    next: str | None = None  # the exact next command, when there is one
    exit_code: int = 0  # what `status` exits with (verdict.py: 0, 3 failed items, 4 incomplete)

    def to_json(self) -> dict:
        return asdict(self)


def share_counts(latest: pd.DataFrame) -> dict[int, ShareCounts]:
    """Per share, from the latest commit of each item (indexed by item id; columns status, pages, share,
    flags); bisected items count once their pages are finished (subitems.fold_commits). Pure."""
    import numpy as np

    if (latest["status"] == REOPENED).any():
        latest = latest[latest["status"] != REOPENED]
    if latest.empty:
        return {}
    latest = fold_commits(latest)  # the same frame when nothing was bisected
    status = latest["status"].to_numpy(dtype=object)
    final = status != BISECTED  # a bisected item whose halves are not all finished is pending
    share = latest["share"].to_numpy()[final]
    ok, partial = status[final] == "ok", status[final] == PARTIAL
    degraded = latest["flags"].str.contains(DEGRADED, regex=False).to_numpy(dtype=bool)[final]
    pages = latest["pages"].to_numpy()[final]
    count = lambda weights: np.bincount(share, weights=weights).astype(int)  # noqa: E731
    ok_n, partial_n, all_n, pages_n, degraded_n = count(ok), count(partial), count(None), count(pages), count(degraded)
    return {int(i): ShareCounts(int(ok_n[i]), int(all_n[i] - ok_n[i] - partial_n[i]), int(pages_n[i]),
                                int(degraded_n[i]), int(partial_n[i]))
            for i in np.flatnonzero(all_n)}


def summarize(record: RunRecord, shares: list[ShareSummary], progress: Progress, seen: Observation | dict[str, str],
              now: float, collected: bool = False, activities: dict[int, str] | None = None,
              stops: dict[int, TaskStop] | None = None) -> RunStatus:
    """The run's status from its plan, progress, the scheduler's view (an Observation, or just job
    states) and the tasks' stop records. Pure."""
    seen = seen if isinstance(seen, Observation) else Observation(dict(seen))
    states = seen.states
    task_ids = record.jobs.get("convert", [])
    tasks = []
    for share in shares:
        done = progress.shares.get(share.index, ShareCounts())
        job_id = task_ids[share.index] if share.index < len(task_ids) else "-"
        tasks.append(TaskStatus(
            task=share.index, job_id=job_id, state=states.get(job_id, "UNKNOWN"), items=share.items,
            ok=done.ok, failed=done.failed, pending=max(0, share.items - done.ok - done.failed - done.partial),
            pages=share.pages, pages_done=done.pages_done, activity=(activities or {}).get(share.index, "-"),
            partial=done.partial))
    pages = sum(s.pages for s in shares)
    pages_done = sum(t.pages_done for t in tasks)
    first, last = progress.first_started, progress.last_finished
    active = any(t.state in ACTIVE_STATES for t in tasks)
    elapsed = ((now if active else (last or now)) - first) if first is not None else None
    rate = pages_done / elapsed if elapsed and pages_done else None
    remaining = pages - pages_done
    collect_ids = record.jobs.get("collect", [])
    collector = states.get(collect_ids[0], "UNKNOWN") if collect_ids else "-"
    items, failed, pending = sum(t.items for t in tasks), sum(t.failed for t in tasks), sum(t.pending for t in tasks)
    others = {job_id: f"{role} {job_id}" for role in ("service", "collect") for job_id in record.jobs.get(role, [])}
    judged = verdict(RunFacts(
        run_id=record.run_id, time_limit=record.time_limit, mem=record.mem, cancelled=record.cancelled is not None,
        tasks=tuple(TaskView(t.task, t.job_id, t.state, t.pending) for t in tasks), stops=stops or {},
        items=items, pending=pending, failed=failed, collected=collected, collector=collector,
        partial=sum(t.partial for t in tasks), **(progress.retry or {}),
        pending_reasons=seen.pending, other_jobs=others, wedged=bool(seen.wedged) and not seen.cancelled))
    return RunStatus(
        run_id=record.run_id, run_dir="", executor=record.executor, state=judged.state,
        items=items, ok=sum(t.ok for t in tasks), failed=failed, pending=pending, pages=pages, pages_done=pages_done,
        elapsed_seconds=round(elapsed, 1) if elapsed is not None else None,
        pages_per_second=round(rate, 2) if rate else None,
        eta_seconds=round(remaining / rate, 1) if rate and remaining > 0 and active else None,
        collector=collector, degraded=sum(c.degraded for c in progress.shares.values()), tasks=tasks,
        partial=sum(t.partial for t in tasks), lost_pages=list(progress.lost_pages),
        text_layer=dict(progress.text_layer),
        torn_manifest_lines=list(progress.torn_lines), wedged=seen.wedged, headline=judged.headline,
        reasons=judged.lines(record.run_id), next=judged.next, exit_code=judged.exit_code)


def summary_progress(summary: dict) -> Progress:
    """The progress summary.json records (its share counts, partial items and lost pages). Pure."""
    shares = {int(s["share"]): ShareCounts(s["ok"], s["failed"], s["pages_done"], s.get("degraded", 0),
                                           s.get("partial", 0))
              for s in summary["shares"]}
    lost = [f"{p['pdf']} page {p['page']}: {p['status']}" for p in summary.get("lost_pages", [])]
    return Progress(shares, summary.get("first_started"), summary.get("last_finished"),
                    summary.get("torn_manifest_lines", []), len(summary.get("llm_failover") or []),
                    text_layer=summary.get("text_layer", {}), lost_pages=lost, retry=summary.get("retry"))


def read_progress(paths: RunPaths, failed_over: bool = False) -> Progress:
    """The run's progress: summary.json's once collected (it has the share counts), else the commit logs.
    `failed_over`: also count the items whose LLM requests moved to another replica (runs with replicas)."""
    if paths.summary.exists():
        summary = json.loads(paths.summary.read_text(encoding="utf-8"))
        if "shares" in summary:
            return summary_progress(summary)
    commits = read_commits(paths.progress)
    latest = latest_commits(commits)
    moved = int(latest["flags"].str.contains(FAILED_OVER, regex=False).sum()) if failed_over and len(latest) else 0
    return Progress(share_counts(latest),
                    float(commits["started"].min()) if len(commits) else None,
                    float(commits["finished"].max()) if len(commits) else None,
                    failed_over=moved, text_layer=commit_text_layer(latest), lost_pages=commit_lost_pages(latest))


def commit_lost_pages(latest: pd.DataFrame) -> list[str]:
    """The pages lost so far (sub-items that failed), by document id and 1-based pages. Pure."""
    lost = latest[latest.index.str.contains(SUB_MARK, regex=False) & ~latest["status"].isin(["ok", BISECTED, REOPENED])]
    found = lost.index.str.extract(r"^([^.]+)\.r(\d+)-(\d+)$")
    return [f"document {doc} page{'s' if int(b) - int(a) > 1 else ''} {int(a) + 1}"
            + (f"-{b}" if int(b) - int(a) > 1 else "") + f": {status}"
            for (doc, a, b), status in zip(found.itertuples(index=False, name=None), lost["status"])]


def commit_text_layer(latest: pd.DataFrame) -> dict:
    """Pages flagged empty or garbled, and in how many items, from the latest commits' flags. Pure."""
    counts = token_counts(latest["flags"][latest["status"] == "ok"])
    return {"empty_pages": int(counts["empty"].sum()), "items_with_empty_pages": int((counts["empty"] > 0).sum()),
            "garbled_pages": int(counts["garbled"].sum()),
            "items_with_garbled_pages": int((counts["garbled"] > 0).sum())}


@dataclass(frozen=True)
class DoneSoFar:
    items: int
    items_done: int
    pages: int
    pages_done: int


def done_so_far(paths: RunPaths) -> DoneSoFar:
    """How much of the run is finished (the plan's summary and the commit logs only: no job states)."""
    shares = load_summary(paths.plan)
    counts = read_progress(paths).shares.values()
    return DoneSoFar(sum(s.items for s in shares), sum(c.ok + c.failed + c.partial for c in counts),
                     sum(s.pages for s in shares), sum(c.pages_done for c in counts))


def load_status(paths: RunPaths, cancel_wedged: bool = False) -> RunStatus:
    record = paths.load_record()
    shares = load_summary(paths.plan)
    progress = read_progress(paths, failed_over=bool(record.llm) and record.llm.get("replicas", 1) > 1)
    finished = {s.index for s in shares
                if (c := progress.shares.get(s.index)) is not None and c.ok + c.failed + c.partial >= s.items}
    collected = paths.summary.exists()
    seen = executor_for(record.executor).observe(paths, record, finished, collected, cancel_wedged=cancel_wedged)
    if seen.cancelled:
        mark_cancelled(paths)
        record = paths.load_record()
    activities = {task: beat.state for task, beat in read_heartbeats(paths.progress).items()}
    status = summarize(record, shares, progress, seen, time.time(), collected=collected, activities=activities,
                       stops=read_stops(paths.progress))
    status.run_dir = str(paths.root)
    if record.llm:
        from hpc_marker.llm.metrics import service_summary, throughput_bound

        service_ids = record.jobs.get("service", [])
        metrics = service_summary(paths.root, record.llm.get("replicas", 1)) or {}
        metrics.pop("timeline", None)
        states = [seen.states.get(jid, "UNKNOWN") for jid in service_ids]
        for row in metrics.get("replicas", []):
            row["job_id"] = service_ids[row["replica"]] if row["replica"] < len(service_ids) else "-"
            row["state"] = states[row["replica"]] if row["replica"] < len(states) else "UNKNOWN"
        status.llm = dict(metrics, model=record.llm["model"], server=record.llm.get("server", "ollama"),
                          service=", ".join(dict.fromkeys(states)) if states else "-",
                          bound=throughput_bound(metrics, status.pages_done, status.pages_per_second,
                                                 whole_run=collected))
        status.failed_over = progress.failed_over
    return status


TABLE_TASKS = 64  # past this many tasks, the table has a row per state (and the worst tasks), not per task
WORST_TASKS = 16


def watch_status(paths: RunPaths, interval_s: float = 5.0, cancel_wedged: bool = False) -> RunStatus:
    """Refresh the status table in place until the run is over (or wedged)."""
    from rich.live import Live

    current = load_status(paths, cancel_wedged)
    with Live(status_table(current), refresh_per_second=4) as live:
        while current.state not in OVER_STATES:
            time.sleep(interval_s)
            current = load_status(paths, cancel_wedged)
            live.update(status_table(current))
    return current


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else width
    return "█" * filled + "░" * (width - filled)


def _rows(tasks: list[TaskStatus]) -> list[tuple[str, str, str, int, int, int, int, int]]:
    """The table's rows: one per task in runs of up to TABLE_TASKS tasks. Past that, the WORST_TASKS tasks
    with the most failed, then pending, items, then one row per state with its tasks' totals (their
    indices in the first column)."""
    def row(label: str, job: str, state: str, group: list[TaskStatus]):
        return (label, job, state, sum(t.ok for t in group), sum(t.failed for t in group),
                sum(t.pending for t in group), sum(t.pages_done for t in group), sum(t.pages for t in group))

    if len(tasks) <= TABLE_TASKS:
        return [row(str(t.task), t.job_id, t.state, [t]) for t in tasks]
    worst = sorted((t for t in tasks if t.failed or t.pending), key=lambda t: (-t.failed, -t.pending, t.task))
    rows = [row(str(t.task), t.job_id, t.state, [t]) for t in worst[:WORST_TASKS]]
    for state in sorted({t.state for t in tasks}):
        group = [t for t in tasks if t.state == state]
        indices = index_ranges([t.task for t in group])
        rows.append(row(f"{len(group)} tasks: {indices if len(indices) <= 40 else indices[:37] + '...'}", "",
                        state, group))
    return rows


def status_table(status: RunStatus) -> Table:
    """The table of tasks under the run's headline (the reasons and the next command: `verdict_lines`)."""
    table = Table(title=f"run {status.run_id} ({status.executor}): {status.headline or status.state}",
                  title_justify="left")
    for column in ("task", "job", "state", "done", "failed", "pending", "pages", "progress"):
        table.add_column(column, justify="right" if column not in ("job", "state", "progress") else "left")
    for label, job, state, ok, failed, pending, pages_done, pages in _rows(status.tasks):
        table.add_row(label, job, state, str(ok), str(failed), str(pending), f"{pages_done}/{pages}",
                      _bar(pages_done, pages))
    rate = f"{status.pages_per_second:.2f} pages/s" if status.pages_per_second else "- pages/s"
    partial = f"{status.partial} partial, " if status.partial else ""
    table.caption = (f"{status.ok} ok, {partial}{status.failed} failed, {status.pending} pending of {status.items} items; "
                     f"{status.pages_done}/{status.pages} pages; {rate}; elapsed {_duration(status.elapsed_seconds)}; "
                     f"ETA {_duration(status.eta_seconds)}; collector {status.collector}")
    if status.degraded:
        table.caption += f"; {status.degraded} items with degraded LLM refinement"
    table.caption += text_layer_line(status)
    if status.lost_pages:
        shown = status.lost_pages[:5] + ([f"... {len(status.lost_pages) - 5} more"] if len(status.lost_pages) > 5 else [])
        table.caption += "\nlost pages (placeholders in their documents): " + "; ".join(shown)
    if status.llm:
        llm = status.llm
        table.caption += (f"\nLLM {llm['model']} ({llm.get('server', 'ollama')}, service {llm['service']}): "
                          f"{llm.get('requests', 0)} requests, "
                          f"{llm.get('failures', 0)} failed, {llm.get('timeouts', 0)} timed out, "
                          f"{llm.get('tokens_in', 0)} tokens in, {llm.get('tokens_out', 0)} out, "
                          f"{llm.get('tokens_out_per_s', 0)} tokens/s (peak {llm.get('peak_tokens_out_per_s', 0)}), "
                          f"peak {llm.get('peak_in_flight', 0)} at the servers, {llm.get('peak_queued', 0)} waiting")
        if len(llm.get("replicas", [])) > 1 or status.failed_over:
            for row in llm.get("replicas", []):
                table.caption += (f"\n  replica {row['replica']} (job {row.get('job_id', '-')}, {row.get('state', '?')}): "
                                  f"{row['requests']} requests, {row['tokens_out_per_s']} tokens/s, "
                                  f"{row['failures']} failed, {row['timeouts']} timed out")
            table.caption += f"\n  {status.failed_over} items had LLM requests moved to another replica"
        if llm.get("bound"):
            table.caption += f"\n{llm['bound']['why']}"
    table.caption_justify = "left"
    return table


def text_layer_line(status: RunStatus) -> str:
    """The caption's line on flagged pages (in documents once collected, in work items before), or ""."""
    layer = status.text_layer
    if not (layer.get("empty_pages") or layer.get("garbled_pages")):
        return ""
    unit = "documents" if "documents_with_empty_pages" in layer else "items"
    return (f"\ntext layer: {layer['empty_pages']} empty pages in {layer[f'{unit}_with_empty_pages']} {unit}, "
            f"{layer['garbled_pages']} garbled pages in {layer[f'{unit}_with_garbled_pages']} {unit}; to OCR them: "
            f"hpcmarker retry {status.run_id} --select no-text|garbled --engine marker --force-ocr")


def verdict_lines(status: RunStatus) -> list[str]:
    """One line per cause, then the next command: printed whole under the table, never wrapped into it."""
    return [*status.reasons, *([f"next: {status.next}"] if status.next else [])]
