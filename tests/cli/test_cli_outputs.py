"""The two-pass workflow on this machine (local executor): a fast `text` run in JSON with a split PDF,
`retry --select garbled` with other settings as a follow-up run, and `export` of the result."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from runkit import LOCAL_TEXT, invoke

from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.manifest import read_manifests


@pytest.mark.slow
def test_json_run_then_garbled_documents_again_then_export(tmp_path, sample_pdfs):
    out = tmp_path / "out"
    first = invoke(
        "submit",
        "--pdfs",
        str(sample_pdfs),
        "--out",
        str(out),
        "--gpus",
        "2",
        *LOCAL_TEXT,
        "--output-format",
        "json",
        "--split-pages",
        "2",
        "--run-id",
        "first",
    )
    assert first.exit_code == 0, first.output
    assert "3 garbled pages in 1 document" in first.output and "; JSON in" in first.output
    documents = sorted(
        p for p in out.rglob("*.json") if ".hpcmarker" not in p.parts and not p.name.endswith("_meta.json")
    )
    assert len(documents) == 6 and not list(out.rglob("*.md"))
    for path in documents:
        assert json.loads(path.read_text())["block_type"] == "Document"
    merged = json.loads((out / "en" / "ltxtable" / "ltxtable.json").read_text())  # 3 pages, 2 parts
    assert [page["id"] for page in merged["children"]] == ["/page/0/Page/0", "/page/1/Page/0", "/page/2/Page/0"]
    records = read_manifests(resolve_run("first").manifests).records
    assert len(records) == 8 and all(r.output.endswith(".json") for r in records)  # two PDFs of 3 pages split
    assert sorted(p for r in records if r.pdf == "zh/example-single.pdf" for p in r.garbled_pages) == [0, 1, 2]
    table = pd.read_csv(resolve_run("first").manifest_csv, keep_default_na=False, dtype=str)
    assert table.loc[table["pdf"] == "zh/example-single.pdf", "garbled_pages"].tolist() == ["0 1", "2"]
    assert set(table.loc[table["pdf"] != "zh/example-single.pdf", "garbled_pages"]) == {""}

    wrong = invoke("retry", "first", "--engine", "benchmark")
    assert wrong.exit_code == 2 and "add --select" in wrong.output
    listed = invoke("retry", "first", "--select", "garbled", "--dry-run")
    assert listed.exit_code == 0 and listed.output.splitlines()[1:] == ["  zh/example-single.pdf"], listed.output
    second = invoke(
        "retry",
        "first",
        "--select",
        "garbled",
        "--engine",
        "benchmark",
        "--output-format",
        "markdown",
        "--run-id",
        "second",
    )
    assert second.exit_code == 0, second.output
    redone = out / "zh" / "example-single"
    assert sorted(p.name for p in redone.iterdir()) == [
        "example-single.json",
        "example-single.md",  # json kept
        "example-single_meta-json.json",
        "example-single_meta.json",
    ]
    assert json.loads((resolve_run("second").record).read_text())["parent"]["run_id"] == "first"

    exported = invoke("export", "first", "--format", "parquet", "--to", str(tmp_path / "ds"))
    assert exported.exit_code == 0, exported.output
    frame = pd.read_parquet(tmp_path / "ds").set_index("path")
    assert len(frame) == 6 and set(frame["status"]) == {"ok"}
    row = frame.loc["zh/example-single.pdf"]
    assert (row["run_id"], row["engine"], row["format"]) == ("second", "benchmark", "markdown")
    assert row["text"] == (redone / "example-single.md").read_text()
    for path, row in frame.drop(index="zh/example-single.pdf").iterrows():
        assert row["text"] == Path(row["output"]).read_text() and row["format"] == "json", path
    assert frame.loc["en/ltxtable.pdf", "pages"] == 3
