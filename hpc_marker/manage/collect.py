"""Collect: merge a run's task manifests into manifest.csv and summary.json, gather its logs.

The collector job runs this when the array is over (`afterany`); `hpcmarker collect` runs the
same code by hand. It also finishes what killed tasks left: a committed output not yet renamed
into place, a split PDF whose parts are all done but not merged, a committed item whose manifest
line was never written (taken from its `done` marker), and staging folders nobody will commit.
Torn manifest lines and items with no record are reported, not fatal.
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

from hpc_marker.executors import executor_for
from hpc_marker.planning.plan import Plan, items_by_document
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.finish import final_dir, merge_if_complete, place_committed
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import ManifestRecord, latest_by_item, read_manifests
from hpc_marker.runstate.permissions import file_mode_mask
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.summary import document_counts, summarize_records
from hpc_marker.util.errors import Refused
from hpc_marker.util.files import atomic_write

_RECORD_FIELDS = set(ManifestRecord.__dataclass_fields__)
MAX_ATTEMPTS = 3  # an item that failed this many times is poison: reported, not retried


def finish_leftovers(paths: RunPaths, record: RunRecord, plan: Plan, recorded: set[str],
                     board: ClaimBoard) -> tuple[list[ManifestRecord], int]:
    """Place committed outputs, merge complete split PDFs, recover records from done markers,
    remove orphaned staging folders. Returns (recovered records, documents merged here)."""
    recovered: list[ManifestRecord] = []
    referenced: set[str] = set()
    for item in plan.items:
        done = board.done_record(item.item_id)
        if not done or done.get("status") == "unknown":
            continue
        if done.get("staging"):
            referenced.add(Path(done["staging"]).name)
            if done.get("status") == "ok":
                place_committed(Path(done["staging"]), final_dir(paths, record, item))
        if item.item_id not in recorded:
            try:
                recovered.append(ManifestRecord(**{k: v for k, v in done.items() if k in _RECORD_FIELDS}))
            except TypeError:  # a marker without a whole record: the item stays "missing" in the summary
                print(f"[hpcmarker collect] warning: done marker of {item.item_id} holds no manifest record",
                      flush=True)
    merged = 0
    for parts in items_by_document(plan).values():
        if parts[0].is_part and merge_if_complete(paths, record, parts, board):
            merged += 1
    horizon = time.time() - 2 * record.lease_seconds
    for leftover in paths.staging.iterdir() if paths.staging.exists() else []:
        if leftover.name not in referenced and leftover.stat().st_mtime < horizon:
            shutil.rmtree(leftover, ignore_errors=True)
    return recovered, merged


def stop_service(record: RunRecord) -> list[str]:
    """The array is over: stop the run's LLM service so no GPU is held idle."""
    try:
        return executor_for(record.executor).stop_service(record)
    except Refused as exc:  # the scheduler did not answer: say so, collect anyway
        print(f"[hpcmarker collect] warning: could not stop the LLM service: {exc}", flush=True)
        return []


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
    with file_mode_mask(record.umask):  # merged documents get the run's permissions
        return _collect(paths, record)


def _collect(paths: RunPaths, record: RunRecord) -> dict:
    stopped = stop_service(record)
    plan = Plan.load(paths.plan)
    read = read_manifests(paths.manifests)
    board = ClaimBoard(paths.claims, owner=f"collector:{os.getpid()}", lease_s=record.lease_seconds)
    recovered, merged = finish_leftovers(paths, record, plan, {r.item_id for r in read.records}, board)
    read.records.extend(recovered)
    frame = pd.DataFrame([asdict(r) for r in read.records], columns=list(ManifestRecord.__dataclass_fields__))
    frame = frame.sort_values(["pdf", "page_start", "finished"], kind="stable")
    frame.to_csv(paths.manifest_csv, index=False)
    summary = summarize_records(plan, read.records, read.torn_lines)
    summary.update(document_counts(plan, latest_by_item(read.records), board))
    summary["poison"] = [{"pdf": f["pdf"], "pages": f["pages"], "error": f["error"]} for f, item_id in
                         ((f, f["item_id"]) for f in summary["failures"]) if board.attempts(item_id) + 1 >= MAX_ATTEMPTS]
    summary.update(recovered_records=len(recovered), merged_by_collector=merged)
    if record.llm:
        from hpc_marker.llm.metrics import service_summary, throughput_bound

        llm = service_summary(paths.root, record.llm.get("replicas", 1))
        summary["llm"] = dict(llm or {}, model=record.llm["model"], server=record.llm.get("server", "ollama"),
                              service_stopped=stopped)
        bound = throughput_bound(llm, summary.get("pages_ok", 0), summary.get("pages_per_second"))
        if bound:
            summary["llm"]["bound"] = bound
    summary["degraded"] = [{"pdf": r.pdf, "pages": f"{r.page_start + 1}-{r.page_stop}", "reason": r.degraded}
                           for r in latest_by_item(read.records).values() if r.degraded]
    summary["llm_failover"] = [{"pdf": r.pdf, "pages": f"{r.page_start + 1}-{r.page_stop}", "reason": r.llm_failover}
                               for r in latest_by_item(read.records).values() if r.llm_failover]
    summary.update(run_id=record.run_id, engine=record.engine, collected=time.time(),
                   logs=[p.name for p in gather_logs(paths, record.jobs.get("convert", []))])
    atomic_write(paths.summary, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    for line in read.torn_lines:
        print(f"[hpcmarker collect] warning: {line}", flush=True)
    print(f"[hpcmarker collect] {summary['ok']} ok, {summary['failed']} failed, "
          f"{len(summary['missing'])} missing of {summary['items']} items", flush=True)
    try:
        from hpc_marker.report.page import write_report

        print(f"[hpcmarker collect] report: {write_report(paths.root)}", flush=True)
    except Exception as exc:  # the report is only a view: never fail the collector over it
        print(f"[hpcmarker collect] warning: no report: {type(exc).__name__}: {exc}", flush=True)
    return summary
