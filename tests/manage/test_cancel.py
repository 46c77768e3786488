"""`hpcmarker cancel` tells the truth (issue 19): a run that is already over is said to be over, not
'cancelled', and is left as it was; a run with jobs queued gets them cancelled and named."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from runkit import invoke, run_local
from test_manifest_status import _record

from hpc_marker.runstate.layout import RunPaths


def _slurm_run(tmp_path) -> RunPaths:
    paths = RunPaths(tmp_path / "out" / ".hpcmarker" / "runs" / "r")
    paths.root.mkdir(parents=True)
    paths.save_record(replace(_record(), out_dir=str(tmp_path / "out")))
    return paths


@pytest.fixture
def slurm_queue(monkeypatch):
    """Slurm's queue as the test sets it (squeue ids); scancel empties it and is recorded."""
    from hpc_marker.slurm import commands as slurm

    queued: list[str] = []
    scancelled: list[list[str]] = []

    def cancel_jobs(ids):
        scancelled.append(list(ids))
        queued.clear()

    monkeypatch.setattr(slurm, "queued_jobs", lambda ids: list(queued))
    monkeypatch.setattr(slurm, "cancel_jobs", cancel_jobs)
    return queued, scancelled


def test_cancel_of_a_slurm_run_already_over_says_so_and_changes_nothing(tmp_path, slurm_queue):
    paths, (_, scancelled) = _slurm_run(tmp_path), slurm_queue
    result = invoke("cancel", paths.root)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "run r was already over: nothing of it was queued or running (jobs 7_[0,1], 8); nothing cancelled\n"
    )
    assert scancelled == [] and paths.load_record().cancelled is None  # not marked: nothing was cancelled


def test_cancel_of_a_slurm_run_with_queued_jobs_names_what_it_cancelled(tmp_path, slurm_queue):
    paths, (queued, scancelled) = _slurm_run(tmp_path), slurm_queue
    queued.extend(["7_1", "8"])  # task 0 is over
    result = invoke("cancel", paths.root)
    assert result.exit_code == 0 and result.output == "cancelled run r: 7_1, 8\n", result.output
    assert scancelled and paths.load_record().cancelled is not None


@pytest.mark.slow
def test_cancel_of_a_finished_local_run_says_it_was_over(tmp_path, sample_pdfs):
    run = run_local(sample_pdfs, tmp_path / "out", "--gpus", "1", "--run-id", "done1")
    result = invoke("cancel", "done1")
    assert result.exit_code == 0 and "run done1 was already over" in result.output, result.output
    assert "cancelled run" not in result.output and run.paths.load_record().cancelled is None
    status = invoke("status", "done1", "--json")
    assert status.exit_code == 0 and json.loads(status.output)["state"] == "finished"
