"""The benchmark engine: the text engine's output at a known cost per page; its null mode opens nothing."""

from __future__ import annotations

from inputs import EXAMPLES

from hpc_marker.engines.base import EngineOptions, page_marker
from hpc_marker.engines.benchmark import (
    NULL_VARIABLE,
    SECONDS_PER_PAGE_VARIABLE,
    BenchmarkEngine,
)
from hpc_marker.engines.text import TextEngine


def test_same_text_as_the_text_engine_and_null_mode_writes_a_line_per_page(monkeypatch, tmp_path):
    monkeypatch.setenv(SECONDS_PER_PAGE_VARIABLE, "0")
    pdf = EXAMPLES / "en" / "upref.pdf"
    engine = BenchmarkEngine(EngineOptions())
    doc = engine.convert(pdf, range(2))
    assert doc.text == TextEngine(EngineOptions()).convert(pdf, range(2)).text
    assert doc.metadata["engine"] == "benchmark"
    monkeypatch.setenv(NULL_VARIABLE, "1")
    null = engine.convert(tmp_path / "never-opened.pdf", range(3, 5))
    assert null.text == page_marker(3) + "page 4\n" + page_marker(4) + "page 5\n"
    assert (null.format, [p["page_id"] for p in null.metadata["page_stats"]]) == ("markdown", [3, 4])
