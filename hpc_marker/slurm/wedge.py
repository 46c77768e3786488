"""Wedged runs: a job of the run pends forever because its dependency can never be satisfied.

A run's jobs wait on each other (array `after:` the LLM service, collector `afterany:` the array).
When what a job waits on can no longer happen, Slurm keeps it pending with reason
DependencyNeverSatisfied (unless the cluster sets kill_invalid_depend), and the jobs after it
wait on it in turn: nothing of the run will ever run again. `find_wedge` decides from the run's
jobs, squeue's lines and sacct's states whether that is so and what is left to cancel;
`describe` says it in one line. Both are pure: status.py asks Slurm; `hpcmarker cancel` (or `status --fix`)
cancels, plain `status` only reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpc_marker.slurm.parse import QueuedJob, base_id, parse_dependency

NEVER_SATISFIED = "DependencyNeverSatisfied"
ROLE_LABELS = {"service": "service", "convert": "array", "collect": "collector"}


@dataclass(frozen=True)
class Wedge:
    stuck: tuple[str, ...]  # labelled jobs pending with DependencyNeverSatisfied, e.g. 'array 123'
    causes: tuple[str, ...]  # what they wait on that can never happen, e.g. 'service 122 FAILED'
    queued: tuple[str, ...]  # every job of the run still in squeue (squeue's ids): what cancelling removes
    queued_labels: tuple[str, ...]  # the same, labelled: 'array 123', 'collector 124'


def job_labels(jobs: dict[str, list[str]]) -> dict[str, str]:
    """Base job id -> 'service', 'array' or 'collector' for RunRecord.jobs; other ids (history) -> 'job'. Pure."""
    labels: dict[str, str] = {}
    for role in [*ROLE_LABELS, *sorted(set(jobs) - set(ROLE_LABELS))]:
        for job_id in jobs.get(role, []):
            labels.setdefault(base_id(job_id), ROLE_LABELS.get(role, "job"))
    return labels


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def find_wedge(jobs: dict[str, list[str]], queue: list[QueuedJob], states: dict[str, str]) -> Wedge | None:
    """The run's wedge, or None when no job of it pends with DependencyNeverSatisfied. Pure.

    `jobs` is RunRecord.jobs, `queue` squeue's lines, `states` sacct's state per job id (for the causes)."""
    labels = job_labels(jobs)
    mine = [job for job in queue if job.base_id in labels]
    stuck = [job for job in mine if job.state == "PENDING" and job.reason == NEVER_SATISFIED]
    if not stuck:
        return None
    causes = []
    for job in stuck:
        failed = [dep for dep in parse_dependency(job.dependency) if dep.state != "unfulfilled"]
        for dep in failed:
            base = base_id(dep.job_id)
            state = states.get(dep.job_id) or states.get(base) or dep.state.upper()
            causes.append(f"{labels.get(base, 'job')} {dep.job_id} {state}")
        if not failed and job.dependency:
            causes.append(f"dependency {job.dependency}")
    order = {label: rank for rank, label in enumerate(ROLE_LABELS.values())}
    queued = sorted(mine, key=lambda job: (order.get(labels[job.base_id], len(order)), job.job_id))
    return Wedge(
        stuck=_unique([f"{labels[job.base_id]} {job.base_id}" for job in stuck]),
        causes=_unique(causes),
        queued=_unique([job.job_id for job in queued]),
        queued_labels=_unique([f"{labels[job.base_id]} {job.base_id}" for job in queued]),
    )


def _and(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def describe(run_id: str, wedge: Wedge, cancelled: bool) -> str:
    """One line for the user: what is stuck, on what, what was (or is still to be) done. Pure."""
    cause = f" ({', '.join(wedge.causes)})" if wedge.causes else ""
    head = f"run {run_id} is wedged: {_and(wedge.stuck)} pending with {NEVER_SATISFIED}{cause}"
    if cancelled:
        return f"{head}; cancelled {_and(wedge.queued_labels)} — fix the cause, then: hpcmarker resume {run_id}"
    return (
        f"{head}; still queued (status cancels nothing): {_and(wedge.queued_labels)} — fix the cause, then: "
        f"hpcmarker cancel {run_id} && hpcmarker resume {run_id}"
    )
