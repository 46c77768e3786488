"""Collect: merge a run's task manifests into manifest.csv and summary.json, gather its logs.

The collector job runs this when the array is over (`afterany`); `hpcmarker collect` runs the
same code by hand. It also finishes what killed tasks left: a committed output not yet renamed
into place, a split PDF whose parts are all done but not merged, a committed item whose manifest
line was never written (taken from its `done` marker), and staging folders nobody will commit.
Torn manifest lines and items with no record are reported, not fatal.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow.compute as pc

from hpc_marker.executors import executor_for
from hpc_marker.executors.base import job_logs, service_replicas
from hpc_marker.llm.settings import LlmPaths
from hpc_marker.manage.accounting import collected_accounting
from hpc_marker.manage.collectparts import collect_ranges, light_frame, marked
from hpc_marker.manage.rounds import close_round, next_round
from hpc_marker.manage.settled import Settled
from hpc_marker.manage.verdict import ACTIVE_STATES, MAX_ATTEMPTS
from hpc_marker.planning.bisect import BISECTED
from hpc_marker.planning.store import load_items_table, load_summary
from hpc_marker.report.frames import slowest_of
from hpc_marker.runstate.buckets import open_buckets
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.outlock import release
from hpc_marker.runstate.permissions import file_mode_mask
from hpc_marker.runstate.progress import (
    REOPENED,
    close_logs,
    failed_commits,
    failures_per_item,
    latest_commits,
    logs_kept_open,
    read_heartbeats,
)
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import RUNNING, TaskStop, read_stops
from hpc_marker.runstate.summary import ITEM_COLUMNS, add_up
from hpc_marker.util.commands import command_line
from hpc_marker.util.errors import Refused
from hpc_marker.util.files import atomic_write, link_or_copy
from hpc_marker.util.frames import isin
from hpc_marker.util.memory import give_back, returning_allocators
from hpc_marker.util.text import one_line, plural

logger = logging.getLogger(__name__)


def retry_outlook(commits: pd.DataFrame, known_at_scan: set[str], reopened: bool | None = None) -> dict:
    """Of the items and pages whose latest commit is a failure: how many `retry` would try again and could
    convert (`retryable`), how many cannot be read as they are (the scan said so, or encrypted: a retry
    fails them the same way) and how many are poison (failed MAX_ATTEMPTS times). `commits`: every line of
    the items that failed (`reopened`: whether a line of any item reopened it). Pure."""
    latest = latest_commits(commits, reopened)
    failed = latest[~latest["status"].isin(["ok", BISECTED, REOPENED])]
    unreadable = isin(failed.index, list(known_at_scan)) | (failed["status"] == "encrypted").to_numpy()
    poison = ~unreadable & (failed.index.map(failures_per_item(commits)).fillna(0).to_numpy() >= MAX_ATTEMPTS)
    return {
        "retryable": int((~unreadable & ~poison).sum()),
        "known_at_scan": int(unreadable.sum()),
        "poison": int(poison.sum()),
    }


def sweep_staging(paths: RunPaths, record: RunRecord, referenced: set[str]) -> None:
    """Remove the staging folders nobody will commit: older than two leases and named by no done marker."""
    horizon = time.time() - 2 * record.lease_seconds
    for leftover in paths.staging.iterdir() if paths.staging.exists() else []:
        if leftover.name not in referenced and leftover.stat().st_mtime < horizon:
            shutil.rmtree(leftover, ignore_errors=True)


def stop_service(paths: RunPaths, record: RunRecord) -> list[str]:
    """The array is over: stop the run's LLM service so no GPU is held idle, and withdraw each replica's
    endpoint and secret (a replica killed before its own cleanup leaves them in the run folder)."""
    try:
        stopped = executor_for(record.executor).stop_service(record)
    except Refused as exc:  # the scheduler did not answer: say so, collect anyway
        logger.warning(f"could not stop the LLM service: {exc}")
        return []
    for replica in LlmPaths(paths.root).all_replicas(service_replicas(record)) if stopped else []:
        replica.withdraw()
    return stopped


def gather_logs(paths: RunPaths, job_ids: list[str]) -> list[Path]:
    """Each array task's stdout/stderr under a second name, RUN/logs/task-<i>.{out,err}: a hard link (one
    metadata operation each, where a copy took six), a copy where links cannot be made."""
    gathered = []
    for index, job_id in enumerate(job_ids):
        for source, suffix in zip(job_logs(paths, job_id), ("out", "err"), strict=True):
            target = paths.logs / f"task-{index}.{suffix}"
            try:
                link_or_copy(source, target)
            except FileNotFoundError:  # the task never started
                continue
            gathered.append(target)
    return gathered


def settled_states(task_jobs: list[str], states: dict[str, str], stops: dict[int, TaskStop]) -> dict[str, str]:
    """Tasks the scheduler's accounting still shows active (it lags the jobs' end by a moment) but whose own
    record says they stopped: over (COMPLETED; their record gives any cause). Pure."""
    return {
        job: "COMPLETED"
        for task, job in enumerate(task_jobs)
        if states.get(job) in ACTIVE_STATES
        and (stop := stops.get(task)) is not None
        and stop.cause != RUNNING
        and stop.job_id in ("", job)
    }


def judge(paths: RunPaths, record: RunRecord, shares: list, summary: dict) -> dict:
    """The run's verdict as this collection leaves it (manage/verdict.py): state, headline, one line per cause,
    the next command. The scheduler is asked for the tasks' states; where it does not answer, the tasks' own
    stop records still say why they stopped."""
    from hpc_marker.executors.base import Observation
    from hpc_marker.manage.status import status_of
    from hpc_marker.manage.tally import summary_progress

    progress = summary_progress(summary)
    finished = {s.index for s in shares if (c := progress.shares.get(s.index)) and c.ok + c.failed >= s.items}
    try:
        seen = executor_for(record.executor).observe(paths, record, finished, collected=True)
    except Refused as exc:
        logger.warning(f"no job states: {exc}")
        seen = Observation({})
    mine = set(record.jobs.get("collect", []))  # this job: it is running now, and done when this is read
    seen.states = {job: state for job, state in seen.states.items() if job not in mine}
    stops, convert = read_stops(paths.progress), record.jobs.get("convert", [])
    seen.states.update(settled_states(convert, seen.states, stops))
    status = status_of(record, shares, progress, seen, time.time(), collected=True, stops=stops)
    beats = read_heartbeats(paths.progress)
    settled = Settled(
        {job: seen.states[job] for job in convert if job in seen.states},
        stops,
        {task: beat.state for task, beat in beats.items()},
        {task: beat.updated for task, beat in beats.items()},
    )
    return {
        "state": status.state,
        "headline": status.headline,
        "reasons": status.reasons,
        "next": status.next,
        "causes": status.causes,
        "settled": settled.to_json(),  # what `status` of the collected run reads instead of the tasks' files
    }


def _outlook(paths: RunPaths, failures: list[dict]) -> dict:
    """summary.json's `poison` and `retry`, from the commit lines of the items that ever failed."""
    commits, reopened = failed_commits(paths.progress)
    failed = failures_per_item(commits)
    poison = [
        {"pdf": f["pdf"], "pages": f["pages"], "error": f["error"]}
        for f in failures
        if failed.get(f["item_id"], 0) >= MAX_ATTEMPTS
    ]
    plan = load_items_table(paths.plan, columns=["item_id", "scan_error"])
    known = plan.filter(pc.is_valid(plan["scan_error"]))["item_id"].to_pylist()
    return {"poison": poison, "retry": retry_outlook(commits, set(known), reopened)}


