"""Follow-up runs beside a run: the runs of the same --out that `retry --select` made and that are not
finished, so that `status` of any run there (or of the --out folder, whichever run it shows) names
each, with its state and the command that continues it. Finished ones are known from their
summary.json without asking the scheduler; the others are asked about through `state_of`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.manage.verdict import FINISHED
from hpc_marker.runstate.index import runs_of_out
from hpc_marker.runstate.layout import RunPaths


@dataclass(frozen=True)
class FollowUpRun:
    run_id: str
    parent: str  # the run whose documents it redoes
    state: str
    headline: str
    next: str | None  # the command that continues it (None: it is going on)

    def line(self) -> str:
        then = f"to continue it: {self.next}" if self.next else f"to follow it: hpcmarker status {self.run_id}"
        return f"follow-up run {self.run_id} of run {self.parent}: {self.headline}; {then}"


def unfinished_follow_ups(
    paths: RunPaths, out: str | Path, state_of: Callable[[RunPaths], object]
) -> list[FollowUpRun]:
    """The runs of --out `out` but `paths` that are follow-ups and not finished, oldest first. `state_of` gives
    a run's status (state, headline, next)."""
    found = []
    for other in runs_of_out(Path(out)):
        if other.root == paths.root.resolve():
            continue
        try:
            record = other.load_record()
        except (OSError, ValueError, TypeError):  # being written, or not a run's
            continue
        if not record.parent or _finished(other):  # the record first: a large run's summary.json is not read
            continue
        status = state_of(other)
        if status.state != FINISHED:
            found.append(
                FollowUpRun(
                    record.run_id,
                    record.parent.run_id,
                    status.state,
                    status.headline or status.state,
                    status.next,
                )
            )
    return found


def _finished(paths: RunPaths) -> bool:
    try:
        return json.loads(Path(paths.summary).read_text(encoding="utf-8")).get("state") == FINISHED
    except (OSError, ValueError, AttributeError):
        return False
