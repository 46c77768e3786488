"""Cancel: stop every job of a run, and make sure nothing of it is left running."""

from __future__ import annotations

import time

from . import slurm
from .runs import RunPaths

QUEUE_DRAIN_TIMEOUT_S = 60.0


class CancelError(Exception):
    """Some job of the run is still there after cancelling."""


def cancel_run(paths: RunPaths, drain_timeout_s: float = QUEUE_DRAIN_TIMEOUT_S) -> list[str]:
    """Cancel all jobs of the run; wait until none is queued or running. Returns the job ids."""
    record = paths.load_record()
    ids = [jid for role_ids in record.jobs.values() for jid in role_ids]
    if record.executor == "slurm":
        slurm.cancel_jobs(ids)
        deadline = time.monotonic() + drain_timeout_s
        while (left := slurm.queued_jobs(ids)) and time.monotonic() < deadline:
            time.sleep(1.0)
        if left:
            raise CancelError(f"still in squeue after {drain_timeout_s:.0f}s: {', '.join(left)}")
    else:
        from .local import terminate_tree

        from .collect import SERVICE_STOP_GRACE_S

        for job_id in ids:
            if job_id.isdigit():
                terminate_tree(int(job_id), grace_s=SERVICE_STOP_GRACE_S)
    record.cancelled = time.time()
    paths.save_record(record)
    return ids
