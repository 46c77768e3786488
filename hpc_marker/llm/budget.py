"""One concurrency budget for a run's LLM: how many requests its workers may have in flight, and how
long a client waits, from what the servers can run at once. Pure.

Without it each marker worker sends up to `max_concurrency` (3) requests at once whatever the
servers can take: 64 tasks x 4 workers x 3 = 768 requests at a server that runs 4, and marker's
30 s client timeout turns the queue into dropped refinements; or 4 tasks x 4 workers x 3 = 48 at
two vLLM replicas that run 256 each, which then idle.

    capacity      = parallel x replicas          generations the servers run at once
    clients       = tasks x workers              processes that send requests (tasks: those that run at
                                                 once, at most --max-running)
    per worker    = ceil(FILL x capacity / clients), at least 1, at most MAX_PER_WORKER
    in flight     = clients x per worker         about FILL x capacity: the servers full, one more
                                                 round waiting at their fronts (FairGate), no more
    timeout       = (ceil(in flight / capacity) + 1) x request_timeout_s
                                                 a request waits at most that many turns at a front,
                                                 each bounded by the front's own request timeout,
                                                 so a client never gives up on a request that is
                                                 only queued; the front answers 504 for a stuck one
    retries       = 1                            a timeout under the budget means something broke
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

FILL = 2.0  # in flight over capacity: one round at the servers, one waiting at the fronts
MAX_PER_WORKER = 64
RETRIES = 1


def front_capacity(parallel: int) -> int:
    """Generations a front lets through to its server at once: the server's slots and a few more, so
    the server's own queue refills a freed slot at once (the rest wait at the front, fairly)."""
    return parallel + max(1, parallel // 8)


@dataclass(frozen=True)
class Budget:
    capacity: int  # generations the servers run at once (parallel x replicas)
    clients: int  # workers that send requests (tasks x workers per task)
    max_concurrency: int  # requests in flight per worker: marker's max_concurrency, the text engine's pages
    timeout_s: int  # client-side, per request (marker's `timeout`)
    max_retries: int  # marker's `max_retries`

    @property
    def in_flight(self) -> int:
        return self.clients * self.max_concurrency

    def describe(self) -> str:
        return (
            f"{self.clients} workers x {self.max_concurrency} requests in flight = {self.in_flight} for "
            f"{self.capacity} server slots; client timeout {self.timeout_s}s, {self.max_retries} retry"
        )

    def to_json(self) -> dict:
        return dict(asdict(self), in_flight=self.in_flight)


def plan_budget(
    parallel: int,
    replicas: int,
    tasks: int,
    workers: int,
    request_timeout_s: float,
    per_worker: int | None = None,
    max_running: int | None = None,
) -> Budget:
    """The budget of a run (`per_worker`: the user's own max_concurrency, kept as given; `max_running`:
    at most this many of its tasks run at once). Pure."""
    capacity = max(1, parallel) * max(1, replicas)
    clients = max(1, min(tasks, max_running or tasks)) * max(1, workers)
    if per_worker is None:
        per_worker = min(MAX_PER_WORKER, max(1, math.ceil(FILL * capacity / clients)))
    rounds = math.ceil(clients * per_worker / capacity)
    timeout = math.ceil((rounds + 1) * request_timeout_s)
    return Budget(
        capacity=capacity, clients=clients, max_concurrency=per_worker, timeout_s=timeout, max_retries=RETRIES
    )
