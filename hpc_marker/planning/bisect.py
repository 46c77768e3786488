"""Bisection: the sub-items of a work item that failed, so that one bad page does not lose its document. Pure.

An item of several pages that fails, times out or kills its worker is cut in two halves (the
first takes the smaller half when the pages are odd), and each half is an item of its own, cut
again if it fails in turn, until the failing pages stand alone. The halves of an item are a
function of its page range, so every task names them alike: `<doc_id>.r<start>-<stop>` (0-based,
stop exclusive). A document's planned items (one, or its parts when split) are its roots; the
sub-items of a root are covered by the lease of the root's batch (runstate/claims.py) and each is
committed by its own done marker, like a planned item.
"""

from __future__ import annotations

from dataclasses import replace

from hpc_marker.planning.plan import WorkItem, part_id

SUB_MARK = ".r"  # in an item id: a sub-item (`000123.r8-10`)
BISECTED = "bisected"  # the status of an item that was cut in two (its halves say how its pages ended)


def is_subitem(item_id: str) -> bool:
    return SUB_MARK in item_id


def subitem_id(doc_id: str, start: int, stop: int) -> str:
    return f"{doc_id}{SUB_MARK}{start}-{stop}"


def can_bisect(item: WorkItem) -> bool:
    """An item of two pages or more that the scan could read."""
    return item.pages >= 2 and item.scan_error is None


def halves(item: WorkItem) -> list[WorkItem]:
    """The two sub-items of `item`: its page range cut in the middle. They keep the item's document,
    part and batch."""
    middle = item.page_start + item.pages // 2
    doc_id = item.doc_id or item.item_id
    return [
        replace(item, item_id=subitem_id(doc_id, start, stop), page_start=start, page_stop=stop, doc_id=doc_id)
        for start, stop in ((item.page_start, middle), (middle, item.page_stop))
    ]


def half_ids(doc_id: str, page_start: int, page_stop: int) -> list[str]:
    """The ids of the halves of the item of `doc_id` covering [page_start, page_stop)."""
    middle = page_start + (page_stop - page_start) // 2
    return [subitem_id(doc_id, page_start, middle), subitem_id(doc_id, middle, page_stop)]


def root_ids(item: WorkItem) -> list[str]:
    """The planned items of `item`'s document, in page order: its parts when split, else the one item."""
    doc_id = item.doc_id or item.item_id
    if item.parts > 1:
        return [part_id(doc_id, k) for k in range(item.parts)]
    return [doc_id]


def sub_item(item: WorkItem, item_id: str, page_start: int, page_stop: int) -> WorkItem:
    """A sub-item of `item`'s document (a node found by walking a bisected item)."""
    return replace(
        item, item_id=item_id, page_start=page_start, page_stop=page_stop, doc_id=item.doc_id or item.item_id
    )


def doc_of(item_id: str) -> str:
    """The document id an item id starts with ('000123.p004' and '000123.r8-10' -> '000123')."""
    return item_id.split(".", 1)[0]
