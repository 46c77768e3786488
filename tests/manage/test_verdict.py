"""The run's verdict (manage/verdict.py, pure): its state word, one line per cause from the tasks' own stop
records and the scheduler's job states, the next command, and the exit code of `status`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hpc_marker.manage.verdict import (
    EXIT_FAILED_ITEMS,
    EXIT_INCOMPLETE,
    EXIT_OK,
    RunFacts,
    TaskView,
    doubled_memory,
    doubled_time,
    run_state,
    task_cause,
    verdict,
)
from hpc_marker.runstate.stops import TaskStop


def facts(
    *states: str,
    pending: int = 0,
    failed: int = 0,
    collected: bool = True,
    collector: str = "COMPLETED",
    stops: dict | None = None,
    **more,
) -> RunFacts:
    tasks = tuple(TaskView(i, f"7_{i}", state, pending if i == 0 else 0) for i, state in enumerate(states))
    return RunFacts(
        run_id="r1",
        time_limit="00:30:00",
        mem="16G",
        cancelled=False,
        tasks=tasks,
        stops=stops or {},
        items=64,
        pending=pending,
        failed=failed,
        collected=collected,
        collector=collector,
        **more,
    )


def stop(task: int, cause: str, detail: str = "", job: str | None = None) -> TaskStop:
    return TaskStop(task, cause, detail, job_id=job if job is not None else f"7_{task}")


def test_state_words():
    assert run_state(facts("PENDING", "PENDING", collector="PENDING", collected=False)) == "pending"
    assert run_state(facts("COMPLETED", "RUNNING", collector="PENDING", collected=False)) == "running"
    assert run_state(facts("COMPLETED", "FAILED", collector="RUNNING", collected=False)) == "collecting"
    assert run_state(facts("COMPLETED", "COMPLETED")) == "finished"
    assert run_state(facts("COMPLETED", "COMPLETED", pending=48)) == "incomplete"  # collected, items left
    assert run_state(facts("COMPLETED", "COMPLETED", collected=False, collector="CANCELLED")) == "incomplete"
    assert run_state(facts("CANCELLED", "CANCELLED", pending=3)) == "incomplete"
    assert run_state(facts("PENDING", collected=False, collector="PENDING", wedged=True)) == "wedged"


def test_a_time_limited_run_is_incomplete_with_the_reason_and_a_longer_time():
    judged = verdict(
        facts(
            "COMPLETED",
            "COMPLETED",
            pending=48,
            stops={
                0: stop(0, "time_limit", "time limit near (USR2)"),
                1: stop(1, "time_limit", "time limit near (USR2)"),
            },
        )
    )
    assert judged.state == "incomplete" and judged.exit_code == EXIT_INCOMPLETE
    assert judged.headline == "incomplete: 48 of 64 items not converted (time limit)"
    assert judged.lines("r1") == ["2 tasks (0,1): time limit near (USR2) — next: hpcmarker resume r1 --time 01:00:00"]
    assert judged.next == "hpcmarker resume r1 --time 01:00:00"


def test_causes_the_task_could_not_record_come_from_the_job_state():
    running = {0: stop(0, "running"), 1: stop(1, "running"), 2: stop(2, "running")}
    judged = verdict(facts("TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", pending=10, stops=running))
    assert judged.lines("r1") == [
        "1 task (1): killed: out of memory (job OUT_OF_MEMORY) — next: hpcmarker resume r1 --mem 32G",
        "1 task (0): killed at its time limit (job TIMEOUT) — next: hpcmarker resume r1 --time 01:00:00",
        "1 task (2): its node failed (job NODE_FAIL) — next: hpcmarker resume r1",
    ]
    assert judged.next == "hpcmarker resume r1 --mem 32G --time 01:00:00"  # every cause's options in one command
    assert task_cause(None, TaskView(0, "7_0", "FAILED"))[0] == "error"  # died before its record
    assert task_cause(None, TaskView(0, "7_0", "CANCELLED")) == ("cancelled", "cancelled before it started")


def test_the_tasks_own_record_wins_and_an_earlier_jobs_record_does_not_count():
    engine = stop(0, "engine", "engine 'marker' cannot run on n1: vllm is not on PATH", job="7_0")
    assert task_cause(engine, TaskView(0, "7_0", "RUNNING")) == ("engine", engine.detail)  # sacct lags the record
    assert task_cause(engine, TaskView(0, "9_0", "PENDING")) is None  # resubmitted: the old record is history
    assert task_cause(stop(0, "done"), TaskView(0, "7_0", "FAILED")) is None


def test_one_line_per_distinct_cause_with_its_count_and_fix():
    stops = {i: stop(i, "engine", "engine 'marker' cannot run on n1: vllm is not on PATH") for i in range(3)}
    stops[3] = stop(3, "storage_full", "storage full: cannot write output: No space left on device")
    judged = verdict(facts("FAILED", "FAILED", "FAILED", "FAILED", pending=20, stops=stops))
    assert judged.lines("r1") == [
        (
            "3 tasks (0-2): engine 'marker' cannot run on n1: vllm is not on PATH — make the engine work in the jobs' "
            "environment (see `hpcmarker logs r1 --task 0`, `hpcmarker doctor`), then: hpcmarker resume r1"
        ),
        (
            "1 task (3): storage full: cannot write output: No space left on device — free space, then: "
            "hpcmarker retry r1"
        ),
    ]
    assert judged.next == "hpcmarker retry r1"  # retry also reopens what the full disk failed
    assert judged.headline == "incomplete: 20 of 64 items not converted (engine, storage full)"


def test_finished_runs_exit_0_or_3_and_a_run_not_collected_says_collect():
    assert verdict(facts("COMPLETED")).exit_code == EXIT_OK
    failed = verdict(facts("COMPLETED", failed=2))
    assert (failed.state, failed.exit_code, failed.next) == ("finished", EXIT_FAILED_ITEMS, "hpcmarker retry r1")
    assert failed.headline == "finished: 62 ok, 2 failed of 64 items"
    uncollected = verdict(facts("COMPLETED", collected=False, collector="FAILED"))
    assert uncollected.state == "incomplete" and uncollected.next == "hpcmarker collect r1"
    assert uncollected.lines("r1") == [
        ("the run: every item is done, but the run was not collected (job FAILED) — next: hpcmarker collect r1")
    ]
    assert verdict(facts("RUNNING", pending=5, collected=False, collector="PENDING")).exit_code == EXIT_OK


def test_a_cancelled_run_says_so_even_when_its_tasks_left_no_record():
    judged = verdict(
        replace(facts("CANCELLED", "CANCELLED", pending=30, collected=False, collector="CANCELLED"), cancelled=True)
    )
    assert judged.lines("r1") == ["2 tasks (0,1): cancelled before it started — next: hpcmarker resume r1"]
    assert judged.exit_code == EXIT_INCOMPLETE


def test_pending_reasons_that_never_clear_are_named_with_what_to_do():
    judged = verdict(
        facts(
            "PENDING",
            "PENDING",
            pending=64,
            collected=False,
            collector="PENDING",
            pending_reasons={"7_0": "PartitionConfig", "7_1": "PartitionConfig", "8": "Dependency"},
            other_jobs={"8": "collect 8"},
        )
    )
    assert judged.state == "pending"
    assert judged.lines("r1") == [
        (
            "2 tasks (0,1): pending with PartitionConfig: the partition can never run this request (more CPUs, memory "
            "or GPUs per node than its nodes have, or a setting it does not allow) — ask for less (--cpus-per-task, "
            "--mem, --time) or another --partition, then: hpcmarker cancel r1 && hpcmarker resume r1"
        )
    ]
    assert judged.next == "hpcmarker cancel r1 && hpcmarker resume r1" and judged.exit_code == EXIT_OK  # still queued
    waiting = verdict(
        facts("PENDING", pending=64, collected=False, collector="PENDING", pending_reasons={"7_0": "Resources"})
    )
    assert waiting.reasons == ()  # waits for GPUs: that clears


@pytest.mark.parametrize(
    "given, doubled", [("1", "00:02:00"), ("04:00:00", "08:00:00"), ("1-00:00:00", "2-00:00:00"), ("90", "03:00:00")]
)
def test_doubled_time(given, doubled):
    assert doubled_time(given) == doubled


def test_doubled_memory():
    assert [doubled_memory(m) for m in ("16G", "4000", "512M", None, "lots")] == ["32G", "8000M", "1024M", "32G", "32G"]


def test_the_collector_counts_a_task_over_once_its_own_record_says_so():
    from hpc_marker.manage.collect import settled_states

    stops = {0: stop(0, "done"), 1: stop(1, "time_limit"), 2: stop(2, "running"), 3: stop(3, "done", job="5_3")}
    states = {"7_0": "RUNNING", "7_1": "COMPLETING", "7_2": "RUNNING", "7_3": "RUNNING", "7_4": "RUNNING"}
    assert settled_states(["7_0", "7_1", "7_2", "7_3", "7_4"], states, stops) == {
        "7_0": "COMPLETED",
        "7_1": "COMPLETED",
    }


def test_retry_is_never_offered_when_it_could_not_convert_anything():
    """Issue 19: failed items known at scan time (not a PDF, empty, encrypted) or poison (failed 3 times) are
    not offered to `retry`, which would do nothing or fail them again the same way."""
    some = verdict(facts("COMPLETED", failed=3, retryable=1, known_at_scan=2))
    assert some.next == "hpcmarker retry r1" and some.exit_code == EXIT_FAILED_ITEMS
    known = verdict(facts("COMPLETED", failed=2, retryable=0, known_at_scan=2))
    assert (known.state, known.exit_code, known.next) == ("finished", EXIT_FAILED_ITEMS, None)
    assert known.lines("r1") == [
        "the run: 2 failed items cannot be converted by `retry`: 2 cannot be read as "
        "they are (not a PDF, empty, encrypted: their manifest lines say which)"
    ]
    poison = verdict(facts("COMPLETED", failed=3, retryable=0, known_at_scan=1, poison=2))
    assert poison.next is None
    assert poison.lines("r1")[0].endswith(
        "2 failed 3 times and are not retried: `hpcmarker retry r1 --include-poison` tries them once more "
        "(with other settings, e.g. --item-timeout or --mem)"
    )
    assert verdict(facts("COMPLETED", failed=2)).next == "hpcmarker retry r1"  # unknown (older summaries): as before


def test_a_task_that_says_it_was_preempted_is_named_while_slurm_requeues_it_and_after():
    said = {0: stop(0, "preempted", "preempted by a job of higher priority at 11:04:22 (USR2 from Slurm, not …)")}
    requeued = verdict(facts("PENDING", "RUNNING", collector="PENDING", collected=False, stops=said))
    assert requeued.state == "running" and requeued.headline == "running (preempted)"
    assert requeued.lines("r1") == [
        "1 task (0): preempted by a job of higher priority at 11:04:22 (USR2 from Slurm, not …) — next: "
        "hpcmarker resume r1"
    ]
    not_requeued = verdict(facts("COMPLETED", "COMPLETED", pending=5, stops=said))  # exited in its grace
    assert not_requeued.headline == "incomplete: 5 of 64 items not converted (preempted)"
    assert not_requeued.next == "hpcmarker resume r1"
    again = verdict(facts("RUNNING", "RUNNING", collector="PENDING", collected=False, stops={0: stop(0, "running")}))
    assert again.reasons == ()  # running again under its job: the record of its earlier life is overwritten
