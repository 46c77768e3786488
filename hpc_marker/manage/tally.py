"""Tally: how much of a run is finished, per share (the items planned for each task, whoever converted them).

From the collector's summary.json once the run is collected, else from the tasks' compact commit logs
(runstate/progress.py), never from the JSON manifests. manage/status.py judges the run from these counts;
`done_so_far` is what a waiting `submit` prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpc_marker.planning.bisect import BISECTED
from hpc_marker.planning.store import load_summary
from hpc_marker.runstate.documents import commit_text_layer, output_flag_counts
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.progress import DEGRADED, FAILED_OVER, REOPENED, latest_commits, read_commits
from hpc_marker.runstate.subitems import PARTIAL, commit_lost_pages, fold_commits
from hpc_marker.util.frames import busy_seconds

if TYPE_CHECKING:  # pandas loads only where commit logs are read: a collected run's status needs none
    import pandas as pd


@dataclass(frozen=True)
class ShareCounts:
    """What is finished of one task's share."""

    ok: int = 0
    failed: int = 0
    pages_done: int = 0
    degraded: int = 0
    partial: int = 0  # items whose pages all finished, some lost (bisected: runstate/subitems.py)


@dataclass(frozen=True)
class RunProgress:
    """What the run has done so far, from summary.json or the commit logs."""

    shares: dict[int, ShareCounts]
    first_started: float | None
    last_finished: float | None
    torn_lines: list[str] = field(default_factory=list)
    failed_over: int = 0  # items with LLM requests moved to another replica (counted only when asked)
    text_layer: dict = field(default_factory=dict)  # empty and garbled pages (summary.json's, or the commit logs')
    lost_pages: list[str] = field(default_factory=list)  # "book.pdf page 8: timeout" (by document id before collection)
    busy_seconds: float | None = None  # how long work was in flight (util/frames.busy_seconds; None: last - first)
    output_flags: dict = field(default_factory=dict)  # {"unit": documents|items, "counts": {flag: n}} (quality/)
    retry: dict | None = None  # summary.json's retry outlook (collect.retry_outlook); None before collection


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
    return {
        int(i): ShareCounts(
            int(ok_n[i]), int(all_n[i] - ok_n[i] - partial_n[i]), int(pages_n[i]), int(degraded_n[i]), int(partial_n[i])
        )
        for i in np.flatnonzero(all_n)
    }


def summary_progress(summary: dict) -> RunProgress:
    """The progress summary.json records (its share counts, partial items and lost pages). Pure."""
    shares = {
        int(s["share"]): ShareCounts(s["ok"], s["failed"], s["pages_done"], s.get("degraded", 0), s.get("partial", 0))
        for s in summary["shares"]
    }
    lost = [f"{p['pdf']} page {p['page']}: {p['status']}" for p in summary.get("lost_pages", [])]
    return RunProgress(
        shares,
        summary.get("first_started"),
        summary.get("last_finished"),
        summary.get("torn_manifest_lines", []),
        len(summary.get("llm_failover") or []),
        text_layer=summary.get("text_layer", {}),
        lost_pages=lost,
        busy_seconds=summary.get("wall_seconds"),
        output_flags={"unit": "documents", "counts": summary.get("output_flags", {})},
        retry=summary.get("retry"),
    )


def read_progress(paths: RunPaths, failed_over: bool = False) -> RunProgress:
    """The run's progress: summary.json's once collected (it has the share counts), else the commit logs.
    `failed_over`: also count the items whose LLM requests moved to another replica (runs with replicas)."""
    if paths.summary.exists():
        summary = json.loads(paths.summary.read_text(encoding="utf-8"))
        if "shares" in summary:
            return summary_progress(summary)
    commits = read_commits(paths.progress)
    latest = latest_commits(commits)
    moved = int(latest["flags"].str.contains(FAILED_OVER, regex=False).sum()) if failed_over and len(latest) else 0
    worked = commits[commits["status"] != REOPENED]  # a retry's line that reopens an item: no work
    return RunProgress(
        share_counts(latest),
        float(worked["started"].min()) if len(worked) else None,
        float(worked["finished"].max()) if len(worked) else None,
        failed_over=moved,
        text_layer=commit_text_layer(latest),
        lost_pages=commit_lost_pages(latest),
        busy_seconds=busy_seconds(worked["started"], worked["finished"]),
        output_flags={"unit": "items", "counts": output_flag_counts(latest["flags"][latest["status"] == "ok"])},
    )


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
    return DoneSoFar(
        sum(s.items for s in shares),
        sum(c.ok + c.failed + c.partial for c in counts),
        sum(s.pages for s in shares),
        sum(c.pages_done for c in counts),
    )
