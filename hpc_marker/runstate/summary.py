"""Summary: what a run's manifest records add up to (summary.json, status, the report). Pure.

Everything here works on frames (one row per planned item, one row per manifest record), so a
run of 10^6 items is summarized in seconds: `summarize` counts items, statuses, pages and rates, and
the text-layer flags (`text_layer_summary`, with `--force-ocr auto`'s routing: `ocr_routing`) and the output flags
(`output_flag_summary`); `document_counts`
counts documents (a split PDF is one document once its parts are merged).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hpc_marker.planning.bisect import BISECTED
from hpc_marker.planning.plan import Plan
from hpc_marker.planning.store import ShareSummary
from hpc_marker.quality.flags import FLAG_NAMES, merge_fields
from hpc_marker.runstate.documents import ocr_routing
from hpc_marker.runstate.manifest import COLUMNS, STATUSES, ManifestRecord, latest_frame
from hpc_marker.runstate.subitems import PARTIAL, resolve_frame
from hpc_marker.util.frames import busy_seconds, distinct_rows, isin, positions

SHARE = "share"  # an item's planned share, a column the summary adds to the plan's items where they lack it
ITEM_COLUMNS = ["item_id", "pdf", "page_start", "page_stop", "doc_id", "part", "parts", "out_name", "ocr"]


def plan_frames(plan: Plan) -> tuple[pd.DataFrame, list[ShareSummary]]:
    """A plan in memory as the frames `summarize` takes (small runs, tests)."""
    rows = [{name: getattr(item, name) for name in ITEM_COLUMNS} for item in plan.items]
    shares = [
        ShareSummary(index=t.index, items=len(t.items), pages=t.pages, batch_pages=[], row_group=t.index)
        for t in plan.tasks
    ]
    return pd.DataFrame(rows, columns=ITEM_COLUMNS), shares


def records_frame(records: list[ManifestRecord]) -> pd.DataFrame:
    return pd.DataFrame([vars(r) for r in records], columns=COLUMNS)


def _pages(start: pd.Series, stop: pd.Series) -> pd.Series:
    return (start + 1).astype(str) + "-" + stop.astype(str)


def summarize(items: pd.DataFrame, shares: list[ShareSummary], records: pd.DataFrame, torn: list[str]) -> dict:
    """The summary.json content: totals over the latest record of each planned item, per-task figures
    over every record."""
    if SHARE not in items:
        items = items.assign(**{SHARE: np.repeat([s.index for s in shares], [s.items for s in shares])})
    return add_up([item_totals(items, records)], records, shares, torn)


def item_totals(items: pd.DataFrame, records: pd.DataFrame, latest: pd.DataFrame | None = None) -> dict:
    """What `summarize` counts per planned item, over these items (with their SHARE) and every record of them
    (and of their halves): a part that `add_up` adds to the others. Whole for any set of items that holds every
    item of their PDFs (the collector's buckets, runstate/buckets.py). `latest`: latest_frame(records), where
    the caller has it."""
    planned = items["item_id"]
    latest = latest_frame(records) if latest is None else latest
    final, leaves = resolve_frame(latest[isin(latest["item_id"], planned)], latest)  # bisected items folded
    ok, partial = final[final["status"] == "ok"], final[final["status"] == PARTIAL]
    failed = final[~final["status"].isin(["ok", PARTIAL])]
    counts = final["status"].value_counts()
    return {
        "items": len(planned),
        "ok": len(ok),
        "failed": len(failed),
        "partial": len(partial),
        "by_status": {status: int(counts.get(status, 0)) for status in (*STATUSES, PARTIAL)},
        "lost_pages": _lost_pages(partial),
        "missing": planned[~isin(planned, latest["item_id"])].tolist(),
        "pages_ok": int(final["pages_ok"].sum()),
        "failures": _failures(failed),
        "shares": _share_rows(final, items),
        "routed": ocr_routing(items, final),
        **text_layer_summary(leaves),
        **output_flag_summary(leaves),
    }


def add_up(parts: list[dict], records: pd.DataFrame, shares: list[ShareSummary], torn: list[str]) -> dict:
    """The summary.json content from the `item_totals` of disjoint sets of PDFs, in PDF order, and every record
    (columns task, status, pages, seconds, started, finished, gpu, host are enough)."""
    first = parts[0]
    wall = busy_seconds(records["started"], records["finished"])  # not the idle time between submissions
    pages_ok = sum(p["pages_ok"] for p in parts)
    layer = {key: sum(p["text_layer"][key] for p in parts) for key in first["text_layer"]}
    if routed := [p["routed"] for p in parts if p["routed"]]:  # --force-ocr auto: pages each way, over the parts
        layer["routed"] = {
            route: {key: sum(r[route][key] for r in routed) for key in routed[0][route]} for route in routed[0]
        }
    flags = {name: n for name in FLAG_NAMES if (n := sum(p["output_flags"].get(name, 0) for p in parts))}
    return {
        "items": sum(p["items"] for p in parts),
        "ok": sum(p["ok"] for p in parts),
        "failed": sum(p["failed"] for p in parts),
        "partial": sum(p["partial"] for p in parts),
        "by_status": {status: sum(p["by_status"][status] for p in parts) for status in first["by_status"]},
        "lost_pages": [row for p in parts for row in p["lost_pages"]],
        "missing": sorted(item for p in parts for item in p["missing"]),
        "pages": int(sum(s.pages for s in shares)),
        "pages_ok": pages_ok,
        "wall_seconds": round(wall, 3),
        "pages_per_second": round(pages_ok / wall, 3) if wall else None,
        "failures": [row for p in parts for row in p["failures"]],
        "torn_manifest_lines": torn,
        "tasks": _task_rows(records, shares),
        "shares": _merge_shares(p["shares"] for p in parts),
        "first_started": float(records["started"].min()) if len(records) else None,
        "last_finished": float(records["finished"].max()) if len(records) else None,
        "text_layer": layer,
        "flagged": [row for p in parts for row in p["flagged"]],
        "output_flags": flags,
        "output_flagged": [row for p in parts for row in p["output_flagged"]][:FLAGGED_LISTED],
    }


def _per_task(records: pd.DataFrame) -> pd.DataFrame:
    """Per task, over every record: items ok, records, items split, pages ok, busy and wall seconds, the
    GPUs and hosts it ran on. Counted from the task column's codes (no frame of the columns added up: at 10^6
    records such a copy was the collector's peak); the busy seconds by pandas' grouped sum, as before."""
    status = records["status"]
    ok, split = (status == "ok").to_numpy(bool), (status == BISECTED).to_numpy(bool)
    codes, tasks = pd.factorize(records["task"], sort=True)  # -1: no task (groupby leaves those out)
    counted = codes >= 0
    codes = codes[counted]

    def count(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(codes, None if weights is None else weights[counted], minlength=len(tasks))

    pages = records["pages"].fillna(0).to_numpy()
    agg = pd.DataFrame(
        {
            "ok": count(ok).astype(np.int64),
            "n": count().astype(np.int64),
            "split": count(split).astype(np.int64),
            "pages_ok": count(np.where(ok, pages, 0)).astype(np.int64),
            "busy": records["seconds"].groupby(records["task"]).sum().to_numpy(),
        },
        index=pd.Index(tasks, name="task"),
    )
    agg["wall"] = _busy_per_task(records) if len(records) else []
    for column, name in (("gpu", "gpu"), ("host", "hosts")):  # the distinct pairs first: a few per task
        pairs = distinct_rows(records, ["task", column])  # a chunk of records at a time
        values = pd.Series(pairs[column].to_numpy(object), index=pairs["task"].to_numpy())
        agg[name] = values.groupby(level=0).agg(lambda s: sorted(set(s))).reindex(agg.index)
    return agg


def _busy_per_task(records: pd.DataFrame) -> list[float]:
    """busy_seconds of each task's records, by task (the groups of groupby("task"), sorted, none for no task),
    from the start and end arrays split by task (a stable sort: each task's in record order), no frame per task."""
    task = records["task"].to_numpy()
    order = np.flatnonzero(records["task"].notna().to_numpy(bool))  # groupby leaves out records of no task
    order = order[np.argsort(task[order], kind="stable")]
    cuts = np.flatnonzero(np.diff(task[order])) + 1
    started, finished = (records[c].to_numpy(float) for c in ("started", "finished"))  # float64: no copy
    return [busy_seconds(started[group], finished[group]) for group in np.split(order, cuts)]  # a task's at a time


def _task_rows(records: pd.DataFrame, shares: list[ShareSummary]) -> list[dict]:
    """summary.json's `tasks`: one entry per planned task (share), zeros for a task without records."""
    agg = _per_task(records)
    tasks = []
    for share in shares:
        row = agg.loc[share.index] if share.index in agg.index else None
        t_wall = float(row["wall"]) if row is not None else 0.0
        t_pages = int(row["pages_ok"]) if row is not None else 0
        tasks.append(
            {
                "task": share.index,
                "items": share.items,
                "planned_pages": share.pages,
                "ok": int(row["ok"]) if row is not None else 0,
                "failed": int(row["n"] - row["ok"] - row["split"]) if row is not None else 0,
                "pages_ok": t_pages,
                "busy_seconds": round(float(row["busy"]), 3) if row is not None else 0.0,
                "wall_seconds": round(t_wall, 3),
                "pages_per_second": round(t_pages / t_wall, 3) if t_wall else None,
                "gpu": list(row["gpu"]) if row is not None else [],
                "hosts": list(row["hosts"]) if row is not None else [],
            }
        )
    return tasks


def _failures(failed: pd.DataFrame) -> list[dict]:
    """summary.json's `failures`: the failed items (latest records) by PDF and first page."""
    failed = failed.sort_values(["pdf", "page_start"], kind="stable")
    failures = pd.DataFrame(
        {
            "item_id": failed["item_id"],
            "pdf": failed["pdf"],
            "pages": _pages(failed["page_start"], failed["page_stop"]),
            "status": failed["status"],
            "error": failed["error"],
            "task": failed["task"],
        }
    )
    return failures.astype(object).where(failures.notna(), None).to_dict("records")


def _share_rows(final: pd.DataFrame, items: pd.DataFrame) -> list[dict]:
    """summary.json's `shares`: per planned share (the items' SHARE), its finished items by outcome and pages."""
    done = final[final["status"] != BISECTED]  # a bisected item whose halves are not all finished is not done
    per_share = done.assign(
        share=items[SHARE].to_numpy()[positions(done["item_id"], items["item_id"])],  # each is a planned item
        ok=done["status"] == "ok",
        part=done["status"] == PARTIAL,
        bad=~done["status"].isin(["ok", PARTIAL]),
        deg=done["degraded"].fillna("").astype(str) != "",
    )
    grouped = per_share.groupby("share").agg(
        ok=("ok", "sum"),
        failed=("bad", "sum"),
        partial=("part", "sum"),
        pages_done=("pages", "sum"),
        degraded=("deg", "sum"),
    )
    return [
        {
            "share": int(share),
            "ok": int(row.ok),
            "failed": int(row.failed),
            "partial": int(row.partial),
            "pages_done": int(row.pages_done),
            "degraded": int(row.degraded),
        }
        for share, row in grouped.iterrows()
    ]


def _merge_shares(parts) -> list[dict]:
    """`_share_rows` of several sets of items as one list: the rows of a share added up, by share."""
    merged: dict[int, dict] = {}
    for rows in parts:
        for row in rows:
            if row["share"] in merged:
                merged[row["share"]] = {k: v if k == "share" else merged[row["share"]][k] + v for k, v in row.items()}
            else:
                merged[row["share"]] = row
    return [merged[share] for share in sorted(merged)]


def _lost_pages(partial: pd.DataFrame) -> list[dict]:
    """summary.json's `lost_pages`: each page lost in a partial document, 1-based, by PDF."""
    return [
        {"pdf": row.pdf, "page": int(page["page"]) + 1, "status": page["status"], "error": page["error"]}
        for row in partial.sort_values(["pdf", "page_start"]).itertuples(index=False)
        for page in row.lost_pages
    ]


def document_counts(
    items: pd.DataFrame, records: pd.DataFrame, merged: set[str], latest: pd.DataFrame | None = None
) -> dict:
    """Documents in all, ok (every part ok, and merged when split: `merged` holds those doc ids), partial
    (every page finished, some lost, put together), failed (an item failed whole)."""
    latest = latest_frame(records) if latest is None else latest
    final, _ = resolve_frame(latest[isin(latest["item_id"], items["item_id"])], latest)
    found = positions(items["item_id"], final["item_id"])
    status = pd.Series(np.full(len(items), None, dtype=object), index=items.index)
    status[found >= 0] = final["status"].to_numpy(object)[found[found >= 0]]
    finished = status.notna() & (status != BISECTED)
    per_doc = pd.DataFrame(
        {
            "doc": items["doc_id"].where(items["doc_id"] != "", items["item_id"]),
            "ok": status == "ok",
            "partial": status == PARTIAL,
            "failed": finished & ~status.isin(["ok", PARTIAL]),
            "split": (items["parts"] > 1) | (status == PARTIAL),
        }
    )
    per_doc = (
        per_doc.assign(whole=per_doc["ok"] | per_doc["partial"])
        .groupby("doc")
        .agg(
            all_ok=("ok", "all"),
            all_whole=("whole", "all"),
            any_partial=("partial", "any"),
            any_failed=("failed", "any"),
            split=("split", "any"),
        )
    )
    assembled = ~per_doc["split"] | isin(per_doc.index, merged)
    return {
        "documents": len(per_doc),
        "documents_ok": int((per_doc["all_ok"] & assembled).sum()),
        "documents_partial": int((per_doc["all_whole"] & per_doc["any_partial"] & assembled).sum()),
        "documents_failed": int(per_doc["any_failed"].sum()),
    }


def summarize_records(plan: Plan, records: list[ManifestRecord], torn: list[str]) -> dict:
    """`summarize` for a plan and records in memory (small runs, tests)."""
    items, shares = plan_frames(plan)
    return summarize(items, shares, records_frame(records), torn)


def page_label(pages) -> str:
    """0-based page indices as people count pages, runs joined: [0, 1, 2, 5] -> '1-3, 6'. Pure."""
    runs: list[list[int]] = []
    for page in sorted({int(p) for p in pages}):
        if runs and page == runs[-1][1] + 1:
            runs[-1][1] = page
        else:
            runs.append([page, page])
    return ", ".join(f"{a + 1}" if a == b else f"{a + 1}-{b + 1}" for a, b in runs)


def _flagged(values: pd.Series) -> pd.Series:
    """Each record's number of flagged pages; -1 where its text layer was not checked (None, NaN)."""
    return values.map(lambda v: -1 if v is None or isinstance(v, float) else len(v))


def text_layer_summary(final: pd.DataFrame) -> dict:
    """Over the latest record of each item (columns pdf, pages, empty_pages, garbled_pages): pages and
    documents checked, those with empty or garbled pages, and `flagged` (one entry per document with a
    flagged page, 1-based page labels, sorted by PDF)."""
    empty, garbled = _flagged(final["empty_pages"]), _flagged(final["garbled_pages"])
    checked = empty >= 0
    per_doc = (
        pd.DataFrame(
            {
                "pdf": final["pdf"],
                "checked": checked,
                "pages": final["pages"].where(checked, 0),
                "empty": empty.clip(lower=0),
                "garbled": garbled.clip(lower=0),
            }
        )
        .groupby("pdf")
        .sum()
    )
    per_doc = per_doc[per_doc["checked"] > 0]
    flagged = per_doc[(per_doc["empty"] > 0) | (per_doc["garbled"] > 0)]
    lists = final[final["pdf"].isin(flagged.index) & checked]
    pages = {
        pdf: (
            page_label(p for pages in group["empty_pages"] for p in pages),
            page_label(p for pages in group["garbled_pages"] for p in pages),
        )
        for pdf, group in lists.groupby("pdf")
    }
    return {
        "text_layer": {
            "documents_checked": len(per_doc),
            "pages_checked": int(per_doc["pages"].sum()),
            "documents_with_empty_pages": int((per_doc["empty"] > 0).sum()),
            "empty_pages": int(per_doc["empty"].sum()),
            "documents_with_garbled_pages": int((per_doc["garbled"] > 0).sum()),
            "garbled_pages": int(per_doc["garbled"].sum()),
        },
        "flagged": [
            {"pdf": pdf, "pages": int(row.pages), "empty": pages[pdf][0], "garbled": pages[pdf][1]}
            for pdf, row in flagged.sort_index().iterrows()
        ],
    }


FLAGGED_LISTED = 100  # summary.json names at most this many documents with output flags (all are in the manifest)


def output_flag_summary(final: pd.DataFrame) -> dict:
    """Over the latest record of each item (columns pdf, output_flags): `output_flags`, how many documents carry
    each output flag (quality/flags.py; only the flags some document carries), and `output_flagged`, the first
    FLAGGED_LISTED of those documents by PDF with their flags (1-based pages)."""
    values = final["output_flags"].where(final["output_flags"].notna(), "").astype(str)
    raised = values != ""
    counts, searched, pdfs = {}, values[raised], final.loc[raised, "pdf"]  # only the records with a flag
    for name in FLAG_NAMES:
        documents = pdfs[searched.str.contains(rf"(?:^| ){name}(?::|\s|$)", regex=True).to_numpy(bool)].nunique()
        if documents:
            counts[name] = int(documents)
    flagged = final[raised].sort_values(["pdf", "page_start"])
    listed = sorted(flagged["pdf"].unique())[:FLAGGED_LISTED]
    groups = flagged[flagged["pdf"].isin(listed)].groupby("pdf")["output_flags"]
    return {
        "output_flags": counts,
        "output_flagged": [{"pdf": pdf, "flags": merge_fields(group)} for pdf, group in groups],
    }
