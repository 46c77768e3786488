"""Plan: the assignment of work items to array tasks, and of each task's items to batches.

Pure functions over typed records. Tasks are balanced by pages, not by file count: a PDF
longer than the split threshold becomes page-range parts, then items are placed longest
first on the least-loaded task (LPT). The default threshold is a quarter of the ideal share
(total pages / tasks), at least MIN_SPLIT_PAGES, which keeps the busiest task within a few
percent of the ideal and leaves items small enough for work stealing to even out the rest.

A task claims its work a batch at a time (runstate/claims.py): consecutive items of its share
worth up to BATCH_PAGES pages (fewer when the share is small, so that every task has at least
MIN_BATCHES batches to steal from), one item at least. Claiming costs the same per batch
whatever the number of tasks.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field

from hpc_marker.planning.scan import ScannedPdf

MIN_SPLIT_PAGES = 16
BATCH_PAGES = 32  # a batch: up to this many pages of consecutive items (a few minutes of work)
BATCH_ITEMS = 64  # ... and at most this many items
MIN_BATCHES = 4  # a task's share is cut into at least this many batches when it can be (thieves take its tail)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One PDF, or the page range [page_start, page_stop) of one (0-based)."""

    item_id: str
    pdf: str  # path relative to the scanned folder, POSIX
    page_start: int
    page_stop: int
    scan_error: str | None = None
    scan_status: str = "ok"  # the scan's verdict: "ok", or the status an unreadable PDF gets ("failed", "encrypted")
    doc_id: str = ""  # the PDF's id; parts of one PDF share it
    part: int = 0
    parts: int = 1
    batch: int = 0  # the batch of its task's share it is claimed with
    out_name: str = ""  # its document's name under --out where the PDF's own would collide (planning/outnames.py)

    @property
    def is_part(self) -> bool:
        return self.parts > 1

    @property
    def pages(self) -> int:
        return self.page_stop - self.page_start

    def page_label(self) -> str:
        """1-based, inclusive, as people count pages: '1-81', or '-' for an unreadable PDF."""
        if self.pages <= 0:
            return "-"
        return f"{self.page_start + 1}-{self.page_stop}"

    @property
    def cost(self) -> int:
        """Planning weight: pages, and 1 for an unreadable PDF (it still takes a moment)."""
        return max(self.pages, 1)


@dataclass
class TaskPlan:
    index: int
    items: list[WorkItem] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return sum(item.pages for item in self.items)

    def batches(self) -> list[list[WorkItem]]:
        """The share's items grouped by batch, in claim order."""
        grouped: dict[int, list[WorkItem]] = {}
        for item in self.items:
            grouped.setdefault(item.batch, []).append(item)
        return [grouped[key] for key in sorted(grouped)]


@dataclass
class Plan:
    tasks: list[TaskPlan]

    @property
    def items(self) -> list[WorkItem]:
        return [item for task in self.tasks for item in task.items]

    def share(self, index: int) -> TaskPlan:
        return self.tasks[index]

    @property
    def total_pages(self) -> int:
        return sum(task.pages for task in self.tasks)

    def imbalance(self, gpus: int | None = None) -> float:
        """Busiest task's pages over the ideal share total/gpus (default: one GPU per task); 1.0 is perfect."""
        ideal = self.total_pages / (gpus or len(self.tasks)) if self.tasks else 0
        return max(t.pages for t in self.tasks) / ideal if ideal else 1.0

    def to_json(self) -> dict:
        return {
            "total_pages": self.total_pages,
            "tasks": [{"index": t.index, "pages": t.pages, "items": [asdict(i) for i in t.items]} for t in self.tasks],
        }

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        return cls(tasks=[TaskPlan(index=t["index"], items=[WorkItem(**i) for i in t["items"]]) for t in data["tasks"]])


def work_items(scanned: list[ScannedPdf], out_names: dict[str, str] | None = None) -> list[WorkItem]:
    """One work item per PDF, ids in scan order; `out_names`: the renamed documents (planning/outnames.py)."""
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


def default_split_pages(total_pages: int, tasks: int) -> int:
    return max(MIN_SPLIT_PAGES, math.ceil(total_pages / max(1, tasks) / 4))


