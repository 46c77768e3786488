"""Bench: generated tokens/s and per-request latency of an LLM server at each concurrency.

Both servers of a run: Ollama (its /api/generate) and vLLM (the OpenAI chat API), through
client.chat_client. For each concurrency c, `--requests` generations (a synthetic prompt of about
`prompt_tokens` words, at most `max_tokens` generated) run c at a time; tokens/s = generated
tokens (Ollama's eval_count, OpenAI's usage.completion_tokens) / wall time of the level.
Throughput grows with c until the GPU saturates, then flattens while latency keeps growing:
`suggest_parallel` picks that knee (the smallest c within `fraction` of the best tokens/s), the
value for `--llm-parallel`.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from hpc_marker.llm.client import LlmCallFailed, OllamaChat, OpenAIChat, chat_client
from hpc_marker.llm.process import start_ollama
from hpc_marker.llm.settings import LlmSettings
from hpc_marker.llm.vllm import start_vllm, wait_vllm
from hpc_marker.servers.vllm import served_models

WORDS = [
    "the",
    "cluster",
    "converts",
    "papers",
    "into",
    "markdown",
    "while",
    "every",
    "node",
    "keeps",
    "its",
    "own",
    "queue",
    "of",
    "pages",
    "and",
    "each",
    "model",
    "answers",
    "in",
    "turn",
    "with",
    "careful",
    "attention",
    "to",
    "tables",
    "formulas",
    "headings",
    "and",
    "lists",
]


class BenchError(Exception):
    """The server cannot be benchmarked (unreachable, model missing); one line."""


@dataclass
class BenchRow:
    concurrency: int
    requests: int
    ok: int
    failed: int
    wall_s: float
    tokens_in: int
    tokens_out: int
    tokens_per_s: float
    latency_p50_s: float
    latency_p95_s: float
    latency_max_s: float
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def bench_prompt(index: int, prompt_tokens: int) -> str:
    """A deterministic prompt of about `prompt_tokens` words, distinct per request (no prefix caching)."""
    filler = " ".join(WORDS[(index + i) % len(WORDS)] for i in range(max(1, prompt_tokens - 12)))
    return f"Request {index}. Continue this text for as long as you can, in the same style: {filler}"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_level(
    client: OllamaChat | OpenAIChat, model: str, concurrency: int, requests: int, prompt_tokens: int, max_tokens: int
) -> BenchRow:
    def one(index: int) -> tuple[float, int, int, str | None]:
        started = time.monotonic()
        try:
            reply = client.generate(model, bench_prompt(index, prompt_tokens), max_tokens, seed=index)
        except LlmCallFailed as exc:
            return time.monotonic() - started, 0, 0, exc.reason
        return time.monotonic() - started, reply.tokens_in, reply.tokens_out, None

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = max(time.monotonic() - started, 1e-9)
    latencies = [r[0] for r in results if r[3] is None]
    errors = sorted({r[3] for r in results if r[3] is not None})
    tokens_out = sum(r[2] for r in results)
    return BenchRow(
        concurrency=concurrency,
        requests=requests,
        ok=len(latencies),
        failed=requests - len(latencies),
        wall_s=round(wall, 3),
        tokens_in=sum(r[1] for r in results),
        tokens_out=tokens_out,
        tokens_per_s=round(tokens_out / wall, 2),
        latency_p50_s=round(statistics.median(latencies), 3) if latencies else 0.0,
        latency_p95_s=round(_percentile(latencies, 0.95), 3),
        latency_max_s=round(max(latencies, default=0.0), 3),
        errors=errors[:3],
    )


def openai_base(url: str) -> str:
    """An OpenAI base URL for a server URL (`http://h:8000` -> `http://h:8000/v1`). Pure."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def _check_served(url: str, model: str, api_key: str | None) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        served = served_models(openai_base(url)[: -len("/v1")], headers)
    except httpx.HTTPStatusError as exc:
        raise BenchError(
            f"{display_url(url)}/v1/models answered HTTP {exc.response.status_code}"
            + (" (give --api-key)" if exc.response.status_code == 401 else "")
        ) from None
    except (httpx.HTTPError, ValueError) as exc:
        raise BenchError(
            f"cannot reach vLLM at {display_url(url)} ({type(exc).__name__}): start `vllm serve` "
            "there, pass --url, or use --start"
        ) from None
    if model not in served:
        raise BenchError(f"{model}: not served at {display_url(url)} (it serves {', '.join(served) or 'nothing'})")


