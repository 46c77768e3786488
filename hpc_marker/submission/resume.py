"""Resume and retry: submit again only the tasks of a run that still have unfinished items.

An item is finished when its `done` marker exists (claims.py), whatever happened to the task
that did it. `resume` submits an array of just the task indices with unfinished items (their
tasks steal from each other as usual) and a new collector; `retry` first reopens failed items,
except poison ones (failed MAX_ATTEMPTS times), which keep their last error.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from hpc_marker.executors import executor_for
from hpc_marker.executors.base import live_job_ids
from hpc_marker.manage.collect import MAX_ATTEMPTS, collect_run
from hpc_marker.manage.rounds import CONTINUE, new_round
from hpc_marker.planning.bisect import BISECTED, SUB_MARK, doc_of
from hpc_marker.planning.store import load_items_table, load_summary
from hpc_marker.runstate.claims import ClaimBoard, batch_name
from hpc_marker.runstate.finish import merge_id
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.outlock import acquire, release
from hpc_marker.runstate.permissions import private_files
from hpc_marker.runstate.progress import REOPENED, append_reopened, failures_per_item, latest_commits, read_commits
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.subitems import PARTIAL, fold_commits
from hpc_marker.submission.launch import active_jobs_of, record_jobs, run_jobs
from hpc_marker.submission.overrides import ResumeOverrides, apply_overrides, busiest
from hpc_marker.submission.request import LaunchError
from hpc_marker.submission.scripts import other_jobs, render_scripts


@dataclass
class ResumeResult:
    tasks: list[int]
    unfinished: int
    reopened: int = 0
    poison: list[str] = field(default_factory=list)
    jobs: dict[str, list[str]] = field(default_factory=dict)


NOT_RETRIED = ("ok", "encrypted")  # an encrypted PDF fails the same way until someone removes its password


@dataclass(frozen=True)
class RunItems:
    """What resume needs of every planned item: its share and batch, and its latest status (None: not finished)."""

    items: pd.DataFrame  # item_id, pdf, pages, share, batch, status (ok, partial, a failure; None), failures
    lost: pd.DataFrame | None = None  # the sub-items lost (latest commit lines, by item id) with their failures


def run_items(paths: RunPaths, board: ClaimBoard) -> RunItems:
    """From the plan and the commit logs; only items without a commit line are looked up one by one
    (their done marker: a task killed between its commit and its log line)."""
    shares = load_summary(paths.plan)
    items = load_items_table(paths.plan, columns=["item_id", "pdf", "page_start", "page_stop", "batch"]).to_pandas()
    items["share"] = np.repeat([s.index for s in shares], [s.items for s in shares])
    items["pages"] = items["page_stop"] - items["page_start"]
    commits = read_commits(paths.progress)
    latest = latest_commits(commits)
    subs = latest[latest.index.str.contains(SUB_MARK, regex=False) & (latest["status"] != REOPENED)]
    folded = fold_commits(latest[latest["status"] != REOPENED])["status"]  # bisected: finished with its halves
    status = items["item_id"].map(folded).astype(object)
    for index in items.index[status.isna()]:  # no commit line: a task killed between its commit and its line
        done = board.done_record(items.at[index, "item_id"])
        if done is not None:
            status[index] = done.get("status", "unknown")
    status = status.where(~status.isin([REOPENED, BISECTED]))  # a bisected item with halves to do is not finished
    failures = failures_per_item(commits)
    lost = subs[~subs["status"].isin(["ok", BISECTED])]
    return RunItems(
        items.assign(status=status, failures=items["item_id"].map(failures).fillna(0).astype(int)),
        lost=lost.assign(failures=lost.index.map(failures).fillna(0).astype(int)),
    )


def unfinished_by_task(run: RunItems) -> dict[int, int]:
    """Task index -> number of items of its share that are not finished (only tasks that have some)."""
    counts = run.items.loc[run.items["status"].isna(), "share"].value_counts()
    return {int(share): int(n) for share, n in counts.sort_index().items()}


def reopen_failed(
    paths: RunPaths, run: RunItems, board: ClaimBoard, include_poison: bool = False
) -> tuple[int, list[str]]:
    """Reopen every failed item (not encrypted ones, not poison ones unless asked), and the batches
    holding them; returns (how many, the poison PDFs kept as failed)."""
    items = run.items
    failed = items[items["status"].notna() & ~items["status"].isin(NOT_RETRIED) & (items["status"] != PARTIAL)]
    poison = failed[(failed["failures"] >= MAX_ATTEMPTS)] if not include_poison else failed.iloc[:0]
    chosen = failed.drop(poison.index)
    for row in chosen.itertuples(index=False):
        board.reopen(row.item_id, attempt=int(row.failures))
        board.reopen_finished(str(row.share), batch_name(int(row.batch)))
    reopened = [(r.item_id, int(r.pages), int(r.share)) for r in chosen.itertuples(index=False)]
    items.loc[chosen.index, "status"] = None
    kept = list(poison["pdf"])
    partial = items[items["status"] == PARTIAL]
    if len(partial) and run.lost is not None and len(run.lost):  # a partial document: its lost pages again
        lost = run.lost.assign(doc=run.lost.index.str.split(".", n=1).str[0])
        for row in partial.itertuples(index=False):
            pages = lost[lost["doc"] == doc_of(row.item_id)]
            again = pages[pages["failures"] < MAX_ATTEMPTS] if not include_poison else pages
            kept += [f"{row.pdf} (page {label})" for label in pages.index.difference(again.index)]
            if again.empty:
                continue
            for leaf, failures in again["failures"].items():
                board.reopen(leaf, attempt=int(failures))
            board.reopen(merge_id(doc_of(row.item_id)), attempt=int(again["failures"].max()))
            board.reopen_finished(str(row.share), batch_name(int(row.batch)))
            reopened += [(leaf, int(p), int(row.share)) for leaf, p in again["pages"].items()]
            items.loc[items["item_id"] == row.item_id, "status"] = None
    append_reopened(paths.progress, reopened)
    return len(reopened), kept


@private_files
def resume_run(
    paths: RunPaths,
    retry_failed: bool = False,
    include_poison: bool = False,
    overrides: ResumeOverrides | None = None,
    force_concurrent: bool = False,
    by: str = "resume",
) -> ResumeResult:
    """Submit the tasks of `paths`' run that have unfinished items (`retry_failed`: failed ones reopened
    first), with `overrides` (resources for the new jobs; checked, and by the cluster too, before the
    record changes), as the run's next round (`by`: resume, retry, or continue: the collector's, which
    does not count itself as active and submits nothing once the run is cancelled). Takes the run's --out
    back; a run this waits for (local) gives it back at its end."""
    record = paths.load_record()
    executor = executor_for(record.executor)
    continuing = by == CONTINUE  # the collector: itself, and the service it stopped, are not the run's active jobs
    active = executor.active(replace(record, jobs={"convert": record.jobs["convert"]}) if continuing else record)
    if active:
        raise LaunchError(
            f"run {record.run_id} still has jobs running or queued ({', '.join(active)}): "
            "wait for them or `hpcmarker cancel` first"
        )
    record = apply_overrides(record, overrides or ResumeOverrides(), executor)
    board = ClaimBoard(paths.root, owner="resume", lease_s=record.lease_seconds)
    run = run_items(paths, board)
    result = ResumeResult(tasks=[], unfinished=0)
    if retry_failed:
        result.reopened, result.poison = reopen_failed(paths, run, board, include_poison)
    pending = unfinished_by_task(run)
    result.unfinished = sum(pending.values())
    result.tasks = busiest(pending, (overrides or ResumeOverrides()).gpus)
    if not pending and not continuing:
        collect_run(str(paths.root))
    if pending:
        result.jobs = _resubmit(paths, record, result.tasks, by, force_concurrent)
    return result


def _resubmit(paths: RunPaths, record: RunRecord, tasks: list[int], by: str, force_concurrent: bool) -> dict:
    """The arrays of `tasks` and a collector, as the run's next round; returns the job ids by role."""
    executor = executor_for(record.executor)
    layout = executor.task_arrays(record, tasks, other_jobs(record))  # refused: nothing changed
    scripts = render_scripts(paths, record, python=sys.executable, layout=layout)
    executor.check_scripts(scripts)  # the new resources: refused now, not pending forever
    if not force_concurrent:
        acquire(Path(record.out_dir), record.run_id, active_jobs_of(Path(record.out_dir)))
    if by == CONTINUE and paths.cancel_mark.exists():  # the mark, right before submitting
        release(Path(record.out_dir), record.run_id)
        raise LaunchError(f"run {record.run_id} was cancelled: no next round")
    if paths.summary.exists():  # the run is open again
        paths.summary.rename(paths.root / f"summary-{int(time.time())}.json")
    if by != CONTINUE:
        record.cancelled = None  # it runs again: an earlier cancel is history
        paths.cancel_mark.unlink(missing_ok=True)
    record.rounds = [*paths.load_record().rounds, new_round(record, tasks, by)]
    paths.save_record(record)
    if record.llm:  # the service starts again: an earlier round's failed capability check must not stop its tasks
        from hpc_marker.llm.client import forget_unfit

        forget_unfit(paths.root, record.llm.replicas)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for role, text in scripts.items():
        (paths.scripts / f"{role}-{by}-{stamp}.sbatch").write_text(text)
    history = list(dict.fromkeys([*record.jobs.get("history", []), *live_job_ids(record)]))  # every job it had
    try:
        jobs = executor.submit(
            paths, record, scripts, layout, run_jobs(record), seen=lambda ids: record_jobs(paths, record, ids, tasks)
        )
    finally:
        if executor.waits:
            release(Path(record.out_dir), record.run_id)
    record.jobs["history"] = history + jobs["convert"] + jobs["collect"]
    record_jobs(paths, record, jobs, layout.tasks)
    if by == CONTINUE and paths.cancel_mark.exists():  # cancelled while it submitted: undo
        executor.cancel(replace(record, jobs={role: jobs[role] for role in ("convert", "collect")}))
        raise LaunchError(f"run {record.run_id} was cancelled while its next round was submitted: cancelled it")
    return jobs


def continue_run(paths: RunPaths) -> ResumeResult:
    """The collector's next round (`hpcmarker continue RUN`): the same resubmission as `resume`, sized the
    same way, with the run's own settings."""
    return resume_run(paths, by=CONTINUE)
