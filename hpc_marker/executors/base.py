"""The executor protocol: where a run's jobs run, and what the rest of hpcmarker may ask about them.

Submission hands an executor the rendered scripts and the callables each role runs (`RunJobs`);
management asks it for the jobs' states (`observe`), whether any is still active, to cancel
them, and to stop the run's service. Nothing outside `executors/` asks which executor a run has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import RunRecord
from hpc_marker.slurm.arrays import ArrayLayout
from hpc_marker.slurm.parse import JobClock
from hpc_marker.util.errors import Refused, UserError
from hpc_marker.util.jobrun import job_logs as logs_of


def service_replicas(record: RunRecord) -> int:
    """How many service jobs (LLM replicas) the run has: 0 without an LLM."""
    return record.llm.replicas if record.llm else 0


WaitHook = Callable[[RunPaths], None]  # called every second or so while a waiting executor runs
JobsSeen = Callable[[dict[str, list[str]]], None]  # told the job ids as soon as jobs exist (before waiting)

NO_JOB = "-"  # in RunRecord.jobs["convert"]: a task that has no job (yet)

# The roles whose jobs a run has (RunRecord.jobs keys); any other key (history) is not a live job.
ROLES = ("service", "convert", "collect")
REPLACED = "replaced"  # RunRecord.jobs key: '<task>:<job id>' of each convert job a resubmission replaced


@dataclass(frozen=True)
class RunJobs:
    """What each role's job calls: built by submission, pickled by the executor for the job runner (util/jobrun.py)."""

    convert: Callable[[str, int], Any]  # (run folder, task index)
    collect: Callable[[str], Any]  # (run folder)
    service: Callable[[str, int], Any] | None = None  # (run folder, replica); only for a run with an LLM service


@dataclass(frozen=True)
class Fit:
    """What a request for `--gpus N` gets from an executor: at most `tasks` tasks, and why, when fewer."""

    tasks: int
    note: str | None = None  # one line for the user where the executor changed what was asked


class SubmitFailed(Refused):
    """The scheduler refused the run's jobs; nothing of the run is left queued (one line)."""


class GrowRefused(UserError):
    """`hpcmarker grow` on a run whose round is over (its tasks ended, its collector started): one line."""


@dataclass
class Observation:
    """The scheduler's view of a run's jobs."""

    states: dict[str, str]  # job id -> Slurm state word (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED...)
    wedged: str | None = None  # one line when a job of the run can never start
    cancelled: list[str] = field(default_factory=list)  # jobs cancelled because the run was wedged
    pending: dict[str, str] = field(default_factory=dict)  # pending job id -> why it pends (squeue's %r)
    clocks: dict[str, tuple[JobClock, ...]] | None = None  # what `clocks` answers, asked in the same query (or None)


