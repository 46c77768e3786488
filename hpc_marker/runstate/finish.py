"""Finish: putting committed outputs in their final place, and merging split PDFs.

Shared by the tasks (which finish what they convert) and the collector (which finishes what
a killed task committed but could not rename or merge). Every step here is idempotent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hpc_marker.engines.formats import file_name, lost_page_document
from hpc_marker.planning.bisect import is_subitem, root_ids
from hpc_marker.planning.plan import WorkItem
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.output import (
    commit_staged,
    document_dir,
    document_stem,
    merge_documents,
    read_document,
    write_document,
)
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.subitems import PARTIAL, fold, lost_reason, walk


def final_dir(paths: RunPaths, record: RunRecord, item: WorkItem) -> Path:
    """Where an item's output goes: the document folder, or its part folder for a split PDF or a sub-item."""
    if item.is_part or is_subitem(item.item_id):
        return paths.parts / item.doc_id / item.item_id
    return document_dir(Path(record.out_dir), item.pdf, item.out_name)


def final_file(paths: RunPaths, record: RunRecord, item: WorkItem) -> Path:
    """The item's output file (Markdown, JSON or HTML, as the run renders) in its final_dir."""
    output_format = record.engine_options.output_format
    return final_dir(paths, record, item) / file_name(document_stem(item.pdf, item.out_name), output_format)


def place_committed(staging: Path, final: Path) -> bool:
    """Rename a committed staging folder into place (no-op once done)."""
    try:
        commit_staged(staging, final)
        return True
    except FileNotFoundError:
        return False


def merge_id(doc_id: str) -> str:
    return f"{doc_id}.merge"


def assembles(item: WorkItem) -> bool:
    """Whether `item`'s document is put together from pieces (parts of a split PDF, sub-items)."""
    return item.is_part or is_subitem(item.item_id)


def merge_if_complete(
    paths: RunPaths,
    record: RunRecord,
    item: WorkItem,
    board: ClaimBoard,
    ranges: list[tuple[str, int, int]] | None = None,
) -> Path | None:
    """When every item of `item`'s document is finished (its parts, and the halves of bisected ones:
    runstate/subitems.py), put the document together (once: under its merge lease, committed by its
    own done marker): the converted pieces in page order, a placeholder for each lost page. `ranges`
    (item id, page start, page stop of each root) default to the done markers' own. Nothing is
    written when no page converted, nor when a planned part failed whole."""
    doc_id, relpath = item.doc_id or item.item_id, item.pdf
    if board.is_done(merge_id(doc_id)):
        return None
    leaves = _leaves(board, root_ids(item), ranges)
    if leaves is None or not any(leaf.record.get("status") == "ok" for leaf in leaves):
        return None
    if any(leaf.record.get("status") != "ok" and not is_subitem(leaf.item_id) for leaf in leaves):
        return None  # a part failed whole (not bisected): the document failed; `retry` converts it again
    claimed = board.claim("merge", doc_id)
    if claimed is None:
        return None
    try:
        if board.is_done(merge_id(doc_id)):  # merged by the lease's previous holder
            return None
        options = record.engine_options
        stem = document_stem(relpath, item.out_name)
        pieces = []
        for leaf in leaves:
            if leaf.record.get("status") != "ok":
                pieces += [
                    lost_page_document(options.output_format, page, lost_reason(leaf.record), options.paginate)
                    for page in range(leaf.page_start, leaf.page_stop)
                ]
                continue
            if leaf.record.get("staging"):  # committed by a task killed before its rename
                place_committed(Path(leaf.record["staging"]), paths.parts / doc_id / leaf.item_id)
            pieces.append(read_document(paths.parts / doc_id / leaf.item_id, stem, options.output_format))
        doc = merge_documents(pieces, options.paginate)
        source = doc.metadata.get("hpcmarker_source")
        if isinstance(source, dict):  # the first piece's; the document covers every piece's pages
            source["pages"] = [leaves[0].page_start, leaves[-1].page_stop]
        md = write_document(Path(record.out_dir), relpath, doc, staging_root=paths.staging, out_name=item.out_name)
        folded = fold(leaves)
        marker = {
            "status": folded.status if folded.status == PARTIAL else "ok",
            "output": str(md),
            "lost_pages": folded.lost_pages,
        }
        if board.commit(merge_id(doc_id), marker) and not folded.lost_pages:  # partial: `retry` puts it together again
            shutil.rmtree(paths.parts / doc_id, ignore_errors=True)
        return md
    finally:
        board.release(claimed.lease)


def _leaves(board: ClaimBoard, roots: list[str], ranges: list[tuple[str, int, int]] | None):
    """The finished leaves of a document's roots in page order, or None while one is not finished."""
    leaves = []
    for position, root in enumerate(roots):
        if ranges is not None:
            _, start, stop = ranges[position]
        else:
            done = board.done_record(root)
            if done is None or "page_start" not in done:
                return None
            start, stop = int(done["page_start"]), int(done["page_stop"])
        found = walk(root, start, stop, board.done_record)
        if not found.finished:
            return None
        leaves += found.leaves
    return leaves


def merged_documents(board: ClaimBoard, items) -> set[str]:
    """The split documents (of a frame of items with doc_id and parts) whose parts are merged already."""
    split = items.loc[items["parts"] > 1, "doc_id"].unique()
    return {doc_id for doc_id in split if board.is_done(merge_id(doc_id))}
