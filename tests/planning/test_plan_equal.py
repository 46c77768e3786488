"""The vectorized planner (plan.py, balance.py) makes the same plans as the one-item-at-a-time planner it
replaced (reference_plan.py, today's code before issue 24), item for item, on 10^4 items."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import reference_plan as reference

from hpc_marker.planning.plan import WorkItem, assign_batches, make_plan, split_items, static_chunks, work_items
from hpc_marker.planning.scan import ScannedPdf


def _scanned(count: int, seed: int) -> list[ScannedPdf]:
    """Scan results of every kind: many short PDFs (long runs of equal cost), some long ones (split), some
    unreadable (0 pages), names out of order."""
    rng = random.Random(seed)
    pdfs = []
    for n in range(count):
        roll = rng.random()
        pages = 0 if roll < 0.02 else rng.randint(100, 900) if roll < 0.05 else rng.choice([1, 1, 2, 3, 5, 8, 13, 21])
        error = "not a PDF" if pages == 0 else None
        status = ("encrypted" if n % 2 else "failed") if pages == 0 else "ok"
        name = f"d{rng.randrange(10**6):06d}/f{n}.pdf"
        pdfs.append(ScannedPdf(name, Path(name), 1000, pages, error, status))
    return pdfs


def _names(scanned: list[ScannedPdf]) -> dict[str, str]:
    return {pdf.relpath: f"renamed-{k}" for k, pdf in enumerate(scanned[::97])}


def test_work_items_are_todays():
    scanned = _scanned(10_000, 1)
    assert work_items(scanned, _names(scanned)) == reference.work_items(scanned, _names(scanned))
    assert list(work_items(scanned[:3])) == reference.work_items(scanned[:3])


@pytest.mark.parametrize(
    ("tasks", "split_pages", "min_task_pages"),
    [(1, None, 1), (7, None, 1), (64, None, 1), (64, 0, 1), (16, 40, 1), (500, None, 200), (20_000, 0, 1)],
)
def test_plans_are_todays_on_ten_thousand_items(tasks, split_pages, min_task_pages):
    scanned = _scanned(10_000, tasks)
    old = reference.make_plan(reference.work_items(scanned, _names(scanned)), tasks, split_pages, min_task_pages)
    new = make_plan(work_items(scanned, _names(scanned)), tasks, split_pages, min_task_pages)
    assert len(new.tasks) == len(old.tasks)
    for mine, theirs in zip(new.tasks, old.tasks, strict=True):
        assert mine.index == theirs.index and list(mine.items) == theirs.items, f"task {mine.index} differs"
    assert new == old and new.to_json() == old.to_json()


def test_plans_of_work_item_lists_are_todays():
    rng = random.Random(5)
    items = [
        WorkItem(f"{n:07d}", f"x/{n}.pdf", 0, rng.choice([0, 1, 4, 4, 4, 60]), doc_id="" if n % 3 else f"{n:07d}")
        for n in range(3_000)
    ]
    rng.shuffle(items)  # ids out of order
    assert make_plan(items, 9) == reference.make_plan(items, 9)
    assert make_plan(items[:5], 3, split_pages=2) == reference.make_plan(items[:5], 3, split_pages=2)
    assert make_plan([], 4) == reference.make_plan([], 4)
    assert split_items(items, 3) == reference.split_items(items, 3)
    limits = {"batch_pages": 5, "batch_items": 3, "min_batches": 2}
    assert assign_batches(items[:500], **limits) == reference.assign_batches(items[:500], **limits)


@pytest.mark.parametrize("chunks", [1, 3, 64, 20_000])
def test_static_chunks_are_todays(chunks):
    items = reference.work_items(_scanned(10_000, chunks))
    assert static_chunks(items, chunks) == reference.static_chunks(items, chunks)
