"""Finish: putting committed outputs in their final place, and merging split PDFs.

Shared by the tasks (which finish what they convert) and the collector (which finishes what
a killed task committed but could not rename or merge). Every step here is idempotent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hpc_marker.planning.plan import WorkItem
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.output import commit_staged, document_dir, document_stem, merge_parts, write_document
from hpc_marker.runstate.record import RunRecord


def final_dir(paths: RunPaths, record: RunRecord, item: WorkItem) -> Path:
    """Where an item's output goes: the document folder, or its part folder for a split PDF."""
    if item.is_part:
        return paths.parts / item.doc_id / item.item_id
    return document_dir(Path(record.out_dir), item.pdf)


def place_committed(staging: Path, final: Path) -> bool:
    """Rename a committed staging folder into place (no-op once done)."""
    try:
        commit_staged(staging, final)
        return True
    except FileNotFoundError:
        return False


def merge_id(doc_id: str) -> str:
    return f"{doc_id}.merge"


def merge_if_complete(paths: RunPaths, record: RunRecord, item: WorkItem, ids: list[str],
                      board: ClaimBoard) -> Path | None:
    """When every part (`ids`, in page order) of `item`'s split PDF is done and ok, merge them into the
    document (once: under the document's merge lease, committed by its own done marker)."""
    doc_id, relpath = item.doc_id, item.pdf
    if board.is_done(merge_id(doc_id)) or not all(board.is_done(i) for i in ids):
        return None
    records = [board.done_record(i) for i in ids]
    if not all(r and r.get("status") == "ok" for r in records):
        return None
    claimed = board.claim("merge", doc_id)
    if claimed is None:
        return None
    try:
        if board.is_done(merge_id(doc_id)):  # merged by the lease's previous holder
            return None
        for part, rec in zip(ids, records):  # a part committed by a task killed before its rename
            if rec.get("staging"):
                place_committed(Path(rec["staging"]), paths.parts / doc_id / part)
        stem = document_stem(relpath)
        doc = merge_parts([paths.parts / doc_id / part for part in ids], stem)
        md = write_document(Path(record.out_dir), relpath, doc, staging_root=paths.staging)
        if board.commit(merge_id(doc_id), {"status": "ok", "output": str(md)}):
            shutil.rmtree(paths.parts / doc_id, ignore_errors=True)
        return md
    finally:
        board.release(claimed.lease)


def merged_documents(board: ClaimBoard, items) -> set[str]:
    """The split documents (of a frame of items with doc_id and parts) whose parts are merged already."""
    split = items.loc[items["parts"] > 1, "doc_id"].unique()
    return {doc_id for doc_id in split if board.is_done(merge_id(doc_id))}
