"""Finishing one item: commit it exactly once, put its output in place, record it, merge split PDFs.

The order is the crash-safety argument: the done marker (with the whole record) is the commit
point; then the staging folder is renamed into place, then the commit-log line and the manifest
line are written. A task killed anywhere leaves either nothing committed (the item is converted
again) or a commit whose output the collector places and whose record it recovers.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
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


@dataclass
class Finisher:
    paths: RunPaths
    record: RunRecord
    board: ClaimBoard
    manifest: ManifestWriter
    commits: CommitLog
    context: dict  # engine, host, gpu, job_id, task: the same on every record of this task
    log: Callable[[str], None]
    counts: Counter = field(default_factory=Counter)
    storage_errors: list[str] = field(default_factory=list)

    def finish(
        self,
        item: WorkItem,
        share: int,
        status: str,
        error: str | None,
        started: float,
        staging: Path | None,
        degraded: str | None = None,
        flags: dict | None = None,
        children: list[WorkItem] | None = None,
        llm_failover: str | None = None,
    ) -> bool:
        """Commit `item` with its outcome; False when it was not committed here (another task finished
        it first, or the storage refused the record: then `storage_errors` says why). A bisected item
        (status BISECTED) records its `children`, the halves that take its pages over."""
        final = final_dir(self.paths, self.record, item)
        finished = time.time()
        entry = ManifestRecord(
            item_id=item.item_id,
            pdf=item.pdf,
            page_start=item.page_start,
            page_stop=item.page_stop,
            pages=item.pages,
            status=status,
            error=error,
            seconds=round(finished - started, 3),
            output=str(final_file(self.paths, self.record, item)) if staging else None,
            started=started,
            finished=finished,
            degraded=degraded,
            llm_failover=llm_failover,
            **(flags or {}),
            **self.context,
        )
        try:
            extra = {"children": [child.item_id for child in children]} if children else {}
            committed = self.board.commit(
                item.item_id, dict(asdict(entry), staging=str(staging) if staging else None, share=share, **extra)
            )
        except OSError as exc:  # the run folder cannot take the record (disk full, quota, storage gone)
            self.storage_errors.append(f"cannot record {item.pdf}: {exc.strerror}")
            self.log(f"{self.storage_errors[-1]}; taking no more items")
            self._discard(staging)
            return False
        if not committed:
            self.log(f"lost    {item.pdf} [{item.page_label()}]: another task finished it")
            self._discard(staging)
            return False
        try:
            if staging:
                place_committed(staging, final)
            self.commits.append(
                item.item_id,
                status,
                item.pages,
                share,
                started,
                finished,
                (DEGRADED if degraded else "") + (FAILED_OVER if llm_failover else "") + text_layer_tokens(flags),
            )
            self.manifest.append(entry)
        except OSError as exc:  # committed: the collector places the output and recovers the record
            self.storage_errors.append(f"cannot place or record {item.pdf}: {exc.strerror}")
            self.log(f"{self.storage_errors[-1]}; it is committed, the collector finishes it; taking no more items")
        self.counts[status] += 1
        self.counts["stolen"] += share != self.context["task"]
        self.log(
            f"{status:8} {item.pdf} [{item.page_label()}] {finished - started:.2f}s"
            + (f" -- {error}" if error else "")
            + (f" (LLM degraded: {degraded})" if degraded else "")
            + (f" (LLM: {llm_failover})" if llm_failover else "")
        )
        if status != BISECTED and assembles(item):
            self.assemble(item)
        return True

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
            self.log(f"merged  {item.pdf}")

    @staticmethod
    def _discard(staging: Path | None) -> None:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
