"""Worker pool: a task's worker processes, one item each at a time, any one killable alone.

`concurrent.futures.ProcessPoolExecutor` cannot end the one worker that is stuck on an item:
a killed worker breaks the whole pool and every other item in flight is lost with it. Here each
worker is its own spawn process with its own pipe, so the task can

  - end just the worker whose item ran past its deadline (`timeout`),
  - see exactly which item a worker was converting when it died (`died`: a crash or the kernel's
    out-of-memory killer), and start a fresh worker in its place,

while the other workers go on with their items. A worker that raises MemoryError reports it and
exits, so the next item gets a fresh process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

OK, ERROR, DIED, TIMEOUT = "ok", "error", "died", "timeout"
_READY = "ready"  # a worker's first message, with the time.monotonic() at which its initializer (the model load) ended


@dataclass(frozen=True)
class Outcome:
    """What became of one submitted call."""

    key: Any  # the caller's handle for the call
    kind: str  # OK, ERROR, DIED or TIMEOUT
    result: Any = None  # OK: the return value
    error: BaseException | None = None  # ERROR: the exception raised in the worker
    exitcode: int | None = None  # DIED: the worker's exit code (negative: killed by that signal)
    seconds: float = 0.0  # the call's own time: from its submission (or its fresh worker's readiness) to its end

    def died_reason(self) -> str:
        """One line on how the worker ended, for the manifest."""
        if self.exitcode is not None and self.exitcode < 0:
            name = signal.Signals(-self.exitcode).name
            hint = " (often the out-of-memory killer)" if self.exitcode == -signal.SIGKILL else ""
            return f"worker process was killed by {name}{hint} while converting it"
        return f"worker process exited with code {self.exitcode} while converting it (crashed)"


def _worker_main(conn: Connection, initializer: Callable | None, initargs: tuple) -> None:
    init_error = None
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            init_error = exc
    conn.send((_READY, time.monotonic()))  # CLOCK_MONOTONIC: one clock for every process of the node
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, args = message
        if init_error is not None:
            conn.send((ERROR, init_error))
            continue
        try:
            reply = (OK, fn(*args))
        except MemoryError as exc:  # the heap may be in a bad state: report, then leave for a fresh worker
            conn.send((ERROR, exc))
            os._exit(3)
        except BaseException as exc:
            reply = (ERROR, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result or exception
            conn.send((ERROR, RuntimeError(f"{type(exc).__name__}: {exc}")))


def _since(started: float, now: float) -> float:
    return round(max(0.0, now - started), 3)


@dataclass
class _Slot:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    key: Any = None
    started: float = 0.0  # the call's clock: its submission, or its fresh worker's readiness if that came later
    deadline: float | None = None
    timeout_s: float | None = None
    ready: bool = False  # its initializer is over

    @property
    def busy(self) -> bool:
        return self.key is not None


class WorkerPool:
    """`size` worker processes; `submit` gives an idle one a call, `wait` returns finished calls."""

    def __init__(
        self,
        size: int,
        initializer: Callable | None = None,
        initargs: tuple = (),
        startup_allowance_s: float = 0.0,
        context: str = "spawn",
    ) -> None:
        self._ctx = multiprocessing.get_context(context)
        self._startup_allowance_s = startup_allowance_s  # added to a fresh worker's first deadline
        self._initializer, self._initargs = initializer, initargs
        self._slots: list[_Slot | None] = [None] * size
        self.replaced = 0  # workers started to replace one that died, timed out or gave up

    @property
    def size(self) -> int:
        return len(self._slots)

    def idle(self) -> int:
        return sum(1 for slot in self._slots if slot is None or not slot.busy)

    def busy_keys(self) -> list[Any]:
        return [slot.key for slot in self._slots if slot is not None and slot.busy]

    def pids(self) -> list[int]:
        return [slot.process.pid for slot in self._slots if slot is not None and slot.process.pid]

    def _start(self) -> _Slot:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main, args=(child, self._initializer, self._initargs), daemon=True, name="hpcmarker-worker"
        )
        process.start()
        child.close()
        return _Slot(process=process, conn=parent)

    def submit(self, key: Any, fn: Callable, args: tuple, timeout_s: float | None = None) -> None:
        """Give an idle worker `fn(*args)`; `timeout_s` ends that worker if no answer comes in time
        (counted from the end of a fresh worker's initializer, which gets the startup allowance)."""
        for index, slot in enumerate(self._slots):
            if slot is not None and slot.busy:
                continue
            if slot is None or not slot.process.is_alive():  # never started, or an idle worker that left
                if slot is not None:
                    self._discard(slot)
                    self.replaced += 1
                slot = self._slots[index] = self._start()
            now = time.monotonic()
            slot.key, slot.started, slot.timeout_s = key, now, timeout_s
            loading = 0.0 if slot.ready else self._startup_allowance_s  # the item's clock starts once loaded
            slot.deadline = now + timeout_s + loading if timeout_s else None
            slot.conn.send((fn, args))
            return
        raise RuntimeError("no idle worker")

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Block until a call finishes, a worker dies, a deadline passes, or `timeout` (seconds)."""
        busy = [slot for slot in self._slots if slot is not None and slot.busy]
        if not busy:
            return []
        now = time.monotonic()
        deadlines = [slot.deadline - now for slot in busy if slot.deadline is not None]
        candidates = deadlines + ([timeout] if timeout is not None else [])
        limit = max(0.0, min(candidates)) if candidates else None
        ready = set(wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout=limit))
        outcomes: list[Outcome] = []
        now = time.monotonic()
        for index, slot in enumerate(self._slots):
            if slot is None or not slot.busy:
                continue
            outcome = self._ended(slot, ready, now)
            if outcome is None:
                continue
            slot.key, slot.deadline = None, None
            if outcome.kind in (DIED, TIMEOUT) or isinstance(outcome.error, MemoryError) or not slot.process.is_alive():
                self._discard(slot)
                self._slots[index] = None
                self.replaced += 1
            outcomes.append(outcome)
        return outcomes

    def _ended(self, slot: _Slot, ready: set, now: float) -> Outcome | None:
        """How `slot`'s call ended (its answer, its worker's death, its deadline passed); None while it runs."""
        while slot.conn.poll():
            try:
                kind, value = slot.conn.recv()
            except (EOFError, OSError):
                break  # died before answering: the sentinel tells
            if kind == _READY:  # the model load is the task's start-up, not the item's: its clock starts now
                slot.ready, slot.started = True, max(slot.started, value)
                if slot.timeout_s:
                    slot.deadline = slot.started + slot.timeout_s
                continue
            result, error = (value, None) if kind == OK else (None, value)
            return Outcome(slot.key, kind, result=result, error=error, seconds=_since(slot.started, now))
        if slot.process.sentinel in ready:
            slot.process.join(timeout=5)
            return Outcome(slot.key, DIED, exitcode=slot.process.exitcode, seconds=_since(slot.started, now))
        if slot.deadline is not None and now >= slot.deadline:
            self._kill(slot)
            return Outcome(slot.key, TIMEOUT, seconds=_since(slot.started, now))
        return None

    def _kill(self, slot: _Slot) -> None:
        if slot.process.is_alive():
            os.kill(slot.process.pid, signal.SIGKILL)
        slot.process.join(timeout=10)

    def _discard(self, slot: _Slot) -> None:
        self._kill(slot)
        slot.conn.close()

    def close(self, grace_s: float = 5.0) -> None:
        """Ask idle workers to leave, end the rest (SIGTERM, then SIGKILL after `grace_s`)."""
        live = [slot for slot in self._slots if slot is not None]
        for slot in live:
            if slot.busy:
                slot.process.terminate()
            else:
                with contextlib.suppress(OSError):
                    slot.conn.send(None)
        end = time.monotonic() + grace_s
        for slot in live:
            slot.process.join(timeout=max(0.0, end - time.monotonic()))
            if slot.process.is_alive():
                self._kill(slot)
            slot.conn.close()
        self._slots = [None] * len(self._slots)
