"""Resume and retry: submit again only the tasks of a run that still have unfinished items.

An item is finished when its `done` marker exists (claims.py), whatever happened to the task
that did it. `resume` submits an array of just the task indices with unfinished items (their
tasks steal from each other as usual) and a new collector; `retry` first reopens failed items,
except poison ones (failed MAX_ATTEMPTS times), which keep their last error.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from hpc_marker.executors import executor_for
from hpc_marker.manage.collect import MAX_ATTEMPTS, collect_run
from hpc_marker.planning.plan import Plan
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.permissions import private_files
from hpc_marker.submission.launch import record_jobs, run_jobs
from hpc_marker.submission.request import LaunchError
from hpc_marker.submission.scripts import other_jobs, render_scripts


@dataclass
class ResumeResult:
    tasks: list[int]
    unfinished: int
    reopened: int = 0
    poison: list[str] = field(default_factory=list)
    jobs: dict[str, list[str]] = field(default_factory=dict)


def unfinished_by_task(plan: Plan, board: ClaimBoard) -> dict[int, int]:
    """Task index -> number of its items without a done marker (only tasks that have some)."""
    counts = {t.index: sum(not board.is_done(i.item_id) for i in t.items) for t in plan.tasks}
    return {index: n for index, n in counts.items() if n}


NOT_RETRIED = ("ok", "encrypted")  # an encrypted PDF fails the same way until someone removes its password


def reopen_failed(plan: Plan, board: ClaimBoard, include_poison: bool = False) -> tuple[int, list[str]]:
    reopened, poison = 0, []
    for item in plan.items:
        done = board.done_record(item.item_id)
        if not done or done.get("status") in NOT_RETRIED:
            continue
        if board.attempts(item.item_id) + 1 >= MAX_ATTEMPTS and not include_poison:
            poison.append(item.pdf)
            continue
        board.reopen(item.item_id)
        reopened += 1
    return reopened, poison


@private_files
def resume_run(paths: RunPaths, retry_failed: bool = False, include_poison: bool = False) -> ResumeResult:
    record = paths.load_record()
    plan = Plan.load(paths.plan)
    executor = executor_for(record.executor)
    active = executor.active(record)
    if active:
        raise LaunchError(f"run {record.run_id} still has jobs running or queued ({', '.join(active)}): "
                          "wait for them or `hpcmarker cancel` first")
    board = ClaimBoard(paths.claims, owner="resume", lease_s=record.lease_seconds)
    result = ResumeResult(tasks=[], unfinished=0)
    if retry_failed:
        result.reopened, result.poison = reopen_failed(plan, board, include_poison)
    pending = unfinished_by_task(plan, board)
    result.tasks, result.unfinished = sorted(pending), sum(pending.values())
    if not pending:
        collect_run(str(paths.root))
        return result
    layout = executor.task_arrays(record, result.tasks, other_jobs(record))  # refused: nothing changed
    if paths.summary.exists():  # the run is open again
        paths.summary.rename(paths.root / f"summary-{int(time.time())}.json")
    scripts = render_scripts(paths, record, python=sys.executable, layout=layout)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for role, text in scripts.items():
        (paths.scripts / f"{role}-resume-{stamp}.sbatch").write_text(text)
    history = list(record.jobs.get("history", []))
    result.jobs = executor.submit(paths, record, scripts, layout, run_jobs(record),
                                  seen=lambda ids: record_jobs(paths, record, ids, layout.tasks))
    record.jobs["history"] = history + result.jobs["convert"] + result.jobs["collect"]
    record_jobs(paths, record, result.jobs, layout.tasks)
    return result
