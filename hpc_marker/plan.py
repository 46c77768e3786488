"""Plan: the assignment of work items to array tasks.

Pure functions over typed records. Tasks are balanced by pages, not by file count:
items are placed longest first on the least-loaded task (LPT), which keeps the busiest task
close to total/tasks unless one PDF alone is larger than that.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .scan import ScannedPdf


@dataclass(frozen=True)
class WorkItem:
    """One PDF, or the page range [page_start, page_stop) of one (0-based)."""

    item_id: str
    pdf: str  # path relative to the scanned folder, POSIX
    page_start: int
    page_stop: int
    scan_error: str | None = None

    @property
    def pages(self) -> int:
        return self.page_stop - self.page_start

    @property
    def is_whole(self) -> bool:
        return self.page_start == 0

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


@dataclass
class Plan:
    tasks: list[TaskPlan]

    @property
    def items(self) -> list[WorkItem]:
        return [item for task in self.tasks for item in task.items]

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
            "tasks": [
                {"index": t.index, "pages": t.pages, "items": [asdict(i) for i in t.items]}
                for t in self.tasks
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        return cls(
            tasks=[
                TaskPlan(index=t["index"], items=[WorkItem(**i) for i in t["items"]])
                for t in data["tasks"]
            ]
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> Plan:
        return cls.from_json(json.loads(Path(path).read_text()))


def work_items(scanned: list[ScannedPdf]) -> list[WorkItem]:
    """One work item per PDF, ids in scan order."""
    return [
        WorkItem(
            item_id=f"{n:06d}",
            pdf=pdf.relpath,
            page_start=0,
            page_stop=pdf.pages,
            scan_error=pdf.error,
        )
        for n, pdf in enumerate(scanned)
    ]


def make_plan(items: list[WorkItem], max_tasks: int) -> Plan:
    """Balance `items` over at most `max_tasks` tasks (never more tasks than items)."""
    if max_tasks < 1:
        raise ValueError("a plan needs at least one task")
    n_tasks = min(max_tasks, len(items)) or 1
    tasks = [TaskPlan(index=i) for i in range(n_tasks)]
    heap = [(0, i) for i in range(n_tasks)]
    for item in sorted(items, key=lambda it: (-it.cost, it.item_id)):
        load, index = heapq.heappop(heap)
        tasks[index].items.append(item)
        heapq.heappush(heap, (load + item.cost, index))
    for task in tasks:
        task.items.sort(key=lambda it: it.item_id)
    return Plan(tasks=tasks)


def static_chunks(items: list[WorkItem], chunks: int) -> Plan:
    """marker's own chunk_convert sharding: ceil(files/chunks) files per chunk in listing order.

    Kept for benchmarks, as the baseline hpcmarker is measured against.
    """
    size = -(-len(items) // chunks)
    tasks = [TaskPlan(index=i, items=items[i * size : (i + 1) * size]) for i in range(chunks)]
    return Plan(tasks=[t for t in tasks if t.items])
