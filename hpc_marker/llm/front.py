"""Front: the authenticating reverse proxy between the run's tasks and the LLM server (Ollama has no
auth; vLLM's own --api-key does not cover every route).

The server listens on loopback only; the front listens on the node's address. A request must carry
the replica's secret, as the first path segment or as `Authorization: Bearer`, optionally followed
by `task/<i>/` naming the task (`http://HOST:PORT/<secret>/task/3/api/generate`). A missing or
wrong secret is answered 403 and never reaches the server; so is any endpoint outside the server's
conversion allowlist (model management, tokenizers, metrics...). Responses stream through as they
come. With a `capacity`, at most that many generations are at the server at once and the others
wait at the front in a FairGate (fair across tasks; a waiter whose client left is dropped).
Per task the front counts requests, failures (5xx incl. 503 busy, connection errors, an error
inside a stream), timeouts (504), client errors (other 4xx), abandoned waiters and tokens in/out
(Ollama's prompt_eval_count / eval_count, OpenAI `usage`); `/<secret>/_hpcmarker/stats` returns
them as JSON and a metrics line is appended to a file every few seconds (llm/counters.py). The
secret is never logged: logs name the task, the endpoint and the outcome only.

The upstream is a `Route` (llm/proxy.py): one fixed server (`Fixed`, the service's front), or the
run's replicas (llm/replicas.py, a task's relay), where a request whose replica stopped answering
(connection refused or cut, 502) before any byte reached the client is sent to the next one,
counted as a failover.

The front is an asyncio server: aiohttp's HTTP server and client in one event loop (a C parser;
aiohttp writes the chunked encoding), run in a thread of its own so that `Front(...).start()` and
`.stop()` serve callers that are not async (the service, a task's relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from hpc_marker.llm.counters import Counters
from hpc_marker.llm.gate import FairGate
from hpc_marker.llm.proxy import Fixed, Proxy, Route, Target, json_reply
from hpc_marker.llm.rules import ALLOWED, MAX_BODY, authorize, bearer_token

__all__ = ["Fixed", "Front", "Route", "Target"]
SHUTDOWN_S = 0.05  # at stop, requests in flight are cut (as http.server's were; a relay moves them); aiohttp: 0 = never
READ_BUFFER = 1 << 20  # per connection: a page image (about 1 MB) is read in a few steps, not in 64 KB ones


class _Dropped(logging.Handler):
    """aiohttp's own error log (a malformed request, a handler error) as one line without details: its
    messages may quote a request line, which may hold the secret."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(logging.WARNING)
        self.proxy = proxy

    def emit(self, record: logging.LogRecord) -> None:
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "error"
        self.proxy.say(logging.WARNING, f"connection error (dropped): {kind}")


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run(main), on uvloop where it is installed (Linux): the same asyncio, a faster loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


class Front:
    """The proxy: `Front(upstream, secret, host, port, timeout_s, metrics_path).start()`, then `.stop()`.
    `upstream` is a URL or a Route; `capacity` (None: no gate) bounds generations at the server; `name` starts
    its log lines (llm/proxy.py's logger; "relay" in a task)."""

    def __init__(
        self,
        upstream: str | Route,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout_s: float = 600.0,
        metrics_path: str | Path | None = None,
        metrics_interval_s: float = 5.0,
        *,
        name: str = "front",
        allowed: dict[str, frozenset[str]] = ALLOWED,
        capacity: int | None = None,
        upstream_headers: dict[str, str] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the front needs a secret")
        self.route: Route = Fixed(upstream, dict(upstream_headers or {})) if isinstance(upstream, str) else upstream
        self.allowed, self.gate = allowed, FairGate(capacity)
        self._secret = secret
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.counters = Counters(self.gate, Path(metrics_path) if metrics_path else None, metrics_interval_s)
        self.proxy = Proxy(self.route, self.gate, self.counters, timeout_s, name=name, secret=secret)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stats(self) -> dict:
        return self.counters.stats()

    def start(self) -> Front:
        """Listen (OSError when the address cannot be had), then serve in a thread of its own."""
        ready, failure = threading.Event(), []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="front", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        self.counters.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut the requests in flight (a task's relay sends them to another replica). Idempotent."""
        loop, self._loop = self._loop, None
        if loop is not None and self._stopping is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=SHUTDOWN_S + 5)
        self.counters.stop()

    def __enter__(self) -> Front:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:  # like asyncio.run: at the end, the handlers of connections still open are cancelled and awaited
            _run_loop(self._serve(ready, failure))
        except BaseException as exc:
            if ready.is_set():  # it was serving: nothing waits for the error
                self.proxy.say(logging.ERROR, f"stopped serving: {type(exc).__name__}: {exc}")
            failure.append(exc)
        finally:
            ready.set()

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        dropped = logging.Logger("hpcmarker-front")  # aiohttp's, kept out of the logging tree
        dropped.addHandler(_Dropped(self.proxy))
        runner = web.ServerRunner(
            web.Server(self._handle, access_log=None, logger=dropped, read_bufsize=READ_BUFFER),
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_S,
        )
        await runner.setup()
        session = self.proxy.open_session()
        try:
            try:
                await web.TCPSite(runner, self.host, self.port, backlog=1024).start()
            except OSError as exc:
                failure.append(exc)
                return
            self.port = runner.addresses[0][1]
            ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            await session.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        decision = authorize(
            request.method,
            request.raw_path,
            self._secret,
            self.allowed,
            bearer_token(request.headers.get("Authorization")),
        )
        if decision.action == "deny":
            self.counters.deny()
            self.proxy.say(
                logging.WARNING,
                f"refused {request.method} from {request.remote} (task {decision.task}): "
                f"{decision.status} {decision.reason}",
            )
            message = "forbidden" if decision.reason == "forbidden" else f"hpcmarker front: {decision.reason}"
            return json_reply(decision.status, {"error": message}, close=True)  # body left unread
        if decision.action == "stats":
            return json_reply(200, self.stats())
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            return json_reply(411, {"error": "hpcmarker front: send a Content-Length"}, close=True)
        length = request.content_length or 0
        if not 0 <= length <= MAX_BODY:
            return json_reply(413, {"error": "hpcmarker front: request body too large"}, close=True)
        try:
            if length and request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as aiohttp's router does (curl)
                request.writer.output_size = 0
            body = await request.content.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            return json_reply(400, {"error": "hpcmarker front: the request body was cut"}, close=True)
        return await self.proxy.forward(request, decision, body)