def run_bench(
    url: str,
    model: str,
    parallel: list[int],
    requests: int,
    prompt_tokens: int = 512,
    max_tokens: int = 128,
    timeout_s: float = 300.0,
    server: str = "ollama",
    api_key: str | None = None,
) -> list[BenchRow]:
    """One BenchRow per concurrency in `parallel`, after one warm-up request (Ollama: it loads the
    model, so its load time is not measured; vLLM: after checking it serves the model)."""
    if server == "vllm":
        _check_served(url, model, api_key)
    client = chat_client(server, openai_base(url) if server == "vllm" else url, timeout_s, api_key=api_key)
    try:
        try:
            client.generate(model, "Hello", 1)
        except LlmCallFailed as exc:
            if "Connect" in exc.reason:
                raise BenchError(
                    f"cannot reach {'vLLM' if server == 'vllm' else 'Ollama'} at {display_url(url)}: "
                    "start the server there, pass --url, or use --start"
                ) from None
            raise BenchError(f"{model}: {exc.reason}") from None
        return [run_level(client, model, c, requests, prompt_tokens, max_tokens) for c in parallel]
    finally:
        client.close()


def suggest_parallel(rows: list[BenchRow], fraction: float = 0.9) -> int | None:
    """The knee: the smallest concurrency whose tokens/s is within `fraction` of the best, no failures."""
    clean = [r for r in rows if r.failed == 0 and r.tokens_per_s > 0]
    if not clean:
        return None
    best = max(r.tokens_per_s for r in clean)
    return min(r.concurrency for r in clean if r.tokens_per_s >= fraction * best)


def display_url(url: str) -> str:
    """scheme://host:port only: a front's URL carries the run's secret in its path."""
    parsed = httpx.URL(url if "://" in url else f"http://{url}")
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


def bench_table(rows: list[BenchRow], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("concurrency", "requests", "ok", "failed", "tokens out", "tokens/s", "p50 s", "p95 s", "max s"):
        table.add_column(column, justify="right")
    knee = suggest_parallel(rows)
    for r in rows:
        mark = " *" if r.concurrency == knee else ""
        table.add_row(
            f"{r.concurrency}{mark}",
            str(r.requests),
            str(r.ok),
            str(r.failed),
            str(r.tokens_out),
            f"{r.tokens_per_s:.1f}",
            f"{r.latency_p50_s:.2f}",
            f"{r.latency_p95_s:.2f}",
            f"{r.latency_max_s:.2f}",
        )
    return table


@contextmanager
def local_vllm(
    model: str, parallel: int, gpus: int = 1, load_timeout_s: float = 900.0, extra: list[str] | None = None
) -> Iterator[tuple[str, str]]:
    """Start `vllm serve MODEL` (--max-num-seqs parallel) on a free loopback port for the bench; yields
    (its URL, its API key); stops it after."""
    settings = LlmSettings(
        model=model,
        server="vllm",
        parallel=parallel,
        gpus=gpus,
        load_timeout_s=load_timeout_s,
        server_args=list(extra or []),
    )
    key = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="hpcmarker-bench-") as tmp:
        server, url = start_vllm(settings, Path(tmp) / "vllm.log", key)
        with server:  # stopped (grace 15 s) on leaving
            wait_vllm(server, url, settings, key)
            yield url, key


@contextmanager
def local_ollama(
    parallel: int, models_dir: str | None = None, ready_timeout_s: float = 60.0, binary: str = "ollama"
) -> Iterator[str]:
    """Start `ollama serve` on a free loopback port for the bench; yields its URL, stops it after."""
    with (
        tempfile.TemporaryDirectory(prefix="hpcmarker-bench-") as tmp,
        start_ollama(
            Path(tmp) / "ollama.log",
            binary=binary,
            parallel=parallel,
            models_dir=models_dir,
            max_queue=max(512, 4 * parallel),
        ) as process,
    ):  # stopped (grace 10 s) on leaving
        process.wait_ready(ready_timeout_s)
        yield process.url
