"""Engines: what converts one work item (a PDF or a page range of it) to Markdown.

`create_engine(name, options)` is the only way the rest of hpcmarker gets an engine;
`check_engine(name, options)` is the cheap preflight `submit` runs before anything is submitted;
`check_node(name, options)` what each task checks before it starts a worker (caches, binaries).

  base.py         the engine contract: EngineOptions in, one ConvertedDocument out; the engine errors
  marker.py       the `marker` engine: marker-pdf's Python API in-process (marker 1.10.x and 2.0.x)
  markeroptions.py  marker's CLI options and LLM service settings from EngineOptions (pure; no marker import)
  text.py         the `text` engine: the PDF's own text layer through pdftext; no models, no GPU
  benchmark.py    the `benchmark` engine: the text engine's output at a fixed cost per page
  llmtiming.py    a document's LLM wait: the union of its LLM calls' intervals (both engines' clock)
  markerservices.py  marker's own LLM service classes with that clock (imports marker; marker loads it by path)
  formats.py      output formats: what a document is in each of marker's renderers, how its pieces join
  textlayer.py    per-page text-layer flags: empty, garbled (pure)
  cachepieces.py  marker's missing cache pieces in words: what prefetch fetches, what a node must have (pure)
"""

from __future__ import annotations

from hpc_marker.engines.base import (
    ConvertedDocument,
    Engine,
    EngineCacheMissing,
    EngineError,
    EngineOptions,
    EngineUnavailable,
    output_settings,
)

ENGINE_NAMES = ("marker", "text", "benchmark")  # benchmark: text output at a fixed cost per page


def _engine_class(name: str) -> type:
    if name == "text":
        from hpc_marker.engines.text import TextEngine

        return TextEngine
    if name == "benchmark":
        from hpc_marker.engines.benchmark import BenchmarkEngine

        return BenchmarkEngine
    if name == "marker":
        from hpc_marker.engines.marker import MarkerEngine

        return MarkerEngine
    raise EngineUnavailable(f"unknown engine {name!r}; valid engines: {', '.join(ENGINE_NAMES)}")


def check_engine(name: str, options: EngineOptions) -> None:
    """Raise EngineUnavailable with a one-line reason when `name` cannot run with `options` here."""
    _engine_class(name).check(options)


def check_node(name: str, options: EngineOptions, server: bool = False) -> None:
    """Raise EngineCacheMissing or EngineUnavailable (one short line) when this node lacks what the
    engine needs to start (its caches, the binaries it runs); engines that need nothing pass. `server`:
    the task starts the engine's inference server itself (runtime/inference.py)."""
    node_check = getattr(_engine_class(name), "check_node", None)
    if node_check is not None:
        node_check(options, server=server)


def engine_uses_gpu(name: str) -> bool:
    """Whether the engine's workers do GPU work, so that a local run gives each task a GPU: marker, and an engine
    whose class says so at this moment (`uses_gpu()`: the benchmark engine with a GPU workload)."""
    uses = getattr(_engine_class(name), "uses_gpu", None)
    return name == "marker" or bool(uses is not None and uses())


def engine_startup_seconds(name: str) -> float:
    """Time a fresh worker may need to build the engine (load models) before its first item."""
    return float(getattr(_engine_class(name), "startup_seconds", 60.0))


def create_engine(name: str, options: EngineOptions) -> Engine:
    """Build an engine once per worker process (models are loaded here, not per item)."""
    return _engine_class(name)(options)


__all__ = [
    "ENGINE_NAMES",
    "ConvertedDocument",
    "Engine",
    "EngineCacheMissing",
    "EngineError",
    "EngineOptions",
    "EngineUnavailable",
    "check_engine",
    "check_node",
    "create_engine",
    "engine_startup_seconds",
    "output_settings",
]
