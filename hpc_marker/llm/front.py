"""Front: the authenticating reverse proxy between the run's tasks and the LLM server (Ollama has no
auth; vLLM's own --api-key does not cover every route).

The server listens on loopback only; the front listens on the node's address. A request must carry
the replica's secret, as the first path segment or as `Authorization: Bearer`, optionally followed
by `task/<i>/` naming the task (`http://HOST:PORT/<secret>/task/3/api/generate`). A missing or
wrong secret is answered 403 and never reaches the server; so is any endpoint outside the server's
conversion allowlist (model management, tokenizers, metrics...). Responses stream through chunk by
chunk. With a `capacity`, at most that many generations are at the server at once and the others
wait at the front in a FairGate (fair across tasks; a waiter whose client left is dropped).
Per task the front counts requests, failures (5xx incl. 503 busy, connection errors, an error
inside a stream), timeouts (504), client errors (other 4xx), abandoned waiters and tokens in/out
(Ollama's prompt_eval_count / eval_count, OpenAI `usage`); `/<secret>/_hpcmarker/stats` returns
them as JSON and a metrics line is appended to a file every few seconds. The secret is never
logged: logs name the task, the endpoint and the outcome only.

The upstream is a `Route`: one fixed server (`Fixed`, the service's front), or the run's replicas
(llm/replicas.py, a task's relay), where a request whose replica stopped answering (connection
refused or cut, 502) before any byte reached the client is sent to the next one, counted as a failover.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Protocol

import httpx

from hpc_marker.llm.gate import FairGate
from hpc_marker.llm.rules import (
    ALLOWED,
    GENERATION,
    MAX_BODY,
    Decision,
    TaskCounters,
    Usage,
    authorize,
    bearer_token,
)

# the upstream is gone (not merely slow): worth another replica, if there is one
_GONE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Deadline(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """One place a request can go: a base URL (the route's path is appended) and headers to add."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    name: str = ""  # e.g. "replica 1", for messages


class Route(Protocol):
    failover_statuses: frozenset[int]  # answers that mean "this target is gone, try the next"

    def targets(self, task: str) -> list[Target]:
        """Where a request of `task` may go, in order of preference."""

    def failed(self, target: Target, why: str) -> None:
        """`target` stopped answering (the route may avoid it for a while)."""


@dataclass(frozen=True)
class Fixed:
    """One upstream server, always."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    failover_statuses: frozenset[int] = frozenset()

    def targets(self, task: str) -> list[Target]:
        return [Target(self.url.rstrip("/"), self.headers)]

    def failed(self, target: Target, why: str) -> None:
        pass


def client_gone(sock: socket.socket) -> bool:
    """The client closed its connection (a timed-out client does), seen without reading its data."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(0):
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


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
    """The proxy: `Front(upstream, secret, host, port, timeout_s, metrics_path).start()`, then `.stop()`.
    `upstream` is a URL or a Route; `capacity` (None: no gate) bounds generations at the server."""

    def __init__(self, upstream: str | Route, secret: str, host: str = "127.0.0.1", port: int = 0,
                 timeout_s: float = 600.0, metrics_path: str | Path | None = None,
                 metrics_interval_s: float = 5.0, log: Callable[[str], None] | None = None, *,
                 allowed: dict[str, frozenset[str]] = ALLOWED, capacity: int | None = None,
                 upstream_headers: dict[str, str] | None = None) -> None:
        if not secret:
            raise ValueError("the front needs a secret")
        self.route: Route = Fixed(upstream, dict(upstream_headers or {})) if isinstance(upstream, str) else upstream
        self.allowed, self.gate = allowed, FairGate(capacity)
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
                "in_flight": total["in_flight"], "queued": total["queued"], "capacity": self.gate.capacity,
                "denied": denied, "tasks": tasks, "total": total}

    def _metrics_loop(self) -> None:
        last_time, last = time.monotonic(), self.stats()["total"]
        while not self._stop.wait(self.metrics_interval_s):
            last_time, last = self._write_metrics(last_time, last)
        self._write_metrics(last_time, last)

    def _write_metrics(self, last_time: float, last: dict) -> tuple[float, dict]:
        now, stats = time.monotonic(), self.stats()
        interval = max(now - last_time, 1e-9)
        line = {"ts": round(time.time(), 3), "interval_s": round(interval, 3), "in_flight": stats["in_flight"],
                "queued": stats["queued"], "capacity": stats["capacity"], "denied": stats["denied"], "tasks": stats["tasks"],
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
        decision = authorize(h.command, h.path, self._secret, self.allowed, bearer_token(h.headers.get("Authorization")))
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
        task = decision.task
        gated = decision.upstream_path in GENERATION
        if gated:
            slot = task.split(".")[0]  # a task's workers (`<task>.<pid>`) share its fair share
            self._count(task, queued=1)
            admitted = self.gate.acquire(slot, abandoned=lambda: client_gone(h.connection))
            self._count(task, queued=-1)
            if not admitted:
                self._count(task, requests=1, abandoned=1)
                h.close_connection = True
                return self.log(f"task {task} {h.command} {decision.upstream_path}: the client left while queued")
        try:
            self._send(h, decision, body)
        finally:
            if gated:
                self.gate.release(slot)

    def _send(self, h: BaseHTTPRequestHandler, decision: Decision, body: bytes) -> None:
        task, started = decision.task, time.monotonic()
        self._count(task, requests=1, in_flight=1)
        outcome, settled = "?", False  # settled: the request's outcome (and in_flight) is counted
        try:
            timeout = httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
            targets = self.route.targets(task)
            if not targets:
                outcome, settled = "no upstream answers", True
                self._count(task, failures=1, in_flight=-1)
                return self._reply(h, 503, {"error": "hpcmarker front: no LLM server answers"})
            response: httpx.Response | None = None
            for number, target in enumerate(targets, 1):  # _another may append targets: the loop reaches them
                request = self._client.build_request(
                    h.command, target.url + decision.upstream_path, content=body, timeout=timeout,
                    headers={"Content-Type": h.headers.get("Content-Type", "application/json"),
                             "Accept-Encoding": "identity", **target.headers})
                try:
                    response = self._client.send(request, stream=True)
                except httpx.TimeoutException as exc:
                    if isinstance(exc, httpx.ConnectTimeout) and self._another(task, target, type(exc).__name__,
                                                                               targets, number):
                        continue
                    outcome, settled = "timeout", True
                    self._count(task, timeouts=1, in_flight=-1)
                    return self._reply(h, 504, {"error": f"hpcmarker front: no answer within {self.timeout_s:g}s"})
                except httpx.HTTPError as exc:
                    if isinstance(exc, _GONE) and self._another(task, target, type(exc).__name__, targets, number):
                        continue
                    self.route.failed(target, type(exc).__name__)
                    outcome, settled = f"upstream unreachable ({type(exc).__name__})", True
                    self._count(task, failures=1, in_flight=-1)
                    return self._reply(h, 502, {"error": "hpcmarker front: the LLM server is not reachable"})
                if response.status_code in self.route.failover_statuses and self._another(
                        task, target, f"HTTP {response.status_code}", targets, number):
                    response.close()
                    continue
                break
            assert response is not None  # the loop either answered the client or got a response
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

    def _another(self, task: str, target: Target, why: str, targets: list[Target], number: int) -> bool:
        """`target` (the number-th tried) is gone: is there another? One not tried yet, else one the route
        knows of now (a replica that came up since the request began), appended to `targets`. Counted as
        the request's failover when there is one."""
        self.route.failed(target, why)
        if number == len(targets):
            targets.extend(t for t in self.route.targets(task) if t not in targets)
        if number == len(targets):
            return False
        if number == 1:  # a request counts once, however many targets it tried
            self._count(task, failovers=1)
        self.log(f"task {task}: {target.name or 'upstream'} stopped answering ({why}); trying the next")
        return True

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
