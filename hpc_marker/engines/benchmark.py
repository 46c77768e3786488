"""The `benchmark` engine: a benchmark tool, not a conversion engine.

It produces exactly the `text` engine's output and then costs a fixed time per page
(HPCMARKER_BENCH_SECONDS_PER_PAGE, default 0.05 s), so scheduling, balancing and fault
handling can be measured and tested with a known, model-free cost per page.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hpc_marker.engines.base import ConvertedDocument
from hpc_marker.engines.text import TextEngine

SECONDS_PER_PAGE_VARIABLE = "HPCMARKER_BENCH_SECONDS_PER_PAGE"


class BenchmarkEngine(TextEngine):
    name = "benchmark"

    def convert(self, pdf: Path, pages: range | None) -> ConvertedDocument:
        start = time.monotonic()
        doc = super().convert(pdf, pages)
        cost = float(os.environ.get(SECONDS_PER_PAGE_VARIABLE, "0.05")) * len(doc.metadata["page_stats"])
        time.sleep(max(0.0, cost - (time.monotonic() - start)))
        doc.metadata["engine"] = self.name
        return doc
