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

from hpc_marker.planning.plan import WorkItem, part_ids
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.finish import final_dir, merge_if_complete, place_committed
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import ManifestRecord, ManifestWriter
from hpc_marker.runstate.output import document_stem
from hpc_marker.runstate.progress import DEGRADED, FAILED_OVER, CommitLog
from hpc_marker.runstate.record import RunRecord


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

    def finish(self, item: WorkItem, share: int, status: str, error: str | None, started: float,
               staging: Path | None, degraded: str | None = None, llm_failover: str | None = None) -> bool:
        """Commit `item` with its outcome; False when it was not committed here (another task finished
        it first, or the storage refused the record: then `storage_errors` says why)."""
        final = final_dir(self.paths, self.record, item)
        finished = time.time()
        entry = ManifestRecord(item_id=item.item_id, pdf=item.pdf, page_start=item.page_start,
                               page_stop=item.page_stop, pages=item.pages, status=status, error=error,
                               seconds=round(finished - started, 3),
                               output=str(final / f"{document_stem(item.pdf)}.md") if staging else None,
                               started=started, finished=finished, degraded=degraded, llm_failover=llm_failover,
                               **self.context)
        try:
            committed = self.board.commit(item.item_id, dict(asdict(entry), staging=str(staging) if staging else None,
                                                             share=share))
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
            self.commits.append(item.item_id, status, item.pages, share, started, finished,
                                (DEGRADED if degraded else "") + (FAILED_OVER if llm_failover else ""))
            self.manifest.append(entry)
        except OSError as exc:  # committed: the collector places the output and recovers the record
            self.storage_errors.append(f"cannot place or record {item.pdf}: {exc.strerror}")
            self.log(f"{self.storage_errors[-1]}; it is committed, the collector finishes it; taking no more items")
        self.counts[status] += 1
        self.counts["stolen"] += share != self.context["task"]
        self.log(f"{status:7} {item.pdf} [{item.page_label()}] {finished - started:.2f}s"
                 + (f" -- {error}" if error else "") + (f" (LLM degraded: {degraded})" if degraded else "")
                 + (f" (LLM: {llm_failover})" if llm_failover else ""))
        if item.is_part and status == "ok":
            merged = merge_if_complete(self.paths, self.record, item, part_ids(item), self.board)
            if merged:
                self.log(f"merged  {item.pdf} ({item.parts} parts)")
        return True

    @staticmethod
    def _discard(staging: Path | None) -> None:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
