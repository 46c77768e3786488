"""Failed documents: which documents of a run failed and why (the first few), for `status` and `logs`.

From summary.json once the run is collected (its `failures`: the newest record of each failed item,
by PDF and page), else from the task manifests, read only when the run has failed items. A document
counts once, with its first failed item (a split PDF's part, a page range).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from hpc_marker.runstate.layout import RunPaths

FAILED_SHOWN = 20  # documents listed by `status`; summary.json and manifest.csv have every one


@dataclass(frozen=True)
class FailedDocument:
    pdf: str
    pages: str  # the failed item's pages, 1-based ("1-12"); "" where the PDF could not be read at all
    status: str  # failed, timeout, encrypted
    error: str  # its one-line reason
    task: int | None  # the task that tried it last: its log tells more (None: not recorded)

    def line(self) -> str:
        pages = f" (pages {self.pages})" if self.pages else ""
        said = self.error if self.error.startswith(f"{self.status}:") else f"{self.status}: {self.error}"
        return f"  {self.pdf}{pages}: {said}"


def failed_documents(paths: RunPaths, limit: int = FAILED_SHOWN) -> tuple[list[FailedDocument], int]:
    """The first `limit` failed documents of the run (by PDF), and how many failed in all."""
    first: dict[str, dict] = {}
    for failure in _failures(paths):
        first.setdefault(failure["pdf"], failure)
    return [_document(failure) for failure in list(first.values())[:limit]], len(first)


def failed_lines(documents: list[FailedDocument], total: int) -> list[str]:
    """`status`'s lines for them (none when nothing failed). Pure."""
    if not total:
        return []
    more = [(f"  ... and {total - len(documents)} more (summary.json and manifest.csv in the run folder list "
              "every one)")] if total > len(documents) else []
    return [f"failed documents ({total}):", *(doc.line() for doc in documents), *more]


def _document(failure: dict) -> FailedDocument:
    pages = failure.get("pages") or ""
    task = failure.get("task")
    return FailedDocument(pdf=failure["pdf"], pages="" if pages.endswith("-0") else pages,
                          status=failure.get("status") or "failed", error=failure.get("error") or "",
                          task=None if task is None or math.isnan(task) else int(task))


def _failures(paths: RunPaths) -> list[dict]:
    if paths.summary.exists():
        summary = json.loads(paths.summary.read_text(encoding="utf-8"))
        if "failures" in summary:
            return summary["failures"]
    from hpc_marker.planning.store import load_items_table, load_summary
    from hpc_marker.runstate.manifest import read_manifest_frame
    from hpc_marker.runstate.summary import ITEM_COLUMNS, summarize

    records, torn = read_manifest_frame(paths.manifests)
    if records.empty:
        return []
    items = load_items_table(paths.plan, columns=ITEM_COLUMNS).to_pandas()
    return summarize(items, load_summary(paths.plan), records, torn)["failures"]
