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

Made for 10^6 items on a login node: the items are kept as Arrow columns (`ItemRows`, a sequence of
WorkItem that makes each record only when it is read) and the arithmetic is numpy's (balance.py).

With `--force-ocr auto` each item carries its document's decision (`ocr`, planning/textcheck.py) and a page
that goes to OCR weighs `page_weight` pages ([ocr] in the config): tasks get equal expected work, and a PDF
that goes to OCR is split at fewer pages. Without it (`ocr` None everywhere) every weight is the page count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pyarrow as pa

from hpc_marker.planning.balance import batch_numbers, lpt_tasks, split_ranges
from hpc_marker.planning.scan import ScannedPdf
from hpc_marker.planning.textcheck import OcrRouting

MIN_SPLIT_PAGES = 16
BATCH_PAGES = 32  # a batch: up to this many pages of consecutive items (a few minutes of work)
BATCH_ITEMS = 64  # ... and at most this many items
MIN_BATCHES = 4  # a task's share is cut into at least this many batches when it can be (thieves take its tail)
_CHUNK = 65_536  # rows made into WorkItems at a time when ItemRows are read


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
    ocr: bool | None = None  # --force-ocr auto: whether its document gets OCR (textcheck.py); None: the run's setting

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


FIELDS = [f.name for f in fields(WorkItem)]
_INTS = {"page_start", "page_stop", "part", "parts", "batch"}
_TYPES = {"ocr": pa.bool_()}
SCHEMA = pa.schema([(name, pa.int32() if name in _INTS else _TYPES.get(name, pa.string())) for name in FIELDS])


