"""Bounded waits until something answers: `poll_until` (a probe called until it passes or the time is
up) and `http_ok` (one GET, a 200 or what was seen instead).

A probe gets the seconds left and returns either its result or `NotReady(why)`; it raises to fail
at once (a server process that exited). `poll_until` raises WaitTimeout, carrying the last `why`,
which each caller turns into its own one-line error:

    reply = poll_until(lambda left: http_ok(f"{url}/health", left), timeout_s=60)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import httpx


T = TypeVar("T")
PROBE_TIMEOUT_S = 2.0  # one probe's request, at most
MIN_PROBE_TIMEOUT_S = 0.1


@dataclass(frozen=True)
class NotReady:
    """A probe's answer while what it waits for is not there yet: what it saw, for the timeout's message."""

    why: str
    status: int | None = None  # the HTTP status, where a server answered


class WaitTimeout(TimeoutError):
    """poll_until ran out of time; `last` is the last thing the probe saw."""

    def __init__(self, last: str, timeout_s: float) -> None:
        super().__init__(f"not ready within {timeout_s:g}s ({last})")
        self.last = last
        self.timeout_s = timeout_s


def poll_until(probe: Callable[[float], T | NotReady], timeout_s: float, *, interval_s: float = 0.5) -> T:
    """Call `probe(seconds_left)` until it returns something other than NotReady, at least once and
    at most until `timeout_s` has passed (then WaitTimeout), sleeping `interval_s` between calls."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe(max(0.0, deadline - time.monotonic()))
        if not isinstance(result, NotReady):
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(result.why, timeout_s)
        time.sleep(min(interval_s, left))


def http_ok(url: str, seconds_left: float, *, most_s: float = PROBE_TIMEOUT_S) -> httpx.Response | NotReady:
    """GET `url` (never through a proxy), within the seconds left and at most `most_s`: the reply when it
    is 200, else NotReady("HTTP 503", status=503) or NotReady("ConnectError") while nothing answers."""
    import httpx  # here: every task imports this module (its health waits), most never probe HTTP

    try:
        reply = httpx.get(url, timeout=min(most_s, max(MIN_PROBE_TIMEOUT_S, seconds_left)), trust_env=False)
    except httpx.HTTPError as exc:  # connection refused while it starts, a read timeout
        return NotReady(type(exc).__name__)
    if reply.status_code == 200:
        return reply
    return NotReady(f"HTTP {reply.status_code}", status=reply.status_code)
