"""Status: where a run stands, from its manifests and the scheduler's job states.

`summarize` is pure (record, plan, manifest records, job states, now) -> RunStatus;
`load_status` gathers those inputs, and notices a wedged run (wedge.py: a job pending forever
with DependencyNeverSatisfied), cancelling what it left queued when asked; `status_table` draws
them with rich.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from rich.table import Table

from hpc_marker.executors import executor_for
from hpc_marker.manage.cancel import mark_cancelled
from hpc_marker.planning.plan import Plan
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import ManifestRecord, latest_by_item, read_manifests
from hpc_marker.runstate.record import RunRecord

ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING"}


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
    llm: dict | None = None  # service state, requests, tokens/s, failures
    tasks: list[TaskStatus] = field(default_factory=list)
    torn_manifest_lines: list[str] = field(default_factory=list)
    wedged: str | None = None  # one line when a job of the run can never start (see wedge.py)

    def to_json(self) -> dict:
        return asdict(self)


def run_state(task_states: list[str], collector_state: str, collected: bool) -> str:
    """One word for the whole run. Pure."""
    if collected and collector_state not in ACTIVE_STATES:
        return "finished"
    if any(s == "RUNNING" for s in task_states):
        return "running"
    if task_states and all(s == "CANCELLED" for s in task_states):
        return "cancelled"
    if any(s in ACTIVE_STATES for s in task_states):
        return "pending" if all(s in {"PENDING", "UNKNOWN"} for s in task_states) else "running"
    if collector_state in ACTIVE_STATES:
        return "collecting"
    return "stopped"


def summarize(record: RunRecord, plan: Plan, records: list[ManifestRecord], states: dict[str, str],
              now: float, collected: bool = False, torn: list[str] | None = None) -> RunStatus:
    latest = latest_by_item(records)
    task_ids = record.jobs.get("convert", [])
    tasks = []
    for task in plan.tasks:
        done = [latest[i.item_id] for i in task.items if i.item_id in latest]
        ok = [r for r in done if r.status == "ok"]
        job_id = task_ids[task.index] if task.index < len(task_ids) else "-"
        tasks.append(TaskStatus(
            task=task.index, job_id=job_id, state=states.get(job_id, "UNKNOWN"), items=len(task.items),
            ok=len(ok), failed=len(done) - len(ok), pending=len(task.items) - len(done),
            pages=task.pages, pages_done=sum(r.pages for r in done)))
    pages_done = sum(t.pages_done for t in tasks)
    first = min((r.started for r in records), default=None)
    last = max((r.finished for r in records), default=None)
    active = any(t.state in ACTIVE_STATES for t in tasks)
    elapsed = ((now if active else (last or now)) - first) if first is not None else None
    rate = pages_done / elapsed if elapsed and pages_done else None
    remaining = plan.total_pages - pages_done
    collect_ids = record.jobs.get("collect", [])
    collector = states.get(collect_ids[0], "UNKNOWN") if collect_ids else "-"
    return RunStatus(
        run_id=record.run_id, run_dir="", executor=record.executor,
        state=run_state([t.state for t in tasks], collector, collected),
        items=sum(t.items for t in tasks), ok=sum(t.ok for t in tasks), failed=sum(t.failed for t in tasks),
        pending=sum(t.pending for t in tasks), pages=plan.total_pages, pages_done=pages_done,
        elapsed_seconds=round(elapsed, 1) if elapsed is not None else None,
        pages_per_second=round(rate, 2) if rate else None,
        eta_seconds=round(remaining / rate, 1) if rate and remaining > 0 and active else None,
        collector=collector, degraded=sum(1 for r in latest.values() if r.degraded),
        failed_over=sum(1 for r in latest.values() if r.llm_failover), tasks=tasks,
        torn_manifest_lines=list(torn or []))


def finished_tasks(plan: Plan, records: list[ManifestRecord]) -> set[int]:
    """Tasks every item of whose share has a record. Pure."""
    latest = latest_by_item(records)
    return {task.index for task in plan.tasks if all(item.item_id in latest for item in task.items)}


def load_status(paths: RunPaths, cancel_wedged: bool = False) -> RunStatus:
    record = paths.load_record()
    plan = Plan.load(paths.plan)
    read = read_manifests(paths.manifests)
    collected = paths.summary.exists()
    seen = executor_for(record.executor).observe(paths, record, finished_tasks(plan, read.records), collected,
                                                 cancel_wedged=cancel_wedged)
    if seen.cancelled:
        mark_cancelled(paths)
    status = summarize(record, plan, read.records, seen.states, time.time(), collected=collected,
                       torn=read.torn_lines)
    status.run_dir = str(paths.root)
    if seen.wedged:  # the jobs left squeue when cancelled, whether or not sacct shows it yet
        status.state, status.wedged = ("cancelled" if seen.cancelled else "wedged"), seen.wedged
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
                          bound=throughput_bound(metrics, status.pages_done, status.pages_per_second))
    return status


FINAL_STATES = {"finished", "cancelled", "stopped", "wedged"}


def watch_status(paths: RunPaths, interval_s: float = 5.0, cancel_wedged: bool = False) -> RunStatus:
    """Refresh the status table in place until the run is over (or wedged)."""
    from rich.live import Live

    current = load_status(paths, cancel_wedged)
    with Live(status_table(current), refresh_per_second=4) as live:
        while current.state not in FINAL_STATES:
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


def status_table(status: RunStatus) -> Table:
    table = Table(title=f"run {status.run_id} ({status.executor}): {status.state}", title_justify="left")
    for column in ("task", "job", "state", "done", "failed", "pending", "pages", "progress"):
        table.add_column(column, justify="right" if column not in ("job", "state", "progress") else "left")
    for t in status.tasks:
        table.add_row(str(t.task), t.job_id, t.state, str(t.ok), str(t.failed), str(t.pending),
                      f"{t.pages_done}/{t.pages}", _bar(t.pages_done, t.pages))
    rate = f"{status.pages_per_second:.2f} pages/s" if status.pages_per_second else "- pages/s"
    table.caption = (f"{status.ok} ok, {status.failed} failed, {status.pending} pending of {status.items} items; "
                     f"{status.pages_done}/{status.pages} pages; {rate}; elapsed {_duration(status.elapsed_seconds)}; "
                     f"ETA {_duration(status.eta_seconds)}; collector {status.collector}")
    if status.degraded:
        table.caption += f"; {status.degraded} items with degraded LLM refinement"
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
