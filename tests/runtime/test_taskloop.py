"""The task loop's phase: the first cause of a drain is the one the task's stop record gives."""

from __future__ import annotations

from hpc_marker.runstate.stops import DONE, STORAGE_FULL, TIME_LIMIT
from hpc_marker.runtime.taskloop import Phase, State


def test_the_first_cause_of_a_drain_wins_and_a_stopping_task_does_not_drain():
    phase = Phase()
    assert (phase.state, phase.cause, phase.reason) == (State.RUNNING, DONE, "")
    phase.drain(TIME_LIMIT, "time limit near (USR2)")
    phase.drain(STORAGE_FULL, "storage full: no space left")  # the disk fills while the items in flight finish
    assert (phase.state, phase.cause, phase.reason) == (State.DRAINING, TIME_LIMIT, "time limit near (USR2)")
    stopping = Phase(state=State.STOPPING)
    stopping.drain(TIME_LIMIT, "time limit near (USR2)")
    assert (stopping.state, stopping.cause) == (State.STOPPING, DONE)
