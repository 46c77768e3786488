"""Client: the task side of a run's LLM service, and the one way hpcmarker builds its LLM clients.

`ollama_client(url, timeout_s)` / `openai_client(base_url, api_key, timeout_s)`: every
`ollama.Client` and `openai.OpenAI` of hpcmarker (service, bench, prefetch, doctor, `llm
pull/create`, the refinement): bounded connect and requests, never through a proxy.
`chat_client(server, ...)` puts either behind one small interface (`chat`, `generate` -> ChatReply,
LlmCallFailed with a one-line reason), for the refinement and `llm bench`.
`wait_for_service(run_dir, timeout_s, replicas)` waits (bounded, servers.health.poll_until) until a
replica's endpoint file is published and its front answers an authenticated probe, and returns its
Endpoint; a replica's `unfit.json` (its capability check failed: llm/check.py) ends the wait at once
(ServiceUnfit). `Endpoint.base_url(task)` is what marker's `ollama_base_url` takes (the secret is inside
the URL, so keep it out of logs: `Endpoint.redact`); `openai_base_url(task)` is marker's
`openai_base_url`, the secret going as the API key (a header, never in a URL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai

from hpc_marker.llm.rules import PROBE_PATHS
from hpc_marker.llm.settings import LlmPaths
from hpc_marker.servers.health import NotReady, WaitTimeout, http_ok, poll_until

CONNECT_TIMEOUT_S = 10.0
SERVICE_PROBE_S = 5.0  # one probe request while waiting for the service, at most


def ollama_client(url: str, timeout_s: float, connect_s: float = CONNECT_TIMEOUT_S) -> ollama.Client:
    """An ollama.Client for `url` whose requests give up after timeout_s (connecting: after connect_s,
    never longer than timeout_s), never through a proxy (the servers are on the cluster's network)."""
    return ollama.Client(host=url, timeout=httpx.Timeout(timeout_s, connect=min(connect_s, timeout_s)), trust_env=False)


def _timeout(timeout_s: float, connect_s: float = CONNECT_TIMEOUT_S) -> httpx.Timeout:
    return httpx.Timeout(timeout_s, connect=min(connect_s, timeout_s))


def openai_client(base_url: str, api_key: str, timeout_s: float, max_retries: int = 0) -> openai.OpenAI:
    """An openai.OpenAI for an OpenAI-compatible server (vLLM, a front): bounded requests, no retries of
    its own unless asked (callers count every failure), never through a proxy."""
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key,
        timeout=_timeout(timeout_s),
        max_retries=max_retries,
        http_client=httpx.Client(trust_env=False, timeout=_timeout(timeout_s)),
    )


class ServiceUnavailable(Exception):
    """The run's LLM service did not come up in time (one-line message)."""


class ServiceUnfit(Exception):
    """The run's LLM server or model cannot answer the run's requests (its capability check, llm/check.py): the
    replica's one-line reason, naming the model, the server and what to change."""


class LlmCallFailed(Exception):
    """One LLM request failed or timed out; `reason` is one line without any URL."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.timed_out = reason, timed_out


@dataclass(frozen=True)
class ChatReply:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0


class OllamaChat:
    """Ollama's native API (/api/chat, /api/generate)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.client, self.timeout_s = ollama_client(url, timeout_s), timeout_s

    def chat(
        self, model: str, messages: list[dict], max_tokens: int | None = None, options: dict[str, Any] | None = None
    ) -> ChatReply:
        opts = {"temperature": 0, **({"num_predict": max_tokens} if max_tokens else {}), **(options or {})}
        resp = self._call(lambda: self.client.chat(model=model, messages=messages, options=opts, stream=False))
        return ChatReply(resp.message.content or "", resp.prompt_eval_count or 0, resp.eval_count or 0)

    def generate(self, model: str, prompt: str, max_tokens: int, seed: int = 0) -> ChatReply:
        resp = self._call(
            lambda: self.client.generate(
                model=model,
                prompt=prompt,
                stream=False,
                options={"num_predict": max_tokens, "temperature": 0.7, "seed": seed},
            )
        )
        return ChatReply(resp.response or "", resp.prompt_eval_count or 0, resp.eval_count or 0)

    def _call(self, request):
        try:
            return request()
        except httpx.TimeoutException:
            raise LlmCallFailed(f"timed out after {self.timeout_s:g}s", timed_out=True) from None
        except ollama.ResponseError as exc:
            first = str(exc.error).strip().splitlines()[0] if str(exc.error).strip() else ""
            raise LlmCallFailed(f"HTTP {exc.status_code}: {first[:200]}", timed_out=exc.status_code == 504) from None
        except (httpx.HTTPError, ConnectionError) as exc:
            raise LlmCallFailed(f"failed ({type(exc).__name__})") from None

    def close(self) -> None:
        self.client.close()


