"""The collector's one pass over a run, a PDF range at a time (runstate/buckets.py): per range it finishes what
killed tasks left (collect.finish_leftovers), appends the range's rows to manifest.csv and works out its part of
the summary and of the report; only those parts, and a few columns of every record, outlive the range. Outputs
are those of the whole frame at once: per item and per document everything is in one range, the ranges come in
PDF order, and what is ordered by time is merged on (finished, the record's place in the manifests).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from hpc_marker.planning.bisect import BISECTED, SUB_MARK
from hpc_marker.planning.plan import WorkItem
from hpc_marker.report.frames import failures_frame, slowest_candidates
from hpc_marker.runstate.buckets import SEQ, Buckets, record_schema
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.finish import final_dir, merge_id, merge_if_complete, place_committed
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import COLUMNS, ManifestRecord, latest_frame
from hpc_marker.runstate.output import document_file
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.subitems import walk
from hpc_marker.runstate.summary import ITEM_COLUMNS, document_counts, item_totals, records_frame
from hpc_marker.util.frames import isin

logger = logging.getLogger(__name__)

_RECORD_FIELDS = set(ManifestRecord.__dataclass_fields__)
MARKS = ("degraded", "llm_failover")  # summary.json lists the items whose latest record carries one


@dataclass
class Collected:
    """What the pass over the ranges leaves: the summary's parts, the report's, and every record's LIGHT columns
    (`records`: every record whole instead, where there are at most `whole_up_to`)."""

    parts: list[dict] = field(default_factory=list)
    documents: dict = field(default_factory=dict)
    marked: list[pd.DataFrame] = field(default_factory=list)
    failures: list[pd.DataFrame] = field(default_factory=list)
    failure_count: int = 0
    slowest: list[pd.DataFrame] = field(default_factory=list)
    whole: list[pd.DataFrame] = field(default_factory=list)
    recovered: int = 0
    merged: int = 0
    merged_docs: set[str] = field(default_factory=set)
    referenced: set[str] = field(default_factory=set)


class ManifestCsv:
    """manifest.csv written a range at a time (Arrow's CSV writer: one header, the rows as they come), put in
    place whole by `close` (a failed collector leaves the last one)."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp")
        fields = [
            pa.field(f.name, pa.string() if f.name in ("empty_pages", "garbled_pages") else f.type)
            for f in record_schema()
        ]
        self.schema = pa.schema(fields)
        self._writer = pacsv.CSVWriter(self.tmp, self.schema)

    def write(self, records: pd.DataFrame) -> None:
        """Append these records, by PDF and page; the flagged pages (lists) become space-separated 0-based
        indices, empty where not checked."""
        ordered = records.sort_values(["pdf", "page_start", "finished"], kind="stable")
        pages = {column: _page_lists(ordered[column]) for column in ("empty_pages", "garbled_pages")}
        ordered = ordered.assign(**pages)[COLUMNS]
        self._writer.write_table(pa.Table.from_pandas(ordered, schema=self.schema, preserve_index=False))

    def close(self, keep: bool) -> None:
        self._writer.close()
        if keep:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _page_lists(column: pd.Series) -> pd.Series:
    """Each list of pages as its space-separated indices, "" where there is none (None, NaN)."""
    listed = column.notna().to_numpy(bool)
    joined = np.full(len(column), "", dtype=object)
    joined[listed] = [" ".join(str(int(p)) for p in pages) for pages in column[listed]]
    return pd.Series(joined, index=column.index)


