"""Output flags through a whole local run (issue 23, items 1 and 4): a PDF whose text repeats one sentence is
flagged `repetition` in the manifest, manifest.csv, summary.json, the report, `status` (before and after
collection) and the export, every document past `--max-output-mb-per-page` is kept and flagged `oversize`, and
`retry --select repetition` picks just the looping one."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from inputs import EXAMPLES, raw_pdf
from runkit import document, invoke, run_local

SENTENCE = b"The committee approved the budget for the next fiscal year without any further debate."


def looping_pdf() -> bytes:
    """One page whose text layer is one sentence, 30 times (a text engine writes what an LLM in a loop would)."""
    return raw_pdf(b"BT /F1 9 Tf 11 TL 30 770 Td " + (b"(" + SENTENCE + b") ' ") * 30 + b"ET")


@pytest.mark.slow
def test_a_looping_document_is_flagged_everywhere_and_retry_selects_it(tmp_path):
    pdfs, out = tmp_path / "pdfs", tmp_path / "out"
    pdfs.mkdir()
    (pdfs / "loop.pdf").write_bytes(looping_pdf())
    shutil.copy(EXAMPLES / "en" / "ltnews07.pdf", pdfs / "news.pdf")  # one page of about 4 KB
    run = run_local(pdfs, out, "--run-id", "first", "--max-output-mb-per-page", "0.003")

    by_pdf = run.by_pdf
    assert by_pdf["loop.pdf"].output_flags == "repetition:1"
    assert by_pdf["news.pdf"].output_flags == "oversize:1"  # past 3 KB a page: flagged ...
    assert document(out, "news.pdf").stat().st_size > 3000  # ... and kept whole
    assert json.loads(run.paths.record.read_text())["quality"]["max_output_mb_per_page"] == 0.003
    csv = pd.read_csv(run.paths.manifest_csv).set_index("pdf")
    assert csv.loc["loop.pdf", "output_flags"] == "repetition:1"
    assert run.summary["output_flags"] == {"repetition": 1, "oversize": 1}
    assert run.summary["output_flagged"] == [
        {"pdf": "loop.pdf", "flags": "repetition:1"},
        {"pdf": "news.pdf", "flags": "oversize:1"},
    ]

    report = invoke("report", "first")
    assert report.exit_code == 0, report.output
    page = (run.paths.root / "report.html").read_text()
    assert "repetition in 1 document, oversize in 1 document" in page and "repetition:1" in page

    shown = invoke("status", "first")
    assert "output flags: repetition in 1 document, oversize in 1 document" in shown.output, shown.output
    assert "hpcmarker retry first --select repetition,oversize" in shown.output
    run.paths.summary.unlink()  # before collection: from the commit logs
    before = json.loads(invoke("status", "first", "--json").output)
    assert before["output_flags"] == {"unit": "items", "counts": {"repetition": 1, "oversize": 1}}

    listed = invoke("retry", "first", "--select", "repetition", "--dry-run")
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[:2] == ["run first: 1 document selected by --select repetition", "  loop.pdf"]

    exported = invoke("export", "first", "--format", "parquet", "--to", str(tmp_path / "ds"))
    assert exported.exit_code == 0, exported.output
    frame = pd.read_parquet(tmp_path / "ds").set_index("path")
    assert frame.loc["loop.pdf", "output_flags"] == "repetition:1"