class OpenAIChat:
    """The OpenAI chat API (vLLM, or a front before it)."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        self.client, self.timeout_s = openai_client(base_url, api_key, timeout_s), timeout_s

    def chat(
        self, model: str, messages: list[dict], max_tokens: int | None = None, options: dict[str, Any] | None = None
    ) -> ChatReply:
        return self._call(model, messages, max_tokens, {"temperature": 0, **(options or {})})

    def generate(self, model: str, prompt: str, max_tokens: int, seed: int = 0) -> ChatReply:
        return self._call(model, [{"role": "user", "content": prompt}], max_tokens, {"temperature": 0.7, "seed": seed})

    def _call(self, model: str, messages: list[dict], max_tokens: int | None, extra: dict[str, Any]) -> ChatReply:
        try:
            resp = self.client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, **extra)
        except openai.APITimeoutError:
            raise LlmCallFailed(f"timed out after {self.timeout_s:g}s", timed_out=True) from None
        except openai.APIStatusError as exc:
            raise LlmCallFailed(
                f"HTTP {exc.status_code}: {str(exc.message)[:200]}", timed_out=exc.status_code == 504
            ) from None
        except openai.APIConnectionError as exc:
            raise LlmCallFailed(f"failed ({type(exc.__cause__ or exc).__name__})") from None
        usage = resp.usage
        text = resp.choices[0].message.content if resp.choices else ""
        return ChatReply(text or "", usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    def close(self) -> None:
        self.client.close()


def chat_client(server: str, url: str, timeout_s: float, api_key: str | None = None) -> OllamaChat | OpenAIChat:
    """`server`'s client: ollama at `url` (an Ollama base URL, maybe a front's with the secret in it),
    or vllm at `url` (an OpenAI base URL ending in /v1) with `api_key`."""
    if server == "vllm":
        return OpenAIChat(url, api_key or "none", timeout_s)
    return OllamaChat(url, timeout_s)


@dataclass(frozen=True)
class Endpoint:
    """Where a replica of a run's LLM service (or a task's relay) listens. `secret` never appears in repr()."""

    url: str  # http://HOST:PORT, without the secret
    model: str
    secret: str = field(repr=False)
    started: float = 0.0
    server: str = "ollama"
    replica: int = 0

    def base_url(self, task: int | str | None = None) -> str:
        """`http://HOST:PORT/<secret>[/task/<task>]`: Ollama's base URL for marker (no trailing slash)."""
        base = f"{self.url}/{self.secret}"
        return base if task is None else f"{base}/task/{task}"

    def openai_base_url(self, task: int | str | None = None) -> str:
        """`http://HOST:PORT[/task/<task>]/v1`: an OpenAI base URL; the secret goes as the API key."""
        return f"{self.url}{'' if task is None else f'/task/{task}'}/v1"

    def client(self, task: int | str | None, timeout_s: float) -> OllamaChat | OpenAIChat:
        """This endpoint's chat client for `task` (the secret in the path for Ollama, as the key for vLLM)."""
        if self.server == "vllm":
            return chat_client("vllm", self.openai_base_url(task), timeout_s, api_key=self.secret)
        return chat_client("ollama", self.base_url(task), timeout_s)

    @property
    def probe_url(self) -> str:
        """An authenticated request that reaches the server through the front."""
        return f"{self.base_url()}{PROBE_PATHS.get(self.server, '/api/version')}"

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
        from hpc_marker.llm.rules import TaskCounters

        return {**vars(TaskCounters()), **self.stats(timeout_s)["tasks"].get(str(task), {})}


