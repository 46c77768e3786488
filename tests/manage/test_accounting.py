"""Where a run's GPU-hours went (issue 22): each task's allocation cut into parts that add up to it, the run's
totals and advice (pure), sacct's clock lines parsed, and a local run accounted from the tasks' own clocks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from runkit import invoke, run_local

from hpc_marker.manage.accounting import (
    COMPONENTS,
    LOCAL,
    SACCT,
    TaskClock,
    account_task,
    advice,
    cost_lines,
    run_totals,
    task_clock,
)
from hpc_marker.runstate.stops import DONE, TIME_LIMIT, TaskStop
from hpc_marker.slurm.parse import JobClock, allocated_gpus, parse_sacct_clocks

T0 = 1_000_000.0


def parts(account) -> float:
    return sum(getattr(account, name) for name in COMPONENTS)


def test_a_tasks_parts_add_up_to_its_allocation():
    clock = TaskClock(0, "7_0", T0, T0 + 100, 2, SACCT, submit=T0 - 30, first_started=T0 + 20, last_finished=T0 + 80)
    account = account_task(clock.__class__(**{**clock.__dict__, "busy": 50.0, "llm_wait": 10.0}))
    assert (account.startup, account.converting, account.llm_wait, account.draining, account.idle) == (
        20.0,
        40.0,
        10.0,
        10.0,
        20.0,
    )
    assert parts(account) == pytest.approx(account.elapsed) and account.queue_wait == 30.0
    early = account_task(
        TaskClock(
            1,
            "7_1",
            T0,
            T0 + 100,
            1,
            SACCT,
            first_started=T0 + 10,
            last_finished=T0 + 60,
            busy=50.0,
            stopped_early=True,
        )
    )
    assert early.draining == 40.0 and early.idle == 0.0 and parts(early) == pytest.approx(100.0)
    nothing = account_task(TaskClock(2, "7_2", T0, T0 + 5, 1, LOCAL))
    assert nothing.startup == 5.0 and parts(nothing) == 5.0


def test_run_totals_are_gpu_hours_of_the_tasks_and_their_parts():
    accounts = [
        account_task(
            TaskClock(0, "1_0", T0, T0 + 3600, 1, SACCT, first_started=T0 + 900, last_finished=T0 + 3600, busy=2700)
        ),
        account_task(
            TaskClock(1, "1_1", T0, T0 + 1800, 2, SACCT, first_started=T0 + 900, last_finished=T0 + 900, busy=0)
        ),
    ]
    totals = run_totals(accounts, pages=9000, documents=90, llm_gpu_seconds=7200, price=2.0)
    assert totals["gpu_hours"] == 2.0  # 1 h × 1 GPU + 0.5 h × 2 GPUs
    assert sum(totals["gpu_time"].values()) == pytest.approx(totals["gpu_hours"])
    assert totals["gpu_efficiency"] == pytest.approx(0.375)  # 0.75 GPU-hours converting of 2
    assert totals["pages_per_gpu_hour"] == 4500.0 and totals["documents_per_gpu_hour"] == 45.0
    assert totals["llm_gpu_hours"] == 2.0 and totals["cost"] == 8.0  # (2 + 2 LLM) GPU-hours × 2.0
    assert totals["cost_per_million_pages"] == pytest.approx(8.0 / 9000 * 1e6, abs=0.01)
    assert totals["allocation_wall_seconds"] == 3600.0
    lines = advice(totals)
    assert len(lines) == 2 and "--min-task-pages" in lines[0] and "--split-pages" in lines[1]  # start-up, idle
    shown = cost_lines({**totals, "gpu_advice": lines})
    assert shown[0].startswith("GPU: 2.00 GPU-hours (sacct), 38% converting, 4,500 pages/GPU-hour")
    assert shown[1:] == [f"advice: {line}" for line in lines]
    assert cost_lines(run_totals([], 0, 0)) == []  # no task has started: no line


def test_llm_wait_past_a_fifth_advises_more_replicas():
    account = account_task(
        TaskClock(0, "1", T0, T0 + 100, 1, SACCT, first_started=T0, last_finished=T0 + 100, busy=100.0, llm_wait=50.0)
    )
    assert ["--llm-replicas" in line for line in advice(run_totals([account], 10, 1))] == [True]


def test_sacct_clock_lines_are_parsed():
    text = (
        "JobID|Submit|Start|End|ElapsedRaw|AllocTRES|State\n"
        "1204_0|2026-12-06T08:43:36|2026-12-06T08:43:36|2026-12-06T08:44:36|60|billing=1,cpu=1,gres/gpu=1,node=1|COMPLETED\n"
        "1204_1|2026-12-06T08:43:36|2026-12-06T08:43:40|Unknown|5|cpu=1,gres/gpu:a100=2,node=1|RUNNING\n"
        "1204_[2-3]|2026-12-06T08:43:36|Unknown|Unknown|0||PENDING\n"
        "1204_0.batch|2026-12-06T08:43:36|2026-12-06T08:43:36|2026-12-06T08:44:36|60|cpu=1|COMPLETED\n"
    )
    clocks = parse_sacct_clocks(text)
    assert sorted(clocks) == ["1204_0", "1204_1"]
    done, running = clocks["1204_0"], clocks["1204_1"]
    assert done.end - done.start == 60 and done.elapsed == 60 and done.gpus == 1 and done.finished
    assert running.end is None and running.gpus == 2 and not running.finished
    assert allocated_gpus("cpu=4,gres/gpu=2,gres/gpu:a100=2") == 2 and allocated_gpus("cpu=1") == 0


def test_a_task_takes_the_schedulers_clock_else_its_own():
    commits = pd.DataFrame({"status": ["ok", "ok"], "started": [T0 + 5, T0 + 8], "finished": [T0 + 9, T0 + 12]})
    slurm = JobClock("3_0", T0 - 10, T0, T0 + 20, 20, 0, "COMPLETED")
    stop = TaskStop(0, DONE, started=T0 + 1, stopped=T0 + 15)
    clock = task_clock(0, "3_0", slurm, stop, commits, now=T0 + 100)
    assert (clock.source, clock.gpus, clock.end, clock.busy, clock.submit) == (SACCT, 1, T0 + 20, 7.0, T0 - 10)
    own = task_clock(0, "3_0", None, stop, commits, now=T0 + 100)
    assert (own.source, own.start, own.end, own.first_started) == (LOCAL, T0 + 1, T0 + 15, T0 + 5)
    late = task_clock(0, "3_0", None, TaskStop(0, TIME_LIMIT, started=T0 + 7, stopped=T0 + 30), commits, T0 + 100)
    assert late.first_started == T0 + 8 and late.stopped_early  # an earlier job's lines left out
    assert task_clock(0, "3_0", None, None, commits, T0) is None


@pytest.mark.slow  # a whole local run
def test_a_local_run_is_accounted_from_its_tasks_own_clocks(tmp_path, sample_pdfs):
    run = run_local(sample_pdfs, tmp_path / "out", "--gpus", "2")
    status = json.loads(invoke("status", "--json", "--price", "3").output)
    assert status["gpu_accounting_source"] == "local clock"
    stops = [json.loads(p.read_text()) for p in run.paths.progress.glob("stop-*.json")]
    own = sum(s["stopped"] - s["started"] for s in stops) / 3600
    assert status["gpu_hours"] == pytest.approx(own, abs=1e-4) and status["gpu_hours"] > 0
    assert sum(status["gpu_time"].values()) == pytest.approx(status["gpu_hours"], abs=1e-3)
    assert status["cost"] == pytest.approx(status["gpu_hours"] * 3, abs=1e-3) and status["llm_gpu_hours"] == 0.0
    for key in ("gpu_efficiency", "pages_per_gpu_hour", "documents_per_gpu_hour", "cost_per_million_pages"):
        assert status[key] is not None, key
    assert run.summary["gpu_accounting_source"] == "local clock" and run.summary["gpu_hours"] > 0
    shown = invoke("status").output
    assert "GPU-hours (local clock)" in shown
