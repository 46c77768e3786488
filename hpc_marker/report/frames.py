"""Frames: the report's data as pandas frames, from manifest records, the plan, summary.json and
the LLM front's metrics. Pure functions: no files, no HTML, no plotly.

Every frame is bounded by the run's tasks and a number of time buckets, never by its items,
except `records_frame` (one row per manifest record, what the others are built from) and
`failures_frame` (every failed or missing item; the page shows its first rows). Each step is
linear in the records, or sorts them once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from hpc_marker.planning.bisect import BISECTED
from hpc_marker.planning.plan import Plan
from hpc_marker.runstate.manifest import ManifestRecord, latest_frame
from hpc_marker.util.frames import distinct_rows, isin

FIELDS = list(ManifestRecord.__dataclass_fields__)
NICE_BUCKETS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
LLM_COUNTERS = ("requests", "failures", "timeouts", "client_errors", "tokens_in", "tokens_out")
LLM_REPLICA_COLUMNS = (
    "replica",
    "requests",
    "failures",
    "timeouts",
    "abandoned",
    "failovers",
    "tokens_out",
    "tokens_out_per_s",
    "peak_in_flight",
    "peak_queued",
    "capacity",
)
FAILURE_COLUMNS = ["pdf", "pages", "status", "error", "task", "host", "attempts"]
SLOWEST_COLUMNS = ["pdf", "pages", "seconds", "seconds_per_page", "parts"]
_CHUNK = 8192  # records per step when spreading pages over buckets: bounds the memory


def local_times(stamps: Iterable[float]) -> pd.Series:
    """Epoch seconds -> naive local datetimes (what the page shows). For bucket-sized inputs."""
    return pd.Series([datetime.fromtimestamp(float(t)) for t in stamps], dtype="datetime64[ns]")


def page_labels(start: pd.Series, stop: pd.Series) -> pd.Series:
    """1-based inclusive page ranges, '-' where there are none (an unreadable PDF)."""
    label = (start + 1).astype(str) + "-" + stop.astype(str)
    return label.where(stop > start, "-")


def records_frame(records: Sequence[ManifestRecord] | pd.DataFrame) -> pd.DataFrame:
    """One row per manifest record (every attempt), with `state`: ok, degraded (ok, but the LLM
    refinement was partial) or failed (every other status). Takes the records, or the frame of them
    that runstate.manifest.read_manifest_frame reads."""
    if isinstance(records, pd.DataFrame):
        frame = records.reindex(columns=FIELDS).copy()
    else:
        frame = pd.DataFrame.from_records([vars(r) for r in records], columns=FIELDS)
    degraded = frame["degraded"].map(lambda v: isinstance(v, str) and bool(v)).astype(bool)
    frame["state"] = np.where(frame["status"] != "ok", "failed", np.where(degraded, "degraded", "ok"))
    return frame


def bucket_edges(first: float, last: float, buckets: int) -> tuple[np.ndarray, float]:
    """At most about `buckets` buckets of a round width (0.1 s .. 1 day) covering [first, last]."""
    span = max(last - first, 1e-6)
    width = next((w for w in NICE_BUCKETS_S if w >= span / buckets), span / buckets)
    return first + width * np.arange(math.ceil(span / width) + 1), float(width)


def spread(started: np.ndarray, finished: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each weight spread evenly over its record's [started, finished], summed per bucket of `edges`.
    Linear in the records, in chunks of records and of buckets, so memory stays bounded (each bucket's sum is
    added up over the records in the same order whatever the buckets beside it)."""
    total = np.zeros(len(edges) - 1)
    for lo in range(0, len(finished), _CHUNK):
        f = finished[lo : lo + _CHUNK, None]
        d = np.maximum(f - started[lo : lo + _CHUNK, None], 1e-6)
        s, w = f - d, weights[lo : lo + _CHUNK, None]
        for a, b in _bucket_slices(len(total)):
            overlap = np.minimum(f, edges[None, a + 1 : b + 1])  # in place from here
            overlap -= np.maximum(s, edges[None, a:b])
            np.clip(overlap, 0, None, out=overlap)
            overlap /= d
            overlap *= w
            total[a:b] += overlap.sum(axis=0)
    return total


def _bucket_slices(count: int, width: int = 32) -> list[tuple[int, int]]:
    """[a, b) slices of `count` buckets, `width` wide, none a single bucket where there are more (numpy sums a
    one-column block pairwise, other blocks row by row: a single bucket would be added up in another order)."""
    cuts = [*range(0, count, width), count]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] == 1:
        del cuts[-2]
    return list(itertools.pairwise(cuts))


