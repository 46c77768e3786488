"""LLM metrics: what the run's service did, read back from its fronts' metrics files.

`summarize_metrics` turns one front's periodic lines (cumulative counters per task path, in-flight
and queued gauges, tokens/s over each interval) into totals. `service_summary` does it for every
replica of a run and adds them up, with one row per replica (requests, tokens/s, failures, how
often it was full), for summary.json, `hpcmarker status` and the report. `throughput_bound` says
which bound a run is on: the LLM (its servers full, requests waiting at the fronts) or conversion.
"""

from __future__ import annotations

import json
from pathlib import Path

from hpc_marker.llm.settings import LlmPaths

COUNTERS = (
    "requests",
    "failures",
    "timeouts",
    "client_errors",
    "tokens_in",
    "tokens_out",
    "failovers",
    "abandoned",
    "answers_moved",  # a reasoning model's answers the front moved into the content (llm/reasoning.py)
)
RECENT_LINES = 12  # the window `throughput_bound` looks at: a minute at the default 5 s interval
SATURATED = 0.5  # the LLM is the bound when its servers were full at least this share of the window


def read_metrics(path: Path) -> list[dict]:
    lines = []
    if not Path(path).exists():
        return lines
    for raw in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed service
    return lines


def _full(line: dict) -> bool:
    """A front whose server had every slot taken (requests waiting at the front, or at its capacity)."""
    capacity = line.get("capacity")
    return line.get("queued", 0) > 0 or (bool(capacity) and line.get("in_flight", 0) >= capacity)


def summarize_metrics(lines: list[dict]) -> dict | None:
    """Totals, per task (worker paths `<task>.<pid>` folded into their task), tokens/s. Pure."""
    if not lines:
        return None
    last = lines[-1]
    per_task: dict[str, dict[str, int]] = {}
    for name, counters in last.get("tasks", {}).items():
        task = name.split(".")[0]
        into = per_task.setdefault(task, dict.fromkeys(COUNTERS, 0))
        for key in COUNTERS:
            into[key] += int(counters.get(key, 0))
    totals = {key: sum(t[key] for t in per_task.values()) for key in COUNTERS}
    span = max(last["ts"] - lines[0]["ts"] + lines[0].get("interval_s", 0.0), 1e-9)
    recent = lines[-RECENT_LINES:]
    return {
        **totals,
        "denied": last.get("denied", 0),
        "seconds": round(span, 1),
        "first_ts": lines[0]["ts"] - lines[0].get("interval_s", 0.0),
        "last_ts": last["ts"],
        "tokens_out_per_s": round(totals["tokens_out"] / span, 2),
        "peak_tokens_out_per_s": max((line.get("tokens_out_per_s", 0.0) for line in lines), default=0.0),
        "recent_tokens_out_per_s": round(sum(line.get("tokens_out_per_s", 0.0) for line in recent) / len(recent), 2),
        "peak_in_flight": max((line.get("in_flight", 0) for line in lines), default=0),
        "peak_queued": max((line.get("queued", 0) for line in lines), default=0),
        "capacity": last.get("capacity"),
        "full_share": round(sum(map(_full, recent)) / len(recent), 2),
        "run_full_share": round(sum(map(_full, lines)) / len(lines), 2),
        "tasks": per_task,
        "timeline": [
            {
                "ts": line["ts"],
                "in_flight": line.get("in_flight", 0),
                "queued": line.get("queued", 0),
                "tokens_out_per_s": line.get("tokens_out_per_s", 0.0),
            }
            for line in lines
        ],
    }


def _merge_timelines(timelines: list[list[dict]]) -> list[dict]:
    """One timeline for several fronts: at each line's time, the sum of every front's latest values."""
    if len(timelines) == 1:
        return timelines[0]
    events = sorted((point["ts"], index, point) for index, timeline in enumerate(timelines) for point in timeline)
    latest: dict[int, dict] = {}
    merged = []
    for ts, index, point in events:
        latest[index] = point
        merged.append(
            {
                "ts": ts,
                **{
                    key: round(sum(p.get(key, 0) for p in latest.values()), 2)
                    for key in ("in_flight", "queued", "tokens_out_per_s")
                },
            }
        )
    return merged


