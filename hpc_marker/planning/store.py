"""The plan on disk, compact and read in pieces.

  PLAN/items.parquet  every work item, one row group per task: a task reads only its own share,
                      a thief only its victim's (never the whole plan)
  PLAN/tasks.json     per task: items, pages, and the pages of each batch (what thieves and
                      `status` need, without the items)

At 10^6 items the Parquet file is a few tens of MB and one task's share a few hundred KB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpc_marker.planning.plan import FIELDS, SCHEMA, ItemRows, Plan, TaskPlan, WorkItem
from hpc_marker.util.files import atomic_write

ITEMS = "items.parquet"
TASKS = "tasks.json"
_FIELDS = FIELDS


@dataclass(frozen=True)
class ShareSummary:
    """One task's share without its items."""

    index: int
    items: int
    pages: int
    batch_pages: list[int]  # pages of each batch, in claim order
    row_group: int  # where its items are in items.parquet

    @property
    def batches(self) -> int:
        return len(self.batch_pages)


def _batch_pages(rows: ItemRows) -> list[int]:
    """Pages of each batch of a share, in claim order (TaskPlan.batches, without making the items)."""
    keys, which = np.unique(rows.column("batch"), return_inverse=True)
    return np.bincount(which, weights=rows.pages, minlength=len(keys)).astype(np.int64).tolist()


def save_plan(plan: Plan, folder: Path) -> None:
    """Write the plan into `folder` (created); the items file appears whole or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{ITEMS}.tmp"
    summaries = []
    with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
        for row_group, task in enumerate(plan.tasks):
            rows = ItemRows.of(task.items)
            writer.write_table(rows.table, row_group_size=max(1, len(rows)))
            summaries.append(
                {
                    "index": task.index,
                    "items": len(rows),
                    "pages": int(rows.pages.sum()),
                    "batch_pages": _batch_pages(rows),
                    "row_group": row_group,
                }
            )
    tmp.replace(folder / ITEMS)
    atomic_write(
        folder / TASKS,
        json.dumps(
            {
                "total_pages": sum(t["pages"] for t in summaries),
                "items": sum(t["items"] for t in summaries),
                "tasks": summaries,
            },
            separators=(",", ":"),
        )
        + "\n",
    )


def load_summary(folder: Path) -> list[ShareSummary]:
    data = json.loads((Path(folder) / TASKS).read_text())
    return [ShareSummary(**task) for task in data["tasks"]]


def _items(table: pa.Table) -> list[WorkItem]:
    columns = table.to_pydict()
    present = [name for name in _FIELDS if name in columns]  # a plan written before a field was added lacks it
    return [WorkItem(**{name: columns[name][row] for name in present}) for row in range(table.num_rows)]


def load_share(folder: Path, summary: ShareSummary) -> TaskPlan:
    """One task's items (one row group of items.parquet)."""
    with open(Path(folder) / ITEMS, "rb") as fh:  # one open (Arrow's own stats the path first)
        table = pq.ParquetFile(fh).read_row_group(summary.row_group)
    return TaskPlan(index=summary.index, items=_items(table))


def load_plan(folder: Path) -> Plan:
    """The whole plan (the collector, the report, resume: tasks never need it), its items as Arrow columns."""
    rows = ItemRows(load_items_table(folder, columns=_FIELDS).cast(SCHEMA))
    return Plan.of_rows(rows, [summary.items for summary in load_summary(folder)])


def load_items_table(folder: Path, columns: list[str] | None = None) -> pa.Table:
    """Every item as an Arrow table (columnar, for summaries of large runs); a column that a plan written
    before it was added lacks comes as the field's default."""
    path = Path(folder) / ITEMS
    if columns is None:
        return pq.read_table(path)
    stored = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[name for name in columns if name in stored])
    for name in (name for name in columns if name not in stored):
        default = next(f.default for f in fields(WorkItem) if f.name == name)
        table = table.append_column(SCHEMA.field(name), pa.array([default] * table.num_rows, SCHEMA.field(name).type))
    return table.select(columns)


def out_names(folder: Path) -> dict[str, str]:
    """The plan's renamed documents: PDF -> its document's name under --out (planning/outnames.py); the
    rest keep their plain names. Reads two columns (a few MB at 10^6 items); {} for a plan from before names
    were recorded, or none (a run folder made by hand)."""
    path = Path(folder) / ITEMS
    if not path.is_file() or "out_name" not in pq.read_schema(path).names:
        return {}
    table = pq.read_table(path, columns=["pdf", "out_name"]).to_pydict()
    return {pdf: name for pdf, name in zip(table["pdf"], table["out_name"], strict=False) if name}
