"""Preemption: a USR2 that is not the time-limit warning, and the wait for Slurm's requeue.

Slurm sends a convert job its --signal (B:USR2@90, submission/scripts.py) 90 s before its time limit and, on a
partition that preempts with SlurmctldParameters=preempt_send_user_signal, at once when a job of a higher
priority preempts it, GraceTime seconds before the kill. The task drains the same way for both (taskloop.py:
the items in flight finish, its batches are given back); once drained it asks Slurm which one it was: only a
preempted job has a PreemptTime (`scontrol show job`). It asks only when the USR2 came well before the time-limit
warning could have (`early`: thousands of tasks near their limit ask nothing); where Slurm cannot be asked, or a
preemption comes within minutes of the time limit, USR2 means the time limit.

A preempted task on a profile marked `preemptible = true` (the run's JobSettings) whose job Slurm may requeue
(sbatch --requeue) then stays, idle, until Slurm kills it at the end of the grace: with PreemptMode=REQUEUE the
job is requeued and runs the task again, which takes its own share back (a job that exits within the grace ends
COMPLETED and is never requeued). Elsewhere it exits once drained, and the run's next round (manage/rounds.py)
takes what it left. Either way its stop record says `preempted`, a cause another round cures.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from hpc_marker.slurm.commands import SlurmError, preemption
from hpc_marker.slurm.parse import Preemption, parse_time_limit

logger = logging.getLogger(__name__)

USR2_REASON = "time limit near (USR2)"  # what a drain on USR2 says until Slurm says it was a preemption
SIGNAL_LEAD_S = 90  # the convert jobs' --signal=B:USR2@90 (submission/scripts.py): USR2 this long before the limit
SIGNAL_EARLY_S = 120  # Slurm sends it up to a minute early (it looks every 30-60 s); and the task starts late
KILL_MARGIN_S = 120.0  # after the job's EndTime (the end of its grace): KillWait and a busy slurmctld


def early(started: float, time_limit: str, now: float) -> bool:
    """Whether a USR2 at `now` came well before the time-limit warning of a task that started at `started` with
    Slurm's --time `time_limit`, so that it may be a preemption (an unreadable limit: it may). Pure."""
    minutes = parse_time_limit(time_limit)
    return minutes is None or now < started + minutes * 60 - SIGNAL_LEAD_S - SIGNAL_EARLY_S


def usr2_preemption(started: float, time_limit: str) -> Preemption | None:
    """For a task that drained on USR2: Slurm's word that it is being preempted, asked only when the USR2 was
    `early`; None: the time limit is near."""
    return preempted() if early(started, time_limit, time.time()) else None


def preempted(environ: dict[str, str] | None = None) -> Preemption | None:
    """Slurm's word that this job (SLURM_JOB_ID) is being preempted; None when it is not, when the task is not a
    Slurm job, or when Slurm cannot be asked (then its USR2 is the time-limit warning)."""
    job_id = (os.environ if environ is None else environ).get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        found = preemption(job_id)
    except SlurmError as exc:
        logger.warning("USR2 taken as the time-limit warning: cannot ask Slurm whether it was a preemption (%s)", exc)
        return None
    return found if found.preempted_at is not None else None


def preemption_reason(found: Preemption) -> str:
    """The stop record's line for a preempted task. Pure."""
    at = time.strftime("%H:%M:%S", time.localtime(found.preempted_at)) if found.preempted_at else "?"
    return f"preempted by a job of higher priority at {at} (USR2 from Slurm, not the time limit)"


def waits_for_requeue(found: Preemption, preemptible: bool) -> bool:
    """Whether the drained task stays until Slurm kills it: a preemptible profile and a requeueable job. Pure."""
    return preemptible and found.requeue


def await_kill(
    found: Preemption,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Stay idle until Slurm kills the job at the end of its grace (its SIGTERM ends the task: task.py), so that
    Slurm requeues it; return when no kill came by the job's EndTime + KILL_MARGIN_S."""
    ends = found.ends_at if found.ends_at is not None else now()
    logger.info(
        "preempted: drained; waiting for Slurm to end the job at %s and requeue it (it then takes its share back)",
        time.strftime("%H:%M:%S", time.localtime(ends)),
    )
    deadline = ends + KILL_MARGIN_S
    while (left := deadline - now()) > 0:
        sleep(min(left, 5.0))
    logger.warning("preempted, but not ended by Slurm %.0f s after its grace: exiting", KILL_MARGIN_S)
