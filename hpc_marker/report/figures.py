"""Figures: plotly figures from the report's frames, and their HTML for the page. Pure.

Plotly draws hover boxes and axis labels from its own small markup (<b>, <br>, entities), so a
string from the run (a PDF path, an error, a host name) goes through `plotly_text`, which escapes
it for that markup: it is shown as text, never read as tags. The page around the plots is
escaped by its Jinja2 template.
"""

from __future__ import annotations

import functools
import math
import textwrap

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup, escape
from plotly.subplots import make_subplots

from hpc_marker.report.frames import local_times

COLORS = {"ok": "#2e9d5b", "degraded": "#e69b23", "failed": "#d64545"}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
MARGIN = {"l": 10, "r": 10, "t": 30, "b": 40}
# Every figure's look. Plotly copies and validates a named template on every figure it is set on (~25 ms each),
# so the figures are built on plotly's empty template ("none", BLANK) and figure_html writes TEMPLATE, built once
# per process, into each figure's JSON: the page is the same, byte for byte. Plotly express would take the colours
# it is not given from the template it is built on: every colour here is given (COLORS).
TEMPLATE = "plotly_white"
BLANK = {"template": "none"}


def plotly_text(value: object, width: int = 90, limit: int = 300) -> str:
    """A string from the run for a hover box or axis label: cut to `limit` characters, escaped for
    plotly's markup, broken into lines of `width`."""
    text = "" if value is None else str(value)
    text = text if len(text) <= limit else text[:limit] + "…"
    return "<br>".join(str(escape(line)) for line in textwrap.wrap(text, width) or [""])


