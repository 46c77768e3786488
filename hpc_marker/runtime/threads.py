"""Thread caps: keep every numeric library inside the CPUs the task was given.

Uncapped OpenMP/BLAS pools in several workers per node are what produced
`libgomp: Thread creation failed` for users; caps are set in the environment before any
worker imports torch or numpy.
"""

from __future__ import annotations

import os

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "RAYON_NUM_THREADS",
)


def task_cpus() -> int:
    """CPUs this task may use: Slurm's allocation, else this process's affinity."""
    for name in ("SLURM_CPUS_PER_TASK",):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(cpus: int, workers: int) -> int:
    return max(1, cpus // max(1, workers))


def cap_threads(threads: int) -> dict[str, str]:
    """Set the thread variables in os.environ (inherited by workers); returns what was set."""
    values = {name: str(threads) for name in THREAD_VARIABLES}
    values["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.update(values)
    return values