def _ok_pages(items: pd.DataFrame) -> np.ndarray:
    """Which records are ok with pages: those whose pages the timeline spreads over their duration."""
    return ((items["status"] == "ok") & (items["pages"] > 0)).to_numpy(bool)


def throughput_frame(items: pd.DataFrame, buckets: int = 60) -> pd.DataFrame:
    """Pages/s per time bucket over the whole run, each ok record's pages spread over its duration,
    and pages done so far; attrs["bucket_s"] is the bucket width."""
    ok = _ok_pages(items)
    if not ok.any():
        return pd.DataFrame(columns=["time", "pages_per_s", "pages_done"])
    started, finished = items["started"].to_numpy(float)[ok], items["finished"].to_numpy(float)[ok]
    lead = np.subtract(finished, started)  # in place from here: one array of every ok record, not three
    np.subtract(finished, np.maximum(lead, 1e-6, out=lead), out=lead)  # each start as spread() takes it
    first = min(float(lead.min()), float(items["started"].min()))
    del lead
    edges, width = bucket_edges(first, float(items["finished"].max()), buckets)
    done = spread(started, finished, items["pages"].to_numpy()[ok], edges)  # pages as they are: no float copy
    frame = pd.DataFrame(
        {"time": local_times(edges[:-1] + width / 2), "pages_per_s": done / width, "pages_done": done.cumsum()}
    )
    frame.attrs["bucket_s"] = width
    return frame


def activity_frame(items: pd.DataFrame, tasks: Sequence[int], buckets: int = 120) -> pd.DataFrame:
    """The timeline per task and time bucket, for runs too large for a bar per record: one row per
    (task, bucket) with the ok pages spread over the bucket (`pages`, `pages_per_s`) and the records
    that finished in it by state (`ok`, `degraded`, `failed`). `tasks` are the rows (idle ones too);
    attrs["bucket_s"] is the bucket width. Size: tasks x buckets, whatever the records."""
    rows = sorted(set(tasks) | set(np.unique(items["task"].to_numpy()).tolist()))  # pandas' unique: a 10^6 table
    edges, width = bucket_edges(float(items["started"].min()), float(items["finished"].max()), buckets)
    n, position = len(edges) - 1, {task: k for k, task in enumerate(rows)}
    pages = np.zeros((len(rows), n))
    task = items["task"].to_numpy()
    ok = np.flatnonzero(_ok_pages(items)).astype(np.int32 if len(items) < 2**31 else np.int64)  # half the bytes
    ok = ok[np.argsort(task[ok], kind="stable")]  # by task, each task's in record order: its groupby group
    started, finished = (items[c].to_numpy(float) for c in ("started", "finished"))
    weights = items["pages"].to_numpy()  # as they are: spread takes them per record, no float copy of every one
    for group in np.split(ok, np.flatnonzero(np.diff(task[ok])) + 1) if len(ok) else []:
        pages[position[task[group[0]]]] = spread(started[group], finished[group], weights[group], edges)
    counts = _finished_per_cell(items, task, finished, np.asarray(rows), edges)
    frame = pd.DataFrame(
        {
            "task": np.repeat(rows, n),
            "start": np.tile(edges[:-1], len(rows)),
            "pages": pages.ravel(),
            "pages_per_s": pages.ravel() / width,
            **counts,
        }
    )
    frame.attrs["bucket_s"] = width
    return frame


def _finished_per_cell(
    items: pd.DataFrame, task: np.ndarray, finished: np.ndarray, rows: np.ndarray, edges: np.ndarray
) -> dict[str, np.ndarray]:
    """Per state (ok, degraded, failed), the records that finished in each (task row, time bucket) cell, counted
    a block of records at a time (the cell of every record at once took four 8-byte arrays of 10^6)."""
    n = len(edges) - 1
    states = {state: (items["state"] == state).to_numpy() for state in ("ok", "degraded", "failed")}
    counts = {state: np.zeros(len(rows) * n, dtype=np.intp) for state in states}
    for lo in range(0, len(task), 8 * _CHUNK):
        block = slice(lo, lo + 8 * _CHUNK)
        cell = np.searchsorted(rows, task[block]) * n + np.clip(  # rows: every task, sorted
            np.searchsorted(edges, finished[block], side="right") - 1, 0, n - 1
        )
        for state, chosen in states.items():
            counts[state] += np.bincount(cell[chosen[block]], minlength=len(rows) * n)
    return counts


