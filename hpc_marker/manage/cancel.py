"""Cancel: stop every job of a run, make sure none is left, mark the run cancelled, free its --out.

A run whose jobs are all over already is not marked (nothing was cancelled): `cancel` says it was over."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from hpc_marker.executors import executor_for
from hpc_marker.executors.base import live_job_ids
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.outlock import release
from hpc_marker.runstate.record import RunRecord


@dataclass(frozen=True)
class Cancelled:
    """What `cancel_run` did."""

    ended: list[str]  # the jobs (local: processes) still queued or running when it looked, now ended
    jobs: list[str]  # every job the run has (its current ones)


def mark_cancelled(paths: RunPaths) -> None:
    """The mark file first (a file of its own: no rewrite of run.json can lose it), then run.json's `cancelled`."""
    paths.cancel_mark.touch()
    record = paths.load_record()
    record.cancelled = time.time()
    paths.save_record(record)


def cancel_later_jobs(paths: RunPaths, record: RunRecord, rounds: int = 5) -> RunRecord:
    """Cancel what is still queued of the run after `record`'s jobs were: jobs recorded after the mark (a next
    round its collector was submitting: it checks the mark, but may have queued them just before) and that
    collector itself, whose id a next round's replaced (it is in the history now). Until none is left."""
    executor = executor_for(record.executor)
    for _ in range(rounds):
        stored = paths.load_record()
        every = list(dict.fromkeys(live_job_ids(stored) + ([] if executor.waits else stored.jobs.get("history", []))))
        if not executor.active(replace(stored, jobs={"convert": every})):
            return stored
        executor.cancel(replace(stored, jobs={"convert": every}))
    return paths.load_record()


def cancel_run(paths: RunPaths) -> Cancelled:
    """Cancel all jobs of the run; wait until none is queued or running; give its --out back. A run with
    nothing queued or running is left as it was (not marked cancelled): `ended` is empty."""
    record = paths.load_record()
    executor = executor_for(record.executor)
    active = executor.active(record)
    if active:
        mark_cancelled(paths)  # first: a local submit, or a collector submitting the next round, sees it
        executor.cancel(record)
        record = cancel_later_jobs(paths, record)
        if record.cancelled is None:  # a collector recording its jobs meanwhile rewrote run.json without it
            mark_cancelled(paths)
    release(Path(record.out_dir), record.run_id)
    return Cancelled(ended=active, jobs=live_job_ids(record))
