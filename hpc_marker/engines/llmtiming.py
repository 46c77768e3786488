"""A document's LLM wait: the wall time during which at least one of its LLM calls was in flight.

Calls may overlap (marker's LLM processors and the text engine's refinement send several at once from a
thread pool), so the wait is the length of the union of the calls' intervals, not their sum. `LlmClock`
records the intervals (thread-safe); `TimedService` puts a clock on a marker LLM service class without
changing a request (markerservices.py). Imports nothing of marker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any


def busy_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """The length of the union of (start, end) intervals: the time at least one of them covers. Pure."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class LlmClock:
    """The intervals of the LLM calls made since the last `take()`, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._intervals: list[tuple[float, float]] = []

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Record the block's wall time as one call's interval (also when it raises)."""
        started = time.monotonic()
        try:
            yield
        finally:
            ended = time.monotonic()
            with self._lock:
                self._intervals.append((started, ended))

    def take(self) -> float:
        """The LLM wait of the calls recorded so far (busy_seconds), and start afresh."""
        with self._lock:
            intervals, self._intervals = self._intervals, []
        return busy_seconds(intervals)


class TimedService:
    """Mixin before a marker LLM service class: each call is timed on the instance's `llm_clock`; the request,
    the answer and marker's own handling of failures are the service's. `config` is the parameter marker's
    converter resolves (resolve_dependencies reads the signature)."""

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)  # type: ignore[call-arg]  # marker's BaseService
        self.llm_clock = LlmClock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.llm_clock.timed():
            return super().__call__(*args, **kwargs)  # type: ignore[misc]


def service_clock(service: Any) -> LlmClock | None:
    """The clock of a marker LLM service built from TimedService, else None (no service, or another class)."""
    clock = getattr(service, "llm_clock", None)
    return clock if isinstance(clock, LlmClock) else None
