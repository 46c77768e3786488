"""Scan and plan: what counts as a PDF, page counts, page-aware balancing."""

from __future__ import annotations

import csv
import os

import pytest
from inputs import CORPUS, PAGES_CSV, make_bad_pdfs

from hpc_marker.planning.plan import WorkItem, make_plan, static_chunks, work_items
from hpc_marker.planning.scan import ScanError, find_pdfs, scan_pdfs
from hpc_marker.planning.store import load_plan, save_plan


def test_scan_finds_pdfs_in_any_case_recursively_and_counts_pages(sample_pdfs):
    (sample_pdfs / "en" / "upref.pdf").rename(sample_pdfs / "en" / "UPREF.PDF")
    (sample_pdfs / "notes.txt").write_text("not a pdf")
    scanned = scan_pdfs(sample_pdfs)
    by_path = {s.relpath: s for s in scanned}
    assert set(by_path) == {
        "en/UPREF.PDF",
        "en/ltxtable.pdf",
        "en/ltnews07.pdf",
        "zh/example-single.pdf",
        "zh/upzhkinsoku-doc.pdf",
        "zh/6-7b.pdf",
    }
    assert by_path["en/UPREF.PDF"].pages == 2
    assert by_path["zh/example-single.pdf"].pages == 3
    assert all(s.error is None for s in scanned)


def test_scan_follows_symlinks_once_detects_loops_and_duplicates(sample_pdfs):
    os.symlink(sample_pdfs / "en", sample_pdfs / "zh" / "link-to-en")
    os.symlink(sample_pdfs, sample_pdfs / "en" / "loop")  # a loop back to the top
    os.symlink(sample_pdfs / "en" / "upref.pdf", sample_pdfs / "same-file.pdf")
    relpaths = [rel for rel, _ in find_pdfs(sample_pdfs)]
    assert len(relpaths) == 6, relpaths  # each file once, whatever its names
    assert len(set(relpaths)) == len(relpaths)


def test_scan_errors_are_clear(tmp_path):
    with pytest.raises(ScanError, match="no such folder"):
        scan_pdfs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanError, match="no PDF files found"):
        scan_pdfs(tmp_path / "empty")


def test_bad_pdfs_are_scanned_with_a_one_line_reason(tmp_path):
    expected = make_bad_pdfs(tmp_path / "bad")
    scanned = {s.relpath: s for s in scan_pdfs(tmp_path / "bad")}
    for name, want in expected.items():
        assert scanned[name].pages == 0
        assert want.reason in scanned[name].error and scanned[name].status == want.status
        assert "\n" not in scanned[name].error


@pytest.mark.corpus
def test_scan_matches_corpus_page_counts():
    with PAGES_CSV.open() as fh:
        expected = {row["path"]: int(row["pages"]) for row in csv.DictReader(fh)}
    scanned = {s.relpath: s.pages for s in scan_pdfs(CORPUS, workers=2)}
    assert scanned == expected


def _items(pages: list[int]) -> list[WorkItem]:
    return [WorkItem(f"{i:06d}", f"f{i}.pdf", 0, p) for i, p in enumerate(pages)]


def test_plan_balances_pages_not_files():
    # 17 PDFs on 4 GPUs: static chunking gives 5+5+5+2 files whatever their pages.
    items = _items([100, 1, 1, 1, 1, 90, 1, 1, 1, 1, 80, 1, 1, 1, 1, 70, 1])
    whole = make_plan(items, 4, split_pages=0)
    assert sorted(len(t.items) for t in static_chunks(items, 4).tasks) == [2, 5, 5, 5]
    assert max(t.pages for t in whole.tasks) == 100  # unsplit, the largest PDF alone sets the bound
    assert whole.imbalance() < static_chunks(items, 4).imbalance()
    assert sorted(i.item_id for i in whole.items) == sorted(i.item_id for i in items)
    split = make_plan(items, 4)  # parts of at most max(16, 353/4/4) = 23 pages
    assert split.imbalance() < 1.1 < whole.imbalance()


def test_split_parts_cover_each_pdf_exactly_and_in_order():
    items = [WorkItem("000000", "a.pdf", 0, 100, doc_id="000000"), WorkItem("000001", "b.pdf", 0, 7, doc_id="000001")]
    plan = make_plan(items, 2, split_pages=30)
    parts = sorted((i for i in plan.items if i.doc_id == "000000"), key=lambda i: i.page_start)
    assert [(p.page_start, p.page_stop) for p in parts] == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert {p.parts for p in parts} == {4} and [p.part for p in parts] == [0, 1, 2, 3]
    assert [i.item_id for i in plan.items if i.doc_id == "000001"] == ["000001"]


def test_plan_never_has_more_tasks_than_items_and_round_trips(tmp_path):
    plan = make_plan(_items([3, 4]), 8)
    assert len(plan.tasks) == 2
    save_plan(plan, tmp_path / "plan")
    assert load_plan(tmp_path / "plan") == plan


@pytest.mark.corpus
def test_plan_of_corpus_beats_static_chunking():
    items = work_items(scan_pdfs(CORPUS, workers=2))
    for gpus in (4, 8, 16):
        assert make_plan(items, gpus).imbalance(gpus) <= 1.05 < static_chunks(items, gpus).imbalance(gpus)
    assert make_plan(items, 4, split_pages=0).imbalance() > 1.3  # unsplit: 516 of 1495 pages in one PDF


def test_item_rows_keep_every_field_of_a_work_item():
    import dataclasses

    from hpc_marker.planning.plan import ItemRows

    item = WorkItem(
        **{
            f.name: f"{f.name}-v" if f.type in ("str", "str | None") else True if f.type == "bool | None" else 3 + i
            for i, f in enumerate(dataclasses.fields(WorkItem))
        }
    )
    rows = ItemRows.of([item, dataclasses.replace(item, scan_error=None)])
    assert list(rows) == [item, dataclasses.replace(item, scan_error=None)], "a WorkItem field is lost in ItemRows"
    assert rows[-1] == rows[1:][0] == dataclasses.replace(item, scan_error=None) and rows == list(rows)