class ItemRows(Sequence[WorkItem]):
    """Work items held as Arrow columns (SCHEMA): a WorkItem is made only when one is read, so a plan of
    10^6 items takes tens of MB, not hundreds. Equal to any sequence of the same WorkItems."""

    __slots__ = ("table",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    @classmethod
    def of(cls, items: Sequence[WorkItem]) -> ItemRows:
        if isinstance(items, ItemRows):
            return items
        columns = {name: [getattr(item, name) for item in items] for name in FIELDS}
        return cls(pa.table(columns, schema=SCHEMA))

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return ItemRows(self.table.slice(start, max(0, stop - start))) if step == 1 else list(self)[key]
        row = key + len(self) if key < 0 else key
        if not 0 <= row < len(self):
            raise IndexError(key)
        return next(iter(ItemRows(self.table.slice(row, 1))))

    def __iter__(self) -> Iterator[WorkItem]:
        for chunk in self.table.to_batches(max_chunksize=_CHUNK):
            columns = chunk.to_pydict()
            yield from (WorkItem(*row) for row in zip(*(columns[name] for name in FIELDS), strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ItemRows):
            return self.table.equals(other.table)
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"ItemRows({len(self)} items)"

    def column(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy()

    @property
    def pages(self) -> np.ndarray:
        return self.column("page_stop").astype(np.int64) - self.column("page_start")

    def ocr(self) -> np.ndarray | None:
        """Where an item goes to OCR by --force-ocr auto (a boolean per item); None when none does."""
        import pyarrow.compute as pc  # here, not at the top: a task loads its share without it

        marked = pc.fill_null(self.table.column("ocr"), False).to_numpy(zero_copy_only=False)
        return marked if marked.any() else None

    def weighted_pages(self, page_weight: float) -> float:
        """Pages, those that go to OCR counted `page_weight` times (--force-ocr auto)."""
        pages, ocr = self.pages, self.ocr()
        return float(pages.sum() + (page_weight - 1) * pages[ocr].sum()) if ocr is not None else float(pages.sum())


@dataclass
class TaskPlan:
    index: int
    items: Sequence[WorkItem] = field(default_factory=list)

    @property
    def pages(self) -> int:
        if isinstance(self.items, ItemRows):
            return int(self.items.pages.sum())
        return sum(item.pages for item in self.items)

    def weighted_pages(self, page_weight: float) -> float:
        """Pages, those that go to OCR counted `page_weight` times."""
        if isinstance(self.items, ItemRows):
            return self.items.weighted_pages(page_weight)
        return float(sum(item.pages * (page_weight if item.ocr else 1) for item in self.items))

    def batches(self) -> list[list[WorkItem]]:
        """The share's items grouped by batch, in claim order."""
        grouped: dict[int, list[WorkItem]] = {}
        for item in self.items:
            grouped.setdefault(item.batch, []).append(item)
        return [grouped[key] for key in sorted(grouped)]


@dataclass
class Plan:
    tasks: list[TaskPlan]
    rows: ItemRows | None = field(default=None, compare=False, repr=False)  # every task's items, in task order
    page_weight: float = field(default=1.0, compare=False)  # what a page that goes to OCR weighs (--force-ocr auto)

    @classmethod
    def of_rows(cls, rows: ItemRows, counts: Sequence[int], page_weight: float = 1.0) -> Plan:
        """The plan whose task i has the next counts[i] of `rows`."""
        ends = np.cumsum(counts).tolist()
        starts = [0, *ends[:-1]]
        tasks = [TaskPlan(i, rows[a:b]) for i, (a, b) in enumerate(zip(starts, ends, strict=True))]
        return cls(tasks=tasks, rows=rows, page_weight=page_weight)

    @property
    def items(self) -> Sequence[WorkItem]:
        if self.rows is not None:
            return self.rows
        return [item for task in self.tasks for item in task.items]

    def share(self, index: int) -> TaskPlan:
        return self.tasks[index]

    @property
    def total_pages(self) -> int:
        return sum(task.pages for task in self.tasks)

    def imbalance(self, gpus: int | None = None) -> float:
        """Busiest task's pages over the ideal share total/gpus (default: one GPU per task); 1.0 is perfect.
        Pages that go to OCR count `page_weight` times."""
        loads = [t.weighted_pages(self.page_weight) if self.page_weight != 1 else t.pages for t in self.tasks]
        ideal = sum(loads) / (gpus or len(self.tasks)) if self.tasks else 0
        return max(loads) / ideal if ideal else 1.0

    def to_json(self) -> dict:
        """Each task with its items; `ocr` on each item and `ocr_pages` on each task where --force-ocr auto decided."""
        rows = self.rows
        routed = rows.table["ocr"].null_count < len(rows) if rows else any(i.ocr is not None for i in self.items)

        def task(t: TaskPlan) -> dict:
            items = [{k: v for k, v in asdict(i).items() if k != "ocr" or routed} for i in t.items]
            ocr_pages = {"ocr_pages": sum(i.pages for i in t.items if i.ocr)} if routed else {}
            return {"index": t.index, "pages": t.pages, **ocr_pages, "items": items}

        return {
            "total_pages": self.total_pages,
            **({"ocr_page_weight": self.page_weight} if routed else {}),
            "tasks": [task(t) for t in self.tasks],
        }

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        return cls(tasks=[TaskPlan(index=t["index"], items=[WorkItem(**i) for i in t["items"]]) for t in data["tasks"]])


def _ids(numbers: np.ndarray, width: int) -> pa.Array:
    """f"{n:0{width}d}" of each number, as one Arrow column."""
    import pyarrow.compute as pc  # here, not at the top: a task loads its share without it

    return pc.utf8_lpad(pa.array(numbers, pa.int64()).cast(pa.string()), width=width, padding="0")


def work_items(
    scanned: Sequence[ScannedPdf], out_names: dict[str, str] | None = None, routing: OcrRouting | None = None
) -> ItemRows:
    """One work item per PDF, ids in scan order; `out_names`: the renamed documents (planning/outnames.py);
    `routing` (--force-ocr auto): each PDF's OCR decision from its text-layer sample."""
    count, out_names = len(scanned), out_names or {}
    ids = _ids(np.arange(count), 6)
    zeros = pa.array(np.zeros(count, dtype=np.int32))

    def column(values) -> pa.Array:  # no list of 10^6 in between
        return pa.array(values, pa.string(), size=count)

    columns = {
        "item_id": ids,
        "pdf": column(pdf.relpath for pdf in scanned),
        "page_start": zeros,
        "page_stop": pa.array(np.fromiter((pdf.pages for pdf in scanned), np.int32, count)),
        "scan_error": column(pdf.error for pdf in scanned),
        "scan_status": column(pdf.status for pdf in scanned),
        "doc_id": ids,
        "part": zeros,
        "parts": pa.array(np.ones(count, dtype=np.int32)),
        "batch": zeros,
        "out_name": column(out_names.get(pdf.relpath, "") for pdf in scanned) if out_names else column([""] * count),
        "ocr": pa.array([routing.needs_ocr(pdf.text) for pdf in scanned] if routing else [None] * count, pa.bool_()),
    }
    return ItemRows(pa.table(columns, schema=SCHEMA))


def default_split_pages(total_pages: int, tasks: int) -> int:
    return max(MIN_SPLIT_PAGES, math.ceil(total_pages / max(1, tasks) / 4))


def split_items(items: Sequence[WorkItem], max_pages: int, page_weight: float = 1.0) -> ItemRows:
    """PDFs longer than `max_pages` become equal page-range parts (0 = never split); one that goes to OCR
    (--force-ocr auto) longer than `max_pages` / `page_weight`."""
    import pyarrow.compute as pc  # here, not at the top: a task loads its share without it

    rows = ItemRows.of(items)
    ocr = rows.ocr() if max_pages > 0 and page_weight != 1 else None
    limit = max_pages if ocr is None else np.where(ocr, max(1, int(max_pages / page_weight)), max_pages)
    if max_pages <= 0 or not (rows.pages > limit).any():
        return rows
    starts, stops = rows.column("page_start").astype(np.int64), rows.column("page_stop").astype(np.int64)
    source, new_starts, new_stops, part, parts, split = split_ranges(starts, stops, limit)
    table = rows.table.take(pa.array(source))
    mask = pa.array(split)
    doc = pc.if_else(pc.equal(table["doc_id"], ""), table["item_id"], table["doc_id"])
    split_id = pc.binary_join_element_wise(doc, ".p", _ids(part, 3), "")
    values = {
        "item_id": pc.if_else(mask, split_id, table["item_id"]),
        "page_start": pa.array(new_starts, pa.int32()),
        "page_stop": pa.array(new_stops, pa.int32()),
        "scan_error": pc.if_else(mask, pa.scalar(None, pa.string()), table["scan_error"]),
        "doc_id": pc.if_else(mask, doc, table["doc_id"]),
        "part": pc.if_else(mask, pa.array(part, pa.int32()), table["part"]),
        "parts": pc.if_else(mask, pa.array(parts, pa.int32()), table["parts"]),
        "batch": pc.if_else(mask, pa.scalar(0, pa.int32()), table["batch"]),
    }
    return ItemRows(pa.table({name: values.get(name, table[name]) for name in FIELDS}, schema=SCHEMA))


def task_count(total_pages: int, max_tasks: int, min_task_pages: int = 1) -> int:
    """How many of `max_tasks` tasks the work can use: each gets at least `min_task_pages` pages (so that
    a task that loads models has enough to convert for it), one task at least. Pure."""
    return max(1, min(max_tasks, total_pages // max(1, min_task_pages)))


def _costs(rows: ItemRows, page_weight: float = 1.0) -> np.ndarray:
    """Planning weights: pages (1 for an unreadable PDF), those that go to OCR `page_weight` times (rounded up)."""
    costs = np.maximum(rows.pages, 1)
    ocr = rows.ocr() if page_weight != 1 else None
    return costs if ocr is None else np.where(ocr, np.ceil(costs * page_weight).astype(np.int64), costs)


def make_plan(
    items: Sequence[WorkItem],
    max_tasks: int,
    split_pages: int | None = None,
    min_task_pages: int = 1,
    page_weight: float = 1.0,
) -> Plan:
    """Split large PDFs (threshold: `split_pages`, default derived; 0 = never) and balance the
    items over at most `max_tasks` tasks: never more tasks than items, nor than give each task
    `min_task_pages` pages. Pages that go to OCR (--force-ocr auto) weigh `page_weight` pages."""
    import pyarrow.compute as pc  # here, not at the top: a task loads its share without it

    if max_tasks < 1:
        raise ValueError("a plan needs at least one task")
    rows = ItemRows.of(items)
    total = int(rows.pages.sum())
    max_tasks = task_count(total, max_tasks, min_task_pages)
    weighted = math.ceil(rows.weighted_pages(page_weight)) if page_weight != 1 else total
    threshold = default_split_pages(weighted, max_tasks) if split_pages is None else split_pages
    rows = split_items(rows, threshold, page_weight)
    n_tasks = min(max_tasks, len(rows)) or 1
    rank = np.empty(len(rows), dtype=np.int64)
    rank[pc.sort_indices(rows.table["item_id"]).to_numpy()] = np.arange(len(rows))  # a stable sort
    costs = _costs(rows, page_weight)
    longest_first = np.lexsort((rank, -costs))
    task = np.empty(len(rows), dtype=np.int64)
    task[longest_first] = lpt_tasks(costs[longest_first], n_tasks)
    del longest_first, costs  # 10^6 items: every array freed early keeps the peak down
    in_plan = pa.array(np.lexsort((rank, task)))  # task by task, each share by item id
    counts = np.bincount(task, minlength=n_tasks)
    del rank, task
    rows = ItemRows(rows.table.take(in_plan))
    return Plan.of_rows(_with_batches(rows, counts, page_weight), counts, page_weight)


def _with_batches(rows: ItemRows, counts: np.ndarray, page_weight: float = 1.0, **limits: int) -> ItemRows:
    """`rows` (task by task, `counts` per task) with each item's batch (assign_batches)."""
    limits = {"batch_pages": BATCH_PAGES, "batch_items": BATCH_ITEMS, "min_batches": MIN_BATCHES, **limits}
    batches = batch_numbers(_costs(rows, page_weight), np.asarray(counts, dtype=np.int64), **limits)
    where = FIELDS.index("batch")
    return ItemRows(rows.table.set_column(where, SCHEMA.field(where), pa.array(batches, pa.int32())))


def assign_batches(
    items: Sequence[WorkItem],
    batch_pages: int = BATCH_PAGES,
    batch_items: int = BATCH_ITEMS,
    min_batches: int = MIN_BATCHES,
) -> ItemRows:
    """The same items, each with its batch number: consecutive items up to `batch_pages` pages and
    `batch_items` items (one item at least), smaller when the share would otherwise have fewer than
    `min_batches` batches."""
    limits = {"batch_pages": batch_pages, "batch_items": batch_items, "min_batches": min_batches}
    return _with_batches(ItemRows.of(items), np.array([len(items)]), **limits)


def static_chunks(items: Sequence[WorkItem], chunks: int) -> Plan:
    """marker's own chunk_convert sharding: ceil(files/chunks) files per chunk in listing order.

    Kept for benchmarks, as the baseline hpcmarker is measured against.
    """
    rows = ItemRows.of(items)
    size = -(-len(rows) // chunks)
    counts = [count for i in range(chunks) if (count := max(0, min(size, len(rows) - i * size)))]
    return Plan.of_rows(_with_batches(rows, np.array(counts, dtype=np.int64)), counts)


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
