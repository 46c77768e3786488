"""util/text.py: counts said in words (issue 19: no "1 tasks")."""

from __future__ import annotations

from hpc_marker.util.text import plural


def test_plural_says_one_thing_and_many_things():
    assert [plural(n, "task") for n in (0, 1, 2)] == ["0 tasks", "1 task", "2 tasks"]
    assert plural(1, "work item") == "1 work item" and plural(3, "PDF") == "3 PDFs"
    assert plural(1, "batch", "batches") == "1 batch" and plural(2, "batch", "batches") == "2 batches"
    assert plural(1_000_000, "page") == "1,000,000 pages"  # a corpus is counted with separators
