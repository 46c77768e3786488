"""Cancel: stop every job of a run (or only the queued ones of a wedged run), and make sure none is left."""

from __future__ import annotations

import time

from hpc_marker.runstate.record import RunPaths
from hpc_marker.slurm import commands as slurm

QUEUE_DRAIN_TIMEOUT_S = 60.0


class CancelError(Exception):
    """Some job of the run is still there after cancelling."""


def _cancel_and_drain(ids: list[str], drain_timeout_s: float) -> None:
    slurm.cancel_jobs(ids)
    deadline = time.monotonic() + drain_timeout_s
    while (left := slurm.queued_jobs(ids)) and time.monotonic() < deadline:
        time.sleep(1.0)
    if left:
        raise CancelError(f"still in squeue after {drain_timeout_s:.0f}s: {', '.join(left)}")


def _mark_cancelled(paths: RunPaths) -> None:
    record = paths.load_record()
    record.cancelled = time.time()
    paths.save_record(record)


def cancel_run(paths: RunPaths, drain_timeout_s: float = QUEUE_DRAIN_TIMEOUT_S) -> list[str]:
    """Cancel all jobs of the run; wait until none is queued or running. Returns the job ids."""
    record = paths.load_record()
    ids = [jid for role_ids in record.jobs.values() for jid in role_ids]
    if record.executor == "slurm":
        _cancel_and_drain(ids, drain_timeout_s)
    else:
        from hpc_marker.manage.collect import SERVICE_STOP_GRACE_S
        from hpc_marker.util.processes import terminate_tree

        for job_id in ids:
            if job_id.isdigit():
                terminate_tree(int(job_id), grace_s=SERVICE_STOP_GRACE_S)
    _mark_cancelled(paths)
    return ids


def cancel_queued(paths: RunPaths, ids: list[str], drain_timeout_s: float = QUEUE_DRAIN_TIMEOUT_S) -> list[str]:
    """Cancel these queued Slurm jobs of the run (a wedged run's, see wedge.py); wait until they left squeue."""
    _cancel_and_drain(ids, drain_timeout_s)
    _mark_cancelled(paths)
    return ids
