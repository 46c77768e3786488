"""Failed documents: which documents of a run failed and why (the first few), for `status` and `logs`.

From summary.json, once the run is collected (its `failures`: the newest record of each failed item,
by PDF and page, with the task that tried it); the collector runs when a run's jobs are over, however
they ended. Before that, nothing is listed: `status` reads no JSON manifest of a run (10^6 items), and
its counts say how many failed so far. A document counts once, with its first failed item.
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
    more = (
        [(f"  ... and {total - len(documents)} more (summary.json and manifest.csv in the run folder list every one)")]
        if total > len(documents)
        else []
    )
    return [f"failed documents ({total}):", *(doc.line() for doc in documents), *more]


def _document(failure: dict) -> FailedDocument:
    pages = failure.get("pages") or ""
    task = failure.get("task")
    return FailedDocument(
        pdf=failure["pdf"],
        pages="" if pages.endswith("-0") else pages,
        status=failure.get("status") or "failed",
        error=failure.get("error") or "",
        task=None if task is None or math.isnan(task) else int(task),
    )


def _failures(paths: RunPaths) -> list[dict]:
    try:
        return json.loads(paths.summary.read_text(encoding="utf-8")).get("failures") or []
    except FileNotFoundError:  # not collected yet
        return []