def collect_ranges(paths: RunPaths, record: RunRecord, buckets: Buckets, board: ClaimBoard, whole_up_to: int):
    """The pass: per range of PDFs, leftovers finished, manifest.csv's rows, the summary's and report's parts."""
    found, csv = Collected(), ManifestCsv(paths.manifest_csv)
    next_seq, whole = buckets.total, buckets.total <= whole_up_to
    try:
        for k in range(buckets.count):
            items, records = buckets.bucket(k)
            recorded = latest_frame(records).set_index("item_id")["status"]
            recovered, merged_docs, merged, referenced = finish_leftovers(paths, record, items, recorded, board)
            found.recovered, found.merged = found.recovered + len(recovered), found.merged + merged
            found.merged_docs |= merged_docs
            found.referenced |= referenced
            if recovered:
                extra = records_frame(recovered).assign(**{SEQ: np.arange(next_seq, next_seq + len(recovered))})
                next_seq += len(recovered)
                records = pd.concat([records, extra], ignore_index=True)
                recovered_table = pa.Table.from_pandas(extra[COLUMNS], schema=record_schema(), preserve_index=False)
                buckets.light.add(recovered_table)
            out, output_format = Path(record.out_dir), record.engine_options.output_format
            csv.write(merged_outputs(records, items, merged_docs, out, output_format))
            _add_range(found, items, records, merged_docs)
            if whole:
                found.whole.append(records)
        csv.close(keep=True)
    except BaseException:
        csv.close(keep=False)
        raise
    return found


def finish_leftovers(
    paths: RunPaths, record: RunRecord, items: pd.DataFrame, records_status: pd.Series, board: ClaimBoard
) -> tuple[list[ManifestRecord], set[str], int, set[str]]:
    """Place committed outputs, merge complete split PDFs, recover records from done markers. Only the items
    without a manifest line and the split PDFs are looked at one by one (and the bisected ones: their documents
    are put together here when their tasks could not). `records_status`: the latest manifest status of each
    recorded item, by item id. Returns (recovered records, merged document ids, documents merged here, the
    staging folders the done markers name)."""
    recovered: list[ManifestRecord] = []
    referenced: set[str] = set()
    unrecorded = items[~isin(items["item_id"], records_status.index)]
    for row in unrecorded.itertuples(index=False):
        done = board.done_record(row.item_id)
        if not done or done.get("status") == "unknown":
            continue
        if done.get("staging"):
            referenced.add(Path(done["staging"]).name)
            if done.get("status") == "ok":
                item = WorkItem(**{k: getattr(row, k) for k in ITEM_COLUMNS if k in WorkItem.__slots__})
                place_committed(Path(done["staging"]), final_dir(paths, record, item))
        try:
            recovered.append(ManifestRecord(**{k: v for k, v in done.items() if k in _RECORD_FIELDS}))
        except TypeError:  # a marker without a whole record: the item stays "missing" in the summary
            logger.warning(f"done marker of {row.item_id} holds no manifest record")
    bisected = set(records_status.index[records_status == BISECTED]) | {
        r.item_id for r in recovered if r.status == BISECTED
    }
    for row in items[isin(items["item_id"], bisected)].itertuples(index=False):  # halves never recorded
        found = walk(row.item_id, int(row.page_start), int(row.page_stop), board.done_record)
        for node in found.inner[1:] + found.leaves:
            if node.item_id not in records_status.index:
                referenced.add(Path(node.record.get("staging") or "-").name)
                try:
                    recovered.append(ManifestRecord(**{k: v for k, v in node.record.items() if k in _RECORD_FIELDS}))
                except TypeError:  # not a whole record: the document stays unfinished in the summary
                    logger.warning(f"done marker of {node.item_id} holds no manifest record")
    merged_docs, merged = set(), 0
    pieces = items[(items["parts"] > 1).to_numpy() | isin(items["item_id"], bisected)].sort_values(["doc_id", "part"])
    for doc_id, parts in pieces.groupby("doc_id", sort=False):
        first = parts.iloc[0]
        item = WorkItem(**{k: first[k] for k in ITEM_COLUMNS if k in WorkItem.__slots__})
        ranges = list(parts[["item_id", "page_start", "page_stop"]].itertuples(index=False, name=None))
        if board.is_done(merge_id(doc_id)):
            merged_docs.add(doc_id)
        elif merge_if_complete(paths, record, item, board, ranges):
            merged_docs.add(doc_id)
            merged += 1
    return recovered, merged_docs, merged, referenced


