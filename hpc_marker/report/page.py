"""Page: reads a run folder, builds the report's frames and figures, renders the page from its
Jinja2 template (templates/report.html.j2, autoescaped) and writes RUN/report.html atomically.

The page is one self-contained file: plotly.js is inlined once, so it opens offline. Its size is
bounded whatever the run's size (`Limits`): past a few thousand records the timeline is
drawn per task and time bucket, and long tables show their first rows and count the rest.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from hpc_marker.llm.metrics import service_summary
from hpc_marker.planning.store import ShareSummary, load_items_table, load_summary
from hpc_marker.report import figures, frames
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.documents import routing_line
from hpc_marker.runstate.finish import merged_documents
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import read_manifest_frame
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.summary import ITEM_COLUMNS, document_counts, summarize
from hpc_marker.util.commands import command_line, ocr_command
from hpc_marker.util.files import atomic_write
from hpc_marker.util.text import plural

REPORT_NAME = "report.html"
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Limits:
    """How much of a run the page shows one by one; past these it aggregates or cuts, and says so."""

    detail_records: int = 3000  # up to this many manifest records, one timeline bar each; more: per task and bucket
    table_rows: int = 100  # rows of the failures and degraded tables; the rest are counted
    slowest: int = 10  # rows of the slowest PDFs
    throughput_buckets: int = 60  # pages/s over time
    activity_buckets: int = 120  # the aggregated timeline's time buckets
    llm_points: int = 240  # the LLM front's tokens/s and in-flight requests over time


@dataclass(frozen=True)
class RunView:
    """What the report reads from a run folder (or the collector hands it, already read)."""

    paths: RunPaths
    record: RunRecord
    items: pd.DataFrame  # the planned items (runstate.summary.ITEM_COLUMNS)
    shares: list[ShareSummary]
    records: pd.DataFrame  # every manifest record (runstate.manifest.read_manifest_frame)
    torn: list[str]  # unreadable manifest lines
    summary: dict  # summary.json, {} before the collector ran
    llm: dict | None  # summary.json's "llm", or straight from the front's metrics before collection
    # What the collector works out a PDF range at a time (manage/collectparts.py), so that it never holds every
    # record whole: then `records` holds only the columns the timeline needs, with `state`, and `items` none.
    failures: pd.DataFrame | None = None  # the first rows of frames.failures_frame
    failure_count: int = 0  # all its rows
    slowest: pd.DataFrame | None = None  # frames.slowest_frame


@dataclass(frozen=True)
class Table:
    """A table for the template: the first rows of a frame, and how many more there are (and where)."""

    id: str
    columns: list[str]
    rows: list[dict]
    empty: str
    more: int = 0
    where: str = ""

    @classmethod
    def of(cls, frame: pd.DataFrame, table_id: str, empty: str, limit: int | None = None, where: str = "") -> Table:
        shown = frame if limit is None else frame.head(limit)
        rows = shown.astype(object).where(shown.notna(), "").to_dict("records")
        return cls(table_id, list(frame.columns), rows, empty, len(frame) - len(shown), where)


@dataclass(frozen=True)
class Section:
    """A <section> of the page: a title, a note, at most one plot, tables."""

    id: str
    title: str
    note: str = ""
    plot: Markup | None = None
    tables: list[tuple[str, Table]] = field(default_factory=list)  # (heading, table); "" for none
    none: str = ""  # said instead of a plot


def load_run(paths: RunPaths) -> RunView:
    """Read the run folder: run.json, plan.json, the task manifests, summary.json if collected."""
    record = paths.load_record()
    summary = json.loads(paths.summary.read_text(encoding="utf-8")) if paths.summary.exists() else {}
    llm = summary.get("llm")
    if llm is None and record.llm:  # not collected yet: straight from the fronts' metrics
        llm = service_summary(paths.root, record.llm.replicas)
    records, torn = read_manifest_frame(paths.manifests)
    items = load_items_table(paths.plan, columns=ITEM_COLUMNS).to_pandas()
    return RunView(paths, record, items, load_summary(paths.plan), records, torn, summary, llm)


def run_totals(view: RunView) -> dict:
    """Items, documents, pages and rates: summary.json's once collected (it also counts records the
    collector recovered), else added up from the manifests so far."""
    if view.summary:
        return view.summary
    totals = summarize(view.items, view.shares, view.records, view.torn)
    board = ClaimBoard(view.paths.root, owner="report", lease_s=view.record.lease_seconds)
    return {**totals, **document_counts(view.items, view.records, merged_documents(board, view.items))}


def _duration(seconds: float | None) -> str:
    if seconds is not None and seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds or 0)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _stamp(epoch: float) -> str:
    return f"{datetime.fromtimestamp(epoch):%Y-%m-%d %H:%M:%S}"


def header(view: RunView, totals: dict) -> dict:
    """The page's head: run id, settings, where it reads and writes, and the cards of totals."""
    record, rate, layer = view.record, totals.get("pages_per_second"), totals.get("text_layer") or {}
    grown = [task for one in record.rounds for task in one.grown]  # tasks `hpcmarker grow` added
    workers = (
        f"{record.workers_per_gpu} worker(s) per GPU"
        if record.workers_per_gpu
        else "workers per GPU chosen by each task (its log says why)"
    )
    cards = [
        (
            "items",
            f"{totals.get('ok', 0):,} ok · {totals.get('failed', 0):,} failed",
            f"{len(totals.get('missing', [])):,} missing of {totals.get('items', 0):,}",
        ),
        ("documents", f"{totals.get('documents_ok', 0):,} ok", f"of {totals.get('documents', 0):,}"),
        ("pages", f"{totals.get('pages_ok', 0):,}", f"converted of {totals.get('pages', 0):,}"),
        ("wall time", _duration(totals.get("wall_seconds")), "working: idle gaps between submissions left out"),
        ("pages/s", f"{rate:.2f}" if rate else "-", "whole run"),
        (
            "text layer",
            f"{layer.get('empty_pages', 0):,} empty · {layer.get('garbled_pages', 0):,} garbled",
            f"pages of {layer.get('pages_checked', 0):,} checked",
        ),
        ("tasks", f"{record.tasks}" + (f" + {len(grown)} grown" if grown else ""), f"{record.executor}, {workers}"),
    ]
    if len(record.rounds) > 1:  # the run continued itself, or was resumed (manage/rounds.py)
        ended = "; ".join(
            f"{r.number} ({r.by}{f', {len(r.grown)} grown' if r.grown else ''}): {r.ended or 'this collection'}"
            for r in record.rounds
        )
        cards.append(("rounds", f"{len(record.rounds)}", ended))
    collected = view.summary.get("collected")
    return {
        "run_id": record.run_id,
        "engine": record.engine,
        "created": _stamp(record.created),
        "model": (record.llm.model if record.llm else None) or (view.llm or {}).get("model"),
        "collected": f"collected {_stamp(collected)}"
        if collected
        else "not collected yet: from the task manifests so far",
        "pdfs": record.pdfs_root,
        "out": record.out_dir,
        "cards": cards,
        # the collector's verdict (manage/verdict.py): the state, one line per cause, the next command
        "state": view.summary.get("headline") or view.summary.get("state"),
        "reasons": list(view.summary.get("reasons", [])),
        "next": view.summary.get("next"),
    }


