"""The `benchmark` engine: a benchmark tool, not a conversion engine.

It produces exactly the `text` engine's output and then costs a fixed time per page
(HPCMARKER_BENCH_SECONDS_PER_PAGE, default 0.05 s), so scheduling, balancing and fault
handling can be measured and tested with a known, model-free cost per page. With
HPCMARKER_BENCH_NULL=1 it does not even open the PDF: one line per page of the item's range, for
measuring the pipeline's own costs (claims, commits, outputs) at 10^5 items and more. With
HPCMARKER_BENCH_START_ERROR=TEXT every worker fails to build it (EngineUnavailable(TEXT); with
`cache:TEXT`, EngineCacheMissing), as an engine whose models cannot load on the node does. An item that
`--force-ocr auto` sends to OCR costs HPCMARKER_BENCH_OCR_FACTOR times as much a page (default 1: the same),
to stand in for OCR's cost when measuring how the plan weighs those pages. With
HPCMARKER_BENCH_WORKLOAD=FILE (a Python file with `load()` and `work(pages)`) each worker runs `load()` once, as
a model load, and `work(pages)` on every item, after the fixed cost: real per-page work standing in for marker's
models (benchmarks/gpu_workload.py, used by benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from types import ModuleType

from hpc_marker.engines.base import (
    ConvertedDocument,
    EngineCacheMissing,
    EngineOptions,
    EngineUnavailable,
    page_marker,
)
from hpc_marker.engines.text import TextEngine

SECONDS_PER_PAGE_VARIABLE = "HPCMARKER_BENCH_SECONDS_PER_PAGE"
NULL_VARIABLE = "HPCMARKER_BENCH_NULL"
START_ERROR_VARIABLE = "HPCMARKER_BENCH_START_ERROR"
OCR_FACTOR_VARIABLE = "HPCMARKER_BENCH_OCR_FACTOR"
WORKLOAD_VARIABLE = "HPCMARKER_BENCH_WORKLOAD"


def load_workload(path: str) -> ModuleType:
    """The workload file's module, its `load()` run (EngineUnavailable when it cannot be loaded)."""
    spec = importlib.util.spec_from_file_location("hpcmarker_bench_workload", path)
    if spec is None or spec.loader is None or not Path(path).is_file():
        raise EngineUnavailable(f"{WORKLOAD_VARIABLE}={path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.load()
    return module


class BenchmarkEngine(TextEngine):
    name = "benchmark"

    def __init__(self, options: EngineOptions) -> None:
        error = os.environ.get(START_ERROR_VARIABLE)
        if error:
            unavailable = EngineCacheMissing if error.startswith("cache:") else EngineUnavailable
            raise unavailable(error.removeprefix("cache:"))
        super().__init__(options)
        workload = os.environ.get(WORKLOAD_VARIABLE)
        self.workload = load_workload(workload) if workload else None

    @classmethod
    def uses_gpu(cls) -> bool:
        """With a workload (benchmarks/gpu_workload.py does CUDA work): a local run gives each task a GPU."""
        return bool(os.environ.get(WORKLOAD_VARIABLE))

    def convert(self, pdf: Path, pages: range | None, ocr: bool | None = None) -> ConvertedDocument:
        start = time.monotonic()
        if os.environ.get(NULL_VARIABLE) == "1" and pages is not None:
            doc = ConvertedDocument(
                text="".join(page_marker(i) + f"page {i + 1}\n" for i in pages),
                metadata={"page_stats": [{"page_id": i, "text_chars": 7} for i in pages]},
            )
        else:
            doc = super().convert(pdf, pages)
        cost = float(os.environ.get(SECONDS_PER_PAGE_VARIABLE, "0.05")) * len(doc.metadata["page_stats"])
        cost *= float(os.environ.get(OCR_FACTOR_VARIABLE, "1")) if ocr else 1.0
        time.sleep(max(0.0, cost - (time.monotonic() - start)))
        if self.workload is not None:
            self.workload.work(len(doc.metadata["page_stats"]))
        doc.metadata["engine"] = self.name
        return doc
