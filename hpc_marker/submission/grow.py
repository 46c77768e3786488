"""Grow: add tasks to a running run (`hpcmarker grow RUN --gpus K [--partition P] [--profile X] [--time T]`).

The new tasks take the indices after the run's last task and have no share of the plan: they take their
items by stealing batches from the tails of the existing shares (runtime/scheduler.py), commit them with
the same done markers (exactly once), and are listed in progress/grown.txt before they start, so that the
other tasks also read their heartbeats (a grown task that dies holding batches is taken over). They may
ask for another partition, profile or time limit than the run (`ResumeOverrides`: checked as `resume`
checks them, for the new jobs only). The round's collector waits for them too (the executor's `grow`):
the run is collected once, and `status`, `cancel`, the report and the verdict count them (their job ids
in run.json's jobs["convert"], the round's `grown` tasks). Refused, with one line, where the run is not
running any more (cancelled, collected, its round over) or does not steal.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

from hpc_marker.executors import executor_for
from hpc_marker.executors.base import GrowRefused, live_job_ids
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.permissions import private_files
from hpc_marker.runstate.progress import add_grown
from hpc_marker.runstate.record import Round, RunRecord
from hpc_marker.submission.launch import record_jobs, run_jobs
from hpc_marker.submission.overrides import ResumeOverrides, apply_overrides
from hpc_marker.submission.request import check_bounds
from hpc_marker.submission.scripts import render_scripts, script_role


@dataclass(frozen=True)
class Grown:
    """What `grow` added: the new tasks' indices, their job ids, the round they joined."""

    tasks: tuple[int, ...]
    jobs: tuple[str, ...]
    round: int


def refusal(paths: RunPaths, record: RunRecord) -> str | None:
    """Why `record`'s run cannot grow (one line), or None. Asks the executor only whether a job is active."""
    if record.cancelled is not None or paths.cancel_mark.exists():
        return f"run {record.run_id} was cancelled: it is not running any more"
    if paths.summary.exists():
        return f"run {record.run_id} is not running any more: it was collected (`hpcmarker status {record.run_id}`)"
    if not record.steal:
        return f"run {record.run_id} does not steal (--no-steal): a new task would have no items to take"
    if not executor_for(record.executor).active(replace(record, jobs={"convert": live_job_ids(record, ("convert",))})):
        return f"run {record.run_id} is not running any more: none of its tasks is queued or running"
    return None


@private_files
def grow_run(paths: RunPaths, gpus: int, overrides: ResumeOverrides | None = None) -> Grown:
    """Add `gpus` tasks to the running round of `paths`' run, with `overrides` (partition, profile, time...) for
    their jobs only. GrowRefused (one line) where the run is not running any more; nothing changed then."""
    check_bounds(gpus=gpus)
    record = paths.load_record()
    why = refusal(paths, record)
    if why:
        raise GrowRefused(why)
    executor = executor_for(record.executor)
    theirs = apply_overrides(record, replace(overrides or ResumeOverrides(), gpus=gpus), executor)
    first = max(record.tasks, len(record.jobs.get("convert", [])))
    tasks = list(range(first, first + gpus))
    layout = executor.task_arrays(theirs, tasks, 0)
    scripts = {
        name: text
        for name, text in render_scripts(paths, theirs, python=sys.executable, layout=layout).items()
        if script_role(name) == "convert"
    }
    executor.check_scripts(scripts)  # the new resources: refused now, not pending forever
    add_grown(paths.progress, tasks)  # before they start: every task reads their heartbeats from now on
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name, text in scripts.items():
        (paths.scripts / f"{name}-grow-{stamp}.sbatch").write_text(text)
    ids = executor.grow(
        paths, theirs, scripts, layout, run_jobs(record), seen=lambda ids: record_jobs(paths, record, ids, tasks)
    )
    record_jobs(paths, record, {"convert": ids}, tasks)
    number = _join_round(paths, tasks)
    if paths.cancel_mark.exists():  # cancelled while the tasks were submitted: `cancel` may have missed them
        executor.cancel(replace(record, jobs={"convert": ids}))
        raise GrowRefused(f"run {record.run_id} was cancelled while it grew: cancelled the new tasks too")
    return Grown(tuple(tasks), tuple(ids), number)


def _join_round(paths: RunPaths, tasks: list[int]) -> int:
    """Add `tasks` to the run's latest round as grown ones (a run from before rounds: its one round made up);
    the round's number."""
    record = paths.load_record()
    rounds = list(record.rounds) or [Round(1, record.submitted or record.created, tuple(range(record.tasks)))]
    rounds[-1] = replace(rounds[-1], grown=(*rounds[-1].grown, *tasks))
    record.rounds = rounds
    paths.save_record(record)
    return rounds[-1].number
