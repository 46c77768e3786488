"""Reasoning models: an answer that arrived in `thinking` or `reasoning_content`, moved to where clients read it.

A reasoning model behind Ollama (with thinking on) or vLLM (with a reasoning parser) may leave the answer's
`content` empty and put the whole text in `thinking` (Ollama: beside `response` or `message.content`) or in
`reasoning_content` / `reasoning` (vLLM's OpenAI answers): marker reads only `response` / `content`, finds
nothing, and its block is silently degraded (marker #992, #998). `moved_answer` takes a non-streamed answer's
body and, where the content is empty and a reasoning field has text, puts that text in the content: the JSON
object it ends with when it is not JSON itself (what a constrained request asked for), else the whole text.
The front (llm/proxy.py) applies it to every non-streamed generation answer, so marker and the `text` engine
read the answer where they always do; answers with content are left as they are. Pure.
"""

from __future__ import annotations

import json
from typing import Any

REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")  # vLLM (two spellings), Ollama
_HINTS = (b'"thinking"', b'"reasoning')  # a body without either is never parsed


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def answer_in(text: str) -> str:
    """The answer a reasoning text holds: the text when it is JSON, else the JSON object it ends with (a model
    that reasoned, then answered), else the text itself. Pure."""
    stripped = text.strip()
    try:
        json.loads(stripped)
        return stripped
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    start = stripped.find("{")
    while start >= 0:
        try:
            _, end = decoder.raw_decode(stripped, start)
        except ValueError:
            end = -1
        if end == len(stripped):
            return stripped[start:]
        start = stripped.find("{", start + 1)
    return stripped


def _reasoning(holder: dict) -> str | None:
    for key in REASONING_KEYS:
        value = holder.get(key)
        if isinstance(value, str) and value.strip():
            return answer_in(value)
    return None


def _move(holder: Any, content_key: str) -> bool:
    """In one message (or Ollama's generate answer): an empty content filled from its reasoning text."""
    if not isinstance(holder, dict) or content_key not in holder or not _empty(holder[content_key]):
        return False
    text = _reasoning(holder)
    if text is None:
        return False
    holder[content_key] = text
    return True


def moved_answer(body: bytes) -> bytes | None:
    """The answer `body` (Ollama's /api/generate or /api/chat, or an OpenAI chat completion, not streamed) with
    each empty content filled from its reasoning text; None when there is nothing to move. Pure."""
    if not any(hint in body for hint in _HINTS):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    moved = _move(data, "response")  # Ollama /api/generate
    moved = _move(data.get("message"), "content") or moved  # Ollama /api/chat
    for choice in data.get("choices") or []:  # OpenAI: vLLM's chat completions
        moved = (isinstance(choice, dict) and _move(choice.get("message"), "content")) or moved
    return json.dumps(data).encode() if moved else None
