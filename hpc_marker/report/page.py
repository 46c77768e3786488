"""Report: RUN/report.html, one self-contained page that shows how a run went.

Owns the run report: a header of totals, a timeline of every task's work items on its GPU,
pages/s over time, the failures, the slowest PDFs, and the LLM service's tokens/s, queue and
errors when the run had one. Built from the run folder only (run.json, plan.json, manifests,
summary.json once collected). Plots are plotly figures with plotly.js inlined once, so the file
opens offline. Every string from the run is HTML-escaped, in tables and in hover text alike.
The frame and figure builders are pure; `write_report` reads the folder and writes atomically.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from hpc_marker.llm.metrics import read_metrics, summarize_metrics
from hpc_marker.llm.settings import LlmPaths
from hpc_marker.planning.plan import Plan
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import ManifestRecord, latest_by_item, read_manifests
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.summary import document_counts, summarize_records
from hpc_marker.util.files import atomic_write

COLORS = {"ok": "#2e9d5b", "degraded": "#e69b23", "failed": "#d64545"}
BUCKETS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
LLM_COUNTERS = ("requests", "failures", "timeouts", "client_errors", "tokens_in", "tokens_out")
REPORT_NAME = "report.html"


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _local(stamps: Any) -> pd.Series:
    """Epoch seconds -> naive local datetimes (what the page shows)."""
    return pd.Series([datetime.fromtimestamp(float(t)) for t in stamps], dtype="datetime64[ns]")


def _pages(start: int, stop: int) -> str:
    return f"{start + 1}-{stop}" if stop > start else "-"


def _wrapped(text: str, width: int = 90, limit: int = 600) -> str:
    """Escaped, cut to `limit` characters, broken into lines for a hover box."""
    short = text if len(text) <= limit else text[:limit] + "…"
    return "<br>".join(_esc(line) for line in textwrap.wrap(short, width) or [""])


def _duration(seconds: float | None) -> str:
    if seconds is not None and seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds or 0))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def items_frame(records: list[ManifestRecord]) -> pd.DataFrame:
    """One row per manifest record (every attempt): timeline row, state, local times, hover. Pure."""
    frame = pd.DataFrame([asdict(r) for r in records], columns=list(ManifestRecord.__dataclass_fields__))
    degraded = frame["degraded"].map(lambda v: isinstance(v, str) and bool(v))
    frame["state"] = np.where(frame["status"] != "ok", "failed", np.where(degraded, "degraded", "ok"))
    frame["row"] = [f"task {t} / {_esc(h or '-')} / GPU {_esc(g or '-')}"
                    for t, h, g in zip(frame["task"], frame["host"], frame["gpu"])]
    frame["start"], frame["end"] = _local(frame["started"]), _local(frame["finished"])
    hover = []
    for r in frame.itertuples():
        pages = f"pages {_pages(r.page_start, r.page_stop)} ({r.pages})" if r.pages > 0 else "no pages"
        text = (f"<b>{_wrapped(r.pdf)}</b><br>{pages}"
                f" · {r.seconds:.2f} s · {r.state}<br>{_esc(r.start.strftime('%H:%M:%S'))}"
                f" → {_esc(r.end.strftime('%H:%M:%S'))}")
        for label, value in (("error", r.error), ("degraded", r.degraded)):
            text += f"<br>{label}: {_wrapped(value)}" if isinstance(value, str) and value else ""
        hover.append(text)
    frame["hover"] = hover
    return frame


def timeline_figure(items: pd.DataFrame, idle_tasks: Sequence[int] = ()) -> go.Figure:
    """A bar per work item from start to finish, one row per task/host/GPU, colored by state; an empty
    row per task that did no item. Bars are drawn at least 0.4% of the run wide, to stay visible. Pure."""
    order = items.sort_values(["task", "host", "gpu"])["row"].drop_duplicates().tolist()
    span = max(items["end"].max() - items["start"].min(), pd.Timedelta(seconds=1))
    items = items.assign(end=np.maximum(items["end"], items["start"] + span * 0.004))
    fig = px.timeline(items, x_start="start", x_end="end", y="row", color="state", custom_data=["hover"],
                      color_discrete_map=COLORS, category_orders={"row": order, "state": list(COLORS)},
                      template="plotly_white")
    fig.update_traces(hovertemplate="%{customdata[0]}<extra></extra>", marker_line_width=0.5,
                      marker_line_color="white")
    idle = [f"task {t} / no item" for t in idle_tasks]
    if idle:  # invisible points give idle tasks their (empty) row
        fig.add_scatter(x=[items["start"].min()] * len(idle), y=idle, mode="markers", marker_opacity=0,
                        hoverinfo="skip", showlegend=False)
    fig.update_yaxes(autorange="reversed", title=None, categoryorder="array", categoryarray=order + idle)
    fig.update_layout(height=150 + 36 * (len(order) + len(idle)), legend_title_text="", xaxis_title="time (local)",
                      margin={"l": 10, "r": 10, "t": 30, "b": 40}, hoverlabel_align="left")
    return fig


def throughput_frame(records: list[ManifestRecord], buckets: int = 60) -> pd.DataFrame:
    """Pages/s per time bucket, each ok item's pages spread over its duration; pages done so far. Pure."""
    ok = [r for r in records if r.status == "ok" and r.pages > 0]
    if not ok:
        return pd.DataFrame(columns=["time", "pages_per_s", "pages_done"])
    finished = np.array([r.finished for r in ok])
    duration = np.maximum(finished - np.array([r.started for r in ok]), 1e-6)
    started, pages = finished - duration, np.array([r.pages for r in ok], dtype=float)
    first = min(started.min(), min(r.started for r in records))
    span = max(max(r.finished for r in records) - first, 1e-6)
    width = next((w for w in BUCKETS_S if w >= span / buckets), BUCKETS_S[-1])
    edges = first + width * np.arange(math.ceil(span / width) + 1)
    overlap = np.clip(np.minimum(finished[:, None], edges[None, 1:]) - np.maximum(started[:, None], edges[None, :-1]),
                      0, None)
    done = (overlap / duration[:, None] * pages[:, None]).sum(axis=0)
    frame = pd.DataFrame({"time": _local(edges[:-1] + width / 2), "pages_per_s": done / width,
                          "pages_done": done.cumsum()})
    frame.attrs["bucket_s"] = width
    return frame