def attempts_file(view: RunView) -> str:
    """Where the page points for every attempt: manifest.csv once collected, else the task manifests."""
    return "manifest.csv" if view.summary else "the task manifests (manifests/task-*.jsonl)"


def timeline_sections(view: RunView, items: pd.DataFrame, totals: dict, limits: Limits) -> list[Section]:
    """Tasks over time (a bar per record, or per task and bucket past `limits.detail_records`) and pages/s."""
    if items.empty:
        return [Section("timeline", "Tasks over time", none="No item finished yet.")]
    tasks = [share.index for share in view.shares]
    places = frames.places_frame(items, tasks)
    if len(items) <= limits.detail_records:
        note = "One row per task (host, GPU); a bar per work item attempt from start to finish. Gaps are idle time."
        plot = figures.timeline_figure(items, places)
    else:
        activity = frames.activity_frame(items, tasks, limits.activity_buckets)
        note = (
            f"{len(items):,} attempts, too many to draw one by one (a bar each up to "
            f"{limits.detail_records:,}): one row per task, its pages/s in each "
            f"{activity.attrs['bucket_s']:g} s bucket (blank: idle), a red ✕ where attempts failed. "
            f"Hover a cell for its pages and attempts; every attempt is in {attempts_file(view)}."
        )
        plot = figures.activity_figure(activity, figures.task_labels(places))
    flow = frames.throughput_frame(items, limits.throughput_buckets)
    return [
        Section("timeline", "Tasks over time", note, figures.figure_html(plot, "timeline-plot")),
        Section(
            "throughput",
            "Pages per second",
            "Each item's pages spread over its duration.",
            figures.figure_html(figures.throughput_figure(flow, totals.get("pages_per_second")), "throughput-plot")
            if not flow.empty
            else None,
            none="No pages converted yet.",
        ),
    ]


