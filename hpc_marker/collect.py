"""Collect: merge a run's task manifests into manifest.csv and summary.json, gather its logs.

The collector job runs this when the array is over (`afterany`); `hpcmarker collect` runs the
same code by hand. Torn manifest lines and items with no record are reported, not fatal.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from submitit.core.utils import JobPaths

from .manifest import ManifestRecord, latest_by_item, read_manifests
from .plan import Plan
from .runs import RunPaths


def summarize_records(plan: Plan, records: list[ManifestRecord], torn: list[str]) -> dict:
    """The summary.json content. Pure."""
    latest = latest_by_item(records)
    planned = {item.item_id for item in plan.items}
    final = [r for r in latest.values() if r.item_id in planned]
    ok = [r for r in final if r.status == "ok"]
    failed = [r for r in final if r.status != "ok"]
    started = min((r.started for r in records), default=None)
    finished = max((r.finished for r in records), default=None)
    wall = (finished - started) if started is not None and finished is not None else 0.0
    pages_ok = sum(r.pages for r in ok)
    tasks = []
    for task in plan.tasks:
        mine = [r for r in records if r.task == task.index]
        t_wall = (max(r.finished for r in mine) - min(r.started for r in mine)) if mine else 0.0
        t_pages = sum(r.pages for r in mine if r.status == "ok")
        tasks.append({
            "task": task.index, "items": len(task.items), "planned_pages": task.pages,
            "ok": sum(r.status == "ok" for r in mine), "failed": sum(r.status != "ok" for r in mine),
            "pages_ok": t_pages, "busy_seconds": round(sum(r.seconds for r in mine), 3),
            "wall_seconds": round(t_wall, 3), "pages_per_second": round(t_pages / t_wall, 3) if t_wall else None,
            "gpu": sorted({r.gpu for r in mine}), "hosts": sorted({r.host for r in mine}),
        })
    return {
        "items": len(planned), "ok": len(ok), "failed": len(failed),
        "missing": sorted(planned - set(latest)), "pages": plan.total_pages, "pages_ok": pages_ok,
        "wall_seconds": round(wall, 3), "pages_per_second": round(pages_ok / wall, 3) if wall else None,
        "failures": [{"pdf": r.pdf, "pages": f"{r.page_start + 1}-{r.page_stop}", "error": r.error}
                     for r in sorted(failed, key=lambda r: r.pdf)],
        "torn_manifest_lines": torn, "tasks": tasks,
    }


def gather_logs(paths: RunPaths, job_ids: list[str]) -> list[Path]:
    """Copy each array task's stdout/stderr into RUN/logs/task-<i>.{out,err}."""
    gathered = []
    for index, job_id in enumerate(job_ids):
        job_paths = JobPaths(folder=paths.jobs, job_id=job_id, task_id=0)
        for source, suffix in ((job_paths.stdout, "out"), (job_paths.stderr, "err")):
            if source.exists():
                target = paths.logs / f"task-{index}.{suffix}"
                shutil.copyfile(source, target)
                gathered.append(target)
    return gathered


def collect_run(run_dir: str) -> dict:
    """Merge manifests, write manifest.csv and summary.json, gather logs; returns the summary."""
    paths = RunPaths(Path(run_dir))
    record = paths.load_record()
    plan = Plan.load(paths.plan)
    read = read_manifests(paths.manifests)
    frame = pd.DataFrame([asdict(r) for r in read.records], columns=list(ManifestRecord.__dataclass_fields__))
    frame = frame.sort_values(["pdf", "page_start", "finished"], kind="stable")
    frame.to_csv(paths.manifest_csv, index=False)
    summary = summarize_records(plan, read.records, read.torn_lines)
    summary.update(run_id=record.run_id, engine=record.engine, collected=time.time(),
                   logs=[p.name for p in gather_logs(paths, record.jobs.get("convert", []))])
    tmp = paths.summary.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, paths.summary)
    for line in read.torn_lines:
        print(f"[hpcmarker collect] warning: {line}", flush=True)
    print(f"[hpcmarker collect] {summary['ok']} ok, {summary['failed']} failed, "
          f"{len(summary['missing'])} missing of {summary['items']} items", flush=True)
    return summary
