"""Front: the authenticating reverse proxy between the run's tasks and Ollama (which has no auth).

Ollama listens on loopback only; the front listens on the node's address. A request must carry
the run's secret as the first path segment, optionally followed by `task/<i>/` naming the task
(`http://HOST:PORT/<secret>/task/3/api/generate`). A missing or wrong secret is answered 403 and
never reaches Ollama; so is any endpoint outside the conversion allowlist (model management:
pull, push, create, copy, delete, blobs). Responses stream through chunk by chunk. Per task the
front counts requests, failures (5xx incl. 503 busy, connection errors, an error inside a stream),
timeouts (504), client errors (other 4xx) and tokens in/out (Ollama's prompt_eval_count /
eval_count, OpenAI `usage`); `/<secret>/_hpcmarker/stats` returns them as JSON and a metrics
line is appended to a file every few seconds. The secret is never logged: logs name the task,
the endpoint and the outcome only.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import defaultdict
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import httpx

from hpc_marker.llm.rules import MAX_BODY, Decision, TaskCounters, Usage, authorize


class _Deadline(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "hpcmarker-front"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the request line holds the secret: the front logs for itself

    def _any(self) -> None:
        self.server.front._handle(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any


class Front:
    """The proxy: `Front(upstream, secret, host, port, timeout_s, metrics_path).start()`, then `.stop()`."""

    def __init__(self, upstream: str, secret: str, host: str = "127.0.0.1", port: int = 0,
                 timeout_s: float = 600.0, metrics_path: str | Path | None = None,
                 metrics_interval_s: float = 5.0, log: Callable[[str], None] | None = None) -> None:
        if not secret:
            raise ValueError("the front needs a secret")
        self.upstream = upstream.rstrip("/")
        self._secret = secret
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self.metrics_interval_s = metrics_interval_s
        sink = log or (lambda message: print(f"[hpcmarker llm front] {message}", flush=True))
        self.log: Callable[[str], None] = lambda message: sink(message.replace(secret, "<secret>"))
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskCounters] = defaultdict(TaskCounters)
        self.denied = 0
        self.started = time.time()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._client = httpx.Client(trust_env=False, follow_redirects=False,
                                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Front:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("FrontServer", (ThreadingHTTPServer,),
                            {"address_family": family, "request_queue_size": 256, "daemon_threads": True,
                             "handle_error": lambda s, request, address: self.log("connection error (dropped)")})
        self._server = server_class((self.host, self.port), _Handler)
        self._server.front = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._threads = [threading.Thread(target=self._server.serve_forever, args=(0.1,), name="front", daemon=True)]
        if self.metrics_path:
            self._threads.append(threading.Thread(target=self._metrics_loop, name="front-metrics", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._client.close()

    def __enter__(self) -> Front:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- counters ----------------------------------------------------------------------

    def _count(self, task: str, **deltas: int) -> None:
        with self._lock:
            counters = self._tasks[task]
            for name, delta in deltas.items():
                setattr(counters, name, getattr(counters, name) + delta)

    def stats(self) -> dict:
        with self._lock:
            tasks = {name: asdict(c) for name, c in sorted(self._tasks.items())}
            denied = self.denied
        total = {key: sum(t[key] for t in tasks.values()) for key in asdict(TaskCounters())}
        return {"started": self.started, "uptime_s": round(time.time() - self.started, 3),
                "in_flight": total["in_flight"], "denied": denied, "tasks": tasks, "total": total}

    def _metrics_loop(self) -> None:
        last_time, last = time.monotonic(), self.stats()["total"]
        while not self._stop.wait(self.metrics_interval_s):
            last_time, last = self._write_metrics(last_time, last)
        self._write_metrics(last_time, last)

    def _write_metrics(self, last_time: float, last: dict) -> tuple[float, dict]:
        now, stats = time.monotonic(), self.stats()
        interval = max(now - last_time, 1e-9)
        line = {"ts": round(time.time(), 3), "interval_s": round(interval, 3), "in_flight": stats["in_flight"],
                "denied": stats["denied"], "tasks": stats["tasks"],
                "tokens_out_per_s": round((stats["total"]["tokens_out"] - last["tokens_out"]) / interval, 2),
                "tokens_in_per_s": round((stats["total"]["tokens_in"] - last["tokens_in"]) / interval, 2)}
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
                fh.write(json.dumps(line) + "\n")
        except OSError as exc:
            self.log(f"cannot write metrics: {exc.strerror}")
        return now, stats["total"]

    # ---- requests ----------------------------------------------------------------------

    def _reply(self, h: BaseHTTPRequestHandler, status: int, data: dict, close: bool = False) -> None:
        body = json.dumps(data).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(body)))
        if close:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        decision = authorize(h.command, h.path, self._secret)
        if decision.action == "deny":
            with self._lock:
                self.denied += 1
            peer = h.client_address[0]
            self.log(f"refused {h.command} from {peer} (task {decision.task}): {decision.status} {decision.reason}")
            message = "forbidden" if decision.reason == "forbidden" else f"hpcmarker front: {decision.reason}"
            return self._reply(h, decision.status, {"error": message}, close=True)  # body left unread
        if decision.action == "stats":
            return self._reply(h, 200, self.stats())
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            return self._reply(h, 411, {"error": "hpcmarker front: send a Content-Length"}, close=True)
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return self._reply(h, 413, {"error": "hpcmarker front: request body too large"}, close=True)
        body = h.rfile.read(length) if length else b""
        self._forward(h, decision, body)

    def _forward(self, h: BaseHTTPRequestHandler, decision: Decision, body: bytes) -> None:
        task, started = decision.task, time.monotonic()
        self._count(task, requests=1, in_flight=1)
        outcome, settled = "?", False  # settled: the request's outcome (and in_flight) is counted
        try:
            timeout = httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
            request = self._client.build_request(
                h.command, self.upstream + decision.upstream_path, content=body, timeout=timeout,
                headers={"Content-Type": h.headers.get("Content-Type", "application/json"),
                         "Accept-Encoding": "identity"})
            try:
                response = self._client.send(request, stream=True)
            except httpx.TimeoutException:
                outcome, settled = "timeout", True
                self._count(task, timeouts=1, in_flight=-1)
                return self._reply(h, 504, {"error": f"hpcmarker front: no answer within {self.timeout_s:g}s"})
            except httpx.HTTPError as exc:
                outcome, settled = f"upstream unreachable ({type(exc).__name__})", True
                self._count(task, failures=1, in_flight=-1)
                return self._reply(h, 502, {"error": "hpcmarker front: the LLM server is not reachable"})
            try:
                h.send_response(response.status_code)
                h.send_header("Content-Type", response.headers.get("content-type", "application/json"))
                if h.request_version != "HTTP/1.0":
                    h.send_header("Transfer-Encoding", "chunked")
                else:
                    h.send_header("Connection", "close")
                    h.close_connection = True
                h.end_headers()
                settled = True
                outcome = self._relay(h, response, task, started + self.timeout_s)
            finally:
                response.close()
        finally:
            if not settled:
                self._count(task, in_flight=-1)
            if outcome != "ok":
                self.log(f"task {task} {h.command} {decision.upstream_path}: {outcome} "
                         f"after {time.monotonic() - started:.2f}s")

    def _relay(self, h: BaseHTTPRequestHandler, response: httpx.Response, task: str, deadline: float) -> str:
        """Pass the body on as it comes, one chunk held back: the counters are updated before the
        client sees the end of the response (a task reads its stats right after)."""
        chunked = h.request_version != "HTTP/1.0"  # as _forward announced

        def send(data: bytes) -> None:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            h.wfile.flush()

        status, usage, outcome, held = response.status_code, Usage(), "ok", b""
        try:
            for data in response.iter_bytes():
                usage.feed(data)
                if held:
                    send(held)
                held = data
                if time.monotonic() > deadline:
                    raise _Deadline
        except (httpx.TimeoutException, _Deadline):
            outcome = "timeout (stream cut)"
        except httpx.HTTPError as exc:
            outcome = f"upstream broke off ({type(exc).__name__})"
        except OSError:
            outcome = "client went away"
        usage.finish()
        failed = status >= 500 or outcome.startswith("upstream") or (status < 400 and usage.error)
        self._count(task, tokens_in=usage.tokens_in, tokens_out=usage.tokens_out, in_flight=-1,
                    timeouts=int(outcome.startswith("timeout")), failures=int(failed),
                    client_errors=int(400 <= status < 500))
        if outcome != "ok":
            h.close_connection = True  # the client sees a cut response
            return outcome
        try:
            if held:
                send(held)
            if chunked:
                h.wfile.write(b"0\r\n\r\n")
                h.wfile.flush()
        except OSError:
            h.close_connection = True
            return "client went away"
        if failed or status >= 400:
            return f"HTTP {status}" + (" (error in stream)" if usage.error and status < 400 else "")
        return outcome
