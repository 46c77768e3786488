"""Rounds on a real Slurm cluster (issue 21): a run whose work outlasts its --time finishes with no command typed,
a run whose engine cannot start ends after one round, `cancel` at a round boundary leaves nothing queued.

The benchmark engine at a fixed cost per page; --time 3 with the template's --signal=B:USR2@90 gives each task a
window of 30 to 90 s per round (Slurm sends the signal up to a minute early), so two tasks with ~105 s of work each
(86 pages at 2.5 s) need at least two rounds: the work is about 3 times the tasks' window per round.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import slurmkit
from runkit import invoke, manifest_records, plan_item_ids, read_record, wait_for
from test_slurm_faults import SMALL_PDFS, pdfs  # noqa: F401 (a fixture)
from test_slurm_truth import my_queue

from hpc_marker.runstate.index import resolve_run

pytestmark = [pytest.mark.slurm, pytest.mark.corpus, pytest.mark.slow]


BENCHMARK = ("--engine", "benchmark", "--cpus-per-task", "1", "--workers-per-gpu", "1", "--split-pages", "0")


def submit(pdfs: Path, out: Path, run_id: str, *extra) -> None:  # noqa: F811
    """A run of the benchmark engine, one worker per task, a PDF per item."""
    slurmkit.submit(pdfs, out, run_id, *BENCHMARK, *extra)


def test_a_run_longer_than_its_time_limit_finishes_by_itself(tmp_path, pdfs, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "2.5")  # 86 pages: ~215 s of work, ~105 s per task
    submit(pdfs, tmp_path / "out", "rounds", "--gpus", "2", "--time", "3", "--max-rounds", "6")
    status = wait_for("rounds", {"finished", "incomplete"}, timeout_s=900)
    assert status["state"] == "finished" and status["exit_code"] == 0, status
    assert status["rounds"] >= 2 and max(t["round"] for t in status["tasks"]) >= 2, status
    assert invoke("status", "rounds").exit_code == 0
    paths = resolve_run("rounds")
    records = manifest_records(paths)
    assert sorted(r.item_id for r in records) == plan_item_ids(paths)  # every item once: none lost, none twice
    assert all(r.status == "ok" for r in records) and len(records) == len(SMALL_PDFS)
    rounds = read_record(paths)["rounds"]
    assert [r["by"] for r in rounds] == ["submit"] + ["continue"] * (len(rounds) - 1)
    assert "time limit" in rounds[0]["ended"] and rounds[-1]["ended"] == "finished", rounds
    summary = json.loads(paths.summary.read_text())
    assert summary["rounds"] == rounds and summary["state"] == "finished"


def test_an_engine_that_cannot_start_ends_the_run_after_one_round(tmp_path, sample_pdfs, monkeypatch):
    monkeypatch.setenv("HPCMARKER_BENCH_START_ERROR", "no models on this node")
    submit(sample_pdfs, tmp_path / "out", "noround", "--gpus", "1", "--time", "3", "--max-rounds", "5")
    status = wait_for("noround", {"finished", "incomplete"}, timeout_s=300)
    assert status["state"] == "incomplete" and status["exit_code"] == 4 and status["rounds"] == 1, status
    assert status["reasons"][0].startswith("1 task (0): engine 'benchmark' cannot run on "), status["reasons"]
    assert status["reasons"][-1] == "not continued: another round cannot cure engine", status["reasons"]
    time.sleep(5)  # the collector has ended: nothing more is queued, and no second round was recorded
    assert my_queue("noround") == [] and len(read_record(resolve_run("noround"))["rounds"]) == 1


def test_cancel_at_a_round_boundary_leaves_nothing_queued_and_no_later_round(tmp_path, pdfs, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "2.5")
    submit(pdfs, tmp_path / "out", "cutround", "--gpus", "1", "--time", "3", "--max-rounds", "6")
    paths = resolve_run("cutround")
    deadline = time.time() + 300
    while len(read_record(paths)["rounds"]) < 2:  # the collector of round 1 is submitting round 2
        assert time.time() < deadline, read_record(paths)
        time.sleep(0.2)
    result = invoke("cancel", "cutround")
    assert result.exit_code == 0, result.output
    assert my_queue("cutround") == []
    again = invoke("continue", "cutround")  # a collector still about to submit: the cancel mark stops it
    assert again.exit_code == 2 and "was cancelled" in again.output, again.output
    time.sleep(20)
    assert my_queue("cutround") == [] and len(read_record(paths)["rounds"]) == 2
    status = wait_for("cutround", {"incomplete", "finished"}, timeout_s=60)
    assert status["state"] == "incomplete" and status["rounds"] == 2, status
