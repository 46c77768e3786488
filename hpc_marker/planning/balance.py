"""The plan's arithmetic on numpy arrays (10^6 items in a second): page ranges of split PDFs, longest-first
balancing (LPT) and batches. Pure; plan.py gives the meaning and keeps the records.

Each function gives exactly what the one-item-at-a-time loop it replaced gave (tests/planning compare
them with tests/planning/reference_plan.py): LPT places each item, longest first, on the task with the
least load, the lowest index among equals; a batch takes consecutive items while their cost stays
within the task's limit, one item at least.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np

_LOOP = 256  # runs of equal cost up to this long are placed one by one (cheaper than _equal_costs)


def split_ranges(starts: np.ndarray, stops: np.ndarray, max_pages: int | np.ndarray) -> tuple[np.ndarray, ...]:
    """Each range longer than `max_pages` (one for all, or one per range; 0: never) as equal parts (the last
    shorter): (source row of each part, its start, its stop, its part number, its source's number of parts,
    whether its source was split)."""
    pages = stops - starts
    limit = np.asarray(max_pages, dtype=np.int64)
    big = (pages > limit) & (limit > 0)
    n = np.maximum(1, -(-pages // np.maximum(limit, 1)))
    size = np.maximum(1, -(-pages // n))
    parts = np.where(big, -(-pages // size), 1)
    source = np.repeat(np.arange(len(pages)), parts)
    part = np.arange(len(source)) - np.repeat(np.cumsum(parts) - parts, parts)
    new_starts = starts[source] + part * size[source]
    new_stops = np.where(big[source], np.minimum(new_starts + size[source], stops[source]), stops[source])
    return source, new_starts, new_stops, part, parts[source], big[source]


def lpt_tasks(costs: np.ndarray, tasks: int) -> np.ndarray:
    """The task of each item, `costs` longest first (every cost at least 1): each goes to the least-loaded
    task, the lowest index among equals, as a heap of (load, index) would place them one by one. Short runs
    of one cost are placed so, with a heap; long ones at once (_equal_costs)."""
    loads = np.zeros(tasks, dtype=np.int64)
    out = np.empty(len(costs), dtype=np.int64)
    edges = [0, *(np.flatnonzero(np.diff(costs)) + 1).tolist(), len(costs)] if len(costs) else []
    heap: list[tuple[int, int]] | None = None  # the loads as a heap while short runs follow each other
    for start, stop in itertools.pairwise(edges):
        cost = int(costs[start])
        if stop - start <= _LOOP:
            if heap is None:
                heap = list(zip(loads.tolist(), range(tasks), strict=True))
                heapq.heapify(heap)
            placed = []
            for _ in range(stop - start):
                load, task = heap[0]
                heapq.heapreplace(heap, (load + cost, task))
                placed.append(task)
            out[start:stop] = placed
            continue
        if heap is not None:
            for load, task in heap:
                loads[task] = load
            heap = None
        out[start:stop] = _equal_costs(loads, cost, stop - start)
    return out


def _equal_costs(loads: np.ndarray, cost: int, count: int) -> np.ndarray:
    """The tasks of `count` items of one cost (`loads` updated). One by one, task i would take its k-th item
    at load loads[i] + k*cost, so the items go to the `count` smallest (load, index) of those slots in order:
    found by bisecting the load below which there are fewer than `count` slots."""

    def slots(below: int) -> np.ndarray:  # per task, its slots with a load <= below
        return np.where(loads <= below, (below - loads) // cost + 1, 0)

    low, high = int(loads.min()), int(loads.min()) + cost * count
    while low < high:  # the least load that has `count` slots at or below it
        middle = (low + high) // 2
        if slots(middle).sum() >= count:
            high = middle
        else:
            low = middle + 1
    taken = slots(low - 1)
    at_edge = np.flatnonzero((loads <= low) & ((low - loads) % cost == 0))  # a slot at exactly `low`
    taken[at_edge[: count - int(taken.sum())]] += 1
    task = np.repeat(np.arange(len(loads)), taken)
    load = loads[task] + cost * (np.arange(len(task)) - np.repeat(np.cumsum(taken) - taken, taken))
    loads += taken * cost
    return task[np.lexsort((task, load))]


def batch_numbers(
    costs: np.ndarray, counts: np.ndarray, batch_pages: int, batch_items: int, min_batches: int
) -> np.ndarray:
    """Each item's batch within its task's share (`costs` task by task, `counts` items per task): consecutive
    items up to the task's limit, min(batch_pages, its cost / min_batches), at least 1, and `batch_items`."""
    ends = np.cumsum(counts)
    starts = ends - counts
    total = np.concatenate([[0], np.cumsum(costs)])
    limit = np.maximum(1, np.minimum(batch_pages, -(-(total[ends] - total[starts]) // min_batches)))
    following = np.searchsorted(total[1:], total[:-1] + np.repeat(limit, counts), side="right")
    del total
    rows = np.arange(1, len(costs) + 1)  # each row's next
    np.minimum(following, rows + (batch_items - 1), out=following)
    np.minimum(following, np.repeat(ends, counts), out=following)
    np.maximum(following, rows, out=following)
    del rows
    first = np.zeros(len(costs), dtype=np.int64)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=False):  # one step a batch
        row = start
        while row < end:
            first[row] = 1
            row = int(following[row])
    opened = np.cumsum(first, out=first)
    return opened - np.repeat(opened[np.minimum(starts, max(len(costs) - 1, 0))], counts) if len(costs) else first
