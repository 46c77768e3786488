"""Rules of the front, pure: which requests go through (authorize) and what a response counts for.

`authorize(method, path, secret, allowed, bearer)` decides from the path and the bearer token
alone: the secret is either the path's first segment (how marker's Ollama service carries it) or
the `Authorization: Bearer` token (how OpenAI clients carry their API key, so the secret stays out
of URLs and of the messages that quote them), both compared in constant time; then an optional
`task/<i>/`, then one endpoint of the server's conversion allowlist (ALLOWLISTS) or the stats path.
The upstream path is always a constant from the allowlist, never the client's text. `Usage` scans
a (streamed) Ollama or OpenAI-style response for token counts and errors, one line at a time.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass

ALLOWED: dict[str, frozenset[str]] = {  # Ollama's conversion endpoints
    "/api/generate": frozenset({"POST"}),
    "/api/chat": frozenset({"POST"}),
    "/api/show": frozenset({"POST"}),
    "/api/tags": frozenset({"GET"}),
    "/api/version": frozenset({"GET"}),
    "/v1/chat/completions": frozenset({"POST"}),
    "/v1/models": frozenset({"GET"}),
}
# vLLM: the OpenAI routes a conversion uses, nothing else (not /tokenize, /pooling, /metrics, /v1/load_lora_adapter...)
ALLOWED_VLLM: dict[str, frozenset[str]] = {
    "/v1/chat/completions": frozenset({"POST"}),
    "/v1/completions": frozenset({"POST"}),
    "/v1/models": frozenset({"GET"}),
}
ALLOWLISTS = {"ollama": ALLOWED, "vllm": ALLOWED_VLLM}
GENERATION = frozenset({"/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions"})  # take a GPU slot
PROBE_PATHS = {"ollama": "/api/version", "vllm": "/v1/models"}  # cheap, authenticated, reaches the server
STATS_PATH = "/_hpcmarker/stats"
TASK_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_BODY = 256 << 20  # marker sends page images inline (base64)


@dataclass(frozen=True)
class Decision:
    """What to do with one request. action: forward, stats or deny."""

    action: str
    status: int
    task: str = "-"
    upstream_path: str = ""
    reason: str = ""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, else None. Pure."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _same(given: str | None, secret: str) -> bool:
    return bool(secret) and given is not None and hmac.compare_digest(given.encode(), secret.encode())


def authorize(
    method: str, raw_path: str, secret: str, allowed: dict[str, frozenset[str]] = ALLOWED, bearer: str | None = None
) -> Decision:
    """The authorization decision for `method raw_path` with this bearer token. Pure."""
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    given, sep, rest = path[1:].partition("/") if path.startswith("/") else ("", "", "")
    if _same(given, secret):
        rest = sep + rest
    elif _same(bearer, secret) and path.startswith("/"):
        rest = path  # the secret came in the header: the whole path is the route
    else:
        return Decision("deny", 403, reason="forbidden")
    task = "-"
    if rest.startswith("/task/"):
        task, _, tail = rest[len("/task/") :].partition("/")
        if not TASK_PATTERN.fullmatch(task):
            return Decision("deny", 403, reason="bad task name in path")
        rest = "/" + tail
    if rest == STATS_PATH:
        return Decision("stats", 200, task) if method == "GET" else Decision("deny", 405, task, reason="GET only")
    methods = allowed.get(rest)
    if methods is None:
        return Decision(
            "deny",
            403,
            task,
            reason=f"{rest[:100]} is not served by this endpoint "
            "(conversion endpoints only; prepare models with `hpcmarker llm pull` on a login node)",
        )
    if method not in methods:
        return Decision("deny", 405, task, reason=f"{rest} takes {'/'.join(sorted(methods))}")
    return Decision("forward", 200, task, rest)  # upstream path: a constant from the allowlist, never the raw path


@dataclass
class TaskCounters:
    requests: int = 0
    failures: int = 0
    timeouts: int = 0
    client_errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    failovers: int = 0  # a task's relay: requests moved to another replica after theirs stopped answering
    abandoned: int = 0  # the client gave up (timed out) while its request waited at the front
    answers_moved: int = 0  # a reasoning model's answer moved from thinking/reasoning_content into the content
    in_flight: int = 0  # gauge: at the server
    queued: int = 0  # gauge: waiting at the front for a free slot


class Usage:
    """Scans a (streamed) response for token counts and errors without holding more than a line."""

    LIMIT = 16 << 20

    def __init__(self) -> None:
        self.buf = bytearray()
        self.tokens_in = self.tokens_out = 0
        self.error = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        while (cut := self.buf.find(b"\n")) >= 0:
            self._line(bytes(self.buf[:cut]))
            del self.buf[: cut + 1]
        if len(self.buf) > self.LIMIT:
            self.buf.clear()

    def finish(self) -> None:
        self._line(bytes(self.buf))
        self.buf.clear()

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line.startswith(b"{") or not any(k in line for k in (b"eval_count", b'"error"', b'"usage"')):
            return
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        self.error = self.error or bool(obj.get("error"))
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        for key, attr in (("prompt_eval_count", "tokens_in"), ("eval_count", "tokens_out")):
            value = obj.get(key, usage.get("prompt_tokens" if attr == "tokens_in" else "completion_tokens"))
            if isinstance(value, int):
                setattr(self, attr, getattr(self, attr) + value)
