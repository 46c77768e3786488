"""Where a run's GPU-hours went (issue 22): each task's allocation cut into parts that add up to it, the run's
totals and advice (pure), sacct's clock lines parsed, and a local run accounted from the tasks' own clocks."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pytest
from runkit import ROUNDED_HOURS, invoke, rounding_of, run_local

from hpc_marker.engines.benchmark import SECONDS_PER_PAGE_VARIABLE, WORKLOAD_VARIABLE
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
from hpc_marker.runstate.progress import CommitLog, commits_by_task
from hpc_marker.runstate.stops import DONE, LLM_SERVICE, TIME_LIMIT, TaskStop
from hpc_marker.slurm.parse import JobClock, allocated_gpus, parse_sacct_clocks
from hpc_marker.submission.launch import record_jobs

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
    (done,), (running,) = clocks["1204_0"], clocks["1204_1"]
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


LOAD_S = 3.0


@pytest.mark.slow  # a whole local run
def test_a_workers_model_load_is_start_up_not_its_first_items_time(tmp_path, sample_pdfs, monkeypatch):
    """A worker that loads its models for 3 s: that is the task's start-up, so the estimate's rate (pages per
    working GPU-second) and start-up are measured apart; no item's time includes it."""
    workload = tmp_path / "workload.py"
    workload.write_text(f"import time\ndef load():\n    time.sleep({LOAD_S})\ndef work(pages):\n    pass\n")
    monkeypatch.setenv(WORKLOAD_VARIABLE, str(workload))
    monkeypatch.setenv(SECONDS_PER_PAGE_VARIABLE, "0")
    run = run_local(sample_pdfs, tmp_path / "out", "--engine", "benchmark", "--gpus", "1", "--workers-per-gpu", "1")
    assert run.records and all(r.seconds < LOAD_S for r in run.records), [r.seconds for r in run.records]
    gpu_time = json.loads(invoke("status", "--json").output)["gpu_time"]
    assert gpu_time["startup"] * 3600 >= LOAD_S - ROUNDED_HOURS * 3600, gpu_time


def test_llm_wait_is_the_items_share_waiting_and_the_wait_for_the_service():
    # two workers: items 0-10 and 0-10 (each waited 5 s of its 10 on the LLM), then one 10-20 that never waited
    commits = pd.DataFrame(
        {
            "status": ["ok", "ok", "ok"],
            "started": [T0 + 10, T0 + 10, T0 + 20],
            "finished": [T0 + 20, T0 + 20, T0 + 30],
            "llm_s": [5.0, 5.0, 0.0],
        }
    )
    stop = TaskStop(0, DONE, started=T0 + 1, stopped=T0 + 40, llm_wait=6.0)
    account = account_task(task_clock(0, "1_0", JobClock("1_0", T0, T0, T0 + 40, 40, 1, "COMPLETED"), stop, commits, 0))
    # busy 20 s, a third of the items' 30 s spent waiting: 6.67 s; and 6 s of the 10 s start-up waiting for it
    assert account.llm_wait == pytest.approx(20 / 3 + 6, abs=1e-3) and account.startup == 4.0
    assert account.converting == pytest.approx(20 - 20 / 3, abs=1e-3) and account.idle == 10.0
    assert parts(account) == pytest.approx(40.0)
    never = TaskStop(0, LLM_SERVICE, started=T0 + 1, stopped=T0 + 30)  # gave up waiting for the service
    gave_up = account_task(task_clock(0, "1_0", None, never, None, now=T0 + 100))
    assert gave_up.llm_wait == 29.0 and gave_up.startup == 0.0 and gave_up.draining == 0.0


def test_a_commit_log_from_before_the_llm_column_reads_as_no_wait(tmp_path):
    (tmp_path / "task-0.log").write_text("a\tok\t3\t0\t1.000\t2.000\t\nb\tok\t3\t0\t2.000\t3.000\td\n")
    log = CommitLog(tmp_path, 0)  # the same task resumed by this version
    log.append("c", "ok", 2, 0, 3.0, 4.0, "e1", 1.5)
    log.close()
    (tmp_path / "task-1.log").write_bytes(b"x\tok\t2\t1\t3.000\t4.000\t\t0.250\ny\tok\t2\t1\t3.0")  # torn last line
    commits = commits_by_task(tmp_path)
    assert commits[0].set_index("item_id")["llm_s"].to_dict() == {"a": 0.0, "b": 0.0, "c": 1.5}
    assert commits[0]["flags"].tolist() == ["", "d", "e1"] and commits[1]["item_id"].tolist() == ["x"]
    assert commits[1]["llm_s"].tolist() == [0.25]


