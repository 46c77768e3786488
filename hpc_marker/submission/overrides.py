"""Overrides: what `resume` and `retry` change of a run before they submit what is left.

A run that hit its time limit, ran out of memory or pended on a partition that cannot hold it is
resubmitted with other resources: `ResumeOverrides` holds them (None keeps the run's value), and
`apply_overrides` checks them as `submit` checks its own options and returns the run record with
them, saved by `resume_run` only once the cluster has accepted the new scripts (`sbatch
--test-only`). `--gpus K` resubmits at most K of the tasks with work left (the most first); the
others' shares are taken by stealing, as any idle task takes them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from hpc_marker.executors.base import Executor
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runtime.limits import check_item_limits
from hpc_marker.submission.request import LaunchError, check_bounds, profile_settings


@dataclass(frozen=True)
class ResumeOverrides:
    """Resources for the resubmitted tasks; None keeps the run's value."""

    time_limit: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    item_timeout: str | None = None
    partition: str | None = None
    profile: str | None = None
    gpus: int | None = None  # at most this many tasks at once

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def apply_overrides(record: RunRecord, overrides: ResumeOverrides, executor: Executor) -> RunRecord:
    """`record` with `overrides`, checked (LaunchError or the executor's UserError, one line each); the
    record itself is not changed."""
    given = overrides.given()
    if not given:
        return record
    check_bounds(
        gpus=overrides.gpus, cpus_per_task=overrides.cpus_per_task, time_limit=overrides.time_limit, mem=overrides.mem
    )
    if overrides.gpus is not None and not record.steal and overrides.gpus < record.tasks:
        raise LaunchError(
            f"--gpus {overrides.gpus}: run {record.run_id} does not steal (--no-steal), so each task "
            "converts only its own share; resume it with its own number of tasks"
        )
    if overrides.item_timeout is not None:
        try:
            check_item_limits(overrides.item_timeout, record.worker_memory, record.engine)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
    changed: dict[str, Any] = {}
    if overrides.profile is not None:
        explicit = {
            "partition": overrides.partition,
            "template": None,
            "cpus_per_task": overrides.cpus_per_task,
            "mem": overrides.mem,
            "time": overrides.time_limit,
        }
        chosen, settings = profile_settings(overrides.profile, explicit)
        changed.update(
            profile=overrides.profile,
            template=chosen["template"],
            partition=chosen["partition"],
            cpus_per_task=chosen["cpus_per_task"],
            mem=chosen["mem"],
            time_limit=str(chosen["time"]),
            job_settings=settings,
        )
    else:
        changed.update(
            {key: value for key, value in given.items() if key in ("time_limit", "mem", "cpus_per_task", "partition")}
        )
    if overrides.item_timeout is not None:
        changed["item_timeout"] = overrides.item_timeout
    if overrides.gpus is not None:
        changed["gpus"] = overrides.gpus
    if "partition" in changed or "gpus" in changed:
        changed["partition"] = executor.check_resources(
            changed.get("partition", record.partition), changed.get("gpus", record.gpus)
        )
    return replace(record, **changed)


def busiest(unfinished: dict[int, int], gpus: int | None) -> list[int]:
    """The tasks to resubmit: all of those with work left, or the `gpus` with the most of it. Pure."""
    if gpus is None or gpus >= len(unfinished):
        return sorted(unfinished)
    return sorted(sorted(unfinished, key=lambda task: (-unfinished[task], task))[:gpus])
