"""A run's records per document (split PDFs, retries, gaps) and the text-layer counts of summary and status."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from hpc_marker.manage.status import status_table, summarize
from hpc_marker.planning.plan import Plan, TaskPlan, WorkItem
from hpc_marker.runstate.documents import document_state, documents, flag_share
from hpc_marker.runstate.manifest import ManifestRecord
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.summary import page_label, summarize_records


def rec(item: str, pdf: str, start: int, stop: int, status: str = "ok", t: float = 1.0,
        empty: list[int] | None = None, garbled: list[int] | None = None) -> ManifestRecord:
    return ManifestRecord(item_id=item, pdf=pdf, page_start=start, page_stop=stop, pages=stop - start, status=status,
                          error=None if status == "ok" else f"{status} here", seconds=2.0, engine="text", host="n",
                          gpu="0", job_id="1_0", task=0, output=None, started=t, finished=t + 1,
                          empty_pages=empty if empty is not None or garbled is None else [],
                          garbled_pages=garbled if garbled is not None or empty is None else [])


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
    doc = documents([rec("a", "a.pdf", 0, 4, "failed", t=1.0), rec("a", "a.pdf", 0, 4, t=5.0)])["a.pdf"]
    assert doc.status == "ok" and doc.empty_pages is None and doc.checked_pages == 0
    assert flag_share(doc, "no-text") == 0.0


def test_summary_and_status_count_flagged_pages_and_documents():
    records = [rec("000", "a.pdf", 0, 3, garbled=[0, 1, 2]), rec("001", "b.pdf", 0, 40, empty=[3]),
               rec("002", "c.pdf", 0, 5, empty=[], garbled=[])]
    plan = Plan(tasks=[TaskPlan(0, [WorkItem(r.item_id, r.pdf, 0, r.page_stop) for r in records])])
    summary = summarize_records(plan, records, [])
    assert summary["text_layer"] == {"documents_checked": 3, "pages_checked": 48, "documents_with_empty_pages": 1,
                                     "empty_pages": 1, "documents_with_garbled_pages": 1, "garbled_pages": 3}
    assert summary["flagged"] == [{"pdf": "a.pdf", "pages": 3, "empty": "", "garbled": "1-3"},
                                  {"pdf": "b.pdf", "pages": 40, "empty": "4", "garbled": ""}]
    run = RunRecord(run_id="r", created=0, pdfs_root="/p", out_dir="/o", engine="text", engine_options={},
                    executor="slurm", tasks=1, gpus=1, workers_per_gpu=1, cpus_per_task=1, template="generic",
                    time_limit="1:00:00", steal=True, lease_seconds=120.0, item_timeout="auto", umask=0o077,
                    profile="generic", jobs={"convert": ["1_0"], "collect": ["2"]})
    status = summarize(run, plan, records, {"1_0": "COMPLETED"}, now=10.0)
    assert status.text_layer == summary["text_layer"]
    console = Console(width=300, record=True)
    console.print(status_table(status))
    assert "1 empty pages in 1 documents, 3 garbled pages in 1 documents" in console.export_text()


def test_page_labels_count_like_people():
    assert page_label([5, 0, 1, 2, 9, 10]) == "1-3, 6, 10-11"
    assert page_label([]) == ""
