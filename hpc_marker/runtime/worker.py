"""Worker processes: each creates its engine once and converts items into staging folders.

Workers are started with the `spawn` method (never `fork` after torch or CUDA is loaded),
cap their threads before importing any engine, and ask the kernel to end them when their
task process dies, so no worker outlives a killed or cancelled task.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from hpc_marker.engines import EngineError, EngineOptions, create_engine
from hpc_marker.engines.textlayer import flagged_pages
from hpc_marker.quality.document import output_fields
from hpc_marker.runstate.output import stage_document
from hpc_marker.runtime.limits import cap_memory
from hpc_marker.runtime.threads import cap_threads
from hpc_marker.util.processes import die_with_parent

STORAGE_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # the disk or the quota is full


@dataclass(frozen=True)
class Converted:
    """A worker's result for one item: where its output was staged, and the marks its records carry."""

    staging: str  # the staging folder (runstate/output.py), renamed into place once the item is committed
    degraded: str | None = None  # why the LLM refinement was degraded, if it was
    llm_failover: str | None = None  # which of its LLM requests moved to another replica, if any did
    flags: dict = field(default_factory=dict)  # the manifest's text-layer fields: the empty and the garbled pages
    llm_seconds: float = 0.0  # how long the worker waited on the LLM service for it (the engine's LLM calls)


class OutputUnwritable(EngineError):
    """The output could not be written; `storage_full` when the disk or quota is full."""

    def __init__(self, message: str, errno_value: int | None = None) -> None:
        super().__init__(message, errno_value)
        self.storage_full = errno_value in STORAGE_FULL_ERRNOS

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
        options = dict(options, llm=options["llm"].for_worker(os.getpid()))
    _ENGINE_SPEC = (engine_name, options)
    _ENGINE = create_engine(engine_name, EngineOptions.from_json(options))  # models load now, before any item


def _llm_counts() -> tuple[int, int] | None:
    """(LLM calls failed or timed out, calls moved to another replica) of this worker so far, as its
    endpoint (the front, or the task's relay) counted them; None without a service, or unknown."""
    llm = _ENGINE_SPEC[1].get("llm") if _ENGINE_SPEC else None
    if not llm:
        return None
    from hpc_marker.llm.client import ServiceUnavailable

    try:
        stats = llm.endpoint.task_stats(llm.task)
    except ServiceUnavailable:
        return None
    return stats["failures"] + stats["timeouts"], stats["failovers"]


def marker_llm_errors(metadata: dict) -> int:
    """LLM calls marker counted as failed in a document (each page's block_metadata.llm_error_count):
    marker turns a failed call into a log line and keeps its own output. Pure."""
    pages = metadata.get("page_stats") or []
    return sum(
        int((page.get("block_metadata") or {}).get("llm_error_count") or 0) for page in pages if isinstance(page, dict)
    )


def llm_marks(
    metadata: dict, before: tuple[int, int] | None, after: tuple[int, int] | None
) -> tuple[str | None, str | None]:
    """(why the item's refinement was degraded, which of its LLM calls moved to another replica), from
    the document's own metadata and its endpoint's counters before and after the item. Pure."""
    degraded = (metadata.get("llm") or {}).get("degraded")
    failed = after[0] - before[0] if before is not None and after is not None else 0
    if not degraded and marker_llm_errors(metadata):
        degraded = f"{marker_llm_errors(metadata)} of marker's LLM calls failed; marker kept its own output there"
    elif not degraded and failed > 0:
        degraded = f"{failed} LLM calls failed or timed out; marker kept its own output there"
    moved = after[1] - before[1] if before is not None and after is not None else 0
    failover = f"{moved} LLM requests moved to another replica (theirs stopped answering)" if moved > 0 else None
    return degraded, failover


def convert_to_staging(
    pdf_path: str, page_start: int, page_stop: int, staging_root: str, name: str, stem: str, ocr: bool | None = None
) -> Converted:
    """Convert pages [page_start, page_stop) of one PDF into a staging folder: the folder, why the LLM refinement
    was degraded, which LLM requests moved to another replica, and the manifest's flags (the text layer's empty
    and garbled pages, and the output flags, quality/). `ocr`: the item's decision under --force-ocr auto."""
    assert _ENGINE is not None, "init_worker was not called (or could not build the engine)"
    before = _llm_counts()
    pages = range(page_start, page_stop)
    doc = _ENGINE.convert(Path(pdf_path), pages, ocr=ocr)
    degraded, failover = llm_marks(doc.metadata, before, _llm_counts())
    waited = float((doc.metadata.get("llm") or {}).pop("seconds", 0.0))  # a clock, not part of the output's metadata
    if doc.metadata.get("llm") == {}:  # the marker engine's: its LLM wait alone
        del doc.metadata["llm"]
    stat = Path(pdf_path).stat()
    doc.metadata["hpcmarker_source"] = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "engine": _ENGINE.name,
        "format": doc.format,
        "pages": [page_start, page_stop],
        "settings": _ENGINE_SPEC[1].get("output_settings"),
        **({"ocr": ocr} if ocr is not None else {}),  # --force-ocr auto: whether this document went to OCR
    }
    options = _ENGINE_SPEC[1]
    flags = flagged_pages(doc.metadata.get("text_layer"))
    flags.update(output_fields(doc, Path(pdf_path), pages, options.get("quality"), options.get("paginate", True)))
    try:
        return Converted(str(stage_document(Path(staging_root), name, stem, doc)), degraded, failover, flags, waited)
    except OSError as exc:
        raise OutputUnwritable(
            f"cannot write output: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else ""), exc.errno
        ) from None
