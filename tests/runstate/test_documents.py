"""A run's records per document (split PDFs, retries, gaps) and the text-layer counts of summary and status."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
from runkit import manifest_record

from hpc_marker.manage.status import RunStatus
from hpc_marker.manage.statustable import text_layer_line
from hpc_marker.planning.plan import Plan, TaskPlan, WorkItem
from hpc_marker.runstate.documents import (
    commit_text_layer,
    document_state,
    flag_share,
    text_layer_tokens,
    token_counts,
)
from hpc_marker.runstate.manifest import ManifestRecord, latest_by_item
from hpc_marker.runstate.summary import page_label, summarize_records


def rec(
    item: str,
    pdf: str,
    start: int,
    stop: int,
    status: str = "ok",
    t: float = 1.0,
    empty: list[int] | None = None,
    garbled: list[int] | None = None,
) -> ManifestRecord:
    return manifest_record(
        item,
        pdf=pdf,
        page_start=start,
        page_stop=stop,
        status=status,
        error=None if status == "ok" else f"{status} here",
        seconds=2.0,
        started=t,
        finished=t + 1,
        empty_pages=empty if empty is not None or garbled is None else [],
        garbled_pages=garbled if garbled is not None or empty is None else [],
    )


def test_split_document_is_ok_only_when_its_items_cover_it():
    parts = [rec("d.p000", "d.pdf", 0, 10, empty=[3]), rec("d.p001", "d.pdf", 10, 20, garbled=[12, 15])]
    doc = document_state(reversed(parts))
    assert (doc.status, doc.pages, doc.page_start, doc.page_stop, doc.items) == ("ok", 20, 0, 20, 2)
    assert doc.empty_pages == [3] and doc.garbled_pages == [12, 15] and doc.checked_pages == 20
    assert flag_share(doc, "garbled") == 0.1 and flag_share(doc, "no-text") == 0.05
    gap = document_state([parts[1]])
    assert gap.status == "incomplete" and gap.error == "pages 1-10 have no record"
    failed = document_state([parts[0], replace(parts[1], status="timeout", error="no result")])
    assert (failed.status, failed.error) == ("timeout", "no result")


def test_unchecked_items_leave_flags_unknown_and_a_retry_wins():
    latest = latest_by_item([rec("a", "a.pdf", 0, 4, "failed", t=1.0), rec("a", "a.pdf", 0, 4, t=5.0)])
    doc = document_state(latest.values())
    assert doc.status == "ok" and doc.empty_pages is None and doc.checked_pages == 0
    assert flag_share(doc, "no-text") == 0.0


def test_summary_and_status_count_flagged_pages_and_documents():
    records = [
        rec("000", "a.pdf", 0, 3, garbled=[0, 1, 2]),
        rec("001", "b.pdf", 0, 40, empty=[3]),
        rec("002", "c.pdf", 0, 5, empty=[], garbled=[]),
    ]
    plan = Plan(tasks=[TaskPlan(0, [WorkItem(r.item_id, r.pdf, 0, r.page_stop) for r in records])])
    summary = summarize_records(plan, records, [])
    assert summary["text_layer"] == {
        "documents_checked": 3,
        "pages_checked": 48,
        "documents_with_empty_pages": 1,
        "empty_pages": 1,
        "documents_with_garbled_pages": 1,
        "garbled_pages": 3,
    }
    assert summary["flagged"] == [
        {"pdf": "a.pdf", "pages": 3, "empty": "", "garbled": "1-3"},
        {"pdf": "b.pdf", "pages": 40, "empty": "4", "garbled": ""},
    ]
    status = RunStatus(
        run_id="r",
        run_dir="",
        executor="slurm",
        state="finished",
        items=3,
        ok=3,
        failed=0,
        pending=0,
        pages=48,
        pages_done=48,
        elapsed_seconds=1.0,
        pages_per_second=48.0,
        eta_seconds=None,
        collector="COMPLETED",
        text_layer=summary["text_layer"],
    )
    assert "1 empty page in 1 document, 3 garbled pages in 1 document" in text_layer_line(status)
    assert text_layer_line(RunStatus(**{**vars(status), "text_layer": {}})) == ""


def test_status_counts_flags_from_the_commit_logs_before_collection():
    flags = [
        text_layer_tokens(r)
        for r in ({"empty_pages": [1, 2], "garbled_pages": []}, None, {"empty_pages": [], "garbled_pages": [0]})
    ]
    assert flags == ["e2", "", "g1"]
    latest = pd.DataFrame({"status": ["ok", "ok", "ok", "failed"], "flags": ["d" + flags[0], flags[1], flags[2], "e9"]})
    assert token_counts(latest["flags"])["empty"].tolist() == [2, 0, 0, 9]
    layer = commit_text_layer(latest)
    assert layer == {"empty_pages": 2, "items_with_empty_pages": 1, "garbled_pages": 1, "items_with_garbled_pages": 1}
    status = RunStatus(
        run_id="r",
        run_dir="",
        executor="slurm",
        state="running",
        items=4,
        ok=3,
        failed=1,
        pending=0,
        pages=4,
        pages_done=4,
        elapsed_seconds=1.0,
        pages_per_second=4.0,
        eta_seconds=None,
        collector="PENDING",
        text_layer=layer,
    )
    assert "2 empty pages in 1 item, 1 garbled page in 1 item" in text_layer_line(status)


def test_page_labels_count_like_people():
    assert page_label([5, 0, 1, 2, 9, 10]) == "1-3, 6, 10-11"
    assert page_label([]) == ""