def table_sections(view: RunView, items: pd.DataFrame, limits: Limits) -> list[Section]:
    """Failures (the first `limits.table_rows`), the lost pages, the slowest PDFs, and the LLM service if
    there was one."""
    where = (
        f"{attempts_file(view)} has every attempt, summary.json every missing item"
        if view.summary
        else f"{attempts_file(view)} have every attempt"
    )
    if view.failures is None:
        failures = frames.failures_frame(view.items, items, view.summary.get("missing"))
        count = len(failures)
    else:
        failures, count = view.failures, view.failure_count
    listed = Table.of(failures, "failures-table", "No failures.", limits.table_rows, where)
    slowest_rows = frames.slowest_frame(items, limits.slowest) if view.slowest is None else view.slowest
    slowest = Table.of(slowest_rows, "slowest-table", "No PDF converted yet.")
    sections = [
        Section(
            "failures",
            f"Failures ({count:,})",
            tables=[("", replace(listed, more=count - len(listed.rows)))],
        ),
        lost_pages_section(view, limits),
        Section(
            "slowest",
            "Slowest PDFs",
            f"Top {limits.slowest} by conversion seconds (all parts together).",
            tables=[("", slowest)],
        ),
        llm_section(view, limits),
    ]
    return [section for section in sections if section is not None]


def _summary_table(frame: pd.DataFrame, table_id: str, empty: str, limits: Limits) -> Table:
    """A long table of the page, cut at `limits.table_rows`: summary.json has all its rows."""
    return Table.of(frame, table_id, empty, limits.table_rows, "summary.json has them all")


def lost_pages_section(view: RunView, limits: Limits) -> Section | None:
    """The pages lost in bisected items (summary.json's), and how to try them again; None when none was."""
    lost = pd.DataFrame(view.summary.get("lost_pages") or [], columns=["pdf", "page", "status", "error"])
    if not len(lost):
        return None
    note = (
        f"Pages that failed alone once their items were bisected; each document has a placeholder for "
        f"them and the status partial. To try them again, run: {command_line('retry', view.record.run_id)}"
    )
    table = _summary_table(lost, "lost-pages-table", "No page was lost.", limits)
    return Section("lost-pages", f"Lost pages ({len(lost):,})", note, tables=[("", table)])


def llm_section(view: RunView, limits: Limits) -> Section | None:
    """The LLM service: tokens/s and requests in flight over time, its counters, replicas, and the items
    whose refinement was degraded or failed over; None when the run had no LLM."""
    llm = view.llm
    if not llm:
        return None
    fig = figures.llm_figure(frames.llm_timeline_frame(llm, limits.llm_points))
    note = (
        f"{llm.get('tokens_out_per_s', 0)} tokens/s on average, peak {llm.get('peak_tokens_out_per_s', 0)}; "
        f"peak {llm.get('peak_in_flight', 0)} in flight, {llm.get('peak_queued', 0)} waiting at the fronts; "
        f"{llm.get('denied', 0)} denied (bad secret)." + (f" {llm['bound']['why']}." if llm.get("bound") else "")
    )
    tables = [("", Table.of(frames.llm_counts_frame(llm), "llm-table", ""))]
    if llm.get("replicas"):
        tables.append(("Replicas", Table.of(frames.llm_replicas_frame(llm), "llm-replicas-table", "")))
    degraded = _summary_table(frames.degraded_frame(view.summary), "degraded-table", "None.", limits)
    tables.append(("Items with degraded refinement", degraded))
    if view.summary.get("llm_failover"):
        moved = frames.degraded_frame(view.summary, "llm_failover")
        heading = "Items whose LLM requests moved to another replica"
        tables.append((heading, _summary_table(moved, "failover-table", "None.", limits)))
    return Section("llm", "LLM service", note, figures.figure_html(fig, "llm-plot") if fig else None, tables)


