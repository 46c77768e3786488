"""Counters of a front: per task requests, failures, timeouts, tokens... (rules.TaskCounters), the
stats the front answers at `/<secret>/_hpcmarker/stats`, and the metrics line it appends to a file
every few seconds (llm/metrics.py reads them back).

Counted from the front's event loop, read from any thread (a test, the metrics thread): a lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from hpc_marker.llm.gate import FairGate
from hpc_marker.llm.rules import TaskCounters

logger = logging.getLogger(__name__)


class Counters:
    def __init__(self, gate: FairGate, metrics_path: Path | None, metrics_interval_s: float) -> None:
        self.gate, self.metrics_path, self.metrics_interval_s = gate, metrics_path, metrics_interval_s
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskCounters] = defaultdict(TaskCounters)
        self.denied = 0
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, task: str, **deltas: int) -> None:
        with self._lock:
            counters = self._tasks[task]
            for name, delta in deltas.items():
                setattr(counters, name, getattr(counters, name) + delta)

    def deny(self) -> None:
        with self._lock:
            self.denied += 1

    def stats(self) -> dict:
        with self._lock:
            tasks = {name: asdict(c) for name, c in sorted(self._tasks.items())}
            denied = self.denied
        total = {key: sum(t[key] for t in tasks.values()) for key in asdict(TaskCounters())}
        return {
            "started": self.started,
            "uptime_s": round(time.time() - self.started, 3),
            "in_flight": total["in_flight"],
            "queued": total["queued"],
            "capacity": self.gate.capacity,
            "denied": denied,
            "tasks": tasks,
            "total": total,
        }

    def start(self) -> None:
        """Append a metrics line every metrics_interval_s (and a last one at stop), when there is a file."""
        if self.metrics_path is not None:
            self._thread = threading.Thread(target=self._metrics_loop, name="front-metrics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _metrics_loop(self) -> None:
        last_time, last = time.monotonic(), self.stats()["total"]
        while not self._stop.wait(self.metrics_interval_s):
            last_time, last = self._write_metrics(last_time, last)
        self._write_metrics(last_time, last)

    def _write_metrics(self, last_time: float, last: dict) -> tuple[float, dict]:
        now, stats = time.monotonic(), self.stats()
        interval = max(now - last_time, 1e-9)
        line = {
            "ts": round(time.time(), 3),
            "interval_s": round(interval, 3),
            "in_flight": stats["in_flight"],
            "queued": stats["queued"],
            "capacity": stats["capacity"],
            "denied": stats["denied"],
            "tasks": stats["tasks"],
            "tokens_out_per_s": round((stats["total"]["tokens_out"] - last["tokens_out"]) / interval, 2),
            "tokens_in_per_s": round((stats["total"]["tokens_in"] - last["tokens_in"]) / interval, 2),
        }
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
                fh.write(json.dumps(line) + "\n")
        except OSError as exc:
            logger.warning(f"cannot write metrics: {exc.strerror}")
        return now, stats["total"]
