"""A task that takes over a batch whose holder died mid-bisection goes on from the done markers: it
converts the halves not finished yet, never the bisected item again, and puts the document together."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from inputs import book_with_pathological_page
from runkit import invoke, make_run, manifest_record, manifest_records

from hpc_marker.runstate.claims import ClaimBoard, batch_name


def _bisected(item_id: str, start: int, stop: int) -> dict:
    error = "timeout: no result after 3 s"
    record = manifest_record(
        item_id, pdf="book.pdf", page_start=start, page_stop=stop, status="bisected", error=error, seconds=3.0, host="h"
    )
    return dict(asdict(record), share=0, staging=None)


@pytest.mark.slow
def test_takeover_converts_only_the_unfinished_halves(tmp_path):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "book.pdf").write_bytes(book_with_pathological_page(20, -1, 0))  # 20 good pages
    prepared = make_run(pdfs, tmp_path / "out", split_pages=0)
    prepared.record.jobs = {"convert": ["-"], "collect": []}
    prepared.paths.save_record(prepared.record)
    # the dead holder claimed batch 0, bisected the book and then its second half, and converted nothing more
    board = ClaimBoard(prepared.paths.root, owner="dead", lease_s=60)
    board.release(board.claim("0", batch_name(0)).lease)  # its lease, expired (given back: at once)
    assert board.commit("000000", _bisected("000000", 0, 20))
    assert board.commit("000000.r10-20", _bisected("000000.r10-20", 10, 20))

    result = invoke("resume")
    assert result.exit_code == 0, result.output
    converted = sorted(r.item_id for r in manifest_records(prepared.paths))
    assert converted == ["000000.r0-10", "000000.r10-15", "000000.r15-20"]
    text = (tmp_path / "out" / "book" / "book.md").read_text()
    assert all(f"Page {n} of the book." in text for n in range(1, 21))
    summary = json.loads(prepared.paths.summary.read_text())
    assert (summary["documents_ok"], summary["documents_partial"], summary["lost_pages"]) == (1, 0, [])
    assert not (prepared.paths.parts / "000000").exists()  # merged, parts removed
