"""What a collected run's tasks left, kept in summary.json (`settled`), so that `status` of a collected run reads
no per-task file: the conversion jobs' final states (as the collector judged them), each task's stop record and
its last heartbeat's state and time (the collector's GPU accounting uses them too). Runs collected before this was
kept have none: `status` reads the files then. Pure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hpc_marker.runstate.stops import TaskStop


@dataclass(frozen=True)
class Settled:
    job_states: dict[str, str]  # conversion job id -> its final state
    stops: dict[int, TaskStop]
    activities: dict[int, str]  # task -> its last heartbeat's state
    updated: dict[int, float]  # task -> when its last heartbeat was written

    def to_json(self) -> dict:
        return {
            "job_states": dict(self.job_states),
            "stops": {str(task): asdict(stop) for task, stop in self.stops.items()},
            "activities": {str(task): state for task, state in self.activities.items()},
            "updated": {str(task): when for task, when in self.updated.items()},
        }

    @classmethod
    def from_summary(cls, summary: dict) -> Settled | None:
        """summary.json's record (None where the collector kept none)."""
        data = summary.get("settled")
        if not isinstance(data, dict):
            return None
        return cls(
            job_states=dict(data.get("job_states") or {}),
            stops={int(task): TaskStop(**stop) for task, stop in (data.get("stops") or {}).items()},
            activities={int(task): state for task, state in (data.get("activities") or {}).items()},
            updated={int(task): float(when) for task, when in (data.get("updated") or {}).items()},
        )
