"""Summary: what a run's manifest records add up to (summary.json, status, the report). Pure.

`summarize_records` counts items, statuses, pages and rates over the plan and the records, and the
text-layer flags (`text_layer_summary`); `document_counts` counts documents (a split PDF is one
document once its parts are merged).
"""

from __future__ import annotations

from hpc_marker.planning.plan import Plan, items_by_document
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.documents import DocumentState, documents
from hpc_marker.runstate.finish import merge_id
from hpc_marker.runstate.manifest import STATUSES, ManifestRecord, latest_by_item


def document_counts(plan: Plan, latest: dict[str, ManifestRecord], board: ClaimBoard) -> dict:
    docs = items_by_document(plan)
    ok = failed = 0
    for doc_id, items in docs.items():
        statuses = [latest[i.item_id].status if i.item_id in latest else None for i in items]
        if any(s not in (None, "ok") for s in statuses):
            failed += 1
        elif all(s == "ok" for s in statuses) and (not items[0].is_part or board.is_done(merge_id(doc_id))):
            ok += 1
    return {"documents": len(docs), "documents_ok": ok, "documents_failed": failed}


def summarize_records(plan: Plan, records: list[ManifestRecord], torn: list[str]) -> dict:
    """The summary.json content. Pure."""
    latest = latest_by_item(records)
    planned = {item.item_id for item in plan.items}
    final = [r for r in latest.values() if r.item_id in planned]
    ok = [r for r in final if r.status == "ok"]
    failed = [r for r in final if r.status != "ok"]
    started = min((r.started for r in records), default=None)
    finished = max((r.finished for r in records), default=None)
    wall = (finished - started) if started is not None and finished is not None else 0.0
    pages_ok = sum(r.pages for r in ok)
    tasks = []
    for task in plan.tasks:
        mine = [r for r in records if r.task == task.index]
        t_wall = (max(r.finished for r in mine) - min(r.started for r in mine)) if mine else 0.0
        t_pages = sum(r.pages for r in mine if r.status == "ok")
        tasks.append({
            "task": task.index, "items": len(task.items), "planned_pages": task.pages,
            "ok": sum(r.status == "ok" for r in mine), "failed": sum(r.status != "ok" for r in mine),
            "pages_ok": t_pages, "busy_seconds": round(sum(r.seconds for r in mine), 3),
            "wall_seconds": round(t_wall, 3), "pages_per_second": round(t_pages / t_wall, 3) if t_wall else None,
            "gpu": sorted({r.gpu for r in mine}), "hosts": sorted({r.host for r in mine}),
        })
    return {
        "items": len(planned), "ok": len(ok), "failed": len(failed),
        "by_status": {status: sum(r.status == status for r in final) for status in STATUSES},
        "missing": sorted(planned - set(latest)), "pages": plan.total_pages, "pages_ok": pages_ok,
        "wall_seconds": round(wall, 3), "pages_per_second": round(pages_ok / wall, 3) if wall else None,
        "failures": [{"item_id": r.item_id, "pdf": r.pdf, "pages": f"{r.page_start + 1}-{r.page_stop}",
                      "status": r.status, "error": r.error}
                     for r in sorted(failed, key=lambda r: r.pdf)],
        "torn_manifest_lines": torn, "tasks": tasks,
        **text_layer_summary(documents(final)),
    }


def page_label(pages: list[int]) -> str:
    """0-based page indices as people count pages, runs joined: [0, 1, 2, 5] -> '1-3, 6'. Pure."""
    runs: list[list[int]] = []
    for page in sorted(set(pages)):
        if runs and page == runs[-1][1] + 1:
            runs[-1][1] = page
        else:
            runs.append([page, page])
    return ", ".join(f"{a + 1}" if a == b else f"{a + 1}-{b + 1}" for a, b in runs)


def text_layer_summary(docs: dict[str, DocumentState]) -> dict:
    """Documents and pages whose text layer was checked, and those flagged empty or garbled
    (`flagged`: one entry per document with a flagged page, 1-based page labels)."""
    checked = [d for d in docs.values() if d.empty_pages is not None]
    flagged = [d for d in checked if d.empty_pages or d.garbled_pages]
    return {
        "text_layer": {
            "documents_checked": len(checked), "pages_checked": sum(d.checked_pages for d in checked),
            "documents_with_empty_pages": sum(bool(d.empty_pages) for d in checked),
            "empty_pages": sum(len(d.empty_pages or []) for d in checked),
            "documents_with_garbled_pages": sum(bool(d.garbled_pages) for d in checked),
            "garbled_pages": sum(len(d.garbled_pages or []) for d in checked),
        },
        "flagged": [{"pdf": d.pdf, "pages": d.checked_pages, "empty": page_label(d.empty_pages or []),
                     "garbled": page_label(d.garbled_pages or [])} for d in flagged],
    }
