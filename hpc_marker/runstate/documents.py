"""Documents: a run's manifest records seen per PDF (a split PDF is one document of several items). Pure.

`document_state` folds the newest record of each item of one PDF into one `DocumentState`: its
status (`ok` only when every item is ok and the items cover its pages from page 0 without a gap;
else the first failed item's status, or `incomplete`), pages, engine, LLM refinement and the
text-layer flags and output flags (quality/) of all its items; `flag_share` is the share of a document's
checked pages that carry a flag (what `retry --select no-text|garbled` uses). `text_layer_tokens` writes the
flags in a task's commit log (runstate/progress.py), `token_counts` and `output_flag_counts` read them, and
`commit_text_layer` adds the text-layer ones up, for `status` before collection. `ocr_routing` counts the
documents and pages `--force-ocr auto` sent each way, `routing_line` says it in one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hpc_marker.planning.bisect import BISECTED, is_subitem
from hpc_marker.quality.flags import FLAG_NAMES, FLAG_TOKENS, commit_tokens, merge_fields
from hpc_marker.runstate.manifest import ManifestRecord
from hpc_marker.runstate.subitems import PARTIAL
from hpc_marker.util.text import plural

if TYPE_CHECKING:  # pandas loads where commit logs are read (status of a collected run needs none)
    import pandas as pd

FLAGS = {"no-text": "empty_pages", "garbled": "garbled_pages"}  # selector -> the manifest field
# what `retry --select` picks (submission/followup.py); the output flags (quality/flags.py) pick by name
SELECTORS = ("no-text", "garbled", "partial", "failed", *FLAG_NAMES)


@dataclass(frozen=True)
class DocumentState:
    pdf: str
    # ok; partial (pages lost: bisected items); the first failed item's status (failed, timeout, encrypted);
    # incomplete
    status: str
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
    lost_pages: list[int] | None = None  # 0-based pages that could not be converted (a partial document)
    output_flags: str | None = None  # its items' output flags, joined (quality/flags.merge_fields); None: unjudged


def _gap(records: list[ManifestRecord]) -> str | None:
    """Where the items of a document leave pages without a record (one line), or None."""
    expected = 0
    for record in records:
        if record.page_start > expected:
            return f"pages {expected + 1}-{record.page_start} have no record"
        expected = max(expected, record.page_stop)
    return None


def document_state(records: Iterable[ManifestRecord]) -> DocumentState:
    """One document from the newest record of each of its items (any order; at least one). A bisected
    item counts through its halves (planning/bisect.py): their failures are lost pages, and the
    document is `partial` when other pages converted."""
    items = sorted((r for r in records if r.status != BISECTED), key=lambda r: (r.page_start, r.page_stop))
    if not items:  # bisected, no half finished yet
        first = min(records, key=lambda r: r.page_start)
        items = [replace(first, status="incomplete", error=f"bisected, not finished: {first.error}")]
    lost = [r for r in items if is_subitem(r.item_id) and r.status != "ok"]
    failed = next((r for r in items if r.status != "ok" and r not in lost), None)
    gap = None if failed else _gap(items)
    status, error = (failed.status, failed.error) if failed else ("incomplete", gap) if gap else ("ok", None)
    if status == "ok" and lost:
        converted = any(r.status == "ok" for r in items)
        status = PARTIAL if converted else lost[0].status
        error = f"{plural(sum(r.pages for r in lost), 'page')} lost: {lost[0].status}: {lost[0].error}"
    checked = [r for r in items if r.empty_pages is not None]
    return DocumentState(
        pdf=items[0].pdf,
        status=status,
        error=error,
        items=len(items),
        pages=sum(r.pages for r in items),
        page_start=items[0].page_start,
        page_stop=max(r.page_stop for r in items),
        engine=items[0].engine,
        seconds=round(sum(r.seconds for r in items), 3),
        finished=max(r.finished for r in items),
        degraded=next((r.degraded for r in items if r.degraded), None),
        checked_pages=sum(r.pages for r in checked),
        empty_pages=sorted(p for r in checked for p in r.empty_pages or []) if checked else None,
        garbled_pages=sorted(p for r in checked for p in r.garbled_pages or []) if checked else None,
        lost_pages=[p for r in lost for p in range(r.page_start, r.page_stop)] or None,
        output_flags=merge_fields(r.output_flags for r in items if r.status == "ok"),
    )


def flag_share(doc: DocumentState, selector: str) -> float:
    """The share of the document's checked pages flagged `selector` (no-text, garbled); 0 when unchecked."""
    flagged = getattr(doc, FLAGS[selector])
    return len(flagged) / doc.checked_pages if flagged and doc.checked_pages else 0.0


