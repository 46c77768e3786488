"""executors: where a run's jobs run. One protocol, two implementations; nothing else asks which.

  base.py   the Executor protocol, RunJobs (what each role's job calls), Observation (job states, and clocks),
            job_logs (a job's two logs in RUN/jobs), each task's jobs
  slurm.py  sbatch of our rendered scripts, one pickled call per sbatch (util/jobrun.py runs it); sacct/squeue
            states and clocks (one sacct query); scancel; wedged runs
  local.py  this machine: one job runner process per task; waits for the run (and tasks `grow` adds)
  localprocs.py  a local run's processes (started on one call file each start, found by its jobs folder, ended
                 together), the grow lock, grown GPUs
  machine.py  this machine for local runs: its cores and GPUs, how many tasks fit, each task's share of the cores,
              the GPUs running tasks hold (a grown task takes a free one)

`executor_for(name)` turns a run's stored executor name into its executor; `choose_executor`
decides it for a new run.
"""

from __future__ import annotations

from hpc_marker.executors.base import Executor, Observation, RunJobs
from hpc_marker.util.errors import UserError

NAMES = ("slurm", "local")


class ExecutorUnavailable(UserError):
    """The executor asked for cannot run here."""


def choose_executor(requested: str) -> str:
    """auto: slurm where sbatch is on PATH, else local."""
    from hpc_marker.slurm.commands import slurm_available

    if requested == "auto":
        return "slurm" if slurm_available() else "local"
    if requested == "slurm" and not slurm_available():
        raise ExecutorUnavailable("--executor slurm: sbatch is not on PATH")
    if requested not in NAMES:
        raise ExecutorUnavailable(f"--executor {requested!r}: choose from auto, {', '.join(NAMES)}")
    return requested


def executor_for(name: str) -> Executor:
    if name == "slurm":
        from hpc_marker.executors.slurm import SlurmExecutor

        return SlurmExecutor()
    if name == "local":
        from hpc_marker.executors.local import LocalExecutor

        return LocalExecutor()
    raise ValueError(f"unknown executor {name!r} in a run record")


__all__ = ["NAMES", "Executor", "ExecutorUnavailable", "Observation", "RunJobs", "choose_executor", "executor_for"]
