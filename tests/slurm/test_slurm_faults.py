"""Faults on a real Slurm cluster: a task killed mid-item, half an array cancelled then resumed.

Uses the `benchmark` engine (the text engine's output at a fixed cost per page), so items take
long enough to be interrupted and outputs can be checked byte for byte against `text`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from inputs import CORPUS
from runkit import document, documents, invoke, manifest_records, plan_item_ids, read_record, wait_for, wait_until
from slurmkit import run_options, submit

from hpc_marker.engines import EngineOptions
from hpc_marker.engines.text import TextEngine
from hpc_marker.planning.store import load_plan
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.progress import read_heartbeats

pytestmark = [pytest.mark.slurm, pytest.mark.corpus, pytest.mark.slow]
SMALL_PDFS = [
    "amscls/amsdtx.pdf",
    "amsmath/amsxtra.pdf",
    "base/lgc2.pdf",
    "graphics/color.pdf",
    "tools/enumerate.pdf",
    "hyperref/backref.pdf",
    "l3kernel/l3news08.pdf",
    "carlisle/ltxtable.pdf",
    "amscls/amsmidx.pdf",
    "base/ltnews17.pdf",
    "l3kernel/l3news12.pdf",
    "fduthesis/fduthesis-en.pdf",
]


@pytest.fixture
def pdfs(tmp_path) -> Path:
    folder = tmp_path / "pdfs"
    for rel in SMALL_PDFS:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / rel, folder / rel)
    return folder


def assert_outputs_match_text_engine(pdfs: Path, out: Path) -> None:
    engine = TextEngine(EngineOptions())
    for rel in SMALL_PDFS:
        assert document(out, rel).read_text(encoding="utf-8") == engine.convert(pdfs / rel, None).text, rel
    assert len(documents(out)) == len(SMALL_PDFS)
    assert not [p for p in out.rglob("*partial*") if ".hpcmarker" not in p.parts]


def assert_each_item_once(paths) -> list:
    records = manifest_records(paths)
    assert sorted(r.item_id for r in records) == plan_item_ids(paths)  # one line per item: none lost, none twice
    assert all(r.status == "ok" for r in records)
    assert not any((paths.parts).iterdir())
    return records


def test_killed_task_item_is_taken_over_after_its_lease(tmp_path, pdfs, monkeypatch):
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.15")
    out = tmp_path / "out"
    paths, _ = submit(pdfs, out, "kill9", *run_options(2, "benchmark"), "--split-pages", "0", "--lease-seconds", "6")
    board = ClaimBoard(paths.root, owner="test", lease_s=6)
    pages = {i.item_id: i.pages for i in load_plan(paths.plan).items}
    victim, pid, deadline = None, None, time.time() + 120
    while victim is None:  # an item task 0 converts right now (after its first one; long enough to be cut)
        assert time.time() < deadline, "task 0 never got going"
        beat = read_heartbeats(paths.progress, [0]).get(0)
        done_by_0 = [r for r in manifest_records(paths) if r.task == 0]
        converting = [i for i in (beat.inflight if beat and done_by_0 else []) if pages[i] >= 8]
        if converting and not board.is_done(converting[0]):
            victim, pid = converting[0], int(beat.owner.split(":")[1])
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    assert not board.is_done(victim)  # cut short: the item was being converted
    killed_at = time.time()
    wait_for("kill9", {"finished"}, timeout_s=300)
    records = assert_each_item_once(paths)
    taken_over = [r for r in records if r.item_id == victim]
    assert taken_over[0].task == 1 and taken_over[0].started >= killed_at + 5  # after the lease ran out
    assert_outputs_match_text_engine(pdfs, out)
    assert subprocess.run(["pgrep", "-f", str(paths.jobs)], capture_output=True).stdout == b""


def test_cancel_half_the_array_then_resume(tmp_path, pdfs, monkeypatch):
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.1")
    out = tmp_path / "out"
    paths, record = submit(pdfs, out, "half", *run_options(4, "benchmark"), "--split-pages", "0", "--no-steal")
    wait_until(lambda: len(manifest_records(paths)) >= 2, 120, "the array never got going")
    subprocess.run(["scancel", *record["jobs"]["convert"][:2]], check=True)
    first = wait_for("half", {"incomplete"}, timeout_s=300)
    assert first["pending"] > 0  # the cancelled tasks left work behind
    assert [line.split(": ")[0] for line in first["reasons"]] == ["2 tasks (0,1)"], first["reasons"]
    assert "cancelled" in first["reasons"][0] and first["next"] == "hpcmarker resume half"
    assert invoke("status", "half").exit_code == 4
    board = ClaimBoard(paths.root, owner="test", lease_s=120)
    before = {d.name: d.stat().st_mtime_ns for d in paths.done.glob("*/*")}
    result = invoke("resume", "half")
    assert result.exit_code == 0, result.output
    assert "resubmitted tasks 0,1" in result.output
    wait_for("half", {"finished"}, timeout_s=300)
    assert_each_item_once(paths)
    after = {d.name: d.stat().st_mtime_ns for d in paths.done.glob("*/*")}
    assert all(after[item] == mtime for item, mtime in before.items())  # nothing done was redone
    assert all(board.is_done(item) for item in after)
    assert_outputs_match_text_engine(pdfs, out)


def test_time_limit_warning_drains_a_task_and_the_rest_is_taken_over(tmp_path, pdfs, monkeypatch):
    """USR2 (what --signal=B:USR2@90 sends before the time limit): the task finishes what it is converting,
    takes nothing new and ends; the other task steals what it left."""
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.1")
    out = tmp_path / "out"
    paths, record = submit(pdfs, out, "usr2", *run_options(2, "benchmark"), "--split-pages", "0")
    wait_until(lambda: [r for r in manifest_records(paths) if r.task == 0], 120, "task 0 never got going")
    subprocess.run(["scancel", "--signal=USR2", "--batch", record["jobs"]["convert"][0]], check=True)
    signalled_at = time.time() + 0.5  # slurmd delivers it a moment after scancel returns
    wait_for("usr2", {"finished"}, timeout_s=300)
    records = assert_each_item_once(paths)
    by_task_0 = [r for r in records if r.task == 0]
    assert all(r.started < signalled_at for r in by_task_0), [
        (r.item_id, r.started - signalled_at, r.seconds) for r in by_task_0
    ]  # nothing new after the signal
    assert any(
        r.task == 1 and r.item_id in {i.item_id for i in load_plan(paths.plan).tasks[0].items} for r in records
    )  # task 1 took over task 0's share
    assert_outputs_match_text_engine(pdfs, out)
    status = json.loads(invoke("status", "usr2", "--json").output)
    assert status["tasks"][0]["state"] == "COMPLETED"  # drained, not killed


def test_slurms_own_time_limit_warning_reaches_the_task(tmp_path, pdfs, monkeypatch):
    """With `--time 2`, Slurm itself sends USR2 about 90 s before the limit (the template's
    --signal=B:USR2@90). The task must get it, stop taking items and end before the limit:
    COMPLETED, not TIMEOUT; `resume` converts the rest. (Without `B:`, Slurm signals only job
    steps, and a task that runs in the batch shell never hears it.)"""
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.5")  # about 15 s per PDF here: far past 2 min
    out = tmp_path / "out"
    options = (*run_options(1, "benchmark", time=2), "--workers-per-gpu", "1", "--split-pages", "0")
    paths, _ = submit(pdfs, out, "limit", *options)
    status = wait_for("limit", {"incomplete", "finished"}, timeout_s=400)
    assert status["tasks"][0]["state"] == "COMPLETED", status  # drained and left before the limit
    assert status["state"] == "incomplete" and status["exit_code"] == 4  # not "finished" with items left
    assert status["reasons"] == ["1 task (0): time limit near (USR2) — next: hpcmarker resume limit --time 00:04:00"]
    log = "".join(p.read_text() for p in paths.jobs.glob("*_0_log.out"))
    assert "taking no new items: time limit near (USR2)" in log
    done = manifest_records(paths)
    assert 0 < len(done) < len(SMALL_PDFS)
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.01")
    resumed = invoke("resume", "limit", "--time", "00:04:00")  # what status said to do
    assert resumed.exit_code == 0, resumed.output
    assert read_record(paths)["time_limit"] == "00:04:00"
    assert "#SBATCH --time=00:04:00" in next(paths.scripts.glob("convert*-resume-*.sbatch")).read_text()
    wait_for("limit", {"finished"}, timeout_s=300)
    assert_each_item_once(paths)
    assert_outputs_match_text_engine(pdfs, out)