def combine(summaries: dict[int, dict]) -> dict | None:
    """The run's LLM over its replicas (replica -> summarize_metrics), with one row per replica. Pure."""
    if not summaries:
        return None
    parts = [summaries[r] for r in sorted(summaries)]
    tasks: dict[str, dict[str, int]] = {}
    for part in parts:
        for task, counters in part["tasks"].items():
            into = tasks.setdefault(task, dict.fromkeys(COUNTERS, 0))
            for key in COUNTERS:
                into[key] += counters.get(key, 0)
    totals = {key: sum(p[key] for p in parts) for key in COUNTERS}
    span = max(max(p["last_ts"] for p in parts) - min(p["first_ts"] for p in parts), 1e-9)
    timeline = _merge_timelines([p["timeline"] for p in parts])
    rows = [
        {
            "replica": r,
            **{
                k: s[k]
                for k in (
                    "requests",
                    "failures",
                    "timeouts",
                    "abandoned",
                    "failovers",
                    "tokens_out",
                    "tokens_out_per_s",
                    "recent_tokens_out_per_s",
                    "peak_in_flight",
                    "peak_queued",
                    "capacity",
                    "full_share",
                )
            },
        }
        for r, s in sorted(summaries.items())
    ]
    return {
        **totals,
        "denied": sum(p["denied"] for p in parts),
        "seconds": round(span, 1),
        "tokens_out_per_s": round(totals["tokens_out"] / span, 2),
        "peak_tokens_out_per_s": max((p["tokens_out_per_s"] for p in timeline), default=0.0),
        "recent_tokens_out_per_s": round(sum(p["recent_tokens_out_per_s"] for p in parts), 2),
        "peak_in_flight": max((p["in_flight"] for p in timeline), default=0),
        "peak_queued": max((p["queued"] for p in timeline), default=0),
        "full_share": round(sum(p["full_share"] for p in parts) / len(parts), 2),
        "run_full_share": round(sum(p.get("run_full_share", p["full_share"]) for p in parts) / len(parts), 2),
        "tasks": tasks,
        "replicas": rows,
        "timeline": timeline,
    }


def service_summary(run_dir: Path, replicas: int = 1) -> dict | None:
    """`combine` of every replica's metrics file of a run (None before any front wrote one)."""
    found = {
        p.replica: summarize_metrics(read_metrics(p.metrics)) for p in LlmPaths(Path(run_dir)).all_replicas(replicas)
    }
    return combine({r: s for r, s in found.items() if s is not None})


def throughput_bound(
    llm: dict | None, pages_done: int, pages_per_second: float | None, whole_run: bool = False
) -> dict | None:
    """Which bound the run is on: `llm` when its servers were full (requests waiting at the fronts) in
    at least SATURATED of the recent window (`whole_run`: of the whole run, as the collector judges a
    finished run), else `conversion`; with the throughput model's numbers: tokens per page so far and
    the pages/s the LLM allows (tokens/s / tokens per page). Pure."""
    if not llm or not llm.get("requests"):
        return None
    tokens_per_page = llm.get("tokens_out", 0) / pages_done if pages_done else None
    if whole_run:
        rate, share, window = llm.get("tokens_out_per_s", 0.0), llm.get("run_full_share", 0.0), "the run"
    else:
        rate = llm.get("recent_tokens_out_per_s") or llm.get("tokens_out_per_s", 0.0)
        share, window = llm.get("full_share", 0.0), "the last minute"
    llm_pages = rate / tokens_per_page if tokens_per_page else None
    bound = "llm" if share >= SATURATED else "conversion"
    numbers = (
        f"{rate:.1f} tokens/s / {tokens_per_page:.0f} tokens per page = {llm_pages:.2f} pages/s"
        if llm_pages
        else f"{rate:.1f} tokens/s"
    )
    if bound == "llm":
        why = (
            f"LLM-bound: its servers were full {share:.0%} of {window} ({numbers}); more replicas "
            "(--llm-replicas), a larger --llm-parallel or a smaller model would speed this run up"
        )
    else:
        why = (
            f"conversion-bound: the LLM servers had free slots {1 - share:.0%} of {window} ({numbers}"
            + (f", conversion {pages_per_second:.2f} pages/s" if pages_per_second else "")
            + "); more GPUs for conversion would speed this run up"
        )
    return {
        "bound": bound,
        "full_share": share,
        "tokens_per_page": round(tokens_per_page, 1) if tokens_per_page else None,
        "llm_pages_per_s": round(llm_pages, 3) if llm_pages else None,
        "why": why,
    }