def _llm_summary(paths: RunPaths, record: RunRecord, summary: dict, stopped: list[str]) -> dict:
    from hpc_marker.llm.metrics import service_summary, throughput_bound

    assert record.llm is not None  # asked only for a run with an LLM service
    llm = service_summary(paths.root, record.llm.replicas)
    found = dict(llm or {}, model=record.llm.model, server=record.llm.server, service_stopped=stopped)
    bound = throughput_bound(llm, summary.get("pages_ok", 0), summary.get("pages_per_second"), whole_run=True)
    if bound:
        found["bound"] = bound
    return found


def collect_run(run_dir: str) -> dict:
    """Merge manifests, write manifest.csv and summary.json, gather logs; returns the summary."""
    paths = RunPaths(Path(run_dir))
    record = paths.load_record()
    returning_allocators()  # before the frames are read
    kept: dict[Path, BinaryIO] = {}
    try:  # merged documents get the run's permissions; each commit log opened once for every pass over them
        with file_mode_mask(record.umask), logs_kept_open(kept):
            return _collect(paths, record)
    finally:
        close_logs(kept)


def collect_job(run_dir: str) -> dict:
    """The collector job: collect the round, then submit the run's next round where it continues
    (manage/rounds.py) through `hpcmarker continue RUN`, a command of its own: what it cannot do (a cluster that
    forbids sbatch on compute nodes) ends the run incomplete with a one-line reason and the `resume` command."""
    summary = collect_run(run_dir)
    paths = RunPaths(Path(run_dir))
    record = paths.load_record()
    done = sum(s["ok"] + s["failed"] + s.get("partial", 0) for s in summary["shares"])
    settled = Settled.from_summary(summary)  # the stop records judge() read: not read again
    stops = settled.stops if settled is not None else read_stops(paths.progress)
    waits = executor_for(record.executor).waits
    decision = next_round(record, summary["state"], summary["causes"], stops, done, waits, paths.cancel_mark.exists())
    rounds = close_round(paths, summary["state"], summary["causes"], done, decision.why)
    notes = [decision.why] if decision.why else []
    summary.update(rounds=[one.to_json() for one in rounds], reasons=summary["reasons"] + notes)
    atomic_write(paths.summary, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    if decision.go:
        argv = [sys.executable, "-m", "hpc_marker", "continue", str(paths.root)]
        done_run = subprocess.run(argv, capture_output=True, text=True, check=False)
        said = one_line(done_run.stderr.strip().splitlines()[-1] if done_run.stderr.strip() else "")
        if done_run.returncode != 0:
            why = f"round {len(rounds) + 1} not submitted: {said or 'exit ' + str(done_run.returncode)}"
            logger.warning(f"{why}; next: {command_line('resume', record.run_id)}")
            close_round(paths, summary["state"], summary["causes"], done, why)
            summary.update(reasons=[*summary["reasons"], why])
            atomic_write(paths.summary, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        else:
            logger.info(done_run.stdout.strip())
    return summary


def _collect(paths: RunPaths, record: RunRecord) -> dict:
    stopped = stop_service(paths, record)
    shares = load_summary(paths.plan)
    board = ClaimBoard(paths.root, owner=f"collector:{os.getpid()}", lease_s=record.lease_seconds)
    from hpc_marker.report.page import Limits  # the report draws a bar per record up to its limit

    buckets = open_buckets(paths.plan, paths.manifests, shares, ITEM_COLUMNS, paths.root)
    try:
        found = collect_ranges(paths, record, buckets, board, whole_up_to=Limits().detail_records)
        records = light_frame(buckets, found)
    finally:
        buckets.close()
    give_back()  # the last range's frames and the light columns' Arrow copies
    sweep_staging(paths, record, found.referenced)
    torn = buckets.torn
    logger.debug(
        f"run {record.run_id}: {buckets.total} manifest lines, {len(torn)} torn; {found.recovered} records "
        f"recovered from done markers, {found.merged} documents merged here; {buckets.count} PDF ranges"
    )
    summary = add_up(found.parts, records, shares, torn)
    summary.update(found.documents)
    summary.update(
        _outlook(paths, summary["failures"]), recovered_records=found.recovered, merged_by_collector=found.merged
    )
    if record.llm:
        summary["llm"] = _llm_summary(paths, record, summary, stopped)
    summary.update(marked(found))
    summary.update(
        run_id=record.run_id,
        engine=record.engine,
        collected=time.time(),
        logs=[p.name for p in gather_logs(paths, record.jobs.get("convert", []))],
    )
    summary.update(judge(paths, record, shares, summary))
    summary.update(collected_accounting(paths, record, summary))  # GPU-hours and cost; the rate for `estimate`
    atomic_write(paths.summary, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    for line in torn:
        logger.warning(line)
    logger.info(f"{summary['headline']}; {len(summary['missing'])} missing of {plural(summary['items'], 'item')}")
    for line in summary["reasons"]:
        logger.info(line)
    release(Path(record.out_dir), record.run_id)  # the run is over: its --out is free for the next one
    give_back()  # what the summary's steps freed, before the report draws
    try:
        from hpc_marker.report.page import Limits, RunView, write_report

        failures = pd.concat(found.failures, ignore_index=True)
        candidates = [frame for frame in found.slowest if len(frame)]  # a range with no PDF converted has none
        slowest = slowest_of(
            pd.concat(candidates, ignore_index=True) if candidates else pd.DataFrame(), Limits().slowest
        )
        nothing = pd.DataFrame(columns=ITEM_COLUMNS)  # the report takes the failures and slowest PDFs found above
        view = RunView(
            paths,
            record,
            nothing,
            shares,
            records,
            torn,
            summary,
            summary.get("llm"),
            failures,
            found.failure_count,
            slowest,
        )
        logger.info(f"report: {write_report(paths.root, view=view)}")
    except Exception as exc:  # the report is only a view: never fail the collector over it
        logger.warning(f"no report: {type(exc).__name__}: {exc}")
    return summary