SACCT_D = """JobID|Submit|Start|End|ElapsedRaw|AllocTRES|State
10|2026-12-06T09:00:00|2026-12-06T09:10:00|2026-12-06T09:10:10|10|billing=1,cpu=1,node=1|COMPLETED
5_0|2026-12-06T09:00:00|2026-12-06T09:00:00|2026-12-06T09:01:40|100|billing=1,cpu=1,gres/gpu=1,node=1|TIMEOUT
5_1|2026-12-06T09:00:00|2026-12-06T09:00:00|2026-12-06T09:01:40|100|billing=1,cpu=1,gres/gpu=1,node=1|TIMEOUT
9_0|2026-12-06T09:02:00|2026-12-06T09:02:00|2026-12-06T09:03:00|60|billing=1,cpu=1,gres/gpu=1,node=1|COMPLETED
9_1|2026-12-06T09:02:00|2026-12-06T09:02:00|2026-12-06T09:02:30|30|billing=1,cpu=1,gres/gpu=1,node=1|REQUEUED
9_1|2026-12-06T09:02:31|2026-12-06T09:03:00|2026-12-06T09:04:00|60|billing=1,cpu=1,gres/gpu=2,node=1|COMPLETED
"""


def test_every_job_of_a_task_counts_and_status_asks_sacct_once(tmp_path, monkeypatch):
    """Tasks 0 and 1 ran as array 5, timed out, were resumed as array 9; Slurm requeued 9_1 once (sacct -D shows
    both of its runs). Every allocation counts, from one sacct query per status; finished jobs' clocks are kept, so
    the next status asks only for the jobs whose state it shows."""
    from test_manifest_status import _plan, _record

    from hpc_marker.planning.store import save_plan
    from hpc_marker.runstate.layout import RunPaths
    from hpc_marker.slurm import commands as slurm

    paths = RunPaths(tmp_path / "out" / ".hpcmarker" / "runs" / "r")
    paths.root.mkdir(parents=True)
    save_plan(_plan(), paths.plan)
    record = _record()
    record.out_dir, record.jobs = str(tmp_path / "out"), {"convert": ["5_0", "5_1"], "collect": ["6"]}
    paths.save_record(record)
    record_jobs(paths, record, {"convert": ["9_0", "9_1"], "collect": ["10"]}, [0, 1])  # as resume records them
    assert paths.load_record().jobs["replaced"] == ["0:5_0", "1:5_1"]
    paths.progress.mkdir(exist_ok=True)
    log, at = CommitLog(paths.progress, 1), datetime.fromisoformat("2026-12-06T09:02:00").timestamp()
    log.append("c", "ok", 30, 1, at + 5, at + 15)  # in 9_1's first run, requeued 15 s later
    log.close()
    asked = []

    def scheduler(argv, *args, **kwargs):
        if argv[0] == "sacct":
            asked.append([argv[n + 1] for n, arg in enumerate(argv) if arg == "-j"])
            assert "-D" in argv and "-X" in argv
            return SACCT_D
        assert argv[0] == "squeue", argv
        return ""

    monkeypatch.setattr(slurm, "_run", scheduler)
    first = json.loads(invoke("status", paths.root, "--json").output)
    assert asked == [["10", "5", "9"]]  # one query: the live jobs' states, and the replaced jobs' clocks
    rows = [(row["task"], row["job_id"], row["elapsed"], row["gpus"]) for row in first["gpu_tasks"]]
    assert rows == [(0, "5_0", 100, 1), (0, "9_0", 60, 1), (1, "5_1", 100, 1), (1, "9_1", 30, 1), (1, "9_1", 60, 2)]
    assert first["gpu_hours"] == pytest.approx((100 + 60 + 100 + 30 + 120) / 3600, abs=1e-4)
    assert sum(first["gpu_time"].values()) == pytest.approx(first["gpu_hours"], abs=rounding_of(first["gpu_time"]))
    requeued = next(row for row in first["gpu_tasks"] if row["job_id"] == "9_1")
    assert (requeued["startup"], requeued["converting"], requeued["draining"], requeued["idle"]) == (5, 10, 15, 0)
    again = json.loads(invoke("status", paths.root, "--json").output)
    assert asked[1:] == [["10", "9"]]  # 5_0 and 5_1 are kept in the run folder
    assert again["gpu_hours"] == first["gpu_hours"]


def test_the_reports_bar_of_a_task_sums_its_jobs():
    from hpc_marker.report.frames import gpu_time_frame

    zero = dict.fromkeys(COMPONENTS, 0.0)
    jobs = [
        {**zero, "task": 0, "gpus": 1, "startup": 3600.0},  # its first job, requeued
        {**zero, "task": 1, "gpus": 1, "converting": 3600.0},
        {**zero, "task": 0, "gpus": 2, "startup": 900.0, "converting": 900.0},  # its next, on 2 GPUs
    ]
    frame = gpu_time_frame({"gpu_tasks": jobs}, rows=200)
    assert frame["label"].tolist() == ["task 0", "task 1"]
    assert frame["startup"].tolist() == [1.5, 0.0] and frame["converting"].tolist() == [0.5, 1.0]
    assert gpu_time_frame({"gpu_tasks": jobs, "gpu_time": {}}, rows=1)["label"].tolist() == ["all 2 tasks"]
