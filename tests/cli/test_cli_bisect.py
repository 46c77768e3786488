"""Page-level failure isolation on this machine (local executor, `text` engine): a 20-page book whose
page 8 takes the text engine tens of seconds (hundreds of thousands of glyphs) under a tight
--item-timeout converts 19 pages; the lost page is in the document (a placeholder), the manifest,
the summary, status, the report and the export; retry tries just that page again, and the document
never becomes poison."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from inputs import book_with_pathological_page
from runkit import FINISHED_WITH_FAILURES, invoke, run_local

TIGHT = "3+0.1/page"  # 4 s for a 10-page part, 3.1 s for one page; a good page takes milliseconds, page 8 9 s
BAD = 7  # 0-based: page 8


@pytest.fixture
def book(tmp_path):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "book.pdf").write_bytes(book_with_pathological_page(20, BAD, 200_000))
    return pdfs


@pytest.mark.slow
def test_one_pathological_page_is_lost_alone(book, tmp_path):
    out = tmp_path / "out"
    run = run_local(
        book,
        out,
        "--item-timeout",
        TIGHT,
        "--run-id",
        "book",  # 20 pages: two parts of 10
        expect=FINISHED_WITH_FAILURES,
    )  # not every page converted
    assert "finished: 1 ok, 1 partial (pages lost) of 2 items; Markdown in" in run.output
    assert "next: hpcmarker retry book" in run.output
    assert "lost page 8 of book.pdf: timeout" in run.output
    text = (out / "book" / "book.md").read_text()
    for page in range(20):
        assert f"{{{page}}}-----" in text  # every page's separator, in order
        assert (f"Page {page + 1} of the book." in text) == (page != BAD), page
    assert "[hpcmarker: page 8 could not be converted: timeout" in text

    summary = run.summary
    assert (summary["documents"], summary["documents_ok"], summary["documents_partial"]) == (1, 0, 1)
    assert summary["pages_ok"] == 19 and summary["poison"] == [] and summary["failures"] == []
    assert [(p["pdf"], p["page"], p["status"]) for p in summary["lost_pages"]] == [("book.pdf", 8, "timeout")]
    manifest = pd.read_csv(run.paths.manifest_csv, keep_default_na=False)
    assert manifest.loc[manifest["item_id"] == "000000.r7-8", "status"].tolist() == ["timeout"]
    assert set(manifest.loc[manifest["status"] == "bisected", "item_id"]) == {
        "000000.p000",
        "000000.r5-10",
        "000000.r7-10",
    }
    meta = json.loads((out / "book" / "book_meta.json").read_text())
    assert [p["page"] for p in meta["lost_pages"]] == [BAD]
    status = invoke("status", "book")
    assert "1 partial" in status.output and "book.pdf page 8: timeout" in status.output
    assert "Lost pages (1)" in (run.paths.root / "report.html").read_text()

    exported = invoke("export", "book", "--format", "parquet", "--to", str(tmp_path / "ds"))
    assert exported.exit_code == 0, exported.output
    row = pd.read_parquet(tmp_path / "ds").iloc[0]
    assert (row["status"], list(row["lost_pages"]), row["text"]) == ("partial", [BAD], text)
    listed = invoke("retry", "book", "--select", "partial", "--dry-run")
    assert listed.output.splitlines()[1:] == ["  book.pdf"], listed.output

    for attempt in (2, 3):  # the same page fails again (same settings): only it is converted again
        again = invoke("retry", "book")
        assert again.exit_code == FINISHED_WITH_FAILURES and "reopened 1 failed item\n" in again.output, again.output
        summary = run.summary
        assert summary["documents_partial"] == 1 and summary["poison"] == [], attempt
    kept = invoke("retry", "book")  # the page failed 3 times: kept, and the document with it
    assert "reopened 0 failed items; 1 poison item kept as failed" in kept.output, kept.output
    assert run.summary["poison"] == [] and run.summary["documents_partial"] == 1
    commits = (run.paths.progress / "task-0.log").read_text()
    assert commits.count("000000.r7-8\ttimeout") == 3 and commits.count("000000.r0-5\tok") == 1


@pytest.mark.slow
def test_whole_pdf_bisected_in_json_and_not_without_bisect(book, tmp_path):
    run = run_local(
        book,
        tmp_path / "out",
        "--item-timeout",
        TIGHT,
        "--split-pages",
        "0",
        "--output-format",
        "json",
        expect=FINISHED_WITH_FAILURES,
    )
    assert "finished: 0 ok, 1 partial (pages lost) of 1 item; JSON in" in run.output
    doc = json.loads((tmp_path / "out" / "book" / "book.json").read_text())
    pages = doc["children"]
    assert [p["id"] for p in pages] == [f"/page/{i}/Page/0" for i in range(20)]
    assert [i for i, p in enumerate(pages) if "hpcmarker_lost" in p] == [BAD]
    assert "could not be converted" in pages[BAD]["html"] and "Page 9 of the book." in pages[8]["html"]

    whole = run_local(
        book,
        tmp_path / "out2",
        "--item-timeout",
        TIGHT,
        "--split-pages",
        "0",
        "--no-bisect",
        expect=FINISHED_WITH_FAILURES,
    )
    assert "finished: 0 ok, 1 failed of 1 item (1 timeout)" in whole.output
    assert [r.status for r in whole.records] == ["timeout"]
    assert not (tmp_path / "out2" / "book" / "book.md").exists()


@pytest.mark.slow
def test_a_page_out_of_memory_is_lost_alone(book, tmp_path):
    """The failure is an error this time (the worker's memory cap), not a timeout: bisected the same way."""
    run = run_local(
        book,
        tmp_path / "out",
        "--worker-memory",
        "300M",
        "--item-timeout",
        "off",
        "--split-pages",
        "0",
        expect=FINISHED_WITH_FAILURES,
    )
    assert "finished: 0 ok, 1 partial (pages lost) of 1 item" in run.output, run.output
    lost = run.summary["lost_pages"]
    assert [(p["page"], p["status"]) for p in lost] == [(8, "failed")] and "out of memory" in lost[0]["error"]
    text = (tmp_path / "out" / "book" / "book.md").read_text()
    assert [n for n in range(1, 21) if f"Page {n} of the book." in text] == [n for n in range(1, 21) if n != 8]
