"""`hpcmarker grow` on a real Slurm cluster (issue 21, item 3): a running 2-task run gains 2 tasks on another
partition; they take items by stealing and commit them, the round's collector waits for them too (its
dependency updated), the run finishes once, collected once, every item ok exactly once, status counts 4 tasks.

The benchmark engine at 2 s a page: 86 pages, about 85 s per task with 2 tasks, so the new ones (started a
few seconds later on `debug`) find work left to steal.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from runkit import invoke, manifest_records, plan_item_ids, read_record, wait_for
from test_slurm_faults import SMALL_PDFS, pdfs  # noqa: F401 (a fixture)
from test_slurm_rounds import submit
from test_slurm_truth import my_queue

from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.progress import commits_by_task, read_heartbeats

pytestmark = [pytest.mark.slurm, pytest.mark.corpus, pytest.mark.slow]


def _partition(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id.split("_")[0], "-o", "%P"], capture_output=True, text=True)
    return out.stdout.split()[0] if out.stdout.split() else ""


def test_grow_adds_tasks_on_another_partition_and_the_run_finishes_once(tmp_path, pdfs, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "2")
    submit(pdfs, tmp_path / "out", "grown", "--gpus", "2", "--time", "30")
    paths = resolve_run("grown")
    deadline = time.time() + 300
    while len(read_heartbeats(paths.progress)) < 2:  # both tasks are converting
        assert time.time() < deadline, "the run never started"
        time.sleep(1)
    result = invoke("grow", "grown", "--gpus", "2", "--partition", "debug")
    assert result.exit_code == 0, result.output
    assert "run grown: round 1 grew by tasks 2,3 as " in result.output, result.output
    record = read_record(paths)
    new = record["jobs"]["convert"][2:]
    assert len(new) == 2 and {_partition(job) for job in new} <= {"debug", ""}, new  # "": already over
    collector = record["jobs"]["collect"][0]
    waits = subprocess.run(["squeue", "-h", "-j", collector, "-o", "%E"], capture_output=True, text=True).stdout
    assert new[0].split("_")[0] in waits, waits  # the collector waits for the new array too
    status = wait_for("grown", {"finished", "incomplete"}, timeout_s=600)
    assert status["state"] == "finished" and status["exit_code"] == 0, status
    assert len(status["tasks"]) == 4 and status["grown"] == 2, status
    assert [t["grown"] for t in status["tasks"]] == [False, False, True, True]
    assert {t["round"] for t in status["tasks"]} == {1} and status["rounds"] == 1
    by_task = commits_by_task(paths.progress)
    assert all(len(by_task.get(task, [])) for task in (2, 3)), {task: len(c) for task, c in by_task.items()}
    records = manifest_records(paths)
    assert sorted(r.item_id for r in records) == plan_item_ids(paths)  # every item once: none lost, none twice
    assert all(r.status == "ok" for r in records) and len(records) == len(SMALL_PDFS)
    record = read_record(paths)
    assert len(record["jobs"]["collect"]) == 1 and record["rounds"][0]["grown"] == [2, 3]  # collected once
    summary = json.loads(paths.summary.read_text())
    assert summary["state"] == "finished" and summary["rounds"][0]["grown"] == [2, 3]
    assert not list(paths.root.glob("summary-*.json"))  # never reopened
    time.sleep(3)
    assert my_queue("grown") == []
    again = invoke("grow", "grown", "--gpus", "1")
    assert again.exit_code == 2 and "not running any more" in again.output, again.output


def test_cancel_stops_the_grown_tasks_too(tmp_path, pdfs, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "2")
    submit(pdfs, tmp_path / "out", "growcut", "--gpus", "1", "--time", "30")
    paths = resolve_run("growcut")
    deadline = time.time() + 300
    while not read_heartbeats(paths.progress):
        assert time.time() < deadline, "the run never started"
        time.sleep(1)
    assert invoke("grow", "growcut", "--gpus", "1", "--partition", "debug").exit_code == 0
    grown = read_record(paths)["jobs"]["convert"][1]
    cancelled = invoke("cancel", "growcut")
    assert cancelled.exit_code == 0 and grown.split("_")[0] in cancelled.output, cancelled.output
    assert my_queue("growcut") == []
    status = wait_for("growcut", {"incomplete"}, timeout_s=120)
    assert len(status["tasks"]) == 2 and status["tasks"][1]["grown"] and status["grown"] == 1, status
