"""Rows: one per document of a run (and its follow-up runs), streamed from their manifests.

Memory stays bounded whatever the run's size: the manifests are indexed by document
(runstate/docindex.py: 22 bytes a line), each document's lines are read back from their files, its
row is built, and its text and metadata are read from its files only while that row is written.
Nothing holds the records or the texts of the whole run.

A document's row comes from the newest run of the lineage (RUN, then its follow-ups by creation)
in which the document is ok, else from the newest run that has it; within a run, each item's newest
record counts (runstate/documents.py). An ok document whose file is gone is `unreadable`; one whose
file on disk is another run's output (another engine or format) is `replaced`; one whose file covers
other pages than the run's records (a part never recorded) is `incomplete`. Rows are in the order
of their `id` (sha256 of the PDF's relative path).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_marker.planning.store import out_names
from hpc_marker.runstate.docindex import ManifestIndex, document_hash
from hpc_marker.runstate.documents import DocumentState, document_state
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import latest_by_item
from hpc_marker.runstate.output import document_file, document_stem, read_meta
from hpc_marker.runstate.record import RunRecord
from hpc_marker.util.text import one_line


@dataclass(frozen=True)
class RunSource:
    """One run of the lineage; `rank` orders them, oldest first."""

    rank: int
    paths: RunPaths
    record: RunRecord
    out_names: dict[str, str] = field(default_factory=dict)  # its plan's renamed documents (planning/outnames.py)

    @property
    def output_format(self) -> str:
        return self.record.engine_options.output_format


def lineage(paths: RunPaths, follow_ups: bool = True) -> list[RunSource]:
    """RUN, and with `follow_ups` every run beside it that redoes its documents (`retry --select`),
    their follow-ups too, oldest first."""
    first = paths.load_record()
    runs = [(first.created, paths, first)]
    if follow_ups:
        others = []
        for folder in sorted(paths.root.parent.iterdir()):
            if folder != paths.root and (folder / "run.json").is_file():
                other = RunPaths(folder)
                others.append((other.load_record(), other))
        family = {first.run_id}
        for record, other in sorted(others, key=lambda pair: pair[0].created):
            if record.parent and record.parent.run_id in family:
                family.add(record.run_id)
                runs.append((record.created, other, record))
    return [
        RunSource(rank, p, r, out_names(p.plan)) for rank, (_, p, r) in enumerate(sorted(runs, key=lambda run: run[0]))
    ]


def document_id(relpath: str) -> str:
    """The row's stable id: the first 128 bits of sha256 of the PDF's relative path, in hex."""
    return document_hash(relpath).hex()[:32]


def choose(states: dict[int, DocumentState]) -> int:
    """The run (rank) a document's row comes from: the newest where it is ok, else where it is partial,
    else the newest."""
    for status in ("ok", "partial"):
        found = [rank for rank, state in states.items() if state.status == status]
        if found:
            return max(found)
    return max(states)


def index_of(sources: list[RunSource]) -> ManifestIndex:
    return ManifestIndex.build([source.paths.manifests for source in sources])


def documents(sources: list[RunSource], index: ManifestIndex) -> Iterator[tuple[RunSource, DocumentState]]:
    """Each document of the lineage, once, with the run its row comes from, in `id` order."""
    for _pdf, by_rank in index.by_document():
        states = {rank: document_state(latest_by_item(records).values()) for rank, records in by_rank.items()}
        rank = choose(states)
        yield sources[rank], states[rank]


def _made_by(made: dict, source: RunSource, doc: DocumentState) -> tuple[str, str | None]:
    """Whether the document on disk is this run's output ("ok"), another run's ("replaced": a later
    follow-up wrote it) or covers other pages ("incomplete": a part was never recorded)."""
    if made.get("engine", doc.engine) != doc.engine or made.get("format", "markdown") != source.output_format:
        return "replaced", (
            f"the document on disk is {made.get('engine')}'s {made.get('format', 'markdown')}, "
            f"not run {source.record.run_id}'s ({doc.engine}, {source.output_format})"
        )
    pages = made.get("pages", [doc.page_start, doc.page_stop])
    if pages != [doc.page_start, doc.page_stop]:
        return "incomplete", (
            f"the document on disk has pages {pages[0] + 1}-{pages[1]}, the run's records "
            f"{doc.page_start + 1}-{doc.page_stop}"
        )
    return "ok", None


def build_row(source: RunSource, doc: DocumentState) -> dict[str, Any]:
    """The export row of one document; an ok one's text and metadata are read from its files."""
    record, output_format = source.record, source.output_format
    out_name = source.out_names.get(doc.pdf, "")
    path = document_file(Path(record.out_dir), doc.pdf, output_format, out_name)
    status, error, text, metadata = doc.status, doc.error, None, None
    if status in ("ok", "partial"):  # partial: a placeholder stands for each lost page
        try:
            text = path.read_text(encoding="utf-8")
            meta = read_meta(path.parent, document_stem(doc.pdf, out_name), output_format)
        except (OSError, ValueError) as exc:
            status, error = "unreadable", f"cannot read the output: {one_line(exc, with_type=True)}"
        else:
            status, error = _made_by(meta.get("hpcmarker_source") or {}, source, doc)
            if status == "ok":
                status = doc.status
                metadata = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
            else:
                text = None
    llm = None
    if record.llm and status in ("ok", "partial"):
        llm = "degraded" if doc.degraded else "refined"
    return {
        "id": document_id(doc.pdf),
        "path": doc.pdf,
        "text": text,
        "status": status,
        "error": error,
        "format": output_format,
        "engine": doc.engine,
        "run_id": record.run_id,
        "pages": doc.pages,
        "page_start": doc.page_start,
        "page_stop": doc.page_stop,
        "llm": llm,
        "llm_degraded": doc.degraded if llm == "degraded" else None,
        "empty_pages": doc.empty_pages,
        "garbled_pages": doc.garbled_pages,
        "lost_pages": doc.lost_pages,
        "output_flags": doc.output_flags,
        "source": str(Path(record.pdfs_root) / doc.pdf),
        "output": str(path) if text is not None else None,
        "metadata": metadata,
        "seconds": doc.seconds,
        "finished": doc.finished,
    }
