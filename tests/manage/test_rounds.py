"""Rounds (issue 21): whether a run continues itself after a round (pure `next_round`), the rounds in run.json,
and `cancel` catching the jobs of a next round recorded after its mark."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_cancel import _slurm_run, slurm_queue  # noqa: F401 (a fixture)

from hpc_marker.manage.cancel import cancel_run
from hpc_marker.manage.rounds import close_round, new_round, next_round, round_lines, task_rounds
from hpc_marker.manage.verdict import FINISHED, INCOMPLETE, NODE_FAILURE, OUT_OF_MEMORY, PREEMPTED
from hpc_marker.runstate.record import Round
from hpc_marker.runstate.stops import ENGINE, ERROR, RUNNING, STORAGE_FULL, TIME_LIMIT, TaskStop


def _record(tmp_path, **changes):
    record = _slurm_run(tmp_path / str(len(list(tmp_path.iterdir())))).load_record()
    return replace(record, **{"max_rounds": 10, "rounds": [Round(1, 1.0, (0, 1))], **changes})


@pytest.mark.parametrize("cause", [TIME_LIMIT, PREEMPTED, NODE_FAILURE, "cancelled"])
def test_a_round_stopped_for_a_curable_cause_with_progress_continues(tmp_path, cause):
    assert next_round(_record(tmp_path), INCOMPLETE, {cause: [0]}, {}, done=3).go


def test_a_task_killed_without_a_word_is_curable_an_error_it_reported_is_not(tmp_path):
    record, killed = _record(tmp_path), {0: TaskStop(0, RUNNING)}
    assert next_round(record, INCOMPLETE, {ERROR: [0]}, killed, done=3).go
    said = next_round(record, INCOMPLETE, {ERROR: [0]}, {0: TaskStop(0, ERROR, "boom")}, done=3)
    assert not said.go and said.why == "not continued: another round cannot cure error"


@pytest.mark.parametrize("cause", [ENGINE, STORAGE_FULL, OUT_OF_MEMORY])
def test_a_cause_waiting_cannot_cure_ends_the_run_after_the_round(tmp_path, cause):
    decision = next_round(_record(tmp_path), INCOMPLETE, {TIME_LIMIT: [1], cause: [0]}, {}, done=3)
    assert not decision.go and decision.why == f"not continued: another round cannot cure {cause.replace('_', ' ')}"


def test_no_progress_max_rounds_cancel_and_finished_runs_stop(tmp_path):
    rounds = [Round(1, 1.0, (0, 1), done_items=3), Round(2, 2.0, (1,), "continue")]
    decision = next_round(_record(tmp_path, rounds=rounds), INCOMPLETE, {TIME_LIMIT: [1]}, {}, done=3)
    assert decision.why == "not continued: round 2 committed no item"
    decision = next_round(_record(tmp_path, rounds=rounds, max_rounds=2), INCOMPLETE, {TIME_LIMIT: [1]}, {}, done=4)
    assert decision.why == "not continued: --max-rounds 2 reached"
    decision = next_round(_record(tmp_path, cancelled=5.0), INCOMPLETE, {TIME_LIMIT: [1]}, {}, done=4)
    assert decision.why == "not continued: the run was cancelled"
    assert next_round(_record(tmp_path), FINISHED, {}, {}, done=4).why == ""  # nothing to say
    assert not next_round(_record(tmp_path, max_rounds=1), INCOMPLETE, {TIME_LIMIT: [1]}, {}, 4).go  # off
    assert not next_round(_record(tmp_path), INCOMPLETE, {TIME_LIMIT: [1]}, {}, 4, waits=True).go  # local


def test_rounds_are_recorded_and_closed_with_their_cause(tmp_path):
    paths = _slurm_run(tmp_path)  # a run from before rounds: its one round is made up when it closes
    rounds = close_round(paths, INCOMPLETE, {"time_limit": [0, 1]}, 5, "")
    assert [(r.number, r.tasks, r.done_items, r.ended) for r in rounds] == [(1, (0, 1), 5, "time limit")]
    record = paths.load_record()
    second = new_round(record, [1], "continue")
    assert (second.number, second.tasks, second.by) == (2, (1,), "continue")
    assert task_rounds(replace(record, rounds=[*record.rounds, second])) == {0: 1, 1: 2}


def test_cancel_also_cancels_the_jobs_recorded_after_its_mark(tmp_path, slurm_queue, monkeypatch):  # noqa: F811
    """A collector submitting the next round when `cancel` marks the run records jobs cancel did not know."""
    from hpc_marker.executors.slurm import SlurmExecutor

    paths, (queued, scancelled) = _slurm_run(tmp_path), slurm_queue
    queued.extend(["8"])  # the collector, submitting
    original = SlurmExecutor.cancel

    def cancel_while_the_collector_records(self, record):
        ids = original(self, record)
        if not scancelled[1:]:  # the collector's last act: the next round's jobs, recorded after the mark
            stored = paths.load_record()
            stored.jobs = {"convert": ["9_0", "9_1"], "collect": ["10"]}
            paths.save_record(stored)
            queued.extend(["9_0", "9_1", "10"])
        return ids

    monkeypatch.setattr(SlurmExecutor, "cancel", cancel_while_the_collector_records)
    assert cancel_run(paths).ended == ["8"]
    assert scancelled[0] == ["7_0", "7_1", "8"] and {"10", "9_0", "9_1"} <= set(scancelled[1])
    assert queued == [] and len(scancelled) == 2
    assert paths.cancel_mark.exists() and paths.load_record().cancelled is not None


def test_status_lines_name_each_round_and_what_ended_it(tmp_path):
    rounds = [
        Round(1, 1.0, (0, 1), done_items=3, ended="time limit"),
        Round(2, 2.0, (1,), "continue", 4, "engine", "not continued: another round cannot cure engine"),
    ]
    assert round_lines(_record(tmp_path, rounds=rounds[:1])) == []  # one round: nothing to say
    assert round_lines(_record(tmp_path, rounds=rounds)) == [
        "round 1 (submit, 2 tasks): time limit",
        "round 2 (continue, 1 task): engine; not continued: another round cannot cure engine",
    ]


def test_a_round_that_grew_is_said_even_when_it_is_the_only_one(tmp_path):
    record = _record(tmp_path, rounds=[Round(1, 1.0, (0, 1), grown=(2, 3))])
    assert round_lines(record) == ["round 1 (submit, 2 tasks + 2 grown): running"]
    assert task_rounds(record) == {0: 1, 1: 1, 2: 1, 3: 1}
