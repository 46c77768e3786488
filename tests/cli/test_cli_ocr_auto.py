"""A whole local run with `--force-ocr auto` (issue 23, item 2): each document's decision reaches its conversion,
and the summary, status and the run's last lines say how many pages went each way."""

from __future__ import annotations

import json

import pytest
from inputs import scanned_pdf
from runkit import document, invoke, run_local

from hpc_marker.engines import benchmark
from hpc_marker.engines.base import EngineOptions

ROUTED = {"ocr": {"documents": 2, "pages": 8, "pages_ok": 8}, "text": {"documents": 5, "pages": 8, "pages_ok": 8}}
LINE = (
    "--force-ocr auto: 2 documents (8 pages) routed to OCR, 5 documents (8 pages) to their text layer; "
    "8 and 8 pages converted"
)


@pytest.mark.slow
def test_an_auto_run_routes_each_document_and_counts_the_pages_each_way(tmp_path, sample_pdfs, monkeypatch):
    (sample_pdfs / "scan.pdf").write_bytes(scanned_pdf(5))
    monkeypatch.setenv(benchmark.SECONDS_PER_PAGE_VARIABLE, "0.01")
    monkeypatch.setenv(benchmark.OCR_FACTOR_VARIABLE, "3")
    out = tmp_path / "out"
    run = run_local(sample_pdfs, out, "--engine", "benchmark", "--force-ocr", "auto", "--gpus", "2")
    assert "16 pages (8 to OCR)" in run.output
    assert LINE in run.output
    assert run.summary["text_layer"]["routed"] == ROUTED
    status = json.loads(invoke("status", "--json").output)
    assert status["text_layer"]["routed"] == ROUTED
    assert LINE.split(";")[0] in " ".join(invoke("status").output.split())  # the table's caption wraps it
    for pdf, ocr in (("scan.pdf", True), ("zh/example-single.pdf", True), ("en/upref.pdf", False)):
        meta = json.loads(document(out, pdf).with_name(f"{document(out, pdf).stem}_meta.json").read_text())
        assert meta["hpcmarker_source"]["ocr"] is ocr, pdf
        assert meta["hpcmarker_source"]["settings"]["ocr_auto"] is True


def test_a_run_without_auto_records_no_routing(tmp_path, sample_pdfs):
    options = EngineOptions()
    assert "ocr_auto" not in options.to_json()  # documents converted before auto existed are still up to date
    assert EngineOptions.from_json({**options.to_json(), "ocr_auto": True}).ocr_auto


def test_the_benchmark_engine_costs_more_for_an_ocr_item(monkeypatch, sample_pdfs):
    slept: list[float] = []
    monkeypatch.setattr(benchmark.time, "sleep", slept.append)
    monkeypatch.setenv(benchmark.SECONDS_PER_PAGE_VARIABLE, "10")
    monkeypatch.setenv(benchmark.OCR_FACTOR_VARIABLE, "3")
    engine = benchmark.BenchmarkEngine(EngineOptions(ocr_auto=True))
    pdf = sample_pdfs / "en" / "upref.pdf"  # 2 pages
    for ocr in (None, False, True):
        engine.convert(pdf, range(2), ocr=ocr)
    assert [round(s, -1) for s in slept] == [20, 20, 60]