def merged_outputs(
    records: pd.DataFrame, items: pd.DataFrame, merged: set[str], out: Path, output_format: str = "markdown"
) -> pd.DataFrame:
    """The records with each part of a merged split PDF, and each converted half of a bisected item of a
    merged document, pointing at the merged document, not at its piece (deleted once merged). Pure."""
    parts = items.loc[(items["parts"] > 1) & items["doc_id"].isin(list(merged)), "item_id"]
    moved = records["item_id"].isin(parts)
    halves = records["item_id"].str.contains(SUB_MARK, regex=False)
    if halves.any():
        moved |= halves & records["item_id"].str.split(".", n=1).str[0].isin(list(merged))
    moved &= records["output"].notna()
    if not moved.any():
        return records
    records = records.copy()
    out_names = items.drop_duplicates("pdf").set_index("pdf")["out_name"] if "out_name" in items else {}
    records.loc[moved, "output"] = records.loc[moved, "pdf"].map(
        lambda rel: str(document_file(out, rel, output_format, out_names.get(rel, "")))
    )
    return records


def _add_range(found: Collected, items: pd.DataFrame, records: pd.DataFrame, merged_docs: set[str]) -> None:
    latest = latest_frame(records)
    part = item_totals(items, records, latest)
    found.parts.append(part)
    for key, value in document_counts(items, records, merged_docs, latest).items():
        found.documents[key] = found.documents.get(key, 0) + value
    for key in MARKS:
        found.marked.append(
            latest.loc[
                latest[key].notna() & (latest[key] != ""), ["pdf", "page_start", "page_stop", key, "finished", SEQ]
            ].assign(mark=key)
        )
    failures = failures_frame(items[["item_id", "pdf", "page_start", "page_stop"]], records, part["missing"], latest)
    found.failure_count += len(failures)
    shown = sum(len(f) for f in found.failures)
    if shown < ROWS_KEPT:
        found.failures.append(failures.head(ROWS_KEPT - shown))
    found.slowest.append(detached(slowest_candidates(records, SLOWEST_KEPT, latest)))


def detached(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its Arrow-backed string columns copied into buffers of their own: a few rows kept from a range
    (its slowest PDFs: a slice of the range's grouped names) must not keep the whole range's strings alive (at
    10^6 items 0.5 MB a range, 25 MB over the run). Small frames only: each value goes through Python."""
    strings = [name for name, dtype in frame.dtypes.items() if isinstance(dtype, pd.StringDtype)]
    return frame.assign(**{name: pd.array(frame[name].tolist(), dtype=frame[name].dtype) for name in strings})


ROWS_KEPT = 1000  # failures kept for the report (it shows the first 100 and counts them all)
SLOWEST_KEPT = 10  # the report's slowest PDFs


def marked(found: Collected) -> dict:
    """Items whose refinement was partial (`degraded`), whose LLM requests moved replica (`llm_failover`), from
    each item's latest record, in the order those finished."""
    rows = pd.concat(found.marked, ignore_index=True).sort_values(["finished", SEQ], kind="stable")
    return {
        key: [
            {"pdf": r.pdf, "pages": f"{r.page_start + 1}-{r.page_stop}", "reason": getattr(r, key)}
            for r in rows[rows["mark"] == key].itertuples(index=False)
        ]
        for key in MARKS
    }


def light_frame(buckets: Buckets, found: Collected) -> pd.DataFrame:
    """Every record (whole where `found` kept them, else its LIGHT columns with the report's `state`), in the
    order they were read, the recovered ones last."""
    if found.whole:
        return (
            pd.concat(found.whole, ignore_index=True)
            .sort_values(SEQ, kind="stable")
            .drop(columns=SEQ)
            .reset_index(drop=True)
        )
    return buckets.light.frame()
