"""Worker processes: each creates its engine once and converts items into staging folders.

Workers are started with the `spawn` method (never `fork` after torch or CUDA is loaded),
cap their threads before importing any engine, and ask the kernel to end them when their
task process dies, so no worker outlives a killed or cancelled task.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from hpc_marker.engines import EngineError, EngineOptions, create_engine
from hpc_marker.runstate.output import stage_document
from hpc_marker.runtime.limits import cap_memory
from hpc_marker.runtime.threads import cap_threads
from hpc_marker.util.processes import die_with_parent

_STORAGE_FULL = (errno.ENOSPC, errno.EDQUOT)


class OutputUnwritable(EngineError):
    """The output could not be written; `storage_full` when the disk or quota is full."""

    def __init__(self, message: str, errno_value: int | None = None) -> None:
        super().__init__(message, errno_value)
        self.storage_full = errno_value in _STORAGE_FULL

    def __str__(self) -> str:
        return str(self.args[0])

_ENGINE = None
_ENGINE_SPEC: tuple[str, dict] | None = None


def init_worker(engine_name: str, options: dict, threads: int, memory_bytes: int | None = None) -> None:
    global _ENGINE, _ENGINE_SPEC
    die_with_parent()
    cap_threads(threads)
    cap_memory(memory_bytes)
    if options.get("llm"):  # each worker has its own path at the LLM front, so failures count per item
        options = dict(options, llm=dict(options["llm"], task=f"{options['llm']['task']}.{os.getpid()}"))
    _ENGINE_SPEC = (engine_name, options)
    _ENGINE = create_engine(engine_name, EngineOptions.from_json(options))  # models load now, before any item


def _llm_failures() -> int | None:
    """Failed and timed-out LLM calls of this worker so far (None without a service, or unknown)."""
    llm = _ENGINE_SPEC[1].get("llm") if _ENGINE_SPEC else None
    if not llm:
        return None
    from hpc_marker.llm.client import Endpoint, ServiceUnavailable

    try:
        stats = Endpoint(url=llm["url"], model=llm["model"], secret=llm["secret"]).task_stats(llm["task"])
    except ServiceUnavailable:
        return None
    return stats["failures"] + stats["timeouts"]


def convert_to_staging(pdf_path: str, page_start: int, page_stop: int, staging_root: str, name: str,
                       stem: str) -> tuple[str, str | None]:
    """Convert pages [page_start, page_stop) of one PDF into a staging folder.

    Returns (staging folder, why the LLM refinement was degraded or None)."""
    assert _ENGINE is not None, "init_worker was not called (or could not build the engine)"
    failures_before = _llm_failures()
    doc = _ENGINE.convert(Path(pdf_path), range(page_start, page_stop))
    degraded = doc.metadata.get("llm", {}).get("degraded")
    failures_after = _llm_failures()
    if not degraded and failures_before is not None and failures_after is not None and failures_after > failures_before:
        degraded = f"{failures_after - failures_before} LLM calls failed or timed out; marker kept its own output there"
    stat = Path(pdf_path).stat()
    doc.metadata["hpcmarker_source"] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "engine": _ENGINE.name,
                                        "settings": _ENGINE_SPEC[1].get("output_settings")}
    try:
        return str(stage_document(Path(staging_root), name, stem, doc)), degraded
    except OSError as exc:
        raise OutputUnwritable(f"cannot write output: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else ""),
                               exc.errno) from None