def split_items(items: list[WorkItem], max_pages: int) -> list[WorkItem]:
    """PDFs longer than `max_pages` become equal page-range parts (0 = never split)."""
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


def task_count(total_pages: int, max_tasks: int, min_task_pages: int = 1) -> int:
    """How many of `max_tasks` tasks the work can use: each gets at least `min_task_pages` pages (so that
    a task that loads models has enough to convert for it), one task at least. Pure."""
    return max(1, min(max_tasks, total_pages // max(1, min_task_pages)))


def make_plan(items: list[WorkItem], max_tasks: int, split_pages: int | None = None, min_task_pages: int = 1) -> Plan:
    """Split large PDFs (threshold: `split_pages`, default derived; 0 = never) and balance the
    items over at most `max_tasks` tasks: never more tasks than items, nor than give each task
    `min_task_pages` pages."""
    if max_tasks < 1:
        raise ValueError("a plan needs at least one task")
    total = sum(item.pages for item in items)
    max_tasks = task_count(total, max_tasks, min_task_pages)
    items = split_items(items, default_split_pages(total, max_tasks) if split_pages is None else split_pages)
    n_tasks = min(max_tasks, len(items)) or 1
    tasks = [TaskPlan(index=i) for i in range(n_tasks)]
    heap = [(0, i) for i in range(n_tasks)]
    for cost, _, item in sorted(((item.cost, item.item_id, item) for item in items), key=lambda c: (-c[0], c[1])):
        load, index = heapq.heappop(heap)
        tasks[index].items.append(item)
        heapq.heappush(heap, (load + cost, index))
    for task in tasks:
        task.items = assign_batches(sorted(task.items, key=lambda it: it.item_id))
    return Plan(tasks=tasks)


def assign_batches(
    items: list[WorkItem],
    batch_pages: int = BATCH_PAGES,
    batch_items: int = BATCH_ITEMS,
    min_batches: int = MIN_BATCHES,
) -> list[WorkItem]:
    """The same items, each with its batch number: consecutive items up to `batch_pages` pages and
    `batch_items` items (one item at least), smaller when the share would otherwise have fewer than
    `min_batches` batches."""
    total = sum(item.cost for item in items)
    limit = max(1, min(batch_pages, math.ceil(total / min_batches)))
    out: list[WorkItem] = []
    batch = pages = count = 0
    for item in items:
        cost = item.cost
        if count and (pages + cost > limit or count >= batch_items):
            batch, pages, count = batch + 1, 0, 0
        out.append(item if item.batch == batch else _with_batch(item, batch))
        pages, count = pages + cost, count + 1
    return out


def _with_batch(item: WorkItem, batch: int) -> WorkItem:
    """`replace(item, batch=batch)`, three times faster (replace() inspects the fields on every call: 10 s of
    a 10^6-item plan). Every field in order: tests/planning check it against replace()."""
    return WorkItem(
        item.item_id,
        item.pdf,
        item.page_start,
        item.page_stop,
        item.scan_error,
        item.scan_status,
        item.doc_id,
        item.part,
        item.parts,
        batch,
        item.out_name,
    )


def static_chunks(items: list[WorkItem], chunks: int) -> Plan:
    """marker's own chunk_convert sharding: ceil(files/chunks) files per chunk in listing order.

    Kept for benchmarks, as the baseline hpcmarker is measured against.
    """
    size = -(-len(items) // chunks)
    tasks = [TaskPlan(index=i, items=assign_batches(items[i * size : (i + 1) * size])) for i in range(chunks)]
    return Plan(tasks=[t for t in tasks if t.items])


def items_by_document(plan: Plan) -> dict[str, list[WorkItem]]:
    """doc_id -> its work items in page order."""
    docs: dict[str, list[WorkItem]] = {}
    for item in plan.items:
        docs.setdefault(item.doc_id or item.item_id, []).append(item)
    for items in docs.values():
        items.sort(key=lambda it: it.page_start)
    return docs


def part_ids(item: WorkItem) -> list[str]:
    """The item ids of every part of `item`'s document, in page order (just its own when not split)."""
    if not item.is_part:
        return [item.item_id]
    return [part_id(item.doc_id, k) for k in range(item.parts)]


def part_id(doc_id: str, part: int) -> str:
    return f"{doc_id}.p{part:03d}"
