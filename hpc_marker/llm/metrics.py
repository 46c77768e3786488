"""LLM metrics: what the run's service did, read back from the front's metrics.jsonl.

`summarize_metrics` turns the front's periodic lines (cumulative counters per task path, in-flight
gauge, tokens/s over each interval) into totals for summary.json and `hpcmarker status`.
"""

from __future__ import annotations

import json
from pathlib import Path

COUNTERS = ("requests", "failures", "timeouts", "client_errors", "tokens_in", "tokens_out")


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
    return {
        **totals,
        "denied": last.get("denied", 0),
        "seconds": round(span, 1),
        "tokens_out_per_s": round(totals["tokens_out"] / span, 2),
        "peak_tokens_out_per_s": max((line.get("tokens_out_per_s", 0.0) for line in lines), default=0.0),
        "peak_in_flight": max((line.get("in_flight", 0) for line in lines), default=0),
        "tasks": per_task,
        "timeline": [{"ts": line["ts"], "in_flight": line.get("in_flight", 0),
                      "tokens_out_per_s": line.get("tokens_out_per_s", 0.0)} for line in lines],
    }
