"""What a Slurm run tells its user (issue 14): an impossible request refused at submit (`sbatch
--test-only`), a task that cannot start its engine named in `status` with the fix, one active run per
--out until it is cancelled."""

from __future__ import annotations

import json
import subprocess

import pytest
from runkit import invoke, make_run, wait_for

from hpc_marker.runstate.outlock import active_path

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def my_queue(run_id: str) -> list[str]:
    """The jobs of this run still in squeue (by the run id in their names)."""
    lines = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in lines.splitlines() if run_id in line]


def test_a_request_no_node_can_hold_is_refused_at_submit(tmp_path, sample_pdfs):
    result = invoke(
        "submit",
        "--pdfs",
        sample_pdfs,
        "--out",
        tmp_path / "out",
        "--engine",
        "text",
        "--cpus-per-task",
        "64",
        "--run-id",
        "toobig",
    )
    assert result.exit_code == 2, result.output
    assert (
        result.output.startswith("Error: Slurm would never run the convert job: ")
        and "ask for less (--cpus-per-task, --mem, --time, GRES) or another --partition" in result.output
    ), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert my_queue("toobig") == [] and not (tmp_path / "out" / ".hpcmarker").exists()


def test_a_task_that_cannot_start_its_engine_is_named_with_the_fix(tmp_path, sample_pdfs):
    prepared = make_run(
        sample_pdfs, tmp_path / "out", executor="slurm", gpus=2, run_id="noengine", cpus_per_task=1, time_limit="5"
    )
    data = json.loads(prepared.paths.record.read_text())
    data["engine"] = "marker"  # submitted where marker-pdf is installed; the nodes' environment lacks it
    prepared.paths.record.write_text(json.dumps(data))
    result = invoke("resume", "noengine")
    assert result.exit_code == 0, result.output
    status = wait_for("noengine", {"incomplete", "finished"}, timeout_s=300)
    assert status["state"] == "incomplete" and status["exit_code"] == 4 and status["pending"] == 6
    assert len(status["reasons"]) == 1, status["reasons"]
    reason = status["reasons"][0]
    assert reason.startswith("2 tasks (0,1): engine 'marker' cannot run on ") and "marker-pdf" in reason
    assert reason.endswith(
        "(see `hpcmarker logs noengine --task 0`, `hpcmarker doctor`), then: hpcmarker resume noengine"
    )
    summary = json.loads(prepared.paths.summary.read_text())  # the collector's summary says the same
    assert summary["state"] == "incomplete" and summary["reasons"] == [reason]
    logs = invoke("logs", "noengine", "--task", "1")
    assert logs.exit_code == 0 and "giving up: engine 'marker' cannot run here" in logs.output
    assert not active_path(tmp_path / "out").exists()  # the collector gave the folder back


def test_one_active_run_per_out_until_it_is_cancelled(tmp_path, sample_pdfs, monkeypatch):
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "5")
    out = tmp_path / "out"
    args = ("--pdfs", sample_pdfs, "--out", out, "--engine", "benchmark", "--cpus-per-task", "1", "--time", "5")
    try:
        first = invoke("submit", *args, "--run-id", "busy1")
        assert first.exit_code == 0, first.output
        second = invoke("submit", *args, "--run-id", "busy2")
        assert second.exit_code == 2, second.output
        assert f"--out {out.resolve()}: run busy1 is still active there (" in second.output
        assert "`hpcmarker cancel busy1`, or --force-concurrent" in second.output
        assert my_queue("busy2") == []
        cancelled = invoke("cancel", "busy1")
        assert cancelled.exit_code == 0, cancelled.output
        ids = cancelled.output.split(": ", 1)[1].split(", ")
        assert len(ids) == len(set(ids)), cancelled.output  # each job once
        third = invoke("submit", *args, "--run-id", "busy3")  # the cancelled run gave the folder back
        assert third.exit_code == 0, third.output
        assert invoke("cancel", "busy3").exit_code == 0
    finally:
        for run_id in ("busy1", "busy2", "busy3"):
            if my_queue(run_id):
                subprocess.run(["scancel", *my_queue(run_id)], check=False)
