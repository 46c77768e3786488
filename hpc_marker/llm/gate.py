"""FairGate: at most `capacity` requests at the LLM server at once; the rest wait at the front, served
fairly across tasks instead of piling up in the server's own queue (where clients time out).

When a slot frees, it goes to the waiting request of the task that holds the fewest slots now (ties:
the task served longest ago), first come first served within a task. So a task with 12 requests
waiting does not starve one with 1, and a task that just got a slot waits behind one that did not.
A waiter whose client has gone (timed out, disconnected) leaves the queue without ever reaching
the server. A gate without capacity (None) lets everything through at once.

    gate = FairGate(capacity=8)
    if gate.acquire("task-3", abandoned=lambda: client_closed(sock)):
        try: ...   # the request at the server
        finally: gate.release("task-3")
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Ticket:
    key: str
    granted: bool = False
    event: threading.Event = field(default_factory=threading.Event)


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
        """Wait for a slot (True), or until `abandoned()` says the client left (False, no slot)."""
        if self.capacity is None:
            return True
        with self._lock:
            if self._total < self.capacity and not self._waiting:
                self._grant(key)
                return True
            ticket = _Ticket(key)
            self._waiting.setdefault(key, deque()).append(ticket)
        while not ticket.event.wait(self.poll_s):
            if abandoned is not None and abandoned():
                with self._lock:
                    if ticket.granted:  # granted meanwhile: the caller releases it
                        return True
                    queue = self._waiting[key]
                    queue.remove(ticket)
                    if not queue:
                        del self._waiting[key]
                return False
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
            ticket.event.set()
