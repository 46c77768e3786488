"""Sub-items folded back into their planned item: from done markers, manifest records and commit lines."""

from __future__ import annotations

import pandas as pd

from hpc_marker.runstate.progress import latest_commits
from hpc_marker.runstate.subitems import (
    PARTIAL,
    fold,
    fold_commits,
    resolve_frame,
    walk,
)

# 000001 (pages 0-20) was bisected; its first half too, down to page 7, which timed out
TREE = {
    "000001": {"status": "bisected"},
    "000001.r0-10": {"status": "bisected"},
    "000001.r10-20": {"status": "ok"},
    "000001.r0-5": {"status": "ok"},
    "000001.r5-10": {"status": "bisected"},
    "000001.r5-7": {"status": "ok"},
    "000001.r7-10": {"status": "bisected"},
    "000001.r7-8": {"status": "timeout", "error": "no result after 2 s"},
    "000001.r8-10": {"status": "ok"},
}


def test_walk_finds_the_leaves_in_page_order_and_what_is_not_finished():
    found = walk("000001", 0, 20, TREE.get)
    assert found.finished
    assert [(n.item_id, n.page_start, n.page_stop) for n in found.leaves] == [
        ("000001.r0-5", 0, 5),
        ("000001.r5-7", 5, 7),
        ("000001.r7-8", 7, 8),
        ("000001.r8-10", 8, 10),
        ("000001.r10-20", 10, 20),
    ]
    folded = fold(found.leaves)
    assert folded.status == PARTIAL and folded.pages_ok == 19
    assert folded.lost_pages == [{"page": 7, "status": "timeout", "error": "no result after 2 s"}]
    assert "1 page lost (8)" in folded.error

    unfinished = {k: v for k, v in TREE.items() if k != "000001.r8-10"}
    assert [n.item_id for n in walk("000001", 0, 20, unfinished.get).pending] == ["000001.r8-10"]
    assert [n.item_id for n in walk("000002", 0, 3, TREE.get).pending] == ["000002"]  # not started


def test_a_document_whose_every_page_is_lost_keeps_the_failure():
    tree = {
        "000003": {"status": "bisected"},
        "000003.r0-1": {"status": "failed", "error": "boom"},
        "000003.r1-2": {"status": "failed", "error": "boom"},
    }
    folded = fold(walk("000003", 0, 2, tree.get).leaves)
    assert (folded.status, folded.error, folded.pages_ok, len(folded.lost_pages)) == ("failed", "boom", 0, 2)


def _records(tree: dict, pages: dict) -> pd.DataFrame:
    rows = []
    for n, (item_id, rec) in enumerate(tree.items()):
        start, stop = pages[item_id]
        rows.append(
            {
                "item_id": item_id,
                "pdf": "book.pdf",
                "page_start": start,
                "page_stop": stop,
                "pages": stop - start,
                "status": rec["status"],
                "error": rec.get("error"),
                "finished": float(n),
                "empty_pages": [] if rec["status"] == "ok" else None,
            }
        )
    return pd.DataFrame(rows)


def _ranges(tree: dict) -> dict:
    ranges = {"000001": (0, 20)}
    for item_id in tree:
        if ".r" in item_id:
            start, stop = item_id.split(".r")[1].split("-")
            ranges[item_id] = (int(start), int(stop))
    return ranges


def test_manifest_records_fold_into_the_planned_item():
    records = _records(TREE, _ranges(TREE))
    final, leaves = resolve_frame(records[records["item_id"] == "000001"], records)
    row = final.iloc[0]
    assert (row["status"], row["pages_ok"]) == (PARTIAL, 19)
    assert row["lost_pages"] == [{"page": 7, "status": "timeout", "error": "no result after 2 s"}]
    assert sorted(leaves["item_id"]) == ["000001.r0-5", "000001.r10-20", "000001.r5-7", "000001.r7-8", "000001.r8-10"]


def test_commit_lines_fold_by_pages_alone():
    def commits(tree):
        return latest_commits(
            pd.DataFrame(
                [
                    {
                        "item_id": i,
                        "status": r["status"],
                        "pages": _ranges(TREE)[i][1] - _ranges(TREE)[i][0],
                        "share": 0,
                        "started": float(n),
                        "finished": float(n),
                        "flags": "",
                    }
                    for n, (i, r) in enumerate(tree.items())
                ]
                + [
                    {
                        "item_id": "000009",
                        "status": "ok",
                        "pages": 4,
                        "share": 0,
                        "started": 0.0,
                        "finished": 0.0,
                        "flags": "",
                    }
                ]
            )
        )

    folded = fold_commits(commits(TREE))
    assert list(folded.index) == ["000001", "000009"]
    assert folded.loc["000001", "status"] == PARTIAL and folded.loc["000001", "lost"] == 1
    unfinished = fold_commits(commits({k: v for k, v in TREE.items() if k != "000001.r8-10"}))
    assert unfinished.loc["000001", "status"] == "bisected"  # pages 9-10 are not finished yet
    healed = dict(TREE, **{"000001.r7-8": {"status": "ok"}})
    assert fold_commits(commits(healed)).loc["000001", "status"] == "ok"
