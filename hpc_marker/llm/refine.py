"""The `text` engine's LLM refinement: each page's extracted text becomes clean Markdown.

`refine_pages` sends each page to the run's LLM (Ollama's chat API, or the OpenAI chat API for
vLLM, through the endpoint's `client`), a bounded number at a time (the run's budget); a page whose
request fails or times out (or whose answer is implausible) keeps its extracted text and is
flagged degraded with a one-line reason that never holds the secret.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hpc_marker.llm.client import Endpoint, LlmCallFailed, OllamaChat, OpenAIChat

REFINE_SYSTEM_PROMPT = """You turn text extracted from one page of a PDF into clean Markdown.
Rules:
- Keep every word of the input in its order. Add nothing (no comments, no summary, no preamble) and drop nothing.
- Mark headings with #, ## or ### by their level; write lists as Markdown lists.
- Rejoin lines of a paragraph that the extraction broke apart; separate paragraphs by one blank line.
- Undo hyphenation at line ends ("exam-" + "ple" -> "example") but keep real hyphens.
- Keep numbers, formulas, citations, URLs and text in any language (e.g. Chinese) exactly as they are.
Answer with the Markdown of the page and nothing else."""


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


def _refine_one(
    client: OllamaChat | OpenAIChat, endpoint: Endpoint, model: str, text: str, options: dict[str, Any]
) -> PageRefinement:
    if not text.strip():
        return PageRefinement(text=text)
    started = time.monotonic()

    def degraded(reason: str) -> PageRefinement:
        return PageRefinement(
            text=text, degraded=True, reason=endpoint.redact(reason), seconds=round(time.monotonic() - started, 3)
        )

    messages = [{"role": "system", "content": REFINE_SYSTEM_PROMPT}, {"role": "user", "content": text}]
    try:
        reply = client.chat(model, messages, max_tokens=max(512, len(text)), options=options)
    except LlmCallFailed as exc:
        what = "timed out" if exc.timed_out else "failed"
        return degraded(f"LLM request {what} ({exc.reason}); kept the extracted text")
    out = _unfence(reply.text)
    source = len(text.strip())
    if not out:
        return degraded("LLM answered nothing; kept the extracted text")
    if source >= 200 and not 0.5 <= len(out) / source <= 2.0:
        return degraded(f"LLM answer has {len(out)} characters for {source} extracted; kept the extracted text")
    return PageRefinement(
        text=out + ("\n" if text.endswith("\n") else ""),
        tokens_in=reply.tokens_in,
        tokens_out=reply.tokens_out,
        seconds=round(time.monotonic() - started, 3),
    )


def refine_pages(
    texts: list[str],
    endpoint: Endpoint,
    model: str | None = None,
    task: int | str | None = None,
    concurrency: int = 4,
    timeout_s: float = 300.0,
    options: dict[str, Any] | None = None,
) -> list[PageRefinement]:
    """Refine each page's extracted text into Markdown; one result per text, in order. Never raises
    for a page: a failed, timed-out or implausible page keeps its text with degraded=True and a reason."""
    if not texts:
        return []
    client = endpoint.client(task, timeout_s)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(texts))), thread_name_prefix="refine") as pool:
            return list(
                pool.map(lambda t: _refine_one(client, endpoint, model or endpoint.model, t, options or {}), texts)
            )
    finally:
        client.close()
