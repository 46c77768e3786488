"""Benchmark: marker's LLM client settings against hpcmarker's concurrency budget, at 4, 16 and 64 tasks.

    PYTHONPATH=. /path/to/marker-venv/bin/python benchmarks/bench_llm_budget.py [--tasks 4,16,64] [--capacity 16]

A stand-in vLLM (tests/standin/vllm) of bounded capacity (--max-num-seqs CAPACITY running at once,
the rest in its own unbounded queue, as vLLM does) and a fixed time per request sits behind
hpcmarker's front (llm/front.py), as in a run. Each simulated task has WORKERS workers; each worker
converts ITEMS items, and each item makes CALLS LLM calls through marker's own OpenAIService
(marker-pdf must be importable) from a thread pool of `max_concurrency`, as marker's LLM
processors do. Three settings per task count:

  marker defaults       max_concurrency 3, timeout 30 s, max_retries 2 (marker's own), front without
                        a queue: what a run sent before the budget
  defaults + fair queue the same clients, the front holding requests beyond the server's slots (FairGate)
  hpcmarker budget      max_concurrency, timeout and max_retries from llm/budget.plan_budget, fair queue

Counted: calls made, calls marker gave up on (it returns {} and the refinement is silently lost:
"degraded"), client timeouts (the HTTP requests that timed out at marker's client, retries
included), requests that reached the server, requests the server ran to the end whose answer nobody
used (wasted), useful tokens/s (tokens of the answers marker used / wall time) and the wall time.
Time is scaled down by --scale (2) so a run takes minutes, not an hour: every duration (the time per
request, marker's 30 s timeout and 3 s retry wait, the front's 600 s request timeout) is divided by
it, so the ratios that decide timeouts are the real ones; a larger scale makes the clients' own CPU
time (marker builds a new client per call) matter more than the server's. Results: docs/llm.md,
docs/llm-budget.json (--json FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from standin.harness import VLLM, free_port, vllm_trace  # noqa: E402

from hpc_marker.llm.budget import front_capacity, plan_budget  # noqa: E402

MODEL = "bench/model"
TOKENS = 50  # completion tokens of every answer
SETTINGS = ("marker defaults", "defaults + fair queue", "hpcmarker budget")
MARKER_DEFAULTS = {"max_concurrency": 3, "timeout": 30.0, "max_retries": 2, "retry_wait_time": 3.0}
FRONT = """
import sys
from hpc_marker.llm.front import Front
from hpc_marker.llm.rules import ALLOWED_VLLM
capacity = None if sys.argv[3] == "none" else int(sys.argv[3])
front = Front(sys.argv[1], sys.argv[2], allowed=ALLOWED_VLLM, capacity=capacity, timeout_s=float(sys.argv[4]),
              upstream_headers={"Authorization": "Bearer bench-key"}).start()
