"""The task loop: claim batches, give their items to workers, commit what comes back, each item once.

`TaskLoop` holds what the loop shares: the queue (claimed items not yet given to a worker), the items in
flight, how often a worker died on each item, and the task's `Phase`, one of these `State`s:

RUNNING   it claims batches (scheduler.py) and gives their items to idle workers (workpool.py)
DRAINING  it takes nothing new and gives its queued batches back; the items in flight finish. The first
          cause is kept: the time limit near (USR2), the output storage full, the engine unusable in a worker
STOPPING  SIGTERM or SIGINT: the workers are ended and every batch is given back at once

Each item ends in one commit (commits.py): its worker's result, its error, its timeout (only its own worker
is ended), or a second worker death on it (the first one puts it back at the head of the queue). An item of
several pages that failed is bisected (planning/bisect.py): its halves go first in the queue, in its batch.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from hpc_marker.engines import EngineError, EngineUnavailable, engine_startup_seconds
from hpc_marker.planning.bisect import BISECTED, can_bisect, halves
from hpc_marker.planning.plan import WorkItem
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import ManifestWriter
from hpc_marker.runstate.output import document_stem
from hpc_marker.runstate.progress import CommitLog
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.stops import DONE, STORAGE_FULL, engine_stop
from hpc_marker.runtime.commits import Finisher, ItemResult
from hpc_marker.runtime.limits import parse_item_timeout, parse_memory
from hpc_marker.runtime.scheduler import Batch, Scheduler, idle_poll_seconds
from hpc_marker.runtime.startup import TaskSetup
from hpc_marker.runtime.worker import STORAGE_FULL_ERRNOS, OutputUnwritable, convert_to_staging, init_worker
from hpc_marker.runtime.workpool import DIED, OK, TIMEOUT, Outcome, WorkerPool
from hpc_marker.util.text import one_line

logger = logging.getLogger(__name__)

MAX_ATTEMPTS_AFTER_CRASH = 2


class State(Enum):
    RUNNING = "running"  # claims batches, gives their items to idle workers
    DRAINING = "draining"  # takes nothing new; the items in flight finish
    STOPPING = "stopping"  # SIGTERM or SIGINT: workers ended, every batch given back


@dataclass
class Phase:
    """The task's state and, once it drains, why (a cause of runstate/stops.py and one line); the first wins.
    Made before the loop: a USR2 while the task waits for its LLM service drains it too."""

    state: State = State.RUNNING
    cause: str = DONE
    reason: str = ""

    def drain(self, cause: str, reason: str) -> None:
        """Take no new items, for `cause` (unless the task drains or stops already)."""
        if self.state is State.RUNNING:
            self.state, self.cause, self.reason = State.DRAINING, cause, reason


def _memory_cap(record: RunRecord) -> int | None:
    return parse_memory(record.worker_memory) if record.worker_memory else None


class TaskLoop:
    """One task's items from claim to commit: `run` until nothing is left to take (or to wait for), or,
    draining, until the items in flight are finished; `stop` on SIGTERM; `close` however it ended."""

    def __init__(
        self,
        paths: RunPaths,
        record: RunRecord,
        setup: TaskSetup,
        board: ClaimBoard,
        scheduler: Scheduler,
        phase: Phase,
        options: dict,
    ) -> None:
        """`options`: the workers' engine options (startup.prepare)."""
        self.paths, self.record, self.host = paths, record, setup.host
        self.board, self.scheduler, self.phase = board, scheduler, phase
        self.limit = parse_item_timeout(record.item_timeout)
        memory = f", worker memory {record.worker_memory}" if record.worker_memory else ""
        logger.info("item time limit: %s%s", self.limit.describe(), memory)
        self.pool = WorkerPool(
            setup.workers,
            initializer=init_worker,
            initargs=(record.engine, options, setup.threads, _memory_cap(record)),
            startup_allowance_s=engine_startup_seconds(record.engine),
        )
        self.finisher = Finisher(
            paths,
            record,
            board,
            ManifestWriter(paths.task_manifest(setup.index)),
            CommitLog(paths.progress, setup.index),
            setup.context,
        )
        self.queue: deque[tuple[WorkItem, Batch]] = deque()  # claimed, not yet given to a worker
        self.inflight: dict[str, tuple[WorkItem, Batch]] = {}
        self.crashes: dict[str, int] = {}  # per item: the workers that died on it
        self.announced = False  # the log has said why no new items are taken
        self.poll_s = idle_poll_seconds(record.lease_seconds)
        scheduler.inflight = lambda: list(self.inflight)  # its heartbeat names them

    # ---- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.board.on_beat = self.scheduler.write
        self.scheduler.write()
        self.board.start_heartbeat()
        while self._turn():
            pass

    def _turn(self) -> bool:
        """Fill the idle workers, then take what they finished (or, idle, wait for others); False: the end."""
        self._fill()
        if self.phase.state is State.DRAINING:
            self._give_back_queued()
            if not self.announced:
                self.announced = True
                logger.info("taking no new items: %s; %d in flight finish first", self.phase.reason, len(self.inflight))
        if self.inflight:
            for outcome in self.pool.wait():
                self._take(outcome)
            return True
        if self.phase.state is State.DRAINING:
            return False
        if self.queue:
            return True
        if not self.scheduler.should_wait():
            return False
        self.scheduler.idle()
        time.sleep(self.poll_s)  # others hold the rest: wait for them, or for a dead task's leases to expire
        return True

    def _fill(self) -> None:
        """Give each idle worker an item of the queue, claiming the next batch when the queue is empty."""
        while self.pool.idle() and self.phase.state is State.RUNNING and (self.queue or self._claim()):
            if not self.queue:
                continue
            item, batch = self.queue.popleft()
            if self.board.lost(batch.lease):  # taken over by another task (our lease had expired)
                continue
            if item.scan_error:
                self._settle(item, batch, ItemResult(item.scan_status, time.time(), item.scan_error))
                continue
            self.pool.submit(
                item.item_id,
                convert_to_staging,
                (
                    str(Path(self.record.pdfs_root) / item.pdf),
                    item.page_start,
                    item.page_stop,
                    str(self.paths.staging),
                    item.item_id,
                    document_stem(item.pdf, item.out_name),
                    item.ocr,
                ),
                timeout_s=self.limit.for_pages(item.pages),
            )
            self.inflight[item.item_id] = (item, batch)

    def _claim(self) -> bool:
        """Claim the next batch and queue its items that nobody finished; False when there is none."""
        batch = self.scheduler.next_batch()
        if batch is None:
            return False
        for item in batch.items:
            done = None if batch.fresh else self.board.done_record(item.item_id)
            if done is None:
                self.queue.append((item, batch))
                continue
            batch.left.discard(item.item_id)  # finished by an earlier holder of the batch
            if done.get("status") == BISECTED:  # ... which may not have finished every half of it
                for half in self.finisher.unfinished_halves(item):
                    batch.left.add(half.item_id)
                    self.queue.append((half, batch))
        if not batch.left:
            self.board.finish(batch.lease)
        return True

    def _give_back_queued(self) -> None:
        for batch in {id(b): b for _, b in self.queue}.values():
            if not any(b is batch for _, b in self.inflight.values()):
                self.board.release(batch.lease)
        self.queue.clear()

    # ---- what the workers return --------------------------------------------------------------

    def _take(self, outcome: Outcome) -> None:
        item, batch = self.inflight.pop(outcome.key)
        started = time.time() - outcome.seconds
        if outcome.kind == OK:
            self._settle(item, batch, ItemResult("ok", started, converted=outcome.result))
        elif outcome.kind == TIMEOUT:
            error = (
                f"no result after {outcome.seconds:.0f} s (item limit {self.limit.describe()}; --item-timeout): "
                "its worker was ended"
            )
            self._fail(item, batch, ItemResult("timeout", started, error))
        elif outcome.kind == DIED:
            self.crashes[item.item_id] = self.crashes.get(item.item_id, 0) + 1
            logger.warning("worker died on %s [%s]: %s", item.pdf, item.page_label(), outcome.died_reason())
            if self.crashes[item.item_id] < MAX_ATTEMPTS_AFTER_CRASH:
                self.queue.appendleft((item, batch))
            else:
                self._fail(item, batch, ItemResult("failed", started, outcome.died_reason()))
        elif isinstance(outcome.error, EngineUnavailable):  # no engine in that worker: the task stops
            self.phase.drain(*engine_stop(self.record.engine, self.host, outcome.error))  # the item stays pending
        else:
            self._raised(item, batch, outcome.error, started)

    def _raised(self, item: WorkItem, batch: Batch, error: BaseException | None, started: float) -> None:
        """The item's conversion raised `error`: its failure, not the task's (unless the storage is full)."""
        if isinstance(error, MemoryError):
            reason = f"out of memory (worker memory limit {self.record.worker_memory})"
        elif isinstance(error, EngineError):
            reason = str(error)
        else:
            reason = one_line(error, with_type=True)
        failed = ItemResult("failed", started, reason)
        if isinstance(error, OutputUnwritable) or reason.startswith("encrypted"):
            self._settle(item, batch, failed)  # not a page's failure: no bisection
        else:
            self._fail(item, batch, failed)
        if isinstance(error, OutputUnwritable) and error.storage_full and self.phase.state is State.RUNNING:
            self.finisher.storage_errors.append(f"storage full: {error}")
            logger.warning("taking no more items: the output storage is full")
            self.phase.drain(STORAGE_FULL, self.finisher.storage_errors[-1])

    def _fail(self, item: WorkItem, batch: Batch, failed: ItemResult) -> None:
        """Several pages: bisected (its halves go first in the queue, in its batch); one page: lost."""
        if self.record.bisect and can_bisect(item):
            error = f"{failed.status}: {failed.error}"
            self._settle(item, batch, ItemResult(BISECTED, failed.started, error, children=tuple(halves(item))))
        else:
            self._settle(item, batch, failed)

    def _settle(self, item: WorkItem, batch: Batch, result: ItemResult) -> None:
        """Commit the item; a bisected one's halves are queued first."""
        if self.finisher.finish(item, batch.share, result) and result.children:
            batch.left.update(child.item_id for child in result.children)
            self.queue.extendleft((child, batch) for child in reversed(result.children))
        if self.finisher.storage_errors:
            self.phase.drain(STORAGE_FULL, self.finisher.storage_errors[-1])
        batch.left.discard(item.item_id)
        if not batch.left and not self.board.lost(batch.lease):
            self.board.finish(batch.lease)

    # ---- the end ------------------------------------------------------------------------------

    def stop(self, why: str) -> None:
        """SIGTERM or SIGINT (`why`): end the workers now and give every batch back."""
        self.phase.state = State.STOPPING
        logger.warning(
            "stopped by %s: giving back %d batches (%d items in flight)",
            why,
            len(self.board.held()),
            len(self.inflight),
        )
        self.pool.close(grace_s=5)
        self.board.release_all()

    def close(self, helpers: ExitStack) -> None:
        """However the loop ended: the heartbeat stops, the workers and `helpers` (the task's servers) end, and
        the last records are written; a full disk that keeps them from landing is the reason to stop."""
        self.board.stop_heartbeat()
        self.pool.close()
        helpers.close()
        finisher, board = self.finisher, self.board
        for last_write in (finisher.manifest.close, finisher.commits.close, board.release_all, self.scheduler.exit):
            try:  # board.release_all: what is still held was not finished, others may take it at once
                last_write()
            except OSError as exc:  # a full disk keeps the last lines from landing: the reason to stop
                if exc.errno not in STORAGE_FULL_ERRNOS:
                    raise
                finisher.storage_errors.append(f"storage full: cannot record the task's end: {exc.strerror}")

    def stopped(self) -> tuple[str, str]:
        """Why the task stopped (a cause of runstate/stops.py) and one line; a full storage first."""
        if self.finisher.storage_errors:
            return STORAGE_FULL, self.finisher.storage_errors[0]
        return self.phase.cause, self.phase.reason