def figure_html(fig: go.Figure, div_id: str) -> Markup:
    """The figure as a <div> and the script that draws it; plotly.js itself is in the page once."""
    spec = fig.to_plotly_json()
    spec["layout"]["template"] = _template_json()
    html = pio.to_html(spec, validate=False, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
    return Markup(html)


@functools.cache
def _template_json() -> dict:
    """TEMPLATE as plotly writes it into a figure (validated, which orders its keys): built once per process;
    pio.to_html does not change it."""
    return go.Layout(template=TEMPLATE).template.to_plotly_json()


def row_labels(places: pd.DataFrame) -> pd.Series:
    """'task 3 / node07 / GPU 1' per (task, host, gpu) row; 'task 3 / no item' for an idle task."""
    return pd.Series(
        [
            f"task {t} / {plotly_text(h or '-', limit=60)} / GPU {plotly_text(g or '-', limit=30)}"
            if pd.notna(h) or pd.notna(g)
            else f"task {t} / no item"
            for t, h, g in zip(places["task"], places["host"], places["gpu"], strict=False)
        ],
        index=places.index,
    )


def task_labels(places: pd.DataFrame) -> dict[int, str]:
    """One label per task: its host and GPU, or how many it ran on (a requeued task moves)."""
    labels = {}
    for task, rows in places.groupby("task", sort=True):
        rows = rows.dropna(subset=["host"])
        if rows.empty:
            labels[task] = f"task {task} / no item"
        elif len(rows) == 1:
            labels[task] = row_labels(rows).iloc[0]
        else:
            labels[task] = f"task {task} / {len(rows)} GPUs on {rows['host'].nunique()} host(s)"
    return labels


def _height(rows: int) -> int:
    return 150 + rows * max(10, min(36, 640 // max(rows, 1)))


def _hover(frame: pd.DataFrame) -> list[str]:
    hover = []
    for r in frame.itertuples():
        pages = f"pages {r.page_start + 1}-{r.page_stop} ({r.pages})" if r.pages > 0 else "no pages"
        text = (
            f"<b>{plotly_text(r.pdf)}</b><br>{pages} · {r.seconds:.2f} s · {r.state}<br>"
            f"{r.start:%H:%M:%S} → {r.end:%H:%M:%S}"
        )
        for label, value in (("error", r.error), ("degraded", r.degraded)):
            text += f"<br>{label}: {plotly_text(value)}" if isinstance(value, str) and value else ""
        hover.append(text)
    return hover


def timeline_figure(items: pd.DataFrame, places: pd.DataFrame) -> go.Figure:
    """A bar per record from start to finish, one row per task/host/GPU, colored by state; an empty
    row per task that did no item. Bars are drawn at least 0.4% of the run wide, to stay visible.
    For runs of a few thousand records: a bar each."""
    places = places.assign(row=row_labels(places))
    frame = items.merge(places, on=["task", "host", "gpu"], how="left")
    frame["start"], frame["end"] = local_times(frame["started"]), local_times(frame["finished"])
    frame["hover"] = _hover(frame)
    span = max(frame["end"].max() - frame["start"].min(), pd.Timedelta(seconds=1))
    frame["end"] = np.maximum(frame["end"], frame["start"] + span * 0.004)
    order = places["row"].tolist()
    fig = px.timeline(
        frame,
        x_start="start",
        x_end="end",
        y="row",
        color="state",
        custom_data=["hover"],
        color_discrete_map=COLORS,
        category_orders={"row": order, "state": list(COLORS)},
        template=BLANK["template"],
    )
    fig.update_traces(hovertemplate="%{customdata[0]}<extra></extra>", marker_line_width=0.5, marker_line_color="white")
    idle = places.loc[places["host"].isna() & places["gpu"].isna(), "row"].tolist()  # tasks with no record
    if idle:  # invisible points give idle tasks their (empty) row
        fig.add_scatter(
            x=[frame["start"].min()] * len(idle),
            y=idle,
            mode="markers",
            marker_opacity=0,
            hoverinfo="skip",
            showlegend=False,
        )
    fig.update_yaxes(autorange="reversed", title=None, categoryorder="array", categoryarray=order)
    fig.update_layout(
        height=_height(len(order)),
        legend_title_text="",
        xaxis_title="time (local)",
        margin=MARGIN,
        hoverlabel_align="left",
    )
    return fig


def activity_figure(activity: pd.DataFrame, labels: dict[int, str]) -> go.Figure:
    """The timeline of a large run, per task and time bucket: a heatmap of the pages/s each task
    converted in each bucket (blank: idle), with a red ✕ where attempts failed, sized by how many."""
    width = activity.attrs["bucket_s"]
    tasks = list(dict.fromkeys(activity["task"]))
    grid = {
        column: activity.pivot(index="task", columns="start", values=column).loc[tasks]
        for column in ("pages_per_s", "pages", "ok", "degraded", "failed")
    }
    times = local_times(grid["pages"].columns.to_numpy(float) + width / 2)
    rows = [labels.get(task, f"task {task}") for task in tasks]
    rate = grid["pages_per_s"].to_numpy(float)
    fig = go.Figure(
        layout=BLANK,
        data=go.Heatmap(
            x=times,
            y=rows,
            z=np.where(rate > 0, rate.round(3), np.nan),
            hoverongaps=False,
            ygap=1,
            customdata=np.dstack([grid[c].to_numpy(float).round(1) for c in ("pages", "ok", "degraded", "failed")]),
            colorscale=[[0, "#cdebd8"], [1, "#14532d"]],
            colorbar={"title": {"text": "pages/s"}, "thickness": 12},
            hovertemplate=(
                "%{y}<br>%{x|%H:%M:%S}: %{z:.2f} pages/s, %{customdata[0]:,.0f} pages<br>"
                "%{customdata[1]:,} ok · %{customdata[2]:,} degraded · %{customdata[3]:,} failed"
                "<extra></extra>"
            ),
        ),
    )
    row, col = np.nonzero(grid["failed"].to_numpy() > 0)
    failed = grid["failed"].to_numpy()[row, col]
    if len(failed):
        fig.add_scatter(
            x=times.iloc[col],
            y=[rows[k] for k in row],
            mode="markers",
            name="failed attempts",
            customdata=failed,
            marker={
                "symbol": "x",
                "color": COLORS["failed"],
                "line": {"width": 1, "color": "white"},
                "size": np.clip(7 + 2 * np.log2(failed), 7, 16),
            },
            hovertemplate="%{y}<br>%{x|%H:%M:%S}: %{customdata:,} failed<extra></extra>",
        )
    fig.update_yaxes(autorange="reversed", title=None, categoryorder="array", categoryarray=rows)
    fig.update_layout(
        height=_height(len(rows)),
        margin=MARGIN,
        hoverlabel_align="left",
        xaxis_title=f"time (local), {width:g} s buckets",
        showlegend=bool(len(failed)),
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
    )
    return fig


def throughput_figure(frame: pd.DataFrame, average: float | None) -> go.Figure:
    """Bars of pages/s per bucket, the run's average, and pages done (right axis)."""
    width = frame.attrs.get("bucket_s", 1)
    fig = make_subplots(specs=[[{"secondary_y": True}]], figure=go.Figure(layout=BLANK))
    fig.add_bar(
        x=frame["time"],
        y=frame["pages_per_s"].round(3),
        width=width * 1000,
        name="pages/s",
        marker_color="#4c78a8",
        hovertemplate="%{x|%H:%M:%S}: %{y:.2f} pages/s<extra></extra>",
    )
    fig.add_scatter(
        x=frame["time"],
        y=frame["pages_done"].round(1),
        name="pages done",
        secondary_y=True,
        line={"color": "#222", "width": 2},
        hovertemplate="%{y:,.0f} pages done<extra></extra>",
    )
    if average:
        fig.add_hline(
            y=average,
            line_dash="dash",
            line_color="#d64545",
            annotation_text=f"average {average:.2f}",
            annotation_position="top left",
        )
    fig.update_layout(
        height=360,
        bargap=0.05,
        margin=MARGIN,
        legend={"orientation": "h", "y": 1.12},
        xaxis_title=f"time (local), {width:g} s buckets",
    )
    fig.update_yaxes(title_text="pages/s", secondary_y=False)
    fig.update_yaxes(title_text="pages done", secondary_y=True, showgrid=False, rangemode="tozero", tickmode="auto")
    return fig


def llm_figure(timeline: pd.DataFrame) -> go.Figure | None:
    """The LLM front's tokens/s and in-flight requests over time; None without a timeline."""
    if timeline.empty:
        return None
    fig = make_subplots(specs=[[{"secondary_y": True}]], figure=go.Figure(layout=BLANK))
    fig.add_scatter(
        x=timeline["time"],
        y=timeline["tokens_out_per_s"],
        name="tokens out/s",
        fill="tozeroy",
        line={"color": "#7b4fa0"},
        hovertemplate="%{x|%H:%M:%S}: %{y:.1f} tokens/s<extra></extra>",
    )
    fig.add_scatter(
        x=timeline["time"],
        y=timeline["in_flight"],
        name="in-flight requests",
        secondary_y=True,
        line={"color": "#e69b23", "shape": "hv"},
        hovertemplate="%{y} in flight<extra></extra>",
    )
    fig.update_layout(
        height=340,
        margin=MARGIN,
        legend={"orientation": "h", "y": 1.12},
        xaxis_title="time (local)",
    )
    fig.update_yaxes(title_text="tokens out/s", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(
        title_text="in flight",
        secondary_y=True,
        showgrid=False,
        rangemode="tozero",
        tick0=0,
        dtick=max(1, math.ceil(timeline["in_flight"].max() / 6)),
    )
    return fig


GPU_PARTS = {  # manage/accounting.py's parts of a task's GPU time, as the figure names and colours them
    "startup": ("start-up", "#f58518"),
    "converting": ("converting", "#4c78a8"),
    "llm_wait": ("LLM wait", "#b279a2"),
    "draining": ("draining", "#9d9d9d"),
    "idle": ("idle", "#d64545"),
}


def gpu_time_figure(tasks: pd.DataFrame) -> go.Figure:
    """Stacked bars of each row's GPU-hours by part (columns: label and GPU_PARTS' keys, in GPU-hours)."""
    fig = go.Figure(layout=BLANK)
    for column, (name, color) in GPU_PARTS.items():
        fig.add_bar(
            y=tasks["label"],
            x=tasks[column].round(5),
            orientation="h",
            name=name,
            marker_color=color,
            hovertemplate=f"%{{y}}: %{{x:.4g}} GPU-hours {name}<extra></extra>",
        )
    fig.update_layout(
        barmode="stack",
        height=_height(len(tasks)),
        margin=MARGIN,
        legend={"orientation": "h", "y": 1.12},
        xaxis_title="GPU-hours",
        yaxis={"autorange": "reversed", "type": "category"},
    )
    return fig