class Executor(Protocol):
    name: str  # as stored in run.json: "slurm" or "local"
    waits: bool  # submit returns only once the run is over (and collected)

    def check_resources(self, partition: str | None, gpus: int) -> str | None:
        """Validate the request against this executor's resources; the partition to use.
        Raises a UserError subclass with a one-line reason."""

    def fit(self, gpus: int, workers_per_gpu: int, engine: str, mps: str = "auto") -> Fit:
        """How many tasks `--gpus gpus` gets here (Slurm: as asked; local: what this machine's cores and GPUs
        hold), with a one-line note where that differs. Asked before anything is planned."""

    def check_scripts(self, scripts: dict[str, str]) -> None:
        """Ask the scheduler whether it could ever run these rendered scripts (nothing is queued); raises a
        UserError subclass naming the script and the scheduler's reason. Asked before anything is created."""

    def task_arrays(self, record: RunRecord, tasks: list[int], other_jobs: int) -> ArrayLayout:
        """How the tasks `tasks` (with `other_jobs` more jobs: collector, service) are grouped into job arrays
        within the scheduler's limits and the run's --max-running. Raises a UserError subclass naming the
        limit a request cannot fit; asked before anything is created."""

    def submit(
        self,
        paths: RunPaths,
        record: RunRecord,
        scripts: dict[str, str],
        layout: ArrayLayout,
        jobs: RunJobs,
        progress: WaitHook | None = None,
        seen: JobsSeen | None = None,
    ) -> dict[str, list[str]]:
        """Start the service (if any: one job per replica, record.llm.replicas), the tasks of `layout`,
        and the collector after them; role -> job ids (convert: one per task, in `layout.tasks` order).
        `scripts` has one convert script per array (slurm.arrays.convert_roles). `seen` is told the ids of
        the jobs started so far before anything is waited for. SubmitFailed when the scheduler refused
        (nothing of the run left queued)."""

    def grow(
        self,
        paths: RunPaths,
        record: RunRecord,
        scripts: dict[str, str],
        layout: ArrayLayout,
        jobs: RunJobs,
        seen: JobsSeen | None = None,
    ) -> list[str]:
        """Add the tasks of `layout` to the run's running round (`hpcmarker grow`): no collector of their own,
        the round's collector waits for them too; their job ids (`seen` is told them as they are queued). Does
        not wait for them. GrowRefused when the round is over (its collector started): nothing left queued."""

    def observe(
        self, paths: RunPaths, record: RunRecord, finished_tasks: set[int], collected: bool, cancel_wedged: bool = False
    ) -> Observation:
        """The states of the run's jobs; a wedged run is described, and cancelled when asked."""

    def clocks(self, paths: RunPaths, record: RunRecord) -> dict[str, tuple[JobClock, ...]]:
        """The scheduler's clock of every allocation (a requeued job ran more than once) of the run's conversion
        jobs, the ones resubmissions replaced too (`task_jobs`), and its service jobs: job id -> JobClocks, oldest
        first; asked once (finished jobs' kept in the run folder); `observe` answers them in its own query. {}
        where the scheduler keeps none (the tasks' own clocks then stand for it: manage/accounting.py)."""

    def active(self, record: RunRecord) -> list[str]:
        """The run's jobs that are still queued or running."""

    def cancel(self, record: RunRecord) -> list[str]:
        """Cancel every job of the run and wait until none is left; returns their ids."""

    def stop_service(self, record: RunRecord) -> list[str]:
        """Stop the run's LLM service, every replica (the array is over); returns its job ids."""


def live_job_ids(record: RunRecord, roles: tuple[str, ...] = ROLES) -> list[str]:
    """The job ids of these roles (the current ones: a resumed task's newest job)."""
    return [jid for role in roles for jid in record.jobs.get(role, []) if jid != NO_JOB]


def task_jobs(record: RunRecord) -> dict[int, list[str]]:
    """Each task's convert jobs, oldest first: those resubmissions replaced (REPLACED), then its current one."""
    jobs: dict[int, list[str]] = {}
    for entry in record.jobs.get(REPLACED, []):
        task, _, job_id = entry.partition(":")
        jobs.setdefault(int(task), []).append(job_id)
    for task, job_id in enumerate(record.jobs.get("convert", [])):
        if job_id != NO_JOB:
            jobs.setdefault(task, []).append(job_id)
    return jobs


def accounted_job_ids(record: RunRecord) -> list[str]:
    """The jobs whose GPU time a run's accounting counts: every task's convert jobs (`task_jobs`) and the service."""
    every = [jid for jobs in task_jobs(record).values() for jid in jobs]
    return list(dict.fromkeys([*every, *live_job_ids(record, ("service",))]))


def job_logs(paths: RunPaths, job_id: str) -> tuple[Path, Path]:
    """(stdout, stderr) of one of the run's jobs in RUN/jobs, for either executor (`<id>_0_log.out/.err`, the names
    submitit gave them: older run folders read the same)."""
    return logs_of(paths.jobs, job_id)
