"""Client: the task side of a run's LLM service, and the one way hpcmarker builds an `ollama.Client`.

`ollama_client(url, timeout_s)`: every `ollama.Client` of hpcmarker (service, bench, prefetch,
doctor, `llm pull/create`, the refinement): bounded connect and requests, never through a proxy.
`wait_for_service(run_dir, timeout_s)` waits (bounded, servers.health.poll_until) until
RUN/llm/endpoint.json is published and the front answers an authenticated /api/version, and
returns the Endpoint. Its `base_url(task)` is what marker's `ollama_base_url` takes (the secret is
inside the URL, so keep it out of logs: `Endpoint.redact`). `refine_pages` is the `text` engine's
LLM refinement: each page's extracted text goes to the LLM, a bounded number at a time; a page
whose request fails or times out (or whose answer is implausible) keeps its extracted text and is
flagged degraded.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ollama

from hpc_marker.llm.settings import LlmPaths
from hpc_marker.servers.health import NotReady, WaitTimeout, http_ok, poll_until

CONNECT_TIMEOUT_S = 10.0
SERVICE_PROBE_S = 5.0  # one /api/version request while waiting for the service, at most

REFINE_SYSTEM_PROMPT = """You turn text extracted from one page of a PDF into clean Markdown.
Rules:
- Keep every word of the input in its order. Add nothing (no comments, no summary, no preamble) and drop nothing.
- Mark headings with #, ## or ### by their level; write lists as Markdown lists.
- Rejoin lines of a paragraph that the extraction broke apart; separate paragraphs by one blank line.
- Undo hyphenation at line ends ("exam-" + "ple" -> "example") but keep real hyphens.
- Keep numbers, formulas, citations, URLs and text in any language (e.g. Chinese) exactly as they are.
Answer with the Markdown of the page and nothing else."""


def ollama_client(url: str, timeout_s: float, connect_s: float = CONNECT_TIMEOUT_S) -> ollama.Client:
    """An ollama.Client for `url` whose requests give up after timeout_s (connecting: after connect_s,
    never longer than timeout_s), never through a proxy (the servers are on the cluster's network)."""
    return ollama.Client(host=url, timeout=httpx.Timeout(timeout_s, connect=min(connect_s, timeout_s)),
                         trust_env=False)


class ServiceUnavailable(Exception):
    """The run's LLM service did not come up in time (one-line message)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a run's LLM service listens. `secret` never appears in repr()."""

    url: str  # http://HOST:PORT, without the secret
    model: str
    secret: str = field(repr=False)
    started: float = 0.0

    def base_url(self, task: int | str | None = None) -> str:
        """`http://HOST:PORT/<secret>[/task/<task>]`: Ollama's base URL for marker (no trailing slash)."""
        base = f"{self.url}/{self.secret}"
        return base if task is None else f"{base}/task/{task}"

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "<secret>")

    def stats(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The front's counters: {"in_flight", "denied", "tasks": {task: {requests, failures, ...}}, "total"}."""
        try:
            resp = httpx.get(f"{self.base_url()}/_hpcmarker/stats", timeout=timeout_s, trust_env=False)
            resp.raise_for_status()
            return resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ServiceUnavailable(f"LLM service at {self.url}: no stats ({type(exc).__name__})") from None

    def task_stats(self, task: int | str, timeout_s: float = 10.0) -> dict[str, int]:
        """One task's counters (zeros before its first request)."""
        zero = dict(requests=0, failures=0, timeouts=0, client_errors=0, tokens_in=0, tokens_out=0, in_flight=0)
        return {**zero, **self.stats(timeout_s)["tasks"].get(str(task), {})}


def read_endpoint(run_dir: str | Path) -> Endpoint | None:
    """The published endpoint with its secret, or None while there is none (or it is unreadable)."""
    paths = LlmPaths(Path(run_dir))
    try:
        data = json.loads(paths.endpoint.read_text())
        secret = paths.secret.read_text().strip()
    except (OSError, ValueError):
        return None
    if not secret or not isinstance(data, dict) or not data.get("url"):
        return None
    return Endpoint(url=str(data["url"]).rstrip("/"), model=str(data.get("model", "")), secret=secret,
                    started=float(data.get("started") or 0.0))


def _service_job(run_dir: Path) -> str:
    try:
        jobs = json.loads((run_dir / "run.json").read_text()).get("jobs", {})
    except (OSError, ValueError, AttributeError):
        return ""
    ids = jobs.get("service") or jobs.get("llm") or []
    return f" (service job {', '.join(map(str, ids))})" if ids else ""


def wait_for_service(run_dir: str | Path, timeout_s: float = 600.0, poll_s: float = 1.0) -> Endpoint:
    """Wait until the run's LLM service answers; raises ServiceUnavailable after timeout_s."""
    run_dir = Path(run_dir)

    def probe(seconds_left: float) -> Endpoint | NotReady:
        endpoint = read_endpoint(run_dir)
        if endpoint is None:
            return NotReady(f"no {LlmPaths(run_dir).endpoint.relative_to(run_dir)} yet")
        reply = http_ok(f"{endpoint.base_url()}/api/version", seconds_left, most_s=SERVICE_PROBE_S)
        if not isinstance(reply, NotReady):
            return endpoint
        if reply.status is not None:
            return NotReady(f"{endpoint.url} answered HTTP {reply.status}")
        return NotReady(f"{endpoint.url} does not answer ({reply.why})")

    try:
        return poll_until(probe, timeout_s, interval_s=poll_s)
    except WaitTimeout as timeout:
        raise ServiceUnavailable(
            f"the LLM service of run {run_dir.name}{_service_job(run_dir)} is not up after {timeout_s:g}s "
            f"({timeout.last}); see its job log and {LlmPaths(run_dir).ollama_log}") from None


@dataclass
class PageRefinement:
    """One page after refinement: the LLM's Markdown, or (degraded) the extracted text and why."""

    text: str
    degraded: bool = False
    reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0


def _unfence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and stripped.count("```") == 2:
        return stripped.split("\n", 1)[1].rsplit("```", 1)[0].strip() if "\n" in stripped else ""
    return stripped


def _refine_one(client: ollama.Client, endpoint: Endpoint, model: str, text: str, timeout_s: float,
                options: dict[str, Any]) -> PageRefinement:
    if not text.strip():
        return PageRefinement(text=text)
    started = time.monotonic()

    def degraded(reason: str) -> PageRefinement:
        return PageRefinement(text=text, degraded=True, reason=endpoint.redact(reason),
                              seconds=round(time.monotonic() - started, 3))

    messages = [{"role": "system", "content": REFINE_SYSTEM_PROMPT}, {"role": "user", "content": text}]
    opts = {"temperature": 0, "num_predict": max(512, len(text)), **options}
    try:
        resp = client.chat(model=model, messages=messages, options=opts, stream=False)
    except httpx.TimeoutException:
        return degraded(f"LLM timed out after {timeout_s:g}s; kept the extracted text")
    except ollama.ResponseError as exc:
        what = "timed out" if exc.status_code == 504 else "failed"
        first = str(exc.error).strip().splitlines()[0] if str(exc.error).strip() else ""
        return degraded(f"LLM request {what} (HTTP {exc.status_code}: {first[:200]}); kept the extracted text")
    except (httpx.HTTPError, ConnectionError) as exc:
        return degraded(f"LLM request failed ({type(exc).__name__}); kept the extracted text")
    out = _unfence(resp.message.content or "")
    source = len(text.strip())
    if not out:
        return degraded("LLM answered nothing; kept the extracted text")
    if source >= 200 and not 0.5 <= len(out) / source <= 2.0:
        return degraded(f"LLM answer has {len(out)} characters for {source} extracted; kept the extracted text")
    return PageRefinement(text=out + ("\n" if text.endswith("\n") else ""), tokens_in=resp.prompt_eval_count or 0,
                          tokens_out=resp.eval_count or 0, seconds=round(time.monotonic() - started, 3))


def refine_pages(texts: list[str], endpoint: Endpoint, model: str | None = None, task: int | str | None = None,
                 concurrency: int = 4, timeout_s: float = 300.0,
                 options: dict[str, Any] | None = None) -> list[PageRefinement]:
    """Refine each page's extracted text into Markdown; one result per text, in order. Never raises
    for a page: a failed, timed-out or implausible page keeps its text with degraded=True and a reason."""
    if not texts:
        return []
    client = ollama_client(endpoint.base_url(task), timeout_s)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(texts))),
                                thread_name_prefix="refine") as pool:
            return list(pool.map(lambda t: _refine_one(client, endpoint, model or endpoint.model, t, timeout_s,
                                                        options or {}), texts))
    finally:
        client.close()
