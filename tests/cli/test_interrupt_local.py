"""Ctrl-C and `cancel` of a local run at any moment (issue 19): every process of the run ends, and its state says so.

Real local runs of the `benchmark` engine (slow pages) are interrupted by a terminal's Ctrl-C (SIGINT to the
whole foreground process group) while its tasks are being started and while they convert. Every process the
run started carries a tag in its environment (inherited by every descendant, orphaned or not), so the test
finds what is left without trusting what the run recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from runkit import invoke, manifest_records, run_folder, submit_from_a_terminal

from hpc_marker.runstate.stops import RUNNING, read_stops
from hpc_marker.util.processes import processes_with_env

INTERRUPTED, INCOMPLETE = 130, 4
TAG = "HPCMARKER_TEST_RUN_TAG"


def _submit(pdfs: Path, out: Path, run_id: str, tag: str) -> subprocess.Popen:
    return submit_from_a_terminal(pdfs, out, run_id, 1.0, **{TAG: tag})


def _until(condition, timeout_s: float, what: str, poll_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(poll_s)


def _has_jobs(paths) -> bool:
    """The run's record names a job (read whole: it is replaced atomically)."""
    return paths.record.exists() and bool(json.loads(paths.record.read_text() or "{}").get("jobs"))


def _left(tag: str) -> list[str]:
    """The run's processes still alive (its tag in their environment), with their command lines."""
    left = []
    for pid in processes_with_env(TAG, tag):
        try:
            left.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return left


@pytest.mark.slow
@pytest.mark.parametrize("moment", [0.1, 0.4, 1.0, 2.0, "mid-run"])
def test_ctrl_c_at_any_moment_ends_every_process_of_the_run_and_its_state_says_so(tmp_path, sample_pdfs, moment):
    out, tag, run_id = tmp_path / "out", uuid.uuid4().hex, "ctrlc"
    paths = run_folder(out, run_id)
    submit = _submit(sample_pdfs, out, run_id, tag)
    try:
        # moments count from the first job recorded (a Ctrl-C before that leaves no run at all: the test below)
        _until(lambda: _has_jobs(paths), 120, "no job was ever recorded")
        if moment == "mid-run":
            _until(lambda: paths.manifests.exists() and manifest_records(paths), 120, "nothing converted", 0.2)
        else:
            time.sleep(moment)
        os.killpg(submit.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches its whole foreground process group
        output, _ = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
    assert submit.returncode == INTERRUPTED, output
    assert "Traceback" not in output and "interrupted (Ctrl-C)" in output, output
    assert _left(tag) == [], output  # not one process of the run survives the command
    time.sleep(3)  # nothing comes back to life or keeps converting
    assert _left(tag) == []
    converted = len(manifest_records(paths)) if paths.manifests.exists() else 0
    status = invoke("status", run_id, "--json")
    state = json.loads(status.output)
    assert status.exit_code == INCOMPLETE and state["state"] == "incomplete", status.output
    assert not {t["state"] for t in state["tasks"]} & {"RUNNING", "PENDING"}, status.output
    assert state["ok"] + state["failed"] == converted < state["items"]
    assert [s for s in read_stops(paths.progress).values() if s.cause == RUNNING] == []
    cancel = invoke("cancel", run_id)  # afterwards, cancel tells the truth: nothing was left to cancel
    assert cancel.exit_code == 0 and "already over" in cancel.output and "cancelled run" not in cancel.output, (
        cancel.output
    )


@pytest.mark.slow
def test_cancel_while_tasks_start_ends_every_process_and_says_what_it_ended(tmp_path, sample_pdfs):
    out, tag, run_id = tmp_path / "out", uuid.uuid4().hex, "cancelme"
    paths = run_folder(out, run_id)
    submit = _submit(sample_pdfs, out, run_id, tag)
    try:
        _until(lambda: _has_jobs(paths), 120, "no job was ever recorded")
        cancel = invoke("cancel", run_id)  # from another terminal, while the tasks start
        output, _ = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
    assert cancel.exit_code == 0 and cancel.output.startswith(f"cancelled run {run_id}: "), cancel.output
    assert submit.returncode == INCOMPLETE and "Traceback" not in output, output
    assert _left(tag) == []
    status = invoke("status", run_id, "--json")
    assert status.exit_code == INCOMPLETE and json.loads(status.output)["state"] == "incomplete", status.output
    assert [s for s in read_stops(paths.progress).values() if s.cause == RUNNING] == []


@pytest.mark.slow  # more than 5 s: whole local runs
def test_ctrl_c_before_the_jobs_start_exits_130_and_leaves_no_run_and_a_free_out(tmp_path, sample_pdfs, monkeypatch):
    """Between the run folder's creation and its jobs: exit 130 (not click's 'Aborted!', exit 1), no run folder,
    and --out free for the next submit at once."""
    from hpc_marker.submission import launch

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    monkeypatch.setattr(launch, "save_plan", interrupted)  # while the run folder is being made
    result = invoke(
        "submit", "--pdfs", sample_pdfs, "--out", out, "--engine", "text", "--executor", "local", "--run-id", "cut"
    )
    assert result.exit_code == INTERRUPTED, result.output
    assert "interrupted" in result.output and "Aborted" not in result.output
    assert not (out / ".hpcmarker" / "runs" / "cut").exists()
    monkeypatch.undo()
    again = invoke(
        "submit", "--pdfs", sample_pdfs, "--out", out, "--engine", "text", "--executor", "local", "--run-id", "next"
    )
    assert again.exit_code == 0, again.output
