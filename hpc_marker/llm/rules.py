"""Rules of the front, pure: which requests go through (authorize) and what a response counts for.

`authorize(method, path, secret)` decides from the path alone: the first segment must be the
run's secret (compared in constant time), then an optional `task/<i>/`, then one endpoint of the
conversion allowlist (ALLOWED) or the stats path. The upstream path is always a constant from
ALLOWED, never the client's text. `Usage` scans a (streamed) Ollama or OpenAI-style response for
token counts and errors, one line at a time.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass

ALLOWED: dict[str, frozenset[str]] = {
    "/api/generate": frozenset({"POST"}),
    "/api/chat": frozenset({"POST"}),
    "/api/show": frozenset({"POST"}),
    "/api/tags": frozenset({"GET"}),
    "/api/version": frozenset({"GET"}),
    "/v1/chat/completions": frozenset({"POST"}),
    "/v1/models": frozenset({"GET"}),
}
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


def authorize(method: str, raw_path: str, secret: str) -> Decision:
    """The authorization decision for `method raw_path`, from the path alone. Pure."""
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    given, sep, rest = path[1:].partition("/") if path.startswith("/") else ("", "", "")
    if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        return Decision("deny", 403, reason="forbidden")
    rest = sep + rest
    task = "-"
    if rest.startswith("/task/"):
        task, _, tail = rest[len("/task/"):].partition("/")
        if not TASK_PATTERN.fullmatch(task):
            return Decision("deny", 403, reason="bad task name in path")
        rest = "/" + tail
    if rest == STATS_PATH:
        return Decision("stats", 200, task) if method == "GET" else Decision("deny", 405, task, reason="GET only")
    methods = ALLOWED.get(rest)
    if methods is None:
        return Decision("deny", 403, task, reason=f"{rest[:100]} is not served by this endpoint "
                        "(conversion endpoints only; prepare models with `hpcmarker llm pull` on a login node)")
    if method not in methods:
        return Decision("deny", 405, task, reason=f"{rest} takes {'/'.join(sorted(methods))}")
    return Decision("forward", 200, task, rest)  # upstream path: a constant from ALLOWED, never the raw path


@dataclass
class TaskCounters:
    requests: int = 0
    failures: int = 0
    timeouts: int = 0
    client_errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    in_flight: int = 0


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
