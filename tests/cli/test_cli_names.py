"""Output names (planning/outnames.py) and output folders (runstate/output.py) through real local runs:
PDFs whose names differ only in case, or whose document folder would be another PDF's folder, each get
their own document on every filesystem; follow-up runs write to the same names; a run in another
--output-format keeps the documents of the first beside its own."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from inputs import EXAMPLES
from runkit import LOCAL_TEXT, invoke, manifest_records, read_summary, run_folder, run_local


def _casefolded(path: str) -> str:
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", path).casefold())


def test_names_that_collide_only_on_a_case_insensitive_filesystem_are_kept_apart():
    from hpc_marker.planning.outnames import output_names

    pdfs = [
        "x.pdf",
        "x.PDF",
        "X.pdf",
        "sub.pdf",
        "sub/in.pdf",
        ".hpcmarker.pdf",
        "Caf\u00e9.pdf",
        "cafe\u0301.pdf",
        "a/b.pdf",
    ]
    renamed = output_names(pdfs)
    names = {pdf: renamed.get(pdf, "") for pdf in pdfs}
    assert names["a/b.pdf"] == "" and names["sub/in.pdf"] == "" and names["Caf\u00e9.pdf"] == ""  # unchanged
    assert names["X.pdf"] == ""  # first in sorted order of those ending in .pdf: keeps its name
    assert names["x.PDF"] == "x__PDF"
    assert names["x.pdf"].startswith("x__pdf-")  # x__pdf would be x__PDF's folder: a hash of its name added
    assert names["sub.pdf"] == "sub__pdf"  # its folder would be sub/, where sub/in.pdf's document lives
    assert names[".hpcmarker.pdf"] == ".hpcmarker__pdf"  # the run folders' home
    assert names["cafe\u0301.pdf"].startswith("cafe\u0301__")  # the same name as Café.pdf once normalized
    finals = [name or path[:-4] for path, name in names.items()]
    folded = [_casefolded(name) for name in finals]
    assert len(set(folded)) == len(folded), finals
    assert not any(other.startswith(name + "/") for name in folded for other in folded)
    assert output_names(list(reversed(pdfs))) == renamed  # the order of discovery does not matter
    assert output_names([f"d{n}/p{n}.pdf" for n in range(100)]) == {}  # nothing shared: nothing renamed


def _same_case_pdfs(folder: Path) -> dict[str, Path]:
    """x.pdf, x.PDF, X.pdf (three different PDFs), and sub.pdf beside sub/in.pdf."""
    sources = {
        "x.pdf": EXAMPLES / "en" / "upref.pdf",
        "x.PDF": EXAMPLES / "zh" / "example-single.pdf",
        "X.pdf": EXAMPLES / "zh" / "6-7b.pdf",
        "sub.pdf": EXAMPLES / "en" / "ltxtable.pdf",
        "sub/in.pdf": EXAMPLES / "en" / "ltnews07.pdf",
    }
    (folder / "sub").mkdir(parents=True)
    for name, source in sources.items():
        shutil.copy(source, folder / name)
    return sources


@pytest.mark.slow  # more than 5 s: whole local runs
def test_pdfs_named_alike_each_get_their_own_document_and_follow_ups_reuse_the_names(tmp_path):
    pdfs, out = tmp_path / "pdfs", tmp_path / "out"
    sources = _same_case_pdfs(pdfs)
    if len(list(pdfs.iterdir())) < 4:
        pytest.skip("this filesystem cannot hold x.pdf and X.pdf apart (the unit test above covers the names)")
    run = run_local(pdfs, out, "--run-id", "names", "--split-pages", "2")  # x.PDF (3 pages) is split
    assert "note: 3 PDFs would share a document folder with another" in run.output, run.output
    assert "x.PDF -> x__PDF/x__PDF.md" in run.output, run.output
    records = {r.pdf: r for r in manifest_records(run.paths)}
    table = pd.read_csv(run.paths.manifest_csv, keep_default_na=False, dtype=str)
    outputs = {pdf: set(table.loc[table["pdf"] == pdf, "output"]) for pdf in sources}
    assert all(len(found) == 1 for found in outputs.values()), outputs  # a split PDF's parts: its one document
    outputs = {pdf: Path(found.pop()) for pdf, found in outputs.items()}
    assert outputs["X.pdf"] == out / "X" / "X.md" and outputs["x.pdf"].parent.name.startswith("x__pdf-")
    assert outputs["x.PDF"] == out / "x__PDF" / "x__PDF.md" and outputs["sub.pdf"] == out / "sub__pdf" / "sub__pdf.md"
    assert outputs["sub/in.pdf"] == out / "sub" / "in" / "in.md"
    for pdf, path in outputs.items():
        meta = json.loads(path.with_name(path.stem + "_meta.json").read_text())
        assert meta["hpcmarker_source"]["size"] == sources[pdf].stat().st_size, pdf  # its own PDF's document
    assert set(records) == set(sources)
    assert read_summary(run.paths)["documents_ok"] == 5

    again = invoke("retry", "names", "--select", "garbled", "--engine", "benchmark", "--run-id", "names2")
    assert again.exit_code == 0, again.output
    redone = pd.read_csv(run_folder(out, "names2").manifest_csv, keep_default_na=False, dtype=str)
    assert set(redone["pdf"]) == {"x.PDF"} and set(redone["output"]) == {str(out / "x__PDF" / "x__PDF.md")}
    meta = json.loads((out / "x__PDF" / "x__PDF_meta.json").read_text())
    assert meta["hpcmarker_source"]["engine"] == "benchmark"
    assert json.loads((out / "X" / "X_meta.json").read_text())["hpcmarker_source"]["engine"] == "text"

    exported = invoke("export", "names", "--format", "jsonl", "--to", tmp_path / "ds")
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in (tmp_path / "ds" / "part-00000.jsonl").read_text().splitlines()]
    assert {r["path"]: r["status"] for r in rows} == dict.fromkeys(sources, "ok")
    assert {r["path"]: r["output"] for r in rows} == {pdf: str(path) for pdf, path in outputs.items()}

    # the same folder again: every document is found under its name, current but x.PDF's (benchmark's now)
    third = run_local(pdfs, out, "--run-id", "names3", "--split-pages", "2")
    assert {r.pdf for r in manifest_records(third.paths)} == {"x.PDF"}, third.output
    assert json.loads((out / "x__PDF" / "x__PDF_meta.json").read_text())["hpcmarker_source"]["engine"] == "text"


@pytest.mark.slow  # more than 5 s: whole local runs
def test_another_output_format_on_the_same_out_keeps_the_first_formats_documents(tmp_path, sample_pdfs):
    out = tmp_path / "out"
    run_local(sample_pdfs, out, "--run-id", "md")
    upref = out / "en" / "upref"
    markdown = (upref / "upref.md").read_text()
    images = sorted(p.name for p in upref.iterdir() if p.suffix not in (".md", ".json"))
    run_local(sample_pdfs, out, "--run-id", "js", "--output-format", "json")  # every document again, in JSON
    assert (upref / "upref.md").read_text() == markdown  # kept beside the new JSON
    assert json.loads((upref / "upref.json").read_text())["block_type"] == "Document"
    assert sorted(p.name for p in upref.iterdir() if p.suffix not in (".md", ".json")) == images
    assert json.loads((upref / "upref_meta.json").read_text())["hpcmarker_source"]["format"] == "json"
    assert json.loads((upref / "upref_meta-markdown.json").read_text())["hpcmarker_source"]["format"] == "markdown"
    for run_id, fmt in (("md", "markdown"), ("js", "json")):  # each run's export reads its own format's files
        exported = invoke("export", run_id, "--format", "jsonl", "--to", tmp_path / run_id)
        assert exported.exit_code == 0 and "not ok" not in exported.output, exported.output
        rows = [json.loads(line) for line in (tmp_path / run_id / "part-00000.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and {r["format"] for r in rows} == {fmt}
        assert all(r["text"] == Path(r["output"]).read_text() for r in rows)
    # both formats are current now: a third run in either has nothing to do
    for fmt in ("markdown", "json"):
        again = invoke("submit", "--pdfs", sample_pdfs, "--out", out, *LOCAL_TEXT, "--output-format", fmt)
        assert again.exit_code == 0 and "already have outputs" in again.output, again.output
    run_local(sample_pdfs, out, "--run-id", "md2", "--force")  # markdown again: the JSON stays, once
    assert json.loads((upref / "upref.json").read_text())["block_type"] == "Document"
    assert sorted(p.name for p in upref.iterdir() if "meta" in p.name) == ["upref_meta-json.json", "upref_meta.json"]
