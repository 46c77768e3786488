"""`status` of a collected run reads no per-task file: summary.json keeps what the tasks left (manage/settled.py)."""

from __future__ import annotations

import json
import shutil

import pytest
from runkit import invoke, run_local

VOLATILE = ("elapsed_seconds", "pages_per_second", "eta_seconds", "follow_ups")


def status_json(run_id: str) -> dict:
    result = invoke("status", run_id, "--json")
    data = json.loads(result.output)
    return {key: value for key, value in data.items() if key not in VOLATILE}


@pytest.mark.slow
def test_status_of_a_collected_run_reads_no_per_task_file(sample_pdfs, tmp_path):
    run = run_local(sample_pdfs, tmp_path / "out", "--gpus", "3")
    run_id = run.paths.root.name
    summary = json.loads(run.paths.summary.read_text())
    settled = summary["settled"]
    assert sorted(settled["stops"]) == ["0", "1", "2"] and set(settled["activities"].values()) == {"exited"}
    assert sorted(settled["job_states"]) == sorted(run.paths.load_record().jobs["convert"])
    before = status_json(run_id)
    for folder in (run.paths.progress, run.paths.jobs):  # every task's heartbeat, stop record, commit log, job files
        shutil.move(folder, tmp_path / folder.name)
    after = status_json(run_id)
    assert after == before
    assert [t["activity"] for t in after["tasks"]] == ["exited"] * 3 and after["gpu_accounting_source"]
