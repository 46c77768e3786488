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

Tasks `hpcmarker grow` adds (grown_budget): the plan's tasks that started before the growth keep their share
until they end (marker's workers are built with it), so a grown task's workers take what those leave of
FILL x capacity, at least 1 each (the same rounding as above: in flight stays below FILL x capacity + all
clients); its timeout counts every request in flight. A task of the plan that starts after the growth
counts the round's grown tasks among the clients (a smaller share).
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
    others_in_flight: int = 0  # a grown task's: what the other tasks may hold beside its own workers' requests

    @property
    def in_flight(self) -> int:
        return self.others_in_flight + self.clients * self.max_concurrency

    def describe(self) -> str:
        others = f"{self.others_in_flight} of the other tasks + " if self.others_in_flight else ""
        return (
            f"{others}{self.clients} workers x {self.max_concurrency} requests in flight = {self.in_flight} for "
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
    grown: int = 0,
) -> Budget:
    """The budget of a task of the plan (`per_worker`: the user's own max_concurrency, kept as given;
    `max_running`: at most this many of its tasks run at once; `grown`: tasks `grow` added to the round
    before this task started, each with as many workers). Pure."""
    capacity = max(1, parallel) * max(1, replicas)
    clients = (max(1, min(tasks, max_running or tasks)) + max(0, grown)) * max(1, workers)
    if per_worker is None:
        per_worker = min(MAX_PER_WORKER, max(1, math.ceil(FILL * capacity / clients)))
    return Budget(
        capacity=capacity,
        clients=clients,
        max_concurrency=per_worker,
        timeout_s=_timeout(clients * per_worker, capacity, request_timeout_s),
        max_retries=RETRIES,
    )


def grown_budget(
    parallel: int,
    replicas: int,
    tasks: int,
    grown: int,
    workers: int,
    request_timeout_s: float,
    per_worker: int | None = None,
    max_running: int | None = None,
) -> Budget:
    """The budget of a task `grow` added (`grown`: the grown tasks, this one included): the plan's `tasks` may
    hold the share they took without the grown ones until they end; this task's workers share what that
    leaves of FILL x capacity among the grown tasks' workers, at least 1 each. Pure."""
    plan = plan_budget(parallel, replicas, tasks, workers, request_timeout_s, per_worker, max_running)
    clients = max(1, workers)
    if per_worker is None:
        left = FILL * plan.capacity - plan.in_flight
        per_worker = min(MAX_PER_WORKER, max(1, math.floor(left / (max(1, grown) * clients))))
    others = plan.in_flight + (max(1, grown) - 1) * clients * per_worker  # the other grown tasks: alike
    return Budget(
        capacity=plan.capacity,
        clients=clients,
        max_concurrency=per_worker,
        timeout_s=_timeout(others + clients * per_worker, plan.capacity, request_timeout_s),
        max_retries=RETRIES,
        others_in_flight=others,
    )


def _timeout(in_flight: int, capacity: int, request_timeout_s: float) -> int:
    """A request's client timeout: the turns it may wait at a front with `in_flight` requests, then its own."""
    return math.ceil((math.ceil(in_flight / capacity) + 1) * request_timeout_s)
