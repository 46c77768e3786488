"""What users take away, on a real Slurm cluster: the corpus in JSON, the export of a finished run
read back in pandas, the garbled sample flagged and sent to a follow-up run, a book with one
pathological page converted but for that page (issue 15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import CORPUS, EXAMPLES
from inputs import book_with_pathological_page
from test_slurm import (  # skips this module too where no cluster answers
    invoke,
    wait_for,
)

from hpc_marker.planning.scan import find_pdfs
from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.manifest import read_manifests
from hpc_marker.runstate.output import document_file

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SLURM_ARGS = ["--gpus", "4", "--engine", "text", "--cpus-per-task", "1", "--time", "20"]
SOME = [
    "zhlineskip/zhlineskip.pdf",
    "examples/example-single.pdf",
    "base/letter.pdf",
    "carlisle/ltxtable.pdf",
    "l3kernel/l3news08.pdf",
]  # letter.pdf (24 pages) is split with --split-pages 8


def submit(pdfs: Path, out: Path, run_id: str, *args: str) -> dict:
    result = invoke("submit", "--pdfs", str(pdfs), "--out", str(out), *SLURM_ARGS, "--run-id", run_id, *args)
    assert result.exit_code == 0, result.output
    return wait_for(run_id, {"finished"})


def test_corpus_in_json_is_valid_json_per_document(tmp_path):
    out = tmp_path / "out"
    submit(CORPUS, out, "corpusjson", "--output-format", "json")
    pdfs = [rel for rel, _ in find_pdfs(CORPUS)]
    for rel in pdfs:
        document = json.loads(document_file(out, rel, "json").read_text(encoding="utf-8"))
        pages = document["children"]
        assert document["block_type"] == "Document" and all(p["block_type"] == "Page" for p in pages), rel
        assert [p["id"] for p in pages] == [f"/page/{i}/Page/0" for i in range(len(pages))], rel
    records = read_manifests(resolve_run("corpusjson").manifests).records
    assert len({r.pdf for r in records}) == len(pdfs) and all(r.status == "ok" for r in records)
    assert all(r.output.endswith(".json") for r in records)
    assert not [p for p in out.rglob("*.md") if ".hpcmarker" not in p.parts]


def test_export_of_a_finished_run_and_the_garbled_sample_sent_to_a_follow_up(tmp_path):
    pdfs, out = tmp_path / "pdfs", tmp_path / "out"
    shutil.copytree(EXAMPLES, pdfs)  # the shipped samples, zh/example-single.pdf among them
    for rel in SOME:
        (pdfs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / rel, pdfs / rel)
    submit(pdfs, out, "corpusmd", "--split-pages", "8")
    paths = resolve_run("corpusmd")
    summary = json.loads(paths.summary.read_text())
    flagged = {f["pdf"]: f for f in summary["flagged"]}
    assert flagged["zh/example-single.pdf"]["garbled"] == "1-3"  # every page of the shipped sample
    assert flagged["examples/example-single.pdf"]["garbled"] == "1-3"  # the same file in the corpus
    assert flagged["zhlineskip/zhlineskip.pdf"] == {
        "pdf": "zhlineskip/zhlineskip.pdf",
        "pages": 8,
        "empty": "",
        "garbled": "3",
    }
    assert len(flagged) == 3

    result = invoke("export", "corpusmd", "--format", "parquet", "--to", str(tmp_path / "ds"))
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "ds")
    assert len(frame) == summary["documents_ok"] == len(find_pdfs(pdfs)) and frame["path"].is_unique
    for row in frame.itertuples():
        assert row.text == document_file(out, row.path, "markdown").read_text(encoding="utf-8"), row.path
    assert list(frame.set_index("path").loc["zh/example-single.pdf", "garbled_pages"]) == [0, 1, 2]
    assert frame.set_index("path").loc["base/letter.pdf", "pages"] == 24  # 3 parts, one row

    result = invoke("retry", "corpusmd", "--select", "garbled", "--output-format", "json", "--run-id", "ocrpass")
    assert result.exit_code == 0, result.output
    assert "run corpusmd: 3 documents selected" in result.output  # the two samples and zhlineskip's page 3
    wait_for("ocrpass", {"finished"})
    result = invoke("export", "corpusmd", "--format", "jsonl", "--to", str(tmp_path / "ds2"))
    assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in map(json.loads, (tmp_path / "ds2" / "part-00000.jsonl").read_text().splitlines())}
    assert len(rows) == len(frame)
    assert {p for p, r in rows.items() if r["run_id"] == "ocrpass"} == {
        "zh/example-single.pdf",
        "examples/example-single.pdf",
        "zhlineskip/zhlineskip.pdf",
    }
    assert json.loads(rows["zh/example-single.pdf"]["text"])["block_type"] == "Document"


def test_a_pathological_page_is_isolated_and_the_rest_converts(tmp_path):
    """20 pages, page 8 with 200,000 glyphs (9 s of text extraction on a quiet machine, more on a loaded one)
    under a 3 s + 0.1 s/page limit: the book's part that holds it is bisected down to that page, 19 pages
    convert. The other items take a tenth of a second of their 3.1-4 s limit (a fresh worker's imports are not
    theirs: tests/runtime/test_task_imports.py)."""
    pdfs = tmp_path / "pdfs"
    (pdfs / "other").mkdir(parents=True)
    (pdfs / "book.pdf").write_bytes(book_with_pathological_page(20, 7, 200_000))
    shutil.copy(CORPUS / "base" / "letter.pdf", pdfs / "other" / "letter.pdf")
    out = tmp_path / "out"
    status = submit(pdfs, out, "bisectbook", "--item-timeout", "3+0.1/page", "--split-pages", "10")
    assert (status["ok"], status["partial"], status["failed"]) == (4, 1, 0), status  # letter: 3 parts
    assert status["lost_pages"] == ["book.pdf page 8: timeout"]
    text = (out / "book" / "book.md").read_text(encoding="utf-8")
    assert [n for n in range(1, 21) if f"Page {n} of the book." in text] == [n for n in range(1, 21) if n != 8]
    assert "[hpcmarker: page 8 could not be converted: timeout" in text
    summary = json.loads(resolve_run("bisectbook").summary.read_text())
    assert [(p["pdf"], p["page"], p["status"]) for p in summary["lost_pages"]] == [("book.pdf", 8, "timeout")]
    assert (summary["documents_ok"], summary["documents_partial"], summary["poison"]) == (1, 1, [])
    records = read_manifests(resolve_run("bisectbook").manifests).records
    assert [r.item_id for r in records if r.status == "timeout"] == ["000000.r7-8"]
