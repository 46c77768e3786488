"""What `status` says beyond counts: the failed documents with their reasons (and `logs` opening the log that
explains them), and the follow-up runs of the same --out that are not finished."""

from __future__ import annotations

import json
import shutil

import pytest
from inputs import EXAMPLES, make_bad_pdfs
from runkit import FINISHED_WITH_FAILURES, invoke, run_local

from hpc_marker.runstate.index import register_run
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.submission.followup import RunOverrides, prepare_followup
from hpc_marker.submission.launch import record_jobs

pytestmark = pytest.mark.slow  # more than 5 s each: whole local runs


def _bad_run(tmp_path):
    pdfs = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES / "en", pdfs / "en")
    bad = make_bad_pdfs(pdfs / "bad")
    run = run_local(
        pdfs,
        tmp_path / "out",
        "--gpus",
        "2",
        "--min-task-pages",
        "1",
        "--run-id",
        "first",
        expect=FINISHED_WITH_FAILURES,
    )
    return run, bad


def test_status_lists_the_failed_documents_and_logs_opens_the_log_that_explains_them(tmp_path):
    _, bad = _bad_run(tmp_path)
    result = invoke("status", "first")
    assert result.exit_code == FINISHED_WITH_FAILURES
    lines = result.output.splitlines()
    assert f"failed documents ({len(bad)}):" in lines, result.output
    for name, expected in bad.items():
        line = next(line for line in lines if line.startswith(f"  bad/{name}"))
        assert f": {expected.status}: " in line and expected.reason in line and "encrypted: encrypted" not in line, line
    as_json = json.loads(invoke("status", "first", "--json").output)
    listed = {doc["pdf"]: doc for doc in as_json["failed_documents"]}
    assert set(listed) == {f"bad/{name}" for name in bad} and as_json["failed_documents_total"] == len(bad)
    assert all(expected.reason in listed[f"bad/{name}"]["error"] for name, expected in bad.items())
    first = as_json["failed_documents"][0]
    assert first["pdf"] == "bad/empty.pdf"  # by PDF
    task = first["task"]
    logs = invoke("logs", "first")
    assert logs.exit_code == 0
    assert logs.output.startswith(f"==> task {task} stdout"), logs.output[:300]
    assert "bad/empty.pdf" in logs.output and "empty file (0 bytes)" in logs.output


def test_status_of_an_out_folder_names_a_follow_up_run_that_is_not_finished(tmp_path):
    run, _ = _bad_run(tmp_path)
    out = tmp_path / "out"
    follow = prepare_followup(run.paths, ("failed",), 0.0, RunOverrides(run_id="again"))
    record_jobs(follow.prepared.paths, follow.prepared.record, {"convert": ["999999"]})  # submitted; never ran:
    register_run(follow.prepared.paths)
    assert invoke("cancel", "again").exit_code == 0  # cancelled, its --out free
    later = tmp_path / "later"
    shutil.copytree(EXAMPLES / "zh", later)
    run_local(later, out, "--run-id", "third", "--force-concurrent")  # the --out's latest run now
    for name in (str(out), "first", "third"):
        result = invoke("status", name)
        lines = [line for line in result.output.splitlines() if "follow-up run again" in line]
        assert len(lines) == 1, result.output
        assert "of run first" in lines[0] and "incomplete" in lines[0], lines[0]
        command = lines[0].split("to continue it: ", 1)[1]
        assert command == "hpcmarker resume again", lines[0]
    follow_ups = json.loads(invoke("status", str(out), "--json").output)["follow_ups"]
    assert [(f["run_id"], f["parent"], f["state"], f["next"]) for f in follow_ups] == [
        ("again", "first", "incomplete", "hpcmarker resume again")
    ]
    assert "follow-up run" not in invoke("status", "again").output  # itself: its own status says it all
    assert RunPaths(out / ".hpcmarker" / "runs" / "again").record.exists()
