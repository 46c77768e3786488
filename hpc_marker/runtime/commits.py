"""Committing one item: exactly once, its output put in place, its records written, split PDFs merged.

The order is the crash-safety argument: the done marker (with the whole record) is the commit
point; then the staging folder is renamed into place, then the commit-log line and the manifest
line are written. A task killed anywhere leaves either nothing committed (the item is converted
again) or a commit whose output the collector places and whose record it recovers.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpc_marker.planning.bisect import BISECTED, sub_item
from hpc_marker.planning.plan import WorkItem
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.documents import text_layer_tokens
from hpc_marker.runstate.finish import (
    assembles,
    final_dir,
    final_file,
    merge_if_complete,
    place_committed,
)
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import ManifestRecord, ManifestWriter
from hpc_marker.runstate.progress import DEGRADED, FAILED_OVER, CommitLog
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.subitems import walk
from hpc_marker.runtime.worker import Converted

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemResult:
    """What became of one item, as its commit records it."""

    status: str  # ok, failed, timeout, BISECTED, or the status the scan gave it
    started: float  # when its conversion started (time.time())
    error: str | None = None
    converted: Converted | None = None  # ok: its worker's staging folder and marks
    children: tuple[WorkItem, ...] = ()  # BISECTED: the halves that take its pages over


@dataclass
class Finisher:
    paths: RunPaths
    record: RunRecord
    board: ClaimBoard
    manifest: ManifestWriter
    commits: CommitLog
    context: dict  # engine, host, gpu, job_id, task: the same on every record of this task
    counts: Counter = field(default_factory=Counter)
    storage_errors: list[str] = field(default_factory=list)

    def finish(self, item: WorkItem, share: int, result: ItemResult) -> bool:
        """Commit `item` (of `share`) with its result; False when it was not committed here (another task
        finished it first, or the storage refused the record: then `storage_errors` says why)."""
        finished = time.time()
        entry = self._entry(item, result, finished)
        staging = Path(result.converted.staging) if result.converted else None
        try:
            children = {"children": [child.item_id for child in result.children]} if result.children else {}
            committed = self.board.commit(
                item.item_id, dict(asdict(entry), staging=str(staging) if staging else None, share=share, **children)
            )
        except OSError as exc:  # the run folder cannot take the record (disk full, quota, storage gone)
            self.storage_errors.append(f"cannot record {item.pdf}: {exc.strerror}")
            logger.warning("%s; taking no more items", self.storage_errors[-1])
            self._discard(staging)
            return False
        if not committed:
            logger.info("lost    %s [%s]: another task finished it", item.pdf, item.page_label())
            self._discard(staging)
            return False
        try:
            if staging:
                place_committed(staging, final_dir(self.paths, self.record, item))
            self.commits.append(
                item.item_id,
                result.status,
                item.pages,
                share,
                result.started,
                finished,
                self._marks(result),
                result.converted.llm_seconds if result.converted else 0.0,
            )
            self.manifest.append(entry)
        except OSError as exc:  # committed: the collector places the output and recovers the record
            self.storage_errors.append(f"cannot place or record {item.pdf}: {exc.strerror}")
            logger.warning(
                "%s; it is committed, the collector finishes it; taking no more items", self.storage_errors[-1]
            )
        self.counts[result.status] += 1
        self.counts["stolen"] += share != self.context["task"]
        logger.info(_said(item, result, finished))
        if result.status != BISECTED and assembles(item):
            self.assemble(item)
        return True

    def _entry(self, item: WorkItem, result: ItemResult, finished: float) -> ManifestRecord:
        """The item's manifest record (its done marker carries it whole)."""
        converted = result.converted
        return ManifestRecord(
            item_id=item.item_id,
            pdf=item.pdf,
            page_start=item.page_start,
            page_stop=item.page_stop,
            pages=item.pages,
            status=result.status,
            error=result.error,
            seconds=round(finished - result.started, 3),
            output=str(final_file(self.paths, self.record, item)) if converted else None,
            started=result.started,
            finished=finished,
            degraded=converted.degraded if converted else None,
            llm_failover=converted.llm_failover if converted else None,
            **(converted.flags if converted else {}),
            **self.context,
        )

    @staticmethod
    def _marks(result: ItemResult) -> str:
        """The commit-log line's flags: LLM degraded, failed over, the text layer's findings."""
        converted = result.converted
        if converted is None:
            return ""
        return (
            (DEGRADED if converted.degraded else "")
            + (FAILED_OVER if converted.llm_failover else "")
            + text_layer_tokens(converted.flags)
        )

    def unfinished_halves(self, item: WorkItem) -> list[WorkItem]:
        """The halves of the bisected `item` (an earlier holder of its batch cut it) that are not finished;
        when every one is, its document is put together (if that holder could not)."""
        pending = walk(item.item_id, item.page_start, item.page_stop, self.board.done_record).pending
        if not pending:
            self.assemble(item)
        return [sub_item(item, node.item_id, node.page_start, node.page_stop) for node in pending]

    def assemble(self, item: WorkItem) -> None:
        """Put `item`'s document together if every piece of it is finished (and nobody did yet)."""
        if merge_if_complete(self.paths, self.record, item, self.board):
            logger.info("merged  %s", item.pdf)

    @staticmethod
    def _discard(staging: Path | None) -> None:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def _said(item: WorkItem, result: ItemResult, finished: float) -> str:
    """The task log's line for a committed item: its status, PDF, pages, time, error and LLM marks."""
    converted = result.converted
    degraded = converted.degraded if converted else None
    failover = converted.llm_failover if converted else None
    return (
        f"{result.status:8} {item.pdf} [{item.page_label()}] {finished - result.started:.2f}s"
        + (f" -- {result.error}" if result.error else "")
        + (f" (LLM degraded: {degraded})" if degraded else "")
        + (f" (LLM: {failover})" if failover else "")
    )
