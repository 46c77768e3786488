"""`hpcmarker grow` on the local executor: tasks added to a running run take items by stealing, commit them
once, and the waiting submit collects the run once, after them; a run that is not running any more is refused
in one line (exit 2). The Slurm twin: tests/slurm/test_slurm_grow.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from hpc_marker.executors.machine import Machine, gpus_for_grown, held_gpus
from hpc_marker.runstate.progress import commits_by_task, read_grown, read_heartbeats
from tests.runkit import as_from_a_terminal, invoke, manifest_records, plan_item_ids, run_folder, run_local

BENCH = {"HPCMARKER_BENCH_SECONDS_PER_PAGE": "3"}  # 11 pages, 2 tasks: about 18 s; the new task starts meanwhile


def _submit(pdfs, out, run_id: str, env: dict[str, str] = BENCH) -> subprocess.Popen:
    """A local benchmark run of 2 tasks of one worker each (a task holds one batch at a time: work is left to
    steal), waited for by its `submit` in the background (`env`: more of its environment)."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "hpc_marker", "submit", "--pdfs", str(pdfs), "--out", str(out), "--run-id", run_id),
            *("--engine", "benchmark", "--executor", "local", "--gpus", "2", "--workers-per-gpu", "1"),
            *("--split-pages", "0"),
        ],
        env=dict(os.environ, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=as_from_a_terminal,
    )


@pytest.mark.slow
def test_grow_adds_a_task_that_steals_items_and_the_run_is_collected_once_after_it(tmp_path, sample_pdfs):
    out = tmp_path / "out"
    submit = _submit(sample_pdfs, out, "growme")
    paths = run_folder(out, "growme")
    try:
        deadline = time.time() + 120
        while len(read_heartbeats(paths.progress)) < 2:  # both tasks are converting
            assert time.time() < deadline and submit.poll() is None, "the run never started"
            time.sleep(0.2)
        grown = invoke("grow", "growme", "--gpus", "1", env=BENCH)
        assert grown.exit_code == 0, grown.output
        assert "run growme: round 1 grew by tasks 2 as " in grown.output
        during = json.loads(invoke("status", "growme", "--json").output)
        assert during["grown"] == 1 and [t["grown"] for t in during["tasks"]] == [False, False, True]
        output, _ = submit.communicate(timeout=300)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
    assert submit.returncode == 0, output
    stolen = commits_by_task(paths.progress).get(2)
    assert stolen is not None and len(stolen) and set(stolen["share"]) <= {0, 1}, "the grown task committed nothing"
    records = manifest_records(paths)
    assert Counter(r.item_id for r in records) == Counter(plan_item_ids(paths))  # every item exactly once
    assert {r.status for r in records} == {"ok"}
    record = json.loads(paths.record.read_text())
    assert len(record["jobs"]["collect"]) == 1 and record["rounds"][0]["grown"] == [2]  # collected once
    status = invoke("status", "growme", "--json")
    assert status.exit_code == 0, status.output
    after = json.loads(status.output)
    assert after["state"] == "finished" and after["grown"] == 1 and len(after["tasks"]) == 3
    assert [(t["round"], t["state"]) for t in after["tasks"]] == [(1, "COMPLETED")] * 3
    again = invoke("grow", "growme", "--gpus", "1")  # over now
    assert again.exit_code == 2 and "not running any more" in again.output, again.output


def test_grow_refuses_a_finished_run_in_one_line(tmp_path, sample_pdfs):
    run = run_local(sample_pdfs, tmp_path / "out", "--gpus", "2")
    result = invoke("grow", run.paths.run_id, "--gpus", "2")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: run {run.paths.run_id} is not running any more: it was collected "
        f"(`hpcmarker status {run.paths.run_id}`)"
    ]
    assert not (run.paths.progress / "grown.txt").exists()  # nothing changed
    missing = invoke("grow", run.paths.run_id)
    assert missing.exit_code == 2 and "--gpus" in missing.output


def test_grown_tasks_get_the_gpus_no_running_task_holds_or_a_one_line_refusal():
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="1"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sleeper.stdout.readline() == "up\n"  # started (its environment is its own now)
        assert held_gpus([sleeper.pid]) == {1}  # what it was started with
    finally:
        sleeper.kill()
        sleeper.communicate()
    assert held_gpus([sleeper.pid]) == set()  # gone: holds nothing
    machine = Machine(cores=tuple(range(8)), pinned=False, gpus=(0, 1, 2))
    assert gpus_for_grown(machine, {0, 1}, 1, "marker", "off") == Machine(machine.cores, False, (2,))
    assert gpus_for_grown(machine, {0, 1, 2}, 1, "marker", "off") == (
        "0 of this machine's GPUs (0,1,2) free for 1 new task (free: none; a local task takes a GPU no running "
        "task holds)"
    )
    assert "1 of this machine's GPUs (0,1,2) free for 2 new tasks (free: 1;" in gpus_for_grown(
        machine, {0, 2}, 2, "marker", "auto"
    )
    assert gpus_for_grown(machine, {0, 1, 2}, 3, "text", "off") == Machine(machine.cores, False, ())  # the CPU


@pytest.mark.slow
def test_a_grown_local_task_sees_a_gpu_of_its_own_and_a_full_machine_refuses_grow(tmp_path, sample_pdfs):
    workload = tmp_path / "workload.py"  # GPU work as far as the local executor sees it (engine_uses_gpu)
    workload.write_text("def load():\n    pass\n\n\ndef work(pages):\n    pass\n")
    gpus = dict(BENCH, CUDA_VISIBLE_DEVICES="0,1,2", HPCMARKER_BENCH_WORKLOAD=str(workload))  # 3 GPUs, as if
    submit = _submit(sample_pdfs, tmp_path / "out", "gpus", env=gpus)
    paths = run_folder(tmp_path / "out", "gpus")
    try:
        deadline = time.time() + 120
        while len(read_heartbeats(paths.progress)) < 2:
            assert time.time() < deadline and submit.poll() is None, "the run never started"
            time.sleep(0.2)
        grown = invoke("grow", "gpus", "--gpus", "1", env=gpus)
        assert grown.exit_code == 0, grown.output
        full = invoke("grow", "gpus", "--gpus", "1", env=gpus)  # tasks 0-2 hold GPUs 0-2
        output, _ = submit.communicate(timeout=300)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
    assert submit.returncode == 0, output
    assert full.exit_code == 2 and full.output.strip().splitlines() == [
        "Error: run gpus cannot grow by 1 here: 0 of this machine's GPUs (0,1,2) free for 1 new task (free: none; "
        "a local task takes a GPU no running task holds)"
    ], full.output
    assert read_grown(paths.progress) == [2]  # the refused grow changed nothing
    logs = " ".join(p.read_text() for p in paths.jobs.glob("*_log.out"))
    seen = re.findall(r"own items in \d+ batches.*CUDA_VISIBLE_DEVICES=(\S+)", logs)
    assert sorted(seen) == ["0", "1", "2"], logs  # the grown task: GPU 2, not task 0's GPU 0
