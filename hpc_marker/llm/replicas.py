"""Replicas: a task's view of the run's LLM service replicas, and the relay through which its workers
reach them with failover.

With `--llm-replicas R`, replica r publishes its own endpoint file (llm/settings.py). A task runs a
relay: a Front (same secret check and allowlist, its own secret, on 127.0.0.1) whose Route is
`ReplicaRoute`: requests go to the task's own replica (task index mod R) while it answers, else to
the next live one. A background probe reads the endpoint files and asks each replica's front for
its stats every PROBE_INTERVAL_S, so a replica that went away (its endpoint removed, its front not
answering) stops getting requests within seconds, and one that comes up (late, or again) gets them.
A request whose replica stopped answering before any byte came back (connection refused or cut, a
502 from its front, a 403 from a replica that restarted with a new secret) is sent again to the
next one by the relay (or, when no other answers, to one that comes up within REAPPEAR_S) and
counted as a failover of its worker; so marker's calls in flight at a
replica's death are not lost, and the task's manifest line says which items had some moved.

    with task_relay(run_dir, replicas=2, task=3, server="vllm", model=m, timeout_s=t) as endpoint:
        ...  # workers talk to endpoint (127.0.0.1, the relay's secret) as if it were one front
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpc_marker.llm.client import Endpoint, ServiceUnavailable, read_endpoint
from hpc_marker.llm.front import Front
from hpc_marker.llm.proxy import Target
from hpc_marker.llm.rules import ALLOWLISTS
from hpc_marker.servers.managed import HOST

logger = logging.getLogger(__name__)
PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 2.0
REAPPEAR_S = 4.0  # with no replica answering, a request waits this long for one to come (up), looking every 0.5 s


class ReplicaRoute:
    """The front.Route of a task's relay: the live replicas, the task's own first."""

    failover_statuses = frozenset({403, 502})

    def __init__(self, run_dir: Path, replicas: int, preferred: int) -> None:
        self.run_dir, self.count = Path(run_dir), max(1, replicas)
        self.preferred = preferred % self.count
        self._lock = threading.Lock()
        self._live: dict[int, Endpoint] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _order(self) -> list[int]:
        return [(self.preferred + i) % self.count for i in range(self.count)]

    def probe(self) -> dict[int, Endpoint]:
        """Read every replica's endpoint and ask its front for its stats; the live ones."""
        live = {}
        for replica in self._order():
            endpoint = read_endpoint(self.run_dir, replica)
            if endpoint is None:
                continue
            try:
                endpoint.stats(timeout_s=PROBE_TIMEOUT_S)
            except ServiceUnavailable:
                continue
            live[replica] = endpoint
        with self._lock:
            before, self._live = set(self._live), live
        for replica in sorted(set(live) - before):
            logger.info(f"LLM replica {replica} answers at {live[replica].url}")
        for replica in sorted(before - set(live)):
            logger.warning(f"LLM replica {replica} no longer answers: its requests go to the others")
        return live

    def _loop(self) -> None:
        while not self._stop.wait(PROBE_INTERVAL_S):
            self.probe()

    def start(self) -> ReplicaRoute:
        self.probe()
        self._thread = threading.Thread(target=self._loop, name="replica-probe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=PROBE_TIMEOUT_S * self.count + 1)

    def live(self) -> list[int]:
        with self._lock:
            return [r for r in self._order() if r in self._live]

    async def targets(self, task: str) -> list[Target]:
        """In the relay's event loop: a probe (blocking HTTP) runs in a worker thread."""
        with self._lock:
            live = [(r, self._live[r]) for r in self._order() if r in self._live]
        deadline = time.monotonic() + REAPPEAR_S
        while not live:  # none known to answer: look again (a replica starting, or another one) before failing
            found = await asyncio.to_thread(self.probe)
            live = [(r, found[r]) for r in self._order() if r in found]
            if live or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        return [
            Target(f"{e.url}/task/{task}", {"Authorization": f"Bearer {e.secret}"}, f"replica {r}") for r, e in live
        ]

    def failed(self, target: Target, why: str) -> None:
        replica = int(target.name.rsplit(" ", 1)[-1])
        with self._lock:
            gone = self._live.pop(replica, None)
        if gone is not None:
            logger.warning(f"LLM replica {replica} stopped answering ({why}): its requests go to the others")


@contextmanager
def task_relay(
    run_dir: str | Path,
    replicas: int,
    task: int,
    server: str,
    model: str,
    timeout_s: float,
) -> Iterator[Endpoint]:
    """Start the task's relay to the run's replicas; yield the Endpoint its workers use; stop it after."""
    route = ReplicaRoute(Path(run_dir), replicas, task).start()
    secret = secrets.token_urlsafe(32)
    front = Front(
        route,
        secret,
        host=HOST,
        port=0,
        timeout_s=timeout_s,
        allowed=ALLOWLISTS[server],
        name="relay",
    )
    try:
        front.start()
        logger.info(
            f"LLM relay on {front.url}: replicas {route.live()} answer; this task's own is replica {route.preferred}"
        )
        yield Endpoint(url=front.url, model=model, secret=secret, started=time.time(), server=server)
    finally:
        front.stop()
        route.stop()
