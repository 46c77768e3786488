"""Work claims under races and kills, split PDFs merged back, resume and retry (locally)."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from inputs import CORPUS, EXAMPLES, make_bad_pdfs
from runkit import FINISHED_WITH_FAILURES, invoke, make_run, manifest_record, manifest_records, run_local

from hpc_marker.planning.store import load_plan
from hpc_marker.runstate.claims import ClaimBoard, batch_name
from hpc_marker.runstate.index import resolve_run


def _race(folder: str, worker: int, items: int, out: multiprocessing.Queue) -> None:
    board = ClaimBoard(Path(folder), owner=f"racer-{worker}", lease_s=60)
    won, leases = [], []
    for n in range(items):
        if board.commit(f"{n:06d}", {"status": "ok", "by": worker}):
            won.append(f"{n:06d}")
        if board.claim("7", batch_name(n)):
            leases.append(n)
    out.put((won, leases))


def test_racing_processes_never_both_finish_an_item_nor_hold_a_batch(tmp_path):
    queue: multiprocessing.Queue = multiprocessing.Queue()
    racers = [multiprocessing.Process(target=_race, args=(str(tmp_path), w, 300, queue)) for w in range(8)]
    for p in racers:
        p.start()
    results = [queue.get(timeout=120) for _ in racers]
    for p in racers:
        p.join()
    won = [item for items, _ in results for item in items]
    held = [n for _, leases in results for n in leases]
    assert sorted(won) == [f"{n:06d}" for n in range(300)]  # each item finished exactly once
    assert sorted(held) == list(range(300))  # each batch held by exactly one racer
    board = ClaimBoard(tmp_path, owner="check", lease_s=60)
    assert all(board.done_record(f"{n:06d}")["by"] in range(8) for n in range(300))
    assert max(len(os.listdir(d)) for d in (tmp_path / "done").iterdir()) <= 1000  # sharded


def test_expired_lease_is_taken_over_and_the_old_holder_finds_out(tmp_path):
    slow = ClaimBoard(tmp_path, owner="slow", lease_s=0.5)
    fast = ClaimBoard(tmp_path, owner="fast", lease_s=0.5)
    old = slow.claim("0", "b00000")
    assert old and old.fresh and fast.claim("0", "b00000") is None  # lease alive
    assert slow.commit("000001", {"status": "ok", "by": "slow"})
    time.sleep(0.7)  # no heartbeat: the lease expires
    new = fast.claim("0", "b00000")
    assert new and not new.fresh  # taken over: its items must be checked one by one
    assert not slow.holds(old.lease) and fast.holds(new.lease)
    slow.renew()
    assert slow.lost(old.lease)
    assert not fast.commit("000001", {"status": "ok", "by": "fast"})  # done once, by whoever came first
    assert fast.commit("000002", {"status": "ok", "by": "fast"}) and not slow.commit("000002", {"status": "ok"})
    fast.finish(new.lease)
    assert fast.finished("0", "b00000") and slow.claim("0", "b00000") is None


def test_a_given_back_lease_is_claimable_at_once_and_not_fresh(tmp_path):
    owner = ClaimBoard(tmp_path, owner="owner", lease_s=60)
    other = ClaimBoard(tmp_path, owner="other", lease_s=60)
    claimed = owner.claim("3", "b00001")
    assert other.claim("3", "b00001") is None
    owner.release(claimed.lease)
    again = other.claim("3", "b00001")
    assert again and not again.fresh


def test_heartbeat_keeps_a_lease_alive(tmp_path):
    owner = ClaimBoard(tmp_path, owner="owner", lease_s=0.6)
    claimed = owner.claim("0", "b00000")
    owner.start_heartbeat()
    try:
        time.sleep(1.5)
        assert ClaimBoard(tmp_path, owner="thief", lease_s=0.6).claim("0", "b00000") is None
    finally:
        owner.stop_heartbeat()
    assert owner.holds(claimed.lease) and not owner.lost(claimed.lease)


@pytest.mark.slow
def test_split_pdf_gives_the_same_markdown_as_whole(tmp_path):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    big = CORPUS / "hyperref" / "backref.pdf" if CORPUS.is_dir() else EXAMPLES / "zh" / "example-single.pdf"
    shutil.copy(big, pdfs / "big.pdf")
    shutil.copy(EXAMPLES / "en" / "upref.pdf", pdfs / "small.pdf")
    run_local(pdfs, tmp_path / "whole", "--split-pages", "0", "--gpus", "2")
    run = run_local(pdfs, tmp_path / "split", "--split-pages", "2", "--gpus", "3").paths
    plan = load_plan(run.plan).to_json()
    assert sum(1 for t in plan["tasks"] for i in t["items"] if i["pdf"] == "big.pdf") >= 2
    for name in ("big", "small"):
        whole = (tmp_path / "whole" / name / f"{name}.md").read_bytes()
        assert (tmp_path / "split" / name / f"{name}.md").read_bytes() == whole
    assert not any(run.parts.iterdir())  # no part survives as an output
    outputs = sorted(
        p.relative_to(tmp_path / "split").as_posix()
        for p in (tmp_path / "split").rglob("*")
        if p.is_file() and ".hpcmarker" not in p.parts
    )
    assert outputs == ["big/big.md", "big/big_meta.json", "small/small.md", "small/small_meta.json"]
    summary = json.loads(run.summary.read_text())
    assert summary["documents"] == summary["documents_ok"] == 2
    rows = list(csv.DictReader(run.manifest_csv.open()))  # each part's output: the merged document, not its part
    assert len(rows) > 2 and all((tmp_path / "split" / row["output"]).is_file() for row in rows), rows
    assert {row["output"] for row in rows} == {
        str(tmp_path / "split" / name / f"{name}.md") for name in ("big", "small")
    }


@pytest.mark.slow
def test_resume_submits_only_what_is_not_done(tmp_path, sample_pdfs):
    prepared = make_run(sample_pdfs, tmp_path / "out", gpus=2)
    prepared.record.jobs = {"convert": ["-", "-"], "collect": []}
    prepared.paths.save_record(prepared.record)
    # one item was already finished by an earlier attempt, killed before it wrote its manifest line
    board = ClaimBoard(prepared.paths.root, owner="earlier", lease_s=60)
    first = prepared.plan.tasks[0].items[0]
    record = manifest_record(first.item_id, pdf=first.pdf, page_stop=first.pages, host="h", output="x.md")
    assert board.commit(first.item_id, asdict(record))
    result = invoke("resume")
    assert result.exit_code == 0, result.output
    records = manifest_records(prepared.paths)
    assert first.item_id not in {r.item_id for r in records}  # not redone
    assert len(records) == len(prepared.plan.items) - 1
    summary = json.loads(prepared.paths.summary.read_text())
    assert summary["recovered_records"] == 1 and summary["ok"] == len(prepared.plan.items)
    assert "nothing left to convert" in invoke("resume").output


@pytest.mark.slow
def test_retry_reopens_failed_items_until_they_are_poison(tmp_path, sample_pdfs):
    make_bad_pdfs(sample_pdfs / "bad")
    run = run_local(sample_pdfs, tmp_path / "out", "--gpus", "2", expect=FINISHED_WITH_FAILURES)
    for _ in range(2):
        result = invoke("retry")
        assert result.exit_code == FINISHED_WITH_FAILURES, result.output  # the bad PDFs fail again
        assert "reopened 5 failed items" in result.output
    result = invoke("retry")
    assert "reopened 0 failed items; 5 poison items kept as failed" in result.output
    summary = run.summary
    assert len(summary["poison"]) == 5 and summary["ok"] == 6
    records = run.records
    assert sum(r.status == "ok" for r in records) == 6  # good PDFs were never redone


@pytest.mark.slow
def test_resubmit_skips_up_to_date_outputs(tmp_path, sample_pdfs):
    run_local(sample_pdfs, tmp_path / "out", "--gpus", "2")
    result = invoke(
        "submit", "--pdfs", sample_pdfs, "--out", tmp_path / "out", "--engine", "text", "--executor", "local"
    )
    assert result.exit_code == 0 and "all 6 PDFs already have outputs" in result.output
    os.utime(sample_pdfs / "en" / "upref.pdf", None)  # touched: no longer up to date
    result = invoke(
        "submit", "--pdfs", sample_pdfs, "--out", tmp_path / "out", "--engine", "text", "--executor", "local"
    )
    assert "skipping 5 PDFs" in result.output and "run " in result.output
    records = manifest_records(resolve_run(None))
    assert [r.pdf for r in records] == ["en/upref.pdf"]
