"""Proxy: how the front sends one authorized request upstream and relays the answer (llm/front.py
decides what goes through; this module does the going).

A generation first takes a slot of the FairGate (waiting at the front while the server is full; a
waiter whose client left is dropped). Then the route's targets are tried in order: a target that is
gone before answering (connection refused or cut, a connect timeout, or an answer in the route's
`failover_statuses`) makes the request go to the next one, counted once as a failover; when it was
the last known, the route is asked again (a replica that came up since). The answer streams back as
it comes (aiohttp writes the chunked encoding), one chunk held back so the counters are updated
before the client sees the end; a stream past the request's deadline, or broken upstream, is cut. A generation's
answer that is not streamed (JSON) is read whole, and a reasoning model's answer left in `thinking` or
`reasoning_content` with its content empty is moved into the content (llm/reasoning.py), counted per task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from aiohttp import web

from hpc_marker.llm.counters import Counters
from hpc_marker.llm.gate import FairGate
from hpc_marker.llm.reasoning import moved_answer
from hpc_marker.llm.rules import GENERATION, Decision, Usage

logger = logging.getLogger(__name__)
SERVER = "hpcmarker-front"  # the Server header of every answer
# the upstream is gone (not merely slow): worth another replica, if there is one
_GONE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


class _Deadline(Exception):
    pass


class _ClientLeft(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """One place a request can go: a base URL (the route's path is appended) and headers to add."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    name: str = ""  # e.g. "replica 1", for messages


class Route(Protocol):
    failover_statuses: frozenset[int]  # answers that mean "this target is gone, try the next"

    async def targets(self, task: str) -> list[Target]:
        """Where a request of `task` may go, in order of preference (in the front's event loop: never block)."""

    def failed(self, target: Target, why: str) -> None:
        """`target` stopped answering (the route may avoid it for a while)."""


@dataclass(frozen=True)
class Fixed:
    """One upstream server, always."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    failover_statuses: frozenset[int] = frozenset()

    async def targets(self, task: str) -> list[Target]:
        return [Target(self.url.rstrip("/"), self.headers)]

    def failed(self, target: Target, why: str) -> None:
        pass


@dataclass(frozen=True)
class _Refused:
    """The request ends at the front: the answer's status and message, the counter it adds to, the log's word."""

    status: int
    message: str
    counter: str
    outcome: str


def json_reply(status: int, data: dict, close: bool = False) -> web.Response:
    response = web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        charset="utf-8",
        headers={"Server": SERVER},
    )
    if close:
        response.force_close()  # e.g. a refused request: its body is left unread
    return response


def client_gone(request: web.BaseRequest) -> bool:
    """The client closed its connection (a timed-out client does)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _cut(request: web.BaseRequest) -> None:
    """Close the client's connection: a response begun is seen cut (no last chunk)."""
    if request.transport is not None:
        request.transport.close()


async def _start(response: web.StreamResponse, request: web.BaseRequest) -> None:
    try:
        await response.prepare(request)
    except ConnectionError as exc:  # aiohttp's ClientConnectionResetError too: the client's side
        raise _ClientLeft from exc


async def _write(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except ConnectionError as exc:
        raise _ClientLeft from exc


async def _end(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write_eof(data)
    except ConnectionError as exc:
        raise _ClientLeft from exc


class Proxy:
    """Forwards for a front: its route, gate, counters and timeout; `session` is set in its loop. Its log lines
    start with the front's `name` and never hold the `secret`."""

    def __init__(
        self, route: Route, gate: FairGate, counters: Counters, timeout_s: float, *, name: str, secret: str
    ) -> None:
        self.route, self.gate, self.counters, self.timeout_s = route, gate, counters, timeout_s
        self.name, self._secret = name, secret
        self.session: aiohttp.ClientSession | None = None

    def say(self, level: int, message: str) -> None:
        """Log `name: message`, the secret replaced by <secret>."""
        logger.log(level, f"{self.name}: {message}".replace(self._secret, "<secret>"))

    def open_session(self) -> aiohttp.ClientSession:
        """The upstream client (in the front's event loop)."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=4.0),  # below uvicorn's 5 s (vLLM)
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(  # connect: with the pool's wait
                total=None, connect=self.timeout_s, sock_connect=min(10.0, self.timeout_s), sock_read=self.timeout_s
            ),
        )
        return self.session

    async def forward(self, request: web.BaseRequest, decision: Decision, body: bytes) -> web.StreamResponse:
        task = decision.task
        gated = decision.upstream_path in GENERATION and self.gate.capacity is not None
        slot = task.split(".")[0]  # a task's workers (`<task>.<pid>`) share its fair share
        if gated:
            self.counters.count(task, queued=1)
            try:
                admitted = await self.gate.enter(slot, abandoned=lambda: client_gone(request))
            finally:
                self.counters.count(task, queued=-1)
            if not admitted:
                self.counters.count(task, requests=1, abandoned=1)
                self.say(
                    logging.INFO, f"task {task} {request.method} {decision.upstream_path}: the client left while queued"
                )
                return json_reply(499, {"error": "hpcmarker front: the client left"}, close=True)  # nobody reads it
        try:
            return await self._send(request, decision, body)
        finally:
            if gated:
                self.gate.release(slot)

    async def _send(self, request: web.BaseRequest, decision: Decision, body: bytes) -> web.StreamResponse:
        task, started = decision.task, time.monotonic()
        self.counters.count(task, requests=1, in_flight=1)
        outcome, settled = "?", False  # settled: the request's outcome (and in_flight) is counted
        try:
            answer = await self._upstream(request, decision, body)
            if isinstance(answer, _Refused):
                outcome, settled = answer.outcome, True
                self.counters.count(task, in_flight=-1, **{answer.counter: 1})
                return json_reply(answer.status, {"error": f"hpcmarker front: {answer.message}"})
            try:
                settled = True
                generation = decision.upstream_path in GENERATION
                reply, outcome = await self._relay(request, answer, task, started + self.timeout_s, generation)
                return reply
            finally:
                answer.release()
        except asyncio.CancelledError:
            outcome = "cut: the front stopped"
            raise
        finally:
            if not settled:
                self.counters.count(task, in_flight=-1)
            if outcome != "ok":
                self.say(
                    logging.WARNING,
                    f"task {task} {request.method} {decision.upstream_path}: {outcome} "
                    f"after {time.monotonic() - started:.2f}s",
                )

    async def _upstream(
        self, request: web.BaseRequest, decision: Decision, body: bytes
    ) -> aiohttp.ClientResponse | _Refused:
        """The first target's answer that is not a failover status, else why there is none."""
        task = decision.task
        targets = await self.route.targets(task)
        if not targets:
            return _Refused(503, "no LLM server answers", "failures", "no upstream answers")
        headers = {
            "Content-Type": request.headers.get("Content-Type", "application/json"),
            "Accept-Encoding": "identity",
        }
        timeout = _Refused(504, f"no answer within {self.timeout_s:g}s", "timeouts", "timeout")
        for number, target in enumerate(targets, 1):  # _another may append targets: the loop reaches them
            assert self.session is not None
            try:
                response = await self.session.request(
                    request.method,
                    target.url + decision.upstream_path,
                    data=body or None,
                    headers={**headers, **target.headers},
                )
            except aiohttp.ConnectionTimeoutError:
                if await self._another(task, target, "ConnectionTimeoutError", targets, number):
                    continue
                return timeout
            except asyncio.TimeoutError:
                return timeout
            except aiohttp.ClientError as exc:
                if isinstance(exc, _GONE) and await self._another(task, target, type(exc).__name__, targets, number):
                    continue
                self.route.failed(target, type(exc).__name__)
                return _Refused(
                    502, "the LLM server is not reachable", "failures", f"upstream unreachable ({type(exc).__name__})"
                )
            if response.status in self.route.failover_statuses and await self._another(
                task, target, f"HTTP {response.status}", targets, number
            ):
                response.release()
                continue
            return response
        raise AssertionError("unreachable: the last target answers or refuses")

    async def _another(self, task: str, target: Target, why: str, targets: list[Target], number: int) -> bool:
        """`target` (the number-th tried) is gone: is there another? One not tried yet, else one the route
        knows of now (a replica that came up since the request began), appended to `targets`. Counted as
        the request's failover when there is one."""
        self.route.failed(target, why)
        if number == len(targets):
            targets.extend(t for t in await self.route.targets(task) if t not in targets)
        if number == len(targets):
            return False
        if number == 1:  # a request counts once, however many targets it tried
            self.counters.count(task, failovers=1)
        self.say(
            logging.WARNING, f"task {task}: {target.name or 'upstream'} stopped answering ({why}); trying the next"
        )
        return True

    async def _relay(
        self, request: web.BaseRequest, answer: aiohttp.ClientResponse, task: str, deadline: float, generation: bool
    ) -> tuple[web.StreamResponse, str]:
        """Pass the answer on: one of known length or a generation's JSON answer (not streamed) is read whole
        and sent in one write with its length (a reasoning model's answer moved into its content); a streamed
        one as it comes, one chunk held back. Either way the counters are updated before the client sees the
        end of the response (a task reads its stats right after)."""
        headers = {"Server": SERVER, "Content-Type": answer.headers.get("Content-Type", "application/json")}
        answer_json = generation and answer.status == 200 and headers["Content-Type"].startswith("application/json")
        whole = answer.content_length is not None or answer_json
        reply = (web.Response if whole else web.StreamResponse)(status=answer.status, headers=headers)
        status, usage, outcome, held = answer.status, Usage(), "ok", []
        try:
            if not whole:
                await _start(reply, request)
            async for data in answer.content.iter_any():
                usage.feed(data)
                if held and not whole:
                    await _write(reply, held.pop())
                held.append(data)
                if time.monotonic() > deadline:
                    raise _Deadline
        except (asyncio.TimeoutError, _Deadline):
            outcome = "timeout (stream cut)"
        except _ClientLeft:
            outcome = "client went away"
        except aiohttp.ClientError as exc:
            outcome = f"upstream broke off ({type(exc).__name__})"
        usage.finish()
        failed = status >= 500 or outcome.startswith("upstream") or (status < 400 and usage.error)
        moved = moved_answer(b"".join(held)) if answer_json and outcome == "ok" else None
        if moved is not None:
            held = [moved]
        self.counters.count(
            task,
            tokens_in=usage.tokens_in,
            tokens_out=usage.tokens_out,
            in_flight=-1,
            timeouts=int(outcome.startswith("timeout")),
            failures=int(failed),
            client_errors=int(400 <= status < 500),
            answers_moved=int(moved is not None),
        )
        if outcome != "ok":
            _cut(request)  # the client sees a cut response
            return reply, outcome
        try:
            if whole:
                reply.body = b"".join(held)
                await _start(reply, request)
                held = []
            await _end(reply, b"".join(held))  # the last chunk and the end in one write
        except _ClientLeft:
            _cut(request)
            return reply, "client went away"
        if failed or status >= 400:
            return reply, f"HTTP {status}" + (" (error in stream)" if usage.error and status < 400 else "")
        return reply, outcome
