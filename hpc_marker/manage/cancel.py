"""Cancel: stop every job of a run, make sure none is left, mark the run cancelled, free its --out."""

from __future__ import annotations

import time
from pathlib import Path

from hpc_marker.executors import executor_for
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.outlock import release


def mark_cancelled(paths: RunPaths) -> None:
    record = paths.load_record()
    record.cancelled = time.time()
    paths.save_record(record)


def cancel_run(paths: RunPaths) -> list[str]:
    """Cancel all jobs of the run; wait until none is queued or running; give its --out back. Returns the job ids."""
    record = paths.load_record()
    ids = executor_for(record.executor).cancel(record)
    mark_cancelled(paths)
    release(Path(record.out_dir), record.run_id)
    return ids
