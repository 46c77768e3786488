"""Sub-items: how a bisected item's pages ended, from whatever records the caller has. Pure.

A bisected item (planning/bisect.py) is finished when each of its halves is: converted (`ok`),
lost (a failure status: a page that failed on its own), or bisected in turn and finished. `walk`
follows the halves from a planned item through a lookup (done markers for a task or the
collector, commit-log statuses for resume, manifest records for the summary) and returns the
leaves in page order and the nodes not finished yet. `fold` turns the leaves into the document's
view of that item: `ok` when every page converted, `partial` when some did, else the first leaf's
failure, and the lost pages with their reasons. `fold_commits` and `commit_lost_pages` do the same
from commit-log lines alone (for `status` before collection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpc_marker.planning.bisect import BISECTED, SUB_MARK, doc_of, half_ids
from hpc_marker.runstate.progress import REOPENED
from hpc_marker.util.text import plural

if TYPE_CHECKING:  # pandas loads only where frames are folded
    import pandas as pd

PARTIAL = "partial"  # a document (or planned item) whose pages converted except the lost ones


@dataclass(frozen=True)
class Node:
    item_id: str
    page_start: int
    page_stop: int
    record: dict | None = None  # the lookup's answer (status, error, ...); None while not finished


@dataclass(frozen=True)
class Walk:
    leaves: list[Node] = field(default_factory=list)  # finished, not bisected, in page order
    pending: list[Node] = field(default_factory=list)  # no record yet
    inner: list[Node] = field(default_factory=list)  # bisected, with their records (the item itself among them)

    @property
    def finished(self) -> bool:
        return not self.pending


def walk(item_id: str, page_start: int, page_stop: int, lookup: Callable[[str], dict | None]) -> Walk:
    """From the item `item_id` covering [page_start, page_stop), down through every bisected node."""
    leaves: list[Node] = []
    pending: list[Node] = []
    inner: list[Node] = []
    stack = [(item_id, page_start, page_stop)]
    while stack:
        node_id, start, stop = stack.pop()
        record = lookup(node_id)
        status = (record or {}).get("status")
        if status is None or status == "unknown":
            pending.append(Node(node_id, start, stop))
        elif status == BISECTED and stop - start >= 2:
            inner.append(Node(node_id, start, stop, record))
            middle = start + (stop - start) // 2
            first, second = half_ids(doc_of(node_id), start, stop)
            stack += [(second, middle, stop), (first, start, middle)]
        else:
            leaves.append(Node(node_id, start, stop, record))
    return Walk(leaves, pending, inner)


@dataclass(frozen=True)
class Folded:
    status: str  # ok, partial, or the first lost leaf's status (every page lost)
    error: str | None
    pages_ok: int
    lost_pages: list[dict]  # {"page": 0-based, "status", "error"} for each page lost


def fold(leaves: list[Node]) -> Folded:
    """What the finished leaves of one planned item add up to (at least one leaf)."""
    lost = [leaf for leaf in leaves if leaf.record.get("status") != "ok"]
    pages_ok = sum(leaf.page_stop - leaf.page_start for leaf in leaves if leaf not in lost)
    lost_pages = [
        {"page": page, "status": leaf.record.get("status"), "error": leaf.record.get("error")}
        for leaf in lost
        for page in range(leaf.page_start, leaf.page_stop)
    ]
    if not lost:
        return Folded("ok", None, pages_ok, [])
    first = lost[0].record
    if not pages_ok:
        return Folded(first.get("status"), first.get("error"), 0, lost_pages)
    pages = ", ".join(str(p["page"] + 1) for p in lost_pages[:10]) + (" ..." if len(lost_pages) > 10 else "")
    return Folded(
        PARTIAL,
        f"{plural(len(lost_pages), 'page')} lost ({pages}): {first.get('status')}: {first.get('error')}",
        pages_ok,
        lost_pages,
    )


def lost_reason(record: dict) -> str:
    """The reason a placeholder shows for a lost leaf."""
    error = record.get("error")
    return f"{record.get('status')}" + (f" ({error})" if error else "")


def resolve_frame(final, latest):
    """The latest records of planned items (`final`) with each bisected one folded from its halves'
    records (found in `latest`, every item's latest record): its status becomes ok, partial or the
    lost pages' failure, `lost_pages` lists them, `pages_ok` counts the pages converted. Also the
    leaves: `final`'s rows that were not bisected and the bisected ones' leaves, for what counts pages
    (text-layer flags). Pure; the cost is per bisected item."""
    import pandas as pd

    final = final.assign(pages_ok=final["pages"].where(final["status"] == "ok", 0), lost_pages=None)
    bisected = final.index[final["status"] == BISECTED]
    if not len(bisected):
        return final, final
    nodes = pd.concat([final.loc[bisected], latest[latest["item_id"].str.contains(SUB_MARK, regex=False)]])
    lookup = dict(zip(nodes["item_id"], nodes.to_dict("records"), strict=False))
    leaf_rows, lost = [], {}
    for index in bisected:
        row = final.loc[index]
        found = walk(row["item_id"], int(row["page_start"]), int(row["page_stop"]), lookup.get)
        if not found.finished:
            pages = ", ".join(f"{n.page_start + 1}-{n.page_stop}" for n in found.pending)
            final.loc[index, "error"] = f"pages {pages} were not finished ({row['error']})"
            continue
        folded = fold(found.leaves)
        final.loc[index, ["status", "error", "pages_ok"]] = [folded.status, folded.error, folded.pages_ok]
        lost[index] = folded.lost_pages
        leaf_rows += [leaf.record for leaf in found.leaves]
    final["lost_pages"] = pd.Series(lost, dtype=object).reindex(final.index)
    leaves = pd.concat([final.drop(index=bisected), pd.DataFrame(leaf_rows, columns=latest.columns)], ignore_index=True)
    return final, leaves


def fold_commits(latest):
    """The latest commit of each planned item (indexed by item id; columns status, pages, share, flags)
    with bisected items folded, from commit-log lines alone (no page ranges): a document's bisected
    items are finished once its leaves' pages add up to theirs; then each is `partial` when a leaf of
    the document was lost, else `ok`; until then it stays BISECTED (not finished). Column `lost` (when
    anything was bisected): pages lost in the item's document. Pure; beyond one vectorized pass, the
    cost is per bisected item."""
    sub = latest.index.str.contains(SUB_MARK, regex=False)
    if not sub.any() and not (latest["status"] == BISECTED).any():
        return latest  # nothing was bisected: every line is a planned item's
    planned = latest[~sub].assign(lost=0)
    bisected = planned[planned["status"] == BISECTED]
    if bisected.empty:
        return planned
    subs = latest[sub]
    leaves = subs[subs["status"] != BISECTED]
    leaf_doc = leaves.index.map(doc_of)
    done = leaves["pages"].groupby(leaf_doc).sum()
    lost = leaves["pages"].where(leaves["status"] != "ok", 0).groupby(leaf_doc).sum()
    docs = bisected.index.map(doc_of)
    needed = bisected["pages"].groupby(docs).sum()
    lost_here = lost.reindex(docs).fillna(0).astype(int).to_numpy()
    finished = done.reindex(docs).fillna(0).to_numpy() >= needed.reindex(docs).to_numpy()
    status = bisected["status"].mask(finished & (lost_here > 0), PARTIAL).mask(finished & (lost_here == 0), "ok")
    planned.loc[bisected.index, "status"] = status
    planned.loc[bisected.index, "lost"] = lost_here
    return planned


def commit_lost_pages(latest: pd.DataFrame) -> list[str]:
    """The pages lost so far (sub-items that failed), by document id and 1-based pages. Pure."""
    lost = latest[latest.index.str.contains(SUB_MARK, regex=False) & ~latest["status"].isin(["ok", BISECTED, REOPENED])]
    found = lost.index.str.extract(r"^([^.]+)\.r(\d+)-(\d+)$")
    return [
        f"document {doc} page{'s' if int(b) - int(a) > 1 else ''} {int(a) + 1}"
        + (f"-{b}" if int(b) - int(a) > 1 else "")
        + f": {status}"
        for (doc, a, b), status in zip(found.itertuples(index=False, name=None), lost["status"], strict=False)
    ]