def places_frame(items: pd.DataFrame, tasks: Sequence[int]) -> pd.DataFrame:
    """Where each task ran: one row per (task, host, gpu) it recorded items on, in task order;
    a task with no record has one row with host and gpu None."""
    seen = distinct_rows(items, ["task", "host", "gpu"])
    idle = pd.DataFrame({"task": sorted(set(tasks) - set(seen["task"])), "host": None, "gpu": None})
    return pd.concat([seen, idle] if len(idle) else [seen], ignore_index=True).sort_values(
        ["task", "host", "gpu"], kind="stable", na_position="last", ignore_index=True
    )


def failures_frame(
    plan: Plan | pd.DataFrame,
    items: pd.DataFrame,
    missing: Sequence[str] | None = None,
    latest: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every planned item whose latest attempt failed, with its attempts, and the items with no
    record at all (`missing`, by default those of the plan with none), sorted by PDF. `plan` is the
    plan, or the frame of its items (item_id, pdf, page_start, page_stop); `latest`: latest_frame(items), where
    the caller has it."""
    planned = planned_frame(plan)
    latest = latest_frame(items) if latest is None else latest
    failed = latest[~latest["status"].isin(["ok", BISECTED])]  # bisected: its lost pages have their own table
    failed = failed[isin(failed["item_id"], planned.index)]
    attempts = items.loc[isin(items["item_id"], failed["item_id"]), "item_id"].value_counts()
    rows = pd.DataFrame(
        {
            "pdf": failed["pdf"],
            "pages": page_labels(failed["page_start"], failed["page_stop"]),
            "status": failed["status"],
            "error": failed["error"].where(failed["error"].fillna("") != "", failed["status"]),
            "task": failed["task"],
            "host": failed["host"],
            "attempts": failed["item_id"].map(attempts).fillna(0).astype(int),
        },
        columns=FAILURE_COLUMNS,
    )
    if missing is None:
        missing = planned.index[~isin(planned.index, latest["item_id"])].tolist()
    gone = planned.loc[planned.index.intersection(list(missing))]
    lost = pd.DataFrame(
        {
            "pdf": gone["pdf"],
            "pages": page_labels(gone["page_start"], gone["page_stop"]),
            "status": "missing",
            "error": "no record: the item never finished",
            "task": "-",
            "host": "-",
            "attempts": 0,
        },
        columns=FAILURE_COLUMNS,
    ).reset_index(drop=True)
    frames = [frame for frame in (rows, lost) if len(frame)]
    if not frames:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(["pdf", "pages"], kind="stable", ignore_index=True)


def planned_frame(plan: Plan | pd.DataFrame) -> pd.DataFrame:
    """The planned items (pdf, page_start, page_stop) indexed by item_id."""
    if isinstance(plan, pd.DataFrame):
        frame = plan
    else:
        frame = pd.DataFrame(
            [(i.item_id, i.pdf, i.page_start, i.page_stop) for i in plan.items],
            columns=["item_id", "pdf", "page_start", "page_stop"],
        )
    return frame.set_index("item_id")[["pdf", "page_start", "page_stop"]]


def slowest_frame(items: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The `top` PDFs that took longest (all their ok parts together), with seconds per page."""
    return slowest_of(slowest_candidates(items, top), top)


def slowest_candidates(items: pd.DataFrame, top: int = 10, latest: pd.DataFrame | None = None) -> pd.DataFrame:
    """The `top` slowest PDFs in the order `slowest_of` puts them: per PDF, its latest ok records' pages, seconds
    and parts. Those of disjoint sets of PDFs put together give `slowest_of` the same answer."""
    latest = latest_frame(items) if latest is None else latest
    ok = latest[latest["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=["pdf", "pages", "seconds", "parts"])
    frame = ok.groupby("pdf", as_index=False, sort=False).agg(
        pages=("pages", "sum"), seconds=("seconds", "sum"), parts=("item_id", "count")
    )
    frame = frame.nlargest(top, "seconds", keep="all")  # only these few are sorted, ties by name
    return frame.sort_values(["seconds", "pdf"], ascending=[False, True]).head(top)


def slowest_of(candidates: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The `top` of `slowest_candidates` (of one or several sets of PDFs), with seconds per page."""
    if candidates.empty:
        return pd.DataFrame(columns=SLOWEST_COLUMNS)
    frame = candidates.nlargest(top, "seconds", keep="all")
    frame["seconds_per_page"] = frame["seconds"] / frame["pages"].clip(lower=1)
    frame = frame.sort_values(["seconds", "pdf"], ascending=[False, True]).head(top)
    return frame.round({"seconds": 2, "seconds_per_page": 3})[SLOWEST_COLUMNS].reset_index(drop=True)


def llm_timeline_frame(llm: dict, points: int = 240) -> pd.DataFrame:
    """The LLM front's tokens/s and in-flight requests over time (summary.json's "llm" timeline),
    at most about `points` rows: a long run's lines are put in time buckets, tokens/s averaged
    and in-flight requests at their peak. Columns: time (local), in_flight, tokens_out_per_s."""
    lines = pd.DataFrame(llm.get("timeline") or [], columns=["ts", "in_flight", "tokens_out_per_s"])
    if lines.empty:
        return pd.DataFrame(columns=["time", "in_flight", "tokens_out_per_s"])
    if len(lines) > points:
        edges, width = bucket_edges(float(lines["ts"].min()), float(lines["ts"].max()), points)
        bucket = np.clip(np.searchsorted(edges, lines["ts"].to_numpy(float), side="right") - 1, 0, len(edges) - 2)
        lines = lines.groupby(bucket).agg(in_flight=("in_flight", "max"), tokens_out_per_s=("tokens_out_per_s", "mean"))
        lines["ts"] = edges[lines.index] + width / 2
    return pd.DataFrame(
        {
            "time": local_times(lines["ts"]),
            "in_flight": lines["in_flight"].to_numpy(),
            "tokens_out_per_s": lines["tokens_out_per_s"].round(2).to_numpy(),
        }
    )


def llm_counts_frame(llm: dict) -> pd.DataFrame:
    """Requests, errors and tokens per task and in total."""
    rows = [
        {"task": task, **{k: counters.get(k, 0) for k in LLM_COUNTERS}}
        for task, counters in sorted((llm.get("tasks") or {}).items())
    ]
    rows.append({"task": "all", **{k: llm.get(k, 0) for k in LLM_COUNTERS}})
    return pd.DataFrame(rows, columns=["task", *LLM_COUNTERS])


def llm_replicas_frame(llm: dict) -> pd.DataFrame:
    """One row per replica of the LLM service: requests, errors, tokens/s, how full it got."""
    rows = [{k: replica.get(k) for k in LLM_REPLICA_COLUMNS} for replica in llm.get("replicas") or []]
    return pd.DataFrame(rows, columns=list(LLM_REPLICA_COLUMNS))


def degraded_frame(summary: dict, key: str = "degraded") -> pd.DataFrame:
    """The items whose LLM refinement was partial (summary.json's "degraded"), or whose LLM requests moved
    to another replica ("llm_failover")."""
    return pd.DataFrame(summary.get(key) or [], columns=["pdf", "pages", "reason"])


def output_flagged_frame(totals: dict) -> pd.DataFrame:
    """The documents whose output carries an output flag (summary's "output_flagged": the first 100), 1-based pages."""
    return pd.DataFrame(totals.get("output_flagged") or [], columns=["pdf", "flags"])


def flagged_frame(totals: dict) -> pd.DataFrame:
    """The documents with a page whose text layer is empty or garbled (summary's "flagged"), 1-based pages."""
    return pd.DataFrame(totals.get("flagged") or [], columns=["pdf", "pages", "empty", "garbled"])


GPU_PARTS = ("startup", "converting", "llm_wait", "draining", "idle")  # manage/accounting.py's COMPONENTS


def gpu_time_frame(summary: dict, rows: int) -> pd.DataFrame:
    """GPU-hours by part: a row per task (summary.json's gpu_tasks, a row per job of a task, in seconds × GPUs;
    a requeued or resumed task's jobs summed), or past `rows` tasks one row for the run (its gpu_time)."""
    jobs = summary.get("gpu_tasks") or []
    tasks = len({job["task"] for job in jobs})
    if tasks <= rows:
        frame = pd.DataFrame(jobs, columns=["task", "gpus", *GPU_PARTS])
        hours = frame[list(GPU_PARTS)].mul(frame["gpus"], axis=0).div(3600).groupby(frame["task"]).sum()
        return hours.reset_index(drop=True).assign(label=[f"task {t}" for t in hours.index])
    return pd.DataFrame([{**summary.get("gpu_time", {}), "label": f"all {tasks:,} tasks"}])
