"""Preemption (runtime/preempt.py): a USR2 that Slurm says is a preemption is recorded as one, and a preempted task
on a preemptible profile waits for Slurm's kill (so that Slurm requeues it) instead of exiting inside the grace.
Slurm is stood in for where the task asks it (`scontrol show job`); tests/slurm/test_slurm_preempt.py is the real one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import replace

import pytest

from hpc_marker.planning.store import load_plan
from hpc_marker.runstate.claims import ClaimBoard, batch_name
from hpc_marker.runstate.manifest import read_manifests
from hpc_marker.runstate.stops import read_stops
from hpc_marker.runtime import preempt
from hpc_marker.runtime.task import run_task
from hpc_marker.slurm.commands import SlurmError
from hpc_marker.slurm.parse import Preemption, parse_preemption
from hpc_marker.submission.launch import prepare_run
from hpc_marker.submission.request import SubmitRequest

# `scontrol -o show job` of a scavenger job, as the test cluster printed it before and after a job in `urgent`
# preempted it (GraceTime=30: its EndTime moved to PreemptTime + 30 s); cut to the fields around the ones read.
RUNNING = (
    "JobId=2328 JobName=j.sh UserId=root(0) JobState=RUNNING Reason=None Requeue=1 Restarts=0 BatchFlag=1 "
    "RunTime=00:00:00 TimeLimit=00:10:00 StartTime=2026-12-06T11:04:16 EndTime=2026-12-06T11:14:16 Deadline=N/A "
    "PreemptEligibleTime=2026-12-06T11:04:16 PreemptTime=None SuspendTime=None Partition=scavenger"
)
PREEMPTED = RUNNING.replace("EndTime=2026-12-06T11:14:16", "EndTime=2026-12-06T11:04:52").replace(
    "PreemptTime=None", "PreemptTime=2026-12-06T11:04:22"
)


def test_scontrol_says_when_a_job_is_being_preempted_and_until_when_it_runs():
    running, preempted = parse_preemption(RUNNING), parse_preemption(PREEMPTED)
    assert running.preempted_at is None and running.requeue
    assert preempted.preempted_at is not None and preempted.ends_at - preempted.preempted_at == 30
    assert not parse_preemption(RUNNING.replace("Requeue=1", "Requeue=0")).requeue


def test_a_usr2_is_a_preemption_only_where_slurm_says_so(monkeypatch):
    asked = []
    monkeypatch.setattr(preempt, "preemption", lambda job: asked.append(job) or parse_preemption(PREEMPTED))
    assert preempt.preempted({}) is None and asked == []  # not a Slurm job: nothing asked, the time limit
    assert preempt.preempted({"SLURM_JOB_ID": "2328"}).preempted_at is not None and asked == ["2328"]
    monkeypatch.setattr(preempt, "preemption", lambda job: parse_preemption(RUNNING))
    assert preempt.preempted({"SLURM_JOB_ID": "2328"}) is None  # Slurm's own time-limit warning

    def unreachable(job):
        raise SlurmError("scontrol -o show job 2328: no answer within 10s (slurmctld down?)")

    monkeypatch.setattr(preempt, "preemption", unreachable)
    assert preempt.preempted({"SLURM_JOB_ID": "2328"}) is None  # cannot ask: USR2 means the time limit, as before


def test_slurm_is_asked_only_for_a_usr2_well_before_the_time_limit_warning(monkeypatch):
    assert preempt.early(0, "10", now=100)  # 10 minutes: the warning comes 90 s before, up to a minute early
    assert not preempt.early(0, "10", now=400) and not preempt.early(0, "00:10:00", now=599)
    assert preempt.early(0, "not a time", now=10**9)  # a limit it cannot read: Slurm is asked
    asked = []
    monkeypatch.setenv("SLURM_JOB_ID", "2328")
    monkeypatch.setattr(preempt, "preemption", lambda job: asked.append(job) or parse_preemption(PREEMPTED))
    assert preempt.usr2_preemption(time.time() - 500, "10") is None and asked == []  # the warning: nothing asked
    assert preempt.usr2_preemption(time.time() - 60, "10") is not None and asked == ["2328"]


def test_only_a_requeueable_job_on_a_preemptible_profile_waits_for_the_kill():
    found = parse_preemption(PREEMPTED)
    assert preempt.waits_for_requeue(found, preemptible=True)
    assert not preempt.waits_for_requeue(found, preemptible=False)
    assert not preempt.waits_for_requeue(replace(found, requeue=False), preemptible=True)


def test_the_wait_for_the_kill_ends_by_itself_after_the_grace_and_a_margin():
    clock = [1000.0]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock[0] += seconds

    preempt.await_kill(Preemption(990.0, 1020.0, True), now=lambda: clock[0], sleep=sleep)
    assert clock[0] == 1020.0 + preempt.KILL_MARGIN_S and max(naps) <= 5.0


@pytest.fixture
def signals():
    """run_task installs its own SIGTERM, SIGINT and USR2 handlers in this process: pytest's come back after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def _benchmark_run(pdfs, tmp_path, monkeypatch, preemptible: bool):
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.2")  # long enough for a USR2 in the middle
    prepared = prepare_run(
        SubmitRequest.with_defaults(
            pdfs=pdfs, out=tmp_path / "out", gpus=1, engine="benchmark", executor="local", workers_per_gpu=1
        )
    )
    record = prepared.record
    record.job_settings = replace(record.job_settings, preemptible=preemptible)
    prepared.paths.save_record(record)
    return prepared.paths


