"""Scheduler: which batch a task works on next, and whether an idle task waits or leaves.

A task claims its own share's batches in order (its cursor). Then, with stealing, it takes
batches of other tasks' shares from their tails: the victim with the most pages not yet claimed
by its owner, as a sample of at most SAMPLE heartbeats says (of tasks not known to have exited), one
batch at a time; a victim whose heartbeat went stale is scanned again from its tail, which also
finds its expired batches. A task writes its heartbeat when it has claimed the last batch of its own
share, so that thieves stop looking there. Batches a dead task held in other shares are taken over from its last
heartbeat once their lease has expired. Nothing here looks at single items, and a task reads at
most SAMPLE heartbeats per decision: the cost of choosing work is per batch, whatever the size of
the run and the number of tasks.

An idle task (nothing claimable) leaves unless a task it knows of died holding batches (it waits
to take them over). The SWEEPERS lowest-numbered tasks are the exception: they stay while any
task holds a batch, so that whoever dies last is taken over too; they read again only the heartbeats
of tasks not seen exiting since they started, and only until one says a task holds a batch (the sample
read in the same turn first). A task `hpcmarker grow` added has no share: it only steals and takes over,
and the others read its heartbeat too (progress/grown.txt lists such tasks).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hpc_marker.planning.plan import TaskPlan, WorkItem
from hpc_marker.planning.store import ShareSummary, load_share
from hpc_marker.runstate.claims import BATCH_PREFIX, ClaimBoard, Claimed, Lease, batch_name, lease_shard
from hpc_marker.runstate.progress import (
    EXITED,
    WAITING,
    WORKING,
    Heartbeat,
    heartbeat_tasks,
    read_grown,
    read_heartbeats,
    write_heartbeat,
)

SAMPLE = 8  # heartbeats a thief reads to choose a victim: the richest of 8 random tasks (power of d choices)
SWEEPERS = 4  # tasks 0..SWEEPERS-1 stay while any task holds a batch
IDLE_POLL_ENV = "HPCMARKER_IDLE_POLL_S"  # tests: look again this often (their small runs end sooner)


def idle_poll_seconds(lease_s: float) -> float:
    """How long an idle task waits before it looks again: an eighth of the lease, 1-15 s (reading heartbeats
    costs little then, even in a run of thousands of tasks); HPCMARKER_IDLE_POLL_S, where set, instead."""
    try:
        return float(os.environ[IDLE_POLL_ENV])
    except (KeyError, ValueError):
        return max(1.0, min(15.0, lease_s / 8))


@dataclass
class Batch:
    """A claimed batch: its share (task index), its number in that share, its items."""

    share: int
    index: int
    items: list[WorkItem]
    lease: Lease
    fresh: bool  # never claimed before: none of its items can be done yet
    left: set[str] = field(default_factory=set)  # items not finished yet (by anyone this task knows of)

    @property
    def label(self) -> str:
        return f"{self.share}/{batch_name(self.index)}"


class Scheduler:
    def __init__(
        self,
        task: int,
        summaries: list[ShareSummary],
        own: TaskPlan,
        board: ClaimBoard,
        plan_folder: Path,
        progress_folder: Path,
        *,
        steal: bool,
        lease_s: float,
        inflight: Callable[[], list[str]] = list,
        seed: int | None = None,
        first_start: bool = False,
    ) -> None:
        """`first_start`: no earlier run of this task wrote anything (its stop record says so), so there is no
        earlier heartbeat to read, and its lease folder is made now."""
        self.task, self.board, self.steal, self.lease_s = task, board, steal, lease_s
        self.summaries = {s.index: s for s in summaries}
        self.plan_folder, self.progress_folder = plan_folder, progress_folder
        self.own = own.batches()
        self.cursor = 0
        self.shares: dict[int, list[list[WorkItem]]] = {task: self.own}
        self.tail: dict[int, int] = {}  # per victim: the next batch to try from its tail
        self.rescanned: dict[int, float] = {}  # per dead victim: when its share was last scanned again
        self.random = random.Random(task if seed is None else seed)
        previous = None if first_start else read_heartbeats(progress_folder, [task]).get(task)  # an earlier run of it
        self.inherited = [name for name in (previous.held if previous else []) if _is_batch(name)]
        self.first_start = first_start  # nobody but this run of the task can hold a lease as this task
        if first_start and self.own:
            board.make_folder(str(task), batch_name(0))  # its first start: two mkdirs, not a failed create and three
        self.inflight = inflight
        self.beat = Heartbeat(task=task, owner=board.owner)
        self.state = WORKING
        self.stolen = 0
        self._writing = threading.Lock()
        self._sampled: tuple[float, list[int], dict[int, Heartbeat]] | None = None
        self.started = time.time()
        self.gone: set[int] = set()  # tasks whose heartbeat said EXITED after this task started: not read again

    # ---- heartbeat -----------------------------------------------------------------------

    def write(self, state: str | None = None) -> None:
        """Write this task's heartbeat (on state changes, stolen claims, and every lease/4 from the board's thread)."""
        with self._writing:
            if state is not None:
                self.state = state
            self.beat.state, self.beat.cursor = self.state, self.cursor
            self.beat.remaining_pages = sum(item.pages for batch in self.own[self.cursor :] for item in batch)
            self.beat.held = [f"{lease.group}/{lease.name}" for lease in self.board.held()]
            self.beat.released = list(self.board.released)
            self.beat.inflight = list(self.inflight())
            write_heartbeat(self.progress_folder, self.beat)

    def _sample(self) -> tuple[list[int], dict[int, Heartbeat]]:
        """At most SAMPLE other tasks (all of them when there are fewer), and their heartbeats (none for
        a task that has not started)."""
        now = time.time()
        if self._sampled is not None and now - self._sampled[0] < max(1.0, self.lease_s / 8):
            return self._sampled[1], self._sampled[2]  # a recent read: the tail pointers know the rest
        peers = [*self.summaries, *read_grown(self.progress_folder)]  # grown tasks: no share, but may hold batches
        others = [task for task in dict.fromkeys(peers) if task != self.task and task not in self.gone]
        if len(others) > SAMPLE:
            others = self.random.sample(others, SAMPLE)
        beats = self._read(others)
        self._sampled = (now, others, beats)
        return others, beats

    def _everyone(self) -> Iterator[Heartbeat]:
        """Every other task's heartbeat but those known to have exited (a sweeper's look at the run), one at a
        time, so that the look can stop at the first that decides: a sample read just now (this same turn of the
        task's loop) first, not read again, then the others, read as they are needed."""
        recent = self._sampled if self._sampled is not None and time.time() - self._sampled[0] < 1.0 else None
        sampled = set(recent[1]) if recent is not None else set()
        if recent is not None:
            yield from recent[2].values()
        for task in heartbeat_tasks(self.progress_folder):  # one listing: grown tasks too
            if task not in sampled and task not in self.gone and task != self.task:
                yield from self._read([task]).values()

    def _read(
        self, tasks: list[int] | None = None, also_skip: set[int] | frozenset[int] = frozenset()
    ) -> dict[int, Heartbeat]:
        """These tasks' heartbeats (default: every task's not known to have exited); remembers who exited.
        A task that exited during this task's life, giving nothing back, is not read again: it holds nothing.
        (Only a job requeued by hand after it ended starts it again; what that one may then steal and die
        holding is left to `resume`, and `status` says the run is incomplete.)"""
        beats = read_heartbeats(self.progress_folder, tasks, skip=self.gone | also_skip | {self.task})
        self.gone.update(
            task
            for task, beat in beats.items()
            if beat.state == EXITED and not beat.released and beat.updated >= self.started
        )
        return beats

    # ---- choosing work -------------------------------------------------------------------

    def next_batch(self) -> Batch | None:
        """Claim the next batch to work on (own, then stolen, then taken over), or None."""
        batch = self._own()
        if batch is None and (self.steal or self.inherited):
            sampled, beats = self._sample() if self.steal else ([], {})
            batch = (self._steal(sampled, beats) if self.steal else None) or self._take_over(beats)
            if batch is not None:
                self.state = WORKING
                self.write()  # others must know what this task holds outside its own share
        return batch

    def _batch(self, share: int, index: int, claimed: Claimed) -> Batch:
        items = self._share(share)[index]
        return Batch(
            share=share,
            index=index,
            items=items,
            lease=claimed.lease,
            fresh=claimed.fresh,
            left={i.item_id for i in items},
        )

    def _share(self, share: int) -> list[list[WorkItem]]:
        if share not in self.shares:
            self.shares[share] = load_share(self.plan_folder, self.summaries[share]).batches()
        return self.shares[share]

    def _own(self) -> Batch | None:
        while self.cursor < len(self.own):
            index = self.cursor
            self.cursor += 1
            claimed = self.board.claim(str(self.task), batch_name(index))
            if claimed is not None:
                if self.cursor == len(self.own) and self.steal and len(self.summaries) > 1:
                    self.write()  # its whole share is claimed: thieves skip it instead of listing its leases
                return self._batch(self.task, index, claimed)
            self._inherit(index)
        return None

    def _inherit(self, index: int) -> None:
        """An own batch someone holds: if that is this task's earlier run (killed, then requeued or
        resumed before its lease expired), this task takes it over once the lease expires. Its
        heartbeat may not list the batch (own batches are written there every lease/4 only). On a first start there
        is no earlier run: the holder is a thief, and its lease is not read."""
        if self.first_start:
            return
        name = f"{self.task}/{batch_name(index)}"
        holder = self.board.holder(str(self.task), batch_name(index))
        if (
            name not in self.inherited
            and holder is not None
            and holder != self.board.owner
            and holder.endswith(f":task-{self.task}")
            and not self.board.finished(str(self.task), batch_name(index))
        ):
            self.inherited.append(name)

    def _steal(self, sampled: list[int], beats: dict[int, Heartbeat]) -> Batch | None:
        """From the tail of the victim with the most unclaimed pages: one listing of its claims folder
        says which of its batches nobody has claimed yet; a dead victim's expired leases count too."""
        now = time.time()
        candidates = []
        for share in (task for task in sampled if task in self.summaries):  # a grown task has no share
            summary, beat = self.summaries[share], beats.get(share)
            dead = beat is not None and beat.state != EXITED and not beat.fresh(self.lease_s, now)
            if dead and now - self.rescanned.get(share, 0.0) > self.lease_s / 2:
                self.rescanned[share] = now  # its expired leases: look at its whole share again now and then
                self.tail.pop(share, None)
            cursor = beat.cursor if beat is not None and not dead else 0
            tail = self.tail.get(share, summary.batches - 1)
            if tail >= cursor:
                left = sum(summary.batch_pages[cursor : tail + 1])
                if beat is not None and not dead:
                    left = min(left, beat.remaining_pages)
                candidates.append((-left, share, cursor, dead))
        for _, share, cursor, dead in sorted(candidates):
            listed: dict[str, set[str]] = {}  # one listing per lease folder of the share that is walked
            for index in range(self.tail.get(share, self.summaries[share].batches - 1), cursor - 1, -1):
                self.tail[share] = index - 1
                folder = lease_shard(batch_name(index))
                if folder not in listed:
                    listed[folder] = self.board.names(str(share), batch_name(index))
                if batch_name(index) in listed[folder] and not dead:
                    continue  # claimed (by its owner, or a thief), finished, or given back to its owner
                claimed = self.board.claim(str(share), batch_name(index))
                if claimed is not None:
                    self.stolen += 1
                    return self._batch(share, index, claimed)
            self.tail[share] = cursor - 1
        return None

    def _take_over(self, beats: dict[int, Heartbeat]) -> Batch | None:
        """A batch another task gave back unfinished; one held by a task whose heartbeat is stale (or by this
        task's earlier run), once its lease expired."""
        now = time.time()
        held = list(self.inherited)
        for beat in beats.values():
            held += [name for name in beat.released if _is_batch(name)]
            if beat.state != EXITED and not beat.fresh(self.lease_s, now):
                held += [name for name in beat.held if _is_batch(name)]
        for name in held:
            group, _, batch = name.partition("/")
            if int(group) not in self.summaries:
                continue
            claimed = self.board.claim(group, batch)
            if claimed is not None:
                if name in self.inherited:
                    self.inherited.remove(name)
                return self._batch(int(group), int(batch[len(BATCH_PREFIX) :]), claimed)
        return None

    # ---- idle ------------------------------------------------------------------------------

    def should_wait(self) -> bool:
        """Nothing claimable now: wait (and try again later) or leave?"""
        self.inherited = [name for name in self.inherited if not self.board.finished(*name.split("/", 1))]
        if self.inherited:
            return True  # this task's earlier run held unfinished batches: take them over once their lease expires
        if not self.steal:
            return False  # only its own share, which is claimed or done
        now = time.time()
        sweeper = self.task < SWEEPERS
        beats = self._everyone() if sweeper else self._sample()[1].values()
        for beat in beats:  # the first holder that decides ends the look (a sweeper reads no more heartbeats)
            if beat.task == self.task or beat.state == EXITED or not beat.held:
                continue
            if beat.fresh(self.lease_s, now):
                if sweeper:
                    return True  # a sweeper stays while any task holds a batch
            elif any(not self.board.finished(*name.split("/", 1)) for name in beat.held if _is_batch(name)):
                return True  # a dead task's unfinished batches: take them over once their lease expires
        return False

    def idle(self) -> None:
        if self.state != WAITING:
            self.write(WAITING)

    def exit(self) -> None:
        self.write(EXITED)


def _is_batch(name: str) -> bool:
    group, _, batch = name.partition("/")
    return group.isdigit() and batch.startswith(BATCH_PREFIX)