def throughput_figure(frame: pd.DataFrame, average: float | None) -> go.Figure:
    """Bars of pages/s per bucket, the run's average, and pages done (right axis). Pure."""
    width = frame.attrs.get("bucket_s", 1)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=frame["time"], y=frame["pages_per_s"].round(3), width=width * 1000, name="pages/s",
                marker_color="#4c78a8", hovertemplate="%{x|%H:%M:%S}: %{y:.2f} pages/s<extra></extra>")
    fig.add_scatter(x=frame["time"], y=frame["pages_done"].round(1), name="pages done", secondary_y=True,
                    line={"color": "#222", "width": 2}, hovertemplate="%{y:.0f} pages done<extra></extra>")
    if average:
        fig.add_hline(y=average, line_dash="dash", line_color="#d64545", annotation_text=f"average {average:.2f}",
                      annotation_position="top left")
    fig.update_layout(template="plotly_white", height=360, bargap=0.05, margin={"l": 10, "r": 10, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": 1.12}, xaxis_title=f"time (local), {width:g} s buckets")
    fig.update_yaxes(title_text="pages/s", secondary_y=False)
    fig.update_yaxes(title_text="pages done", secondary_y=True, showgrid=False, rangemode="tozero", tickmode="auto")
    return fig


def failures_frame(plan: Plan, records: list[ManifestRecord], missing: list[str] | None = None) -> pd.DataFrame:
    """Items whose latest attempt failed, and items with no record at all (`missing`). Pure."""
    latest, planned = latest_by_item(records), {item.item_id: item for item in plan.items}
    attempts = pd.Series([r.item_id for r in records], dtype=object).value_counts()
    rows = [{"pdf": r.pdf, "pages": _pages(r.page_start, r.page_stop), "status": r.status, "error": r.error or r.status,
             "task": r.task, "host": r.host, "attempts": int(attempts.get(r.item_id, 0))}
            for r in latest.values() if r.status != "ok" and r.item_id in planned]
    never = missing if missing is not None else [i for i in planned if i not in latest]
    rows += [{"pdf": planned[i].pdf, "pages": planned[i].page_label(), "status": "missing",
              "error": "no record: the item never finished",
              "task": "-", "host": "-", "attempts": 0} for i in never if i in planned]
    columns = ["pdf", "pages", "status", "error", "task", "host", "attempts"]
    return pd.DataFrame(rows, columns=columns).sort_values(["pdf", "pages"], kind="stable", ignore_index=True)


def slowest_frame(records: list[ManifestRecord], top: int = 10) -> pd.DataFrame:
    """The PDFs that took longest (all their ok parts together), with seconds per page. Pure."""
    ok = [r for r in latest_by_item(records).values() if r.status == "ok"]
    columns = ["pdf", "pages", "seconds", "seconds_per_page", "parts"]
    if not ok:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame([asdict(r) for r in ok]).groupby("pdf", as_index=False).agg(
        pages=("pages", "sum"), seconds=("seconds", "sum"), parts=("item_id", "count"))
    frame["seconds_per_page"] = frame["seconds"] / frame["pages"].clip(lower=1)
    frame = frame.sort_values(["seconds", "pdf"], ascending=[False, True]).head(top)
    return frame.round({"seconds": 2, "seconds_per_page": 3})[columns].reset_index(drop=True)


def llm_figure(llm: dict) -> go.Figure | None:
    """The LLM front's tokens/s and in-flight requests over time, from summary.json's "llm". Pure."""
    timeline = pd.DataFrame(llm.get("timeline") or [], columns=["ts", "in_flight", "tokens_out_per_s"])
    if timeline.empty:
        return None
    timeline["time"] = _local(timeline["ts"])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=timeline["time"], y=timeline["tokens_out_per_s"], name="tokens out/s", fill="tozeroy",
                    line={"color": "#7b4fa0"}, hovertemplate="%{x|%H:%M:%S}: %{y:.1f} tokens/s<extra></extra>")
    fig.add_scatter(x=timeline["time"], y=timeline["in_flight"], name="in-flight requests", secondary_y=True,
                    line={"color": "#e69b23", "shape": "hv"}, hovertemplate="%{y} in flight<extra></extra>")
    fig.update_layout(template="plotly_white", height=340, margin={"l": 10, "r": 10, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": 1.12}, xaxis_title="time (local)")
    fig.update_yaxes(title_text="tokens out/s", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="in flight", secondary_y=True, showgrid=False, rangemode="tozero", tick0=0,
                     dtick=max(1, math.ceil(timeline["in_flight"].max() / 6)))
    return fig


def llm_counts_frame(llm: dict) -> pd.DataFrame:
    """Requests, errors and tokens per task and in total. Pure."""
    rows = [{"task": task, **{k: counters.get(k, 0) for k in LLM_COUNTERS}}
            for task, counters in sorted((llm.get("tasks") or {}).items())]
    rows.append({"task": "all", **{k: llm.get(k, 0) for k in LLM_COUNTERS}})
    return pd.DataFrame(rows, columns=["task", *LLM_COUNTERS])


def _table(frame: pd.DataFrame, table_id: str, empty: str) -> str:
    if frame.empty:
        return f'<p class="none" id="{table_id}">{_esc(empty)}</p>'
    head = "".join(f"<th>{_esc(c).replace('_', ' ')}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f'<td class="c-{_esc(c)}">{_esc(v)}</td>' for c, v in zip(frame.columns, row))
                   + "</tr>" for row in frame.itertuples(index=False))
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _plot(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def _section(section_id: str, title: str, note: str, body: str) -> str:
    return (f'<section id="{section_id}"><h2>{_esc(title)}</h2>'
            + (f'<p class="note">{note}</p>' if note else "") + body + "</section>")


def _totals(paths: RunPaths, plan: Plan, records: list[ManifestRecord], torn: list[str], summary: dict) -> dict:
    from hpc_marker.runstate.claims import ClaimBoard

    totals = summarize_records(plan, records, torn)
    board = ClaimBoard(paths.claims, owner="report", lease_s=paths.load_record().lease_seconds)
    totals.update(document_counts(plan, latest_by_item(records), board))
    return {**totals, **summary}


def _header(record: RunRecord, totals: dict, summary: dict) -> str:
    collected = (f"collected {datetime.fromtimestamp(summary['collected']):%Y-%m-%d %H:%M:%S}"
                 if summary.get("collected") else "not collected yet: from the task manifests so far")
    rate = totals.get("pages_per_second")
    cards = [("items", f"{totals['ok']} ok · {totals['failed']} failed",
              f"{len(totals.get('missing', []))} missing of {totals['items']}"),
             ("documents", f"{totals.get('documents_ok', 0)} ok", f"of {totals.get('documents', 0)}"),
             ("pages", f"{totals.get('pages_ok', 0)}", f"converted of {totals.get('pages', 0)}"),
             ("wall time", _duration(totals.get("wall_seconds")), "first start to last finish"),
             ("pages/s", f"{rate:.2f}" if rate else "-", "whole run"),
             ("tasks", f"{record.tasks}", f"{record.executor}, "
              + (f"{record.workers_per_gpu} worker(s) per GPU" if record.workers_per_gpu
                 else "workers per GPU chosen by each task (its log says why)"))]
    html_cards = "".join(f'<div class="card"><div class="k">{_esc(k)}</div><div class="v">{_esc(v)}</div>'
                         f'<div class="s">{_esc(s)}</div></div>' for k, v, s in cards)
    model = (record.llm or {}).get("model") or (summary.get("llm") or {}).get("model")
    llm = f" · LLM {_esc(model)}" if model else ""
    return (f'<header id="summary"><h1>hpcmarker run <span class="id">{_esc(record.run_id)}</span></h1>'
            f'<p class="meta">engine {_esc(record.engine)}{llm} · created '
            f"{datetime.fromtimestamp(record.created):%Y-%m-%d %H:%M:%S} · {_esc(collected)} · "
            f'<span class="path">{_esc(record.pdfs_root)}</span> → <span class="path">{_esc(record.out_dir)}</span></p>'
            f'<div class="cards">{html_cards}</div></header>')


def build_report(paths: RunPaths) -> str:
    """The report page for a run folder, as one HTML string."""
    record, plan = paths.load_record(), Plan.load(paths.plan)
    read = read_manifests(paths.manifests)
    summary = json.loads(paths.summary.read_text(encoding="utf-8")) if paths.summary.exists() else {}
    totals = _totals(paths, plan, read.records, read.torn_lines, summary)
    parts = [_header(record, totals, summary)]
    if read.torn_lines:
        parts.append(f'<p class="warn">{len(read.torn_lines)} unreadable manifest line(s): '
                     f"{_esc('; '.join(read.torn_lines[:5]))}</p>")
    if read.records:
        items = items_frame(read.records)
        idle = sorted({t.index for t in plan.tasks} - set(items["task"]))
        note = "One row per task (host, GPU); a bar per work item attempt from start to finish. Gaps are idle time."
        parts.append(_section("timeline", "Tasks over time", note,
                              _plot(timeline_figure(items, idle), "timeline-plot")))
        flow = throughput_frame(read.records)
        parts.append(_section("throughput", "Pages per second", "Each item's pages spread over its duration.",
                              _plot(throughput_figure(flow, totals.get("pages_per_second")), "throughput-plot")
                              if not flow.empty else '<p class="none">No pages converted yet.</p>'))
    else:
        parts.append(_section("timeline", "Tasks over time", "", '<p class="none">No item finished yet.</p>'))
    failures = failures_frame(plan, read.records, summary.get("missing"))
    parts.append(_section("failures", f"Failures ({len(failures)})", "", _table(failures, "failures-table",
                                                                                "No failures.")))
    parts.append(_section("slowest", "Slowest PDFs", "Top 10 by conversion seconds (all parts together).",
                          _table(slowest_frame(read.records), "slowest-table", "No PDF converted yet.")))
    llm = summary.get("llm")
    if llm is None and record.llm:  # not collected yet: straight from the front's metrics
        llm = summarize_metrics(read_metrics(LlmPaths(paths.root).metrics))
    if llm:
        fig = llm_figure(llm)
        note = (f"{_esc(llm.get('tokens_out_per_s', 0))} tokens/s on average, peak "
                f"{_esc(llm.get('peak_tokens_out_per_s', 0))}; peak {_esc(llm.get('peak_in_flight', 0))} in flight; "
                f"{_esc(llm.get('denied', 0))} denied (bad secret).")
        degraded = pd.DataFrame(summary.get("degraded") or [], columns=["pdf", "pages", "reason"])
        parts.append(_section("llm", "LLM service", note, (_plot(fig, "llm-plot") if fig else "")
                              + _table(llm_counts_frame(llm), "llm-table", "")
                              + "<h3>Items with degraded refinement</h3>"
                              + _table(degraded, "degraded-table", "None.")))
    title = f"hpcmarker run {_esc(record.run_id)}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style>'
            f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>"
            f"<script>{get_plotlyjs()}</script></head><body><main>{''.join(parts)}"
            f'<footer>hpcmarker report · generated {time.strftime("%Y-%m-%d %H:%M:%S")}</footer></main></body></html>')


def write_report(run_dir: Path) -> Path:
    """Write RUN/report.html (atomically) and return its path."""
    paths = RunPaths(Path(run_dir))
    target = paths.root / REPORT_NAME
    atomic_write(target, build_report(paths))  # a failed write keeps no space (a full disk)
    return target


CSS = """
body{margin:0;background:#f3f4f6;color:#1f2933;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1320px;margin:0 auto;padding:24px}h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 8px}
header,section{background:#fff;border-radius:10px;box-shadow:0 1px 3px #0002;padding:18px 22px;margin-bottom:18px}
h1 .id,.path,td.c-pdf{font-family:ui-monospace,monospace}h1 .id{color:#3b5b8c}h3{font-size:15px;margin:16px 0 6px}
.meta,.note,footer{color:#52606d;font-size:13px;margin:4px 0 12px}footer{text-align:center}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px}
.card{background:#f8fafc;border:1px solid #e4e7eb;border-radius:8px;padding:10px 14px}.card .v{font-size:22px;font-weight:600}
.card .k{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#7b8794}.card .s{font-size:12px;color:#7b8794}
table{border-collapse:collapse;width:100%;font-size:13px}th{text-align:left;background:#f1f5f9;color:#52606d}
th,td{padding:6px 10px;border-bottom:1px solid #e4e7eb;vertical-align:top}tbody tr:nth-child(even){background:#fafbfc}
td.c-pdf{word-break:break-all}td.c-error,td.c-reason{color:#b42318;word-break:break-word}.none{color:#7b8794;font-style:italic}
.warn{background:#fff4e5;border:1px solid #f5c26b;padding:8px 12px;border-radius:6px}
"""