_TOKEN = re.compile(r"([eg])(\d+)")  # in a commit log's flags: e<n> / g<n>, the item's empty / garbled pages


def text_layer_tokens(flags: dict | None) -> str:
    """The commit log's flags of an item: `e3g1` (3 empty, 1 garbled pages of its text layer), then its output
    flags' letters (quality/flags.FLAG_TOKENS: `e3RW`); "" for none."""
    counts = {"e": len((flags or {}).get("empty_pages") or []), "g": len((flags or {}).get("garbled_pages") or [])}
    return "".join(f"{token}{n}" for token, n in counts.items() if n) + commit_tokens((flags or {}).get("output_flags"))


def output_flag_counts(flags: pd.Series) -> dict[str, int]:
    """How many commits carry each output flag, from the commit log's flags (text_layer_tokens); only the
    flags some commit carries. Pure."""
    counts = {name: int(flags.str.contains(token, regex=False).sum()) for name, token in FLAG_TOKENS.items()}
    return {name: n for name, n in counts.items() if n}


def token_counts(flags: pd.Series) -> pd.DataFrame:
    """Columns empty and garbled: each commit's flagged pages, from its flags (text_layer_tokens). Pure."""
    import pandas as pd

    found = flags.str.extractall(_TOKEN) if len(flags) else pd.DataFrame(columns=[0, 1])
    counts = pd.DataFrame(0, index=flags.index, columns=["empty", "garbled"])
    for token, column in (("e", "empty"), ("g", "garbled")):
        mine = found[found[0] == token]
        counts.loc[mine.index.get_level_values(0), column] = mine[1].astype(int).to_numpy()
    return counts


def commit_text_layer(latest: pd.DataFrame) -> dict:
    """Pages flagged empty or garbled, and in how many items, from the latest commits' flags. Pure."""
    counts = token_counts(latest["flags"][latest["status"] == "ok"])
    return {
        "empty_pages": int(counts["empty"].sum()),
        "items_with_empty_pages": int((counts["empty"] > 0).sum()),
        "garbled_pages": int(counts["garbled"].sum()),
        "items_with_garbled_pages": int((counts["garbled"] > 0).sum()),
    }


def ocr_routing(items: pd.DataFrame, final: pd.DataFrame) -> dict:
    """`--force-ocr auto`'s routing (planned items with an `ocr` decision; `final`: the latest record of each):
    {"ocr": {documents, pages, pages_ok}, "text": {...}}, the documents sent to OCR and those read from their text
    layer; {} for a run without it."""
    if "ocr" not in items or not items["ocr"].notna().any():
        return {}
    ocr = items["ocr"].where(items["ocr"].notna(), False).astype(bool)
    pages = items["page_stop"] - items["page_start"]
    done = items["item_id"].map(final.set_index("item_id")["pages_ok"]).fillna(0)
    return {
        route: {
            "documents": int(items.loc[chosen, "pdf"].nunique()),
            "pages": int(pages[chosen].sum()),
            "pages_ok": int(done[chosen].sum()),
        }
        for route, chosen in (("ocr", ocr), ("text", ~ocr))
    }


def routing_line(routed: dict | None) -> str:
    """`ocr_routing` in one line ("" without it): how many pages went each way."""
    if not routed:
        return ""
    ocr, text = routed["ocr"], routed["text"]
    return (
        f"--force-ocr auto: {plural(ocr['documents'], 'document')} ({plural(ocr['pages'], 'page')}) routed to OCR, "
        f"{plural(text['documents'], 'document')} ({plural(text['pages'], 'page')}) to their text layer; "
        f"{ocr['pages_ok']:,} and {text['pages_ok']:,} pages converted"
    )
