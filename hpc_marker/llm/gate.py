"""FairGate: at most `capacity` requests at the LLM server at once; the rest wait at the front, served
fairly across tasks instead of piling up in the server's own queue (where clients time out).

When a slot frees, it goes to the waiting request of the task that holds the fewest slots now (ties:
the task served longest ago), first come first served within a task. So a task with 12 requests
waiting does not starve one with 1, and a task that just got a slot waits behind one that did not.
A waiter whose client has gone (timed out, disconnected) leaves the queue without ever reaching
the server. A gate without capacity (None) lets everything through at once.

A waiter waits in a thread (`acquire`) or in an event loop (`await enter`, what the front does);
`release` may be called from either, and wakes the next waiter wherever it waits.

    gate = FairGate(capacity=8)
    if await gate.enter("task-3", abandoned=lambda: client_closed(request)):
        try: ...   # the request at the server
        finally: gate.release("task-3")
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(eq=False)
class _Ticket:
    key: str
    wake: Callable[[], None]  # called (under the gate's lock) when the ticket is granted
    granted: bool = False


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(True)


class FairGate:
    def __init__(self, capacity: int | None, poll_s: float = 0.5) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity {capacity}: must be at least 1 (or None: no gate)")
        self.capacity, self.poll_s = capacity, poll_s
        self._lock = threading.Lock()
        self._held: dict[str, int] = defaultdict(int)
        self._waiting: dict[str, deque[_Ticket]] = {}
        self._last_served: dict[str, int] = {}
        self._clock = itertools.count(1)
        self._total = 0

    @property
    def queued(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._waiting.values())

    @property
    def held(self) -> int:
        with self._lock:
            return self._total

    def acquire(self, key: str, abandoned: Callable[[], bool] | None = None) -> bool:
        """Wait in this thread for a slot (True), or until `abandoned()` says the client left (False, no slot)."""
        event = threading.Event()
        ticket = self._enqueue(key, event.set)
        while ticket is not None and not event.wait(self.poll_s):
            if abandoned is not None and abandoned() and self._withdraw(ticket):
                return False
        return True

    async def enter(self, key: str, abandoned: Callable[[], bool] | None = None) -> bool:
        """`acquire` for a coroutine: waits in the running event loop, not in a thread. Cancelled while
        waiting, it leaves the queue (or gives back the slot it was granted meanwhile)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        ticket = self._enqueue(key, lambda: loop.call_soon_threadsafe(_settle, future))
        try:
            while ticket is not None:
                done, _ = await asyncio.wait({future}, timeout=self.poll_s)
                if done:
                    return True
                if abandoned is not None and abandoned() and self._withdraw(ticket):
                    return False
        except asyncio.CancelledError:
            if ticket is not None and not self._withdraw(ticket):
                self.release(key)
            raise
        return True

    def release(self, key: str) -> None:
        if self.capacity is None:
            return
        with self._lock:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]
            self._total -= 1
            self._dispatch()

    def _enqueue(self, key: str, wake: Callable[[], None]) -> _Ticket | None:
        """A slot at once (None), or the ticket now waiting in the queue."""
        if self.capacity is None:
            return None
        with self._lock:
            if self._total < self.capacity and not self._waiting:
                self._grant(key)
                return None
            ticket = _Ticket(key, wake)
            self._waiting.setdefault(key, deque()).append(ticket)
            return ticket

    def _withdraw(self, ticket: _Ticket) -> bool:
        """Take a waiting ticket out of the queue (True); False when it was granted meanwhile (the caller
        holds the slot)."""
        with self._lock:
            if ticket.granted:
                return False
            queue = self._waiting[ticket.key]
            queue.remove(ticket)
            if not queue:
                del self._waiting[ticket.key]
            return True

    def _grant(self, key: str) -> None:
        self._held[key] += 1
        self._total += 1
        self._last_served[key] = next(self._clock)

    def _dispatch(self) -> None:
        while self._waiting and self._total < self.capacity:  # type: ignore[operator]
            key = min(self._waiting, key=lambda k: (self._held.get(k, 0), self._last_served.get(k, 0)))
            queue = self._waiting[key]
            ticket = queue.popleft()
            if not queue:
                del self._waiting[key]
            ticket.granted = True
            self._grant(key)
            ticket.wake()