def _signal_once_committed(paths, *signals_and_gaps) -> threading.Thread:
    """Once the task committed its first item: each (signal, seconds to wait before it) to this process."""

    def send() -> None:
        deadline = time.time() + 60
        while not any(paths.manifests.glob("*.jsonl")) or not read_manifests(paths.manifests).records:
            assert time.time() < deadline
            time.sleep(0.05)
        for number, gap in signals_and_gaps:
            time.sleep(gap)
            os.kill(os.getpid(), number)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _nothing_held(paths) -> bool:
    board = ClaimBoard(paths.root, owner="check", lease_s=60)
    plan = load_plan(paths.plan)
    open_batches = [
        (task.index, batch[0].batch)
        for task in plan.tasks
        for batch in task.batches()
        if not all(board.is_done(item.item_id) for item in batch)
    ]
    free = bool(open_batches) and all(board.claim(str(share), batch_name(index)) for share, index in open_batches)
    board.release_all()
    return free


@pytest.mark.slow
def test_a_preempted_task_on_a_preemptible_profile_drains_records_it_stays_until_the_kill_and_comes_back(
    sample_pdfs, tmp_path, monkeypatch, signals, caplog
):
    paths = _benchmark_run(sample_pdfs, tmp_path, monkeypatch, preemptible=True)
    now = time.time()
    monkeypatch.setenv("SLURM_JOB_ID", "2328")
    monkeypatch.setattr(preempt, "preemption", lambda job: Preemption(now, now + 600, True))
    sender = _signal_once_committed(paths, (signal.SIGUSR2, 0), (signal.SIGTERM, 3))  # Slurm's kill, 3 s later
    started = time.time()
    with pytest.raises(SystemExit) as ended:
        run_task(str(paths.root), 0)
    sender.join()
    assert ended.value.code == 128 + signal.SIGTERM and time.time() - started >= 3  # stayed until the kill
    stop = read_stops(paths.progress)[0]
    assert stop.cause == "preempted" and "preempted by a job of higher priority" in stop.detail, stop
    assert _nothing_held(paths)  # drained: what it did not finish is free for its requeued self (or anyone)
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0")
    with caplog.at_level(logging.INFO, logger="hpc_marker"):
        again = run_task(str(paths.root), 0)  # Slurm's requeue: the same task runs again
    assert "started again after a preemption: preempted by a job of higher priority" in caplog.text
    assert again.stopped == "done" and again.ok > 0  # it took its own share back and finished it
    records = read_manifests(paths.manifests).records
    assert sorted(r.item_id for r in records) == sorted(i.item_id for i in load_plan(paths.plan).items)  # each once


