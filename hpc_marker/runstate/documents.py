"""Documents: a run's manifest records seen per PDF (a split PDF is one document of several items). Pure.

`document_state` folds the newest record of each item of one PDF into one `DocumentState`: its
status (`ok` only when every item is ok and the items cover its pages from page 0 without a gap;
else the first failed item's status, or `incomplete`), pages, engine, LLM refinement and the
text-layer flags of all its items. `documents` does that for a run's records; `flag_share` is the
share of a document's checked pages that carry a flag (what `retry --select no-text|garbled` uses).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hpc_marker.runstate.manifest import ManifestRecord, latest_by_item

FLAGS = {"no-text": "empty_pages", "garbled": "garbled_pages"}  # selector -> the manifest field
SELECTORS = ("no-text", "garbled", "failed")  # what `retry --select` picks (submission/followup.py)


@dataclass(frozen=True)
class DocumentState:
    pdf: str
    status: str  # ok; the first failed item's status (failed, timeout, encrypted); incomplete
    error: str | None
    items: int
    pages: int
    page_start: int
    page_stop: int
    engine: str
    seconds: float
    finished: float
    degraded: str | None  # the first item's reason, when an item's LLM refinement was partial
    checked_pages: int  # pages whose text layer was checked (items with flags)
    empty_pages: list[int] | None  # None: no item was checked
    garbled_pages: list[int] | None


def _gap(records: list[ManifestRecord]) -> str | None:
    """Where the items of a document leave pages without a record (one line), or None."""
    expected = 0
    for record in records:
        if record.page_start > expected:
            return f"pages {expected + 1}-{record.page_start} have no record"
        expected = max(expected, record.page_stop)
    return None


def document_state(records: Iterable[ManifestRecord]) -> DocumentState:
    """One document from the newest record of each of its items (any order; at least one)."""
    items = sorted(records, key=lambda r: (r.page_start, r.page_stop))
    failed = next((r for r in items if r.status != "ok"), None)
    gap = None if failed else _gap(items)
    status, error = (failed.status, failed.error) if failed else ("incomplete", gap) if gap else ("ok", None)
    checked = [r for r in items if r.empty_pages is not None]
    return DocumentState(
        pdf=items[0].pdf, status=status, error=error, items=len(items), pages=sum(r.pages for r in items),
        page_start=items[0].page_start, page_stop=max(r.page_stop for r in items),
        engine=items[0].engine, seconds=round(sum(r.seconds for r in items), 3),
        finished=max(r.finished for r in items), degraded=next((r.degraded for r in items if r.degraded), None),
        checked_pages=sum(r.pages for r in checked),
        empty_pages=sorted(p for r in checked for p in r.empty_pages or []) if checked else None,
        garbled_pages=sorted(p for r in checked for p in r.garbled_pages or []) if checked else None)


def documents(records: Iterable[ManifestRecord]) -> dict[str, DocumentState]:
    """PDF -> its document, from every record of a run (a retried item's newest attempt wins)."""
    by_pdf: dict[str, list[ManifestRecord]] = {}
    for record in latest_by_item(list(records)).values():
        by_pdf.setdefault(record.pdf, []).append(record)
    return {pdf: document_state(items) for pdf, items in sorted(by_pdf.items())}


def flag_share(doc: DocumentState, selector: str) -> float:
    """The share of the document's checked pages flagged `selector` (no-text, garbled); 0 when unchecked."""
    flagged = getattr(doc, FLAGS[selector])
    return len(flagged) / doc.checked_pages if flagged and doc.checked_pages else 0.0
