"""Output flags in a run's records (issue 23): a split document's items' flags join, `retry --select` picks by
flag, summary.json counts documents per flag, the commit log's letters count items before collection, and
`status` says so in one line with the follow-up command."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
from runkit import manifest_record

from hpc_marker.manage.status import RunStatus
from hpc_marker.manage.statustable import output_flags_line, verdict_lines
from hpc_marker.planning.plan import Plan, TaskPlan, WorkItem
from hpc_marker.runstate.documents import document_state, output_flag_counts, text_layer_tokens
from hpc_marker.runstate.manifest import ManifestRecord
from hpc_marker.runstate.summary import summarize_records
from hpc_marker.submission.followup import is_selected, parse_selectors


def rec(item: str, pdf: str, start: int, stop: int, flags: str | None, status: str = "ok") -> ManifestRecord:
    ok = status == "ok"
    checked = {"engine": "marker", "empty_pages": [], "garbled_pages": [], "output_flags": flags if ok else None}
    error = None if ok else "failed here"
    return manifest_record(item, pdf=pdf, page_start=start, page_stop=stop, status=status, error=error, **checked)


RECORDS = [
    rec("book.p000", "book.pdf", 0, 10, "repetition:3"),
    rec("book.p001", "book.pdf", 10, 20, "repetition:12-13 wide-table:15"),
    rec("paper", "paper.pdf", 0, 5, ""),
    rec("scan", "scan.pdf", 0, 2, "empty-output:1-2"),
    rec("broken", "broken.pdf", 0, 2, None, status="failed"),
]


def test_a_split_documents_flags_join_and_retry_selects_by_flag():
    book = document_state(RECORDS[:2])
    assert book.output_flags == "repetition:3,12-13 wide-table:15"
    assert is_selected(book, "repetition", 0.1) and is_selected(book, "wide-table", 0.1)
    assert not is_selected(book, "oversize", 0.1)
    assert not is_selected(document_state([RECORDS[2]]), "repetition", 0.1)
    assert document_state([RECORDS[4]]).output_flags is None
    assert not is_selected(document_state([RECORDS[4]]), "repetition", 0.1)  # failed: `--select failed`
    assert parse_selectors("lost-script,no-text") == ("lost-script", "no-text")


def test_summary_counts_documents_per_flag():
    plan = Plan(tasks=[TaskPlan(0, [WorkItem(r.item_id, r.pdf, r.page_start, r.page_stop) for r in RECORDS])])
    summary = summarize_records(plan, RECORDS, [])
    assert summary["output_flags"] == {"repetition": 1, "wide-table": 1, "empty-output": 1}
    assert summary["output_flagged"] == [
        {"pdf": "book.pdf", "flags": "repetition:3,12-13 wide-table:15"},
        {"pdf": "scan.pdf", "flags": "empty-output:1-2"},
    ]


def test_commit_letters_count_items_and_status_says_so_with_the_follow_up():
    letters = [text_layer_tokens({"empty_pages": [1], "output_flags": r.output_flags}) for r in RECORDS]
    assert letters[:4] == ["e1R", "e1RW", "e1", "e1E"]
    assert output_flag_counts(pd.Series(letters)) == {"repetition": 2, "wide-table": 1, "empty-output": 1}
    status = RunStatus("first", "/r", "local", "finished", 5, 4, 1, 0, 39, 37, 1.0, 1.0, None, "done")
    assert output_flags_line(status) == ""
    status = replace(status, output_flags={"unit": "documents", "counts": {"repetition": 2, "lost-script": 1}})
    assert output_flags_line(status) == "\noutput flags: repetition in 2 documents, lost-script in 1 document"
    assert any(line.endswith("hpcmarker retry first --select repetition,lost-script") for line in verdict_lines(status))