@pytest.mark.slow
def test_a_preempted_task_elsewhere_exits_once_drained_and_a_time_limit_usr2_stays_a_time_limit(
    sample_pdfs, tmp_path, monkeypatch, signals
):
    paths = _benchmark_run(sample_pdfs, tmp_path, monkeypatch, preemptible=False)
    now = time.time()
    monkeypatch.setenv("SLURM_JOB_ID", "2328")
    monkeypatch.setattr(preempt, "preemption", lambda job: Preemption(now, now + 600, True))
    _signal_once_committed(paths, (signal.SIGUSR2, 0))
    result = run_task(str(paths.root), 0)  # no wait: it returns once drained
    assert result.stopped == "preempted" and read_stops(paths.progress)[0].cause == "preempted"
    assert _nothing_held(paths)
    again = _benchmark_run(sample_pdfs, tmp_path / "again", monkeypatch, preemptible=True)
    monkeypatch.setattr(preempt, "preemption", lambda job: Preemption(None, now + 90, True))
    _signal_once_committed(again, (signal.SIGUSR2, 0))
    result = run_task(str(again.root), 0)
    assert (result.stopped, result.reason) == ("time_limit", "time limit near (USR2)")


@pytest.mark.slow
def test_a_preempted_task_killed_while_it_drains_still_says_it_was_preempted(
    sample_pdfs, tmp_path, monkeypatch, signals
):
    paths = _benchmark_run(sample_pdfs, tmp_path, monkeypatch, preemptible=True)
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "3")  # its item in flight outlasts the grace
    now = time.time()
    monkeypatch.setenv("SLURM_JOB_ID", "2328")
    monkeypatch.setattr(preempt, "preemption", lambda job: Preemption(now, now + 1, True))
    # 1 s into its second item: USR2, then the kill 0.3 s later, long before that item ends
    _signal_once_committed(paths, (signal.SIGUSR2, 1.0), (signal.SIGTERM, 0.3))
    with pytest.raises(SystemExit):
        run_task(str(paths.root), 0)
    stop = read_stops(paths.progress)[0]
    assert stop.cause == "preempted" and stop.detail.endswith("before it had drained"), stop


@pytest.mark.slow
def test_a_kill_while_the_drained_task_ends_its_workers_is_still_a_preemption(
    sample_pdfs, tmp_path, monkeypatch, signals
):
    """The kill at the end of the grace can land while the drained task ends its workers (CI saw it): the stop
    record must still say `preempted`, not `cancelled`."""
    from hpc_marker.runtime import taskloop

    paths = _benchmark_run(sample_pdfs, tmp_path, monkeypatch, preemptible=True)
    now = time.time()
    monkeypatch.setenv("SLURM_JOB_ID", "2328")
    monkeypatch.setattr(preempt, "preemption", lambda job: Preemption(now, now + 1, True))
    closing = taskloop.TaskLoop.close

    def killed_while_closing(self, helpers):
        os.kill(os.getpid(), signal.SIGTERM)  # Slurm's kill, as the workers are being ended
        closing(self, helpers)

    monkeypatch.setattr(taskloop.TaskLoop, "close", killed_while_closing)
    _signal_once_committed(paths, (signal.SIGUSR2, 0))
    with pytest.raises(SystemExit):
        run_task(str(paths.root), 0)
    stop = read_stops(paths.progress)[0]
    assert stop.cause == "preempted" and stop.detail.endswith("before it had drained"), stop
    assert _nothing_held(paths)