def text_layer_section(view: RunView, totals: dict, limits: Limits) -> Section:
    """The documents whose text layer has empty or garbled pages, and how to send them to OCR."""
    layer = totals.get("text_layer") or {}
    note = (
        f"{plural(layer.get('documents_checked', 0), 'document')} "
        f"({plural(layer.get('pages_checked', 0), 'page')}) checked: "
        f"{plural(layer.get('empty_pages', 0), 'empty page')} in "
        f"{plural(layer.get('documents_with_empty_pages', 0), 'document')}, "
        f"{plural(layer.get('garbled_pages', 0), 'garbled page')} in "
        f"{plural(layer.get('documents_with_garbled_pages', 0), 'document')}. To convert them again with OCR, "
        f"run: {ocr_command(view.record.run_id, layer)}"
    )
    if layer.get("routed"):
        note = f"{routing_line(layer['routed'])}. {note}"
    table = _summary_table(frames.flagged_frame(totals), "text-layer-table", "No page was flagged.", limits)
    return Section("text-layer", "Text layer", note, tables=[("", table)])


def output_flags_section(view: RunView, totals: dict, limits: Limits) -> Section:
    """The documents whose output carries an output flag (quality/), and the follow-up that redoes them."""
    counts = totals.get("output_flags") or {}
    note = ", ".join(f"{name} in {plural(n, 'document')}" for name, n in counts.items()) or "No output was flagged"
    if counts:
        redo = command_line("retry", view.record.run_id, "--select", ",".join(counts))
        note += f". To convert them again (add the settings to change), run: {redo}"
    where = "summary.json lists the first 100, the manifest's output_flags all"
    table = Table.of(frames.output_flagged_frame(totals), "output-flags-table", "", limits.table_rows, where)
    return Section("output-flags", "Output flags", note + ".", tables=[("", table)] if counts else [])


GPU_ROWS = 200  # tasks drawn one bar each in the GPU-hours figure; past it, one bar for the run


def gpu_section(totals: dict) -> Section:
    """Where the GPU-hours went (manage/accounting.py, in summary.json): per task, start-up, converting, LLM
    wait, draining and idle; the run's figures and advice in the note."""
    if totals.get("gpu_hours") is None:
        return Section("gpu", "GPU-hours", none="Counted when the run is collected (`hpcmarker status` meanwhile).")
    note = f"{totals['gpu_hours']:.4g} GPU-hours ({totals.get('gpu_accounting_source')})"
    if totals.get("gpu_efficiency") is not None:
        note += f", {totals['gpu_efficiency']:.0%} of it converting"
    if totals.get("pages_per_gpu_hour") is not None:
        note += f", {totals['pages_per_gpu_hour']:,.0f} pages per GPU-hour"
    if totals.get("cost") is not None:
        note += f"; cost {totals['cost']:,.2f}"
    advice = totals.get("gpu_advice") or []
    note = " ".join([note + ".", *(f"Advice: {line}." for line in advice)])
    plot = figures.figure_html(figures.gpu_time_figure(frames.gpu_time_frame(totals, GPU_ROWS)), "gpu-plot")
    return Section("gpu", "GPU-hours", note, plot)


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hpc_marker.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def build_report(paths: RunPaths, limits: Limits = Limits(), view: RunView | None = None) -> str:
    """The report page for a run folder (read from it, unless the caller has `view`), as one HTML string."""
    view = view or load_run(paths)
    totals = run_totals(view)
    items = view.records if "state" in view.records else frames.records_frame(view.records)
    sections = [
        *timeline_sections(view, items, totals, limits),
        *table_sections(view, items, limits),
        text_layer_section(view, totals, limits),
        output_flags_section(view, totals, limits),
        gpu_section(totals),
    ]
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            head=header(view, totals),
            torn=view.torn,
            sections=sections,
            plotly_js=Markup(get_plotlyjs()),
            generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
    )


def write_report(run_dir: Path, limits: Limits = Limits(), view: RunView | None = None) -> Path:
    """Write RUN/report.html (atomically: a failed write leaves no partial file) and return its path."""
    paths = RunPaths(Path(run_dir))
    target = paths.root / REPORT_NAME
    atomic_write(target, build_report(paths, limits, view))
    return target