print(front.url, flush=True)
sys.stdin.read()
front.stop()
"""


@dataclass
class Counts:
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    sent: int = 0
    timeouts: int = 0

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


def counting_service(counts: Counts):
    """marker's OpenAIService whose HTTP client counts requests and client timeouts; nothing else changes
    (marker builds a fresh client for every call, and so does this, only without loading the TLS
    certificates that a plain-HTTP loopback client never uses: 50 ms of CPU per call on this machine)."""
    import openai
    from marker.services.openai import OpenAIService

    class Transport(httpx.HTTPTransport):
        def handle_request(self, request):
            counts.add(sent=1)
            try:
                return super().handle_request(request)
            except httpx.TimeoutException:
                counts.add(timeouts=1)
                raise

    class Counted(OpenAIService):
        def get_client(self) -> openai.OpenAI:  # plain HTTP on loopback: no certificates to load (50 ms of CPU)
            return openai.OpenAI(
                api_key=self.openai_api_key,
                base_url=self.openai_base_url,
                http_client=httpx.Client(transport=Transport(verify=False), verify=False, trust_env=False),
            )

    return Counted


@dataclass
class Row:
    capacity: int
    tasks: int
    setting: str
    max_concurrency: int
    timeout_s: float  # unscaled
    in_flight: int
    calls: int
    degraded: int
    client_timeouts: int
    requests_sent: int
    server_ran: int
    wasted: int
    tokens_per_s: float  # unscaled: useful tokens per real-time second
    wall_s: float  # unscaled
    peak_queued: int  # waiting at the front (its fair queue), at most
    peak_at_front: int  # at the server or waiting at the front, at most: the concurrency the clients reached


def start_stack(tmp: Path, capacity: int, seconds: float, gate: int | None, request_timeout_s: float):
    port, log = free_port(), tmp / f"requests-{time.monotonic_ns()}.log"
    env = dict(
        os.environ,
        VLLM_API_KEY="bench-key",
        STANDIN_VLLM_SECONDS_PER_REQUEST=str(seconds),
        STANDIN_VLLM_TOKENS_PER_REQUEST=str(TOKENS),
        STANDIN_VLLM_REQUEST_LOG=str(log),
    )
    vllm = subprocess.Popen(
        [sys.executable, str(VLLM), "serve", MODEL, "--port", str(port), "--max-num-seqs", str(capacity)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    secret = secrets.token_urlsafe(24)
    front = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FRONT,
            f"http://127.0.0.1:{port}",
            secret,
            "none" if gate is None else str(gate),
            str(request_timeout_s),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    url = front.stdout.readline().strip()
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the stand-in vllm did not start")
        time.sleep(0.1)
    return vllm, front, url, secret, log


def run_level(tmp: Path, capacity: int, tasks: int, setting: str, args) -> Row:
    from pydantic import BaseModel

    class Answer(BaseModel):
        corrected_markdown: str

    scale = args.scale
    if setting == "hpcmarker budget":
        budget = plan_budget(capacity, 1, tasks, args.workers, 600.0)
        client = {
            "max_concurrency": budget.max_concurrency,
            "timeout": float(budget.timeout_s),
            "max_retries": budget.max_retries,
            "retry_wait_time": 3.0,
        }
    else:
        client = dict(MARKER_DEFAULTS)
    gate = None if setting == "marker defaults" else front_capacity(capacity)
    vllm, front, url, secret, log = start_stack(tmp, capacity, args.request_s / scale, gate, 600.0 / scale)
    counts, degraded, peak = Counts(), Counts(), [0, 0]
    service_class = counting_service(counts)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.25):
            try:
                stats = httpx.get(f"{url}/{secret}/_hpcmarker/stats", timeout=2).json()
                peak[0] = max(peak[0], stats["queued"])
                peak[1] = max(peak[1], stats["queued"] + stats["in_flight"])
            except (httpx.HTTPError, ValueError):
                pass

    def worker(task: int, index: int) -> None:
        service = service_class(
            {
                "openai_base_url": f"{url}/task/{task}.{index}/v1",
                "openai_api_key": secret,
                "openai_model": MODEL,
                "timeout": client["timeout"] / scale,
                "max_retries": client["max_retries"],
                "retry_wait_time": client["retry_wait_time"] / scale,
            }
        )
        for _ in range(args.items):
            with ThreadPoolExecutor(max_workers=client["max_concurrency"]) as pool:
                results = list(pool.map(lambda _: service("Fix this block.", None, None, Answer), range(args.calls)))
            degraded.add(sent=sum(1 for r in results if not r))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=tasks * args.workers) as pool:
            list(pool.map(lambda i: worker(i // args.workers, i % args.workers), range(tasks * args.workers)))
        wall = time.monotonic() - started
    finally:
        done.set()
        front.stdin.close()
        try:
            front.wait(timeout=30)
        except subprocess.TimeoutExpired:  # requests nobody waits for any more may still hang in it
            front.kill()
            front.wait()
        vllm.terminate()
        vllm.wait(timeout=30)
    trace = vllm_trace(log)
    calls = tasks * args.workers * args.items * args.calls
    useful = calls - degraded.sent
    return Row(
        capacity=capacity,
        tasks=tasks,
        setting=setting,
        max_concurrency=client["max_concurrency"],
        timeout_s=client["timeout"],
        in_flight=tasks * args.workers * client["max_concurrency"],
        calls=calls,
        degraded=degraded.sent,
        client_timeouts=counts.timeouts,
        requests_sent=counts.sent,
        server_ran=len(trace["end"]),
        wasted=len(trace["end"]) - useful,
        tokens_per_s=round(useful * TOKENS / (wall * scale), 1),
        wall_s=round(wall * scale, 1),
        peak_queued=peak[0],
        peak_at_front=peak[1],
    )


def markdown(rows: list[Row], args) -> str:
    head = (
        "| server slots | tasks | setting | per worker | client timeout | in flight (reached) | calls | "
        "degraded | client timeouts | wasted at the server | tokens/s | wall s |\n" + "|---" * 12 + "|\n"
    )
    return head + "".join(
        f"| {r.capacity} | {r.tasks} | {r.setting} | {r.max_concurrency} | {r.timeout_s:g} s | {r.in_flight} "
        f"({r.peak_at_front}) | {r.calls} | {r.degraded} | {r.client_timeouts} | {r.wasted} | {r.tokens_per_s:g} | "
        f"{r.wall_s:g} |\n"
        for r in rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="4,16,64")
    parser.add_argument("--capacity", default="16", help="the server's --max-num-seqs (comma-separated for several)")
    parser.add_argument("--workers", type=int, default=4, help="workers per task")
    parser.add_argument("--items", type=int, default=1, help="items per worker")
    parser.add_argument("--calls", type=int, default=4, help="LLM calls per item")
    parser.add_argument("--request-s", type=float, default=5.0, help="seconds per request at the server (unscaled)")
    parser.add_argument("--scale", type=float, default=2.0, help="every duration is divided by this")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="which settings, in this order")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    settings = [s.strip() for s in args.settings.split(",")]
    if set(settings) - set(SETTINGS):
        parser.error(f"--settings: choose from {', '.join(SETTINGS)}")
    with tempfile.TemporaryDirectory(prefix="hpcmarker-bench-llm-") as tmp:
        for capacity in [int(c) for c in args.capacity.split(",")]:
            for tasks in [int(t) for t in args.tasks.split(",")]:
                for setting in settings:
                    row = run_level(Path(tmp), capacity, tasks, setting, args)
                    print(json.dumps(asdict(row)), flush=True)
                    rows.append(row)
    print(
        f"\nmachine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.workers} workers per task, {args.items} item(s) per worker, {args.calls} LLM calls per item, "
        f"{args.request_s:g} s per request, time scaled by 1/{args.scale:g}\n"
    )
    print(markdown(rows, args))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "rows": [asdict(r) for r in rows]}, indent=1
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
