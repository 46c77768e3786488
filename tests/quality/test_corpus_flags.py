"""The shared corpus and the shipped examples raise no output flag (issue 23): each PDF converted by the `text`
engine, checked against its text layer as pdfium reads it (what a `marker` run is compared with), with the
packaged thresholds. The statistics behind the thresholds: benchmarks/measure_output_flags.py, docs/quality.md."""

from __future__ import annotations

import pytest
from inputs import CORPUS, EXAMPLES

from hpc_marker.engines import EngineOptions, create_engine
from hpc_marker.quality.document import pdf_text_layer, thresholds
from hpc_marker.quality.flags import check_output


@pytest.mark.corpus
@pytest.mark.slow
def test_the_corpus_and_the_examples_raise_no_output_flag():
    engine, limits = create_engine("text", EngineOptions()), thresholds()
    pdfs = sorted(CORPUS.rglob("*.pdf")) + sorted(EXAMPLES.rglob("*.pdf"))
    assert len(pdfs) >= 60
    flagged, cjk_pages = {}, 0
    for pdf in pdfs:
        doc = engine.convert(pdf, None)
        pages = len(doc.metadata["page_stats"])
        layer = pdf_text_layer(pdf, range(pages))
        assert layer is not None, pdf
        cjk_pages += sum(1 for text in layer.values() if sum("\u4e00" <= c <= "\u9fff" for c in text) >= 20)
        field = check_output(doc.text, doc.format, True, pages, layer, limits).field()
        if field:
            flagged[str(pdf.relative_to(pdf.parents[1]))] = field
    assert not flagged, flagged
    assert cjk_pages > 300  # lost-script was judged on the Chinese pages, and kept
