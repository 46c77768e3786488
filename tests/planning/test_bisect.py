"""Bisection: the halves of an item are a function of its page range, named alike by every task."""

from __future__ import annotations

from hpc_marker.planning.bisect import (
    can_bisect,
    doc_of,
    half_ids,
    halves,
    is_subitem,
    root_ids,
)
from hpc_marker.planning.plan import WorkItem


def test_halves_cover_the_item_and_keep_its_document_part_and_batch():
    part = WorkItem("000123.p001", "a/book.pdf", 10, 21, doc_id="000123", part=1, parts=3, batch=4)
    first, second = halves(part)
    assert (first.item_id, first.page_start, first.page_stop) == ("000123.r10-15", 10, 15)
    assert (second.item_id, second.page_start, second.page_stop) == ("000123.r15-21", 15, 21)
    assert {(h.doc_id, h.part, h.parts, h.batch, h.pdf) for h in (first, second)} == {("000123", 1, 3, 4, "a/book.pdf")}
    assert [h.item_id for h in halves(second)] == half_ids("000123", 15, 21) == ["000123.r15-18", "000123.r18-21"]
    assert is_subitem(first.item_id) and not is_subitem(part.item_id)
    assert doc_of(first.item_id) == doc_of(part.item_id) == "000123"
    assert root_ids(first) == ["000123.p000", "000123.p001", "000123.p002"]


def test_one_page_and_unreadable_items_are_not_bisected():
    whole = WorkItem("000007", "x.pdf", 0, 20, doc_id="000007")
    assert can_bisect(whole) and root_ids(whole) == ["000007"]
    assert root_ids(halves(whole)[1]) == ["000007"]
    assert not can_bisect(WorkItem("000007.r7-8", "x.pdf", 7, 8, doc_id="000007"))
    assert not can_bisect(WorkItem("000008", "y.pdf", 0, 0, scan_error="not a readable PDF", doc_id="000008"))
