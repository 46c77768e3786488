"""A run's tasks as Slurm job arrays, within the cluster's limits. Pure: `commands.py` asks Slurm for the
limits (`array_limits`), these functions decide.

One array holds at most MaxArraySize tasks, and its indices must be below MaxArraySize. A run with
more tasks is submitted as several arrays that together cover every task; each array's Slurm indices
then start at 0, and each task's own (global) index travels in its pickled call. While every index fits,
one array whose Slurm indices are the task indices (as `resume` submits some of them) is kept.

`--max-running K` throttles the whole run to K concurrent tasks: one array gets `%K`; several arrays
share K in proportion to their sizes (each at least 1), and an array that finishes early does not hand
its share to the others. A request that no split can fit is refused before anything is created, with
the limit named (ArrayLimitError, a UserError: exit code 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from hpc_marker.slurm.parse import array_spec
from hpc_marker.util.errors import UserError

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001  # slurm.conf's default


class ArrayLimitError(UserError):
    """The run's tasks cannot fit a limit of the cluster (named in the message); nothing was created."""


@dataclass(frozen=True)
class ArrayLimits:
    """What bounds a run's arrays: slurm.conf's MaxArraySize and, where sacctmgr answers and the cluster
    enforces association limits, the user's MaxSubmitJobs and MaxJobs (None: no limit known)."""

    max_array_size: int = SLURM_DEFAULT_MAX_ARRAY_SIZE
    max_submit_jobs: int | None = None  # jobs (each array task counts) pending or running at once
    max_jobs: int | None = None  # jobs running at once; the rest pend (AssocMaxJobsLimit)
    queued_jobs: int = 0  # the user's jobs already pending or running (array tasks counted), when MaxSubmitJobs is set


@dataclass(frozen=True)
class TaskArray:
    """One sbatch --array: the run's task indices it runs, the Slurm index of each, and its throttle."""

    tasks: tuple[int, ...]  # global task indices, in submission order
    indices: tuple[int, ...]  # the Slurm array index of each task (same length)
    throttle: int | None = None  # '%K': at most K of this array's tasks at once

    @property
    def spec(self) -> str:
        """The --array value, e.g. '0-999%40'."""
        return array_spec(list(self.indices), self.throttle)


@dataclass(frozen=True)
class ArrayLayout:
    """How a submission's tasks are grouped into arrays, and a line for the user about its limits (or None)."""

    arrays: tuple[TaskArray, ...]
    note: str | None = None

    @property
    def tasks(self) -> list[int]:
        """Every task, in submission order (the order of the convert job ids `submit` returns)."""
        return [task for array in self.arrays for task in array.tasks]


def single_array(tasks: list[int], max_running: int | None = None) -> ArrayLayout:
    """One array whose Slurm indices are the task indices (no cluster limits known or needed)."""
    throttle = max_running if max_running is not None and max_running < len(tasks) else None
    return ArrayLayout((TaskArray(tuple(tasks), tuple(tasks), throttle),))


def share_throttle(total: int, sizes: list[int]) -> list[int]:
    """Split `total` concurrent tasks between arrays of these sizes: in proportion to their sizes, each at
    least 1 and at most its size, summing to `total` (the most under-served array gets the next one).
    Needs len(sizes) <= total < sum(sizes)."""
    whole = sum(sizes)
    exact = [total * size / whole for size in sizes]
    shares = [min(size, max(1, int(x))) for x, size in zip(exact, sizes, strict=False)]
    while sum(shares) > total:  # the at-least-1 floor overshot: take from the most over-served
        shrink = min((i for i in range(len(sizes)) if shares[i] > 1), key=lambda i: (exact[i] - shares[i], i))
        shares[shrink] -= 1
    while sum(shares) < total:
        grow = max((i for i in range(len(sizes)) if shares[i] < sizes[i]), key=lambda i: (exact[i] - shares[i], -i))
        shares[grow] += 1
    return shares


def check_submit_limit(tasks: int, other_jobs: int, limits: ArrayLimits) -> None:
    """Refuse a run whose jobs (every array task, plus `other_jobs`: collector, service) cannot all be queued
    under MaxSubmitJobs next to the user's jobs already queued."""
    if limits.max_submit_jobs is None:
        return
    needed = tasks + other_jobs
    free = limits.max_submit_jobs - limits.queued_jobs
    if needed > free:
        queued = f", and {limits.queued_jobs:,} of your jobs are already queued" if limits.queued_jobs else ""
        fit = free - other_jobs
        hint = f"at most {fit:,} tasks fit now (--gpus)" if fit > 0 else "wait for your queued jobs to finish"
        raise ArrayLimitError(
            f"{tasks:,} tasks need {needed:,} jobs (each array task counts, and {other_jobs} more "
            f"for the collector and service), but MaxSubmitJobs is {limits.max_submit_jobs:,}"
            f"{queued}: {hint}"
        )


def running_note(tasks: int, limits: ArrayLimits, max_running: int | None) -> str | None:
    """A line for the user when MaxJobs keeps the run below its tasks (or --max-running) at once; else None."""
    wanted = min(tasks, max_running or tasks)
    if limits.max_jobs is None or limits.max_jobs >= wanted:
        return None
    return (
        f"note: your MaxJobs is {limits.max_jobs:,}: at most that many of the run's {tasks:,} tasks run at once "
        "(the others pend with AssocMaxJobsLimit)"
    )


def split_arrays(
    tasks: list[int], limits: ArrayLimits, max_running: int | None = None, other_jobs: int = 1
) -> list[TaskArray]:
    """The arrays that run `tasks` (global indices, in order) within `limits`, throttled to `max_running`
    concurrent tasks in all; ArrayLimitError when no split fits."""
    if not tasks:
        raise ValueError("no tasks to submit")
    if max_running is not None and max_running < 1:
        raise ArrayLimitError(f"--max-running {max_running}: must be at least 1")
    check_submit_limit(len(tasks), other_jobs, limits)
    size = limits.max_array_size
    if size < 1:
        raise ArrayLimitError(f"MaxArraySize is {size}: this cluster takes no job arrays")
    if len(tasks) <= size and max(tasks) < size:  # one array, Slurm's indices the task indices
        groups = [(tuple(tasks), tuple(tasks))]
    else:
        chunks = [tuple(tasks[start : start + size]) for start in range(0, len(tasks), size)]
        groups = [(chunk, tuple(range(len(chunk)))) for chunk in chunks]
    if max_running is None or max_running >= len(tasks):
        return [TaskArray(chunk, indices) for chunk, indices in groups]
    if max_running < len(groups):
        raise ArrayLimitError(
            f"--max-running {max_running}: {len(tasks):,} tasks need {len(groups)} arrays (MaxArraySize is {size:,}), "
            f"each running at least one task at once: use --max-running {len(groups)} or more"
        )
    shares = share_throttle(max_running, [len(chunk) for chunk, _ in groups])
    return [TaskArray(chunk, indices, share) for (chunk, indices), share in zip(groups, shares, strict=False)]


def layout(tasks: list[int], limits: ArrayLimits, max_running: int | None = None, other_jobs: int = 1) -> ArrayLayout:
    """`split_arrays`, with the note of `running_note`."""
    return ArrayLayout(
        tuple(split_arrays(tasks, limits, max_running, other_jobs)), running_note(len(tasks), limits, max_running)
    )


def convert_roles(arrays: int) -> list[str]:
    """The script name of each convert array: 'convert' for one, else 'convert-0', 'convert-1', ..."""
    return ["convert"] if arrays == 1 else [f"convert-{k}" for k in range(arrays)]