@dataclass(frozen=True)
class LlmAccess:
    """What a worker needs to use the run's LLM service (EngineOptions.llm, set by its task, never stored): the
    endpoint (a replica's front, or the task's relay), the task path its requests count under, and the run's
    concurrency budget (llm/budget.py). The secret is the endpoint's, kept out of repr()."""

    endpoint: Endpoint
    task: str | None = None  # "<task>" from the task; "<task>.<pid>" in each worker
    max_concurrency: int | None = None
    timeout_s: float | None = None
    max_retries: int | None = None
    waited_s: float = 0.0  # how long its task waited for the service to answer (manage/accounting.py's llm_wait)

    def for_worker(self, pid: int) -> LlmAccess:
        """The same access under the worker's own task path, so that failures count per item."""
        return replace(self, task=f"{self.task}.{pid}")


def read_endpoint(run_dir: str | Path, replica: int = 0) -> Endpoint | None:
    """A replica's published endpoint with its secret, or None while there is none (or it is unreadable)."""
    paths = LlmPaths(Path(run_dir), replica)
    try:
        data = json.loads(paths.endpoint.read_text())
        secret = paths.secret.read_text().strip()
    except (OSError, ValueError):
        return None
    if not secret or not isinstance(data, dict) or not data.get("url"):
        return None
    return Endpoint(
        url=str(data["url"]).rstrip("/"),
        model=str(data.get("model", "")),
        secret=secret,
        started=float(data.get("started") or 0.0),
        server=str(data.get("server") or "ollama"),
        replica=replica,
    )


def read_unfit(run_dir: str | Path, replica: int = 0) -> str | None:
    """The reason in a replica's `unfit.json` (its capability check failed), or None."""
    try:
        data = json.loads(LlmPaths(Path(run_dir), replica).unfit.read_text())
    except (OSError, ValueError):
        return None
    return str(data.get("reason") or "the LLM service's capability check failed") if isinstance(data, dict) else None


def forget_unfit(run_dir: str | Path, replicas: int) -> None:
    """Remove the replicas' `unfit.json` of an earlier round (before a resubmission starts the service again)."""
    for paths in LlmPaths(Path(run_dir)).all_replicas(replicas):
        paths.unfit.unlink(missing_ok=True)


def _service_job(run_dir: Path) -> str:
    try:
        jobs = json.loads((run_dir / "run.json").read_text()).get("jobs", {})
    except (OSError, ValueError, AttributeError):
        return ""
    ids = jobs.get("service") or jobs.get("llm") or []
    return f" (service job {', '.join(map(str, ids))})" if ids else ""


def probe_replica(run_dir: Path, replica: int, seconds_left: float) -> Endpoint | NotReady:
    """The replica's endpoint when its front answers an authenticated probe, else what was seen."""
    endpoint = read_endpoint(run_dir, replica)
    if endpoint is None:
        return NotReady(f"no {LlmPaths(run_dir, replica).endpoint.relative_to(run_dir)} yet")
    reply = http_ok(endpoint.probe_url, seconds_left, most_s=SERVICE_PROBE_S)
    if not isinstance(reply, NotReady):
        return endpoint
    if reply.status is not None:
        return NotReady(f"{endpoint.url} answered HTTP {reply.status}")
    return NotReady(f"{endpoint.url} does not answer ({reply.why})")


def wait_for_service(run_dir: str | Path, timeout_s: float = 600.0, poll_s: float = 1.0, replicas: int = 1) -> Endpoint:
    """Wait until a replica of the run's LLM service answers (the first one that does); raises
    ServiceUnavailable after timeout_s, ServiceUnfit at once when a replica found that the server or model
    cannot answer the run's requests (every replica serves the same model the same way)."""
    run_dir = Path(run_dir)

    def probe(seconds_left: float) -> Endpoint | NotReady:
        seen = []
        for replica in range(max(1, replicas)):
            unfit = read_unfit(run_dir, replica)
            if unfit is not None:
                raise ServiceUnfit(unfit)
            found = probe_replica(run_dir, replica, seconds_left)
            if isinstance(found, Endpoint):
                return found
            seen.append(found.why)
        return NotReady("; ".join(seen))

    try:
        return poll_until(probe, timeout_s, interval_s=poll_s)
    except WaitTimeout as timeout:
        logs = ", ".join(str(p.root / "*.log") for p in LlmPaths(run_dir).all_replicas(1))
        raise ServiceUnavailable(
            f"the LLM service of run {run_dir.name}{_service_job(run_dir)} is not up after {timeout_s:g}s "
            f"({timeout.last}); see its job log and {logs}"
        ) from None
