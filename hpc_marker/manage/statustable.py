"""Status drawn for a person: the table of tasks (a row per state past TABLE_TASKS tasks), its caption of
totals, the lines under it (failed documents, causes, the OCR follow-up, unfinished follow-up runs, the next
command), and `--watch`'s live refresh. The facts come from manage/status.py."""

from __future__ import annotations

import time

from rich.table import Table

from hpc_marker.manage.failures import failed_lines
from hpc_marker.manage.status import RunStatus, TaskStatus, load_status
from hpc_marker.manage.verdict import OVER_STATES
from hpc_marker.runstate.documents import routing_line
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.slurm.parse import index_ranges
from hpc_marker.util.commands import command_line, ocr_command
from hpc_marker.util.text import plural

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
        return (
            label,
            job,
            state,
            sum(t.ok for t in group),
            sum(t.failed for t in group),
            sum(t.pending for t in group),
            sum(t.pages_done for t in group),
            sum(t.pages for t in group),
        )

    if len(tasks) <= TABLE_TASKS:
        return [row(f"{t.task} (grown)" if t.grown else str(t.task), t.job_id, t.state, [t]) for t in tasks]
    worst = sorted((t for t in tasks if t.failed or t.pending), key=lambda t: (-t.failed, -t.pending, t.task))
    rows = [row(str(t.task), t.job_id, t.state, [t]) for t in worst[:WORST_TASKS]]
    for state in sorted({t.state for t in tasks}):
        group = [t for t in tasks if t.state == state]
        indices = index_ranges([t.task for t in group])
        rows.append(
            row(
                f"{plural(len(group), 'task')}: {indices if len(indices) <= 40 else indices[:37] + '...'}",
                "",
                state,
                group,
            )
        )
    return rows


def status_table(status: RunStatus) -> Table:
    """The table of tasks under the run's headline (the reasons and the next command: `verdict_lines`)."""
    table = Table(
        title=f"run {status.run_id} ({status.executor}): {status.headline or status.state}", title_justify="left"
    )
    for column in ("task", "job", "state", "done", "failed", "pending", "pages", "progress"):
        table.add_column(column, justify="right" if column not in ("job", "state", "progress") else "left")
    for label, job, state, ok, failed, pending, pages_done, pages in _rows(status.tasks):
        table.add_row(
            label,
            job,
            state,
            str(ok),
            str(failed),
            str(pending),
            f"{pages_done}/{pages}",
            _bar(pages_done, pages) if pages else "-",
        )
    rate = f"{status.pages_per_second:.2f} pages/s" if status.pages_per_second else "- pages/s"
    partial = f"{status.partial} partial, " if status.partial else ""
    table.caption = (
        f"{status.ok} ok, {partial}{status.failed} failed, {status.pending} pending of "
        f"{plural(status.items, 'item')}; {status.pages_done}/{plural(status.pages, 'page')}; {rate}; "
        f"elapsed {_duration(status.elapsed_seconds)}; "
        f"ETA {_duration(status.eta_seconds)}; collector {status.collector}"
        + (f"; round {status.rounds}" if status.rounds > 1 else "")
        + (f"; {plural(status.grown, 'task')} grown" if status.grown else "")
    )
    if status.degraded:
        table.caption += f"; {plural(status.degraded, 'item')} with degraded LLM refinement"
    table.caption += text_layer_line(status) + output_flags_line(status)
    if status.lost_pages:
        shown = status.lost_pages[:5] + (
            [f"... {len(status.lost_pages) - 5} more"] if len(status.lost_pages) > 5 else []
        )
        table.caption += "\nlost pages (placeholders in their documents): " + "; ".join(shown)
    if status.llm:
        llm = status.llm
        table.caption += (
            f"\nLLM {llm['model']} ({llm.get('server', 'ollama')}, service {llm['service']}): "
            f"{llm.get('requests', 0)} requests, "
            f"{llm.get('failures', 0)} failed, {llm.get('timeouts', 0)} timed out, "
            f"{llm.get('tokens_in', 0)} tokens in, {llm.get('tokens_out', 0)} out, "
            f"{llm.get('tokens_out_per_s', 0)} tokens/s (peak {llm.get('peak_tokens_out_per_s', 0)}), "
            f"peak {llm.get('peak_in_flight', 0)} at the servers, {llm.get('peak_queued', 0)} waiting"
        )
        if len(llm.get("replicas", [])) > 1 or status.failed_over:
            for row in llm.get("replicas", []):
                table.caption += (
                    f"\n  replica {row['replica']} (job {row.get('job_id', '-')}, {row.get('state', '?')}): "
                    f"{row['requests']} requests, {row['tokens_out_per_s']} tokens/s, "
                    f"{row['failures']} failed, {row['timeouts']} timed out"
                )
            table.caption += f"\n  {plural(status.failed_over, 'item')} had LLM requests moved to another replica"
        if llm.get("bound"):
            table.caption += f"\n{llm['bound']['why']}"
    table.caption_justify = "left"
    return table


def text_layer_line(status: RunStatus) -> str:
    """The caption's line on flagged pages (in documents once collected, in work items before), or ""."""
    layer = status.text_layer
    routed = f"\n{routing_line(layer['routed'])}" if layer.get("routed") else ""  # --force-ocr auto, once collected
    if not (layer.get("empty_pages") or layer.get("garbled_pages")):
        return routed
    unit = "documents" if "documents_with_empty_pages" in layer else "items"
    return routed + (
        f"\ntext layer: {plural(layer['empty_pages'], 'empty page')} in "
        f"{plural(layer[f'{unit}_with_empty_pages'], unit[:-1])}, {plural(layer['garbled_pages'], 'garbled page')} "
        f"in {plural(layer[f'{unit}_with_garbled_pages'], unit[:-1])}"
    )


def output_flags_line(status: RunStatus) -> str:
    """The caption's line on output flags (quality/: in documents once collected, in work items before), or ""."""
    counts, unit = status.output_flags.get("counts") or {}, status.output_flags.get("unit", "documents")
    if not counts:
        return ""
    return "\noutput flags: " + ", ".join(f"{name} in {plural(n, unit[:-1])}" for name, n in counts.items())


def verdict_lines(status: RunStatus) -> list[str]:
    """The failed documents, one line per cause, the OCR follow-up of a flagged text layer, the --out's follow-up
    runs that are not finished, then the next command: printed whole under the table, never wrapped into it (rich
    wraps a caption at the table's width)."""
    layer = status.text_layer
    flagged = layer.get("empty_pages") or layer.get("garbled_pages")
    ocr = [f"to OCR the flagged documents: {ocr_command(status.run_id, status.text_layer)}"] if flagged else []
    output = status.output_flags.get("counts") or {}
    redo = command_line("retry", status.run_id, "--select", ",".join(output)) if output else ""
    return [
        *failed_lines(status.failed_documents, status.failed_documents_total),
        *status.round_lines,
        *status.reasons,
        *ocr,
        *([f"to convert the documents with output flags again (add other settings): {redo}"] if redo else []),
        *(run.line() for run in status.follow_ups),
        *([f"next: {status.next}"] if status.next else []),
    ]
