"""The planner as it was before issue 24 (one WorkItem at a time, heapq LPT, a Python loop per batch): the
oracle that tests/planning/test_plan_equal.py compares the vectorized planner with, and the `before` figure
of benchmarks/bench_scale.py `plan`. Not used by the package."""

from __future__ import annotations

import heapq
import math
from dataclasses import replace

from hpc_marker.planning.plan import Plan, TaskPlan, WorkItem, default_split_pages, part_id, task_count
from hpc_marker.planning.scan import ScannedPdf


def work_items(scanned: list[ScannedPdf], out_names: dict[str, str] | None = None) -> list[WorkItem]:
    out_names = out_names or {}
    return [
        WorkItem(
            item_id=f"{n:06d}",
            pdf=pdf.relpath,
            page_start=0,
            page_stop=pdf.pages,
            scan_error=pdf.error,
            scan_status=pdf.status,
            doc_id=f"{n:06d}",
            out_name=out_names.get(pdf.relpath, ""),
        )
        for n, pdf in enumerate(scanned)
    ]


def split_items(items: list[WorkItem], max_pages: int) -> list[WorkItem]:
    if max_pages <= 0:
        return list(items)
    out: list[WorkItem] = []
    for item in items:
        if item.pages <= max_pages:
            out.append(item)
            continue
        doc_id = item.doc_id or item.item_id
        n = math.ceil(item.pages / max_pages)
        size = math.ceil(item.pages / n)
        starts = list(range(item.page_start, item.page_stop, size))
        for k, start in enumerate(starts):
            out.append(
                WorkItem(
                    item_id=part_id(doc_id, k),
                    pdf=item.pdf,
                    page_start=start,
                    page_stop=min(start + size, item.page_stop),
                    scan_status=item.scan_status,
                    doc_id=doc_id,
                    part=k,
                    parts=len(starts),
                    out_name=item.out_name,
                )
            )
    return out


def make_plan(items: list[WorkItem], max_tasks: int, split_pages: int | None = None, min_task_pages: int = 1) -> Plan:
    if max_tasks < 1:
        raise ValueError("a plan needs at least one task")
    total = sum(item.pages for item in items)
    max_tasks = task_count(total, max_tasks, min_task_pages)
    items = split_items(items, default_split_pages(total, max_tasks) if split_pages is None else split_pages)
    n_tasks = min(max_tasks, len(items)) or 1
    tasks = [TaskPlan(index=i, items=[]) for i in range(n_tasks)]
    heap = [(0, i) for i in range(n_tasks)]
    for cost, _, item in sorted(((item.cost, item.item_id, item) for item in items), key=lambda c: (-c[0], c[1])):
        load, index = heapq.heappop(heap)
        tasks[index].items.append(item)
        heapq.heappush(heap, (load + cost, index))
    for task in tasks:
        task.items = assign_batches(sorted(task.items, key=lambda it: it.item_id))
    return Plan(tasks=tasks)


def assign_batches(items: list[WorkItem], batch_pages: int = 32, batch_items: int = 64, min_batches: int = 4):
    total = sum(item.cost for item in items)
    limit = max(1, min(batch_pages, math.ceil(total / min_batches)))
    out: list[WorkItem] = []
    batch = pages = count = 0
    for item in items:
        cost = item.cost
        if count and (pages + cost > limit or count >= batch_items):
            batch, pages, count = batch + 1, 0, 0
        out.append(item if item.batch == batch else replace(item, batch=batch))
        pages, count = pages + cost, count + 1
    return out


def static_chunks(items: list[WorkItem], chunks: int) -> Plan:
    size = -(-len(items) // chunks)
    tasks = [TaskPlan(index=i, items=assign_batches(items[i * size : (i + 1) * size])) for i in range(chunks)]
    return Plan(tasks=[t for t in tasks if t.items])
