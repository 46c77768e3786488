"""Check: the capability check each replica of a run's LLM service makes before any task depends on it.

One request as the run's engine sends it, through the replica's own front (what the front does to answers, a
reasoning model's answer moved into the content by llm/reasoning.py, is part of what is checked):
- `marker`: what marker's LLM services send (marker/services/ollama.py and openai.py, the same in marker-pdf 1.10
  and 2.0; tests/llm/test_llm_check.py compares them): to Ollama, /api/generate, not streamed, with the schema as
  `format` and the block's image (WebP, base64) in `images`; to vLLM, /v1/chat/completions with the image as a
  WebP data URL before the prompt and a strict `json_schema` response_format (what openai's
  `chat.completions.parse` makes of marker's pydantic schema). The schema and prompt are those of marker's
  handwriting processor. The answer must be a JSON object with the schema's string field, as marker reads it.
- `chat`: the `text` engine's refinement request, a plain chat; the answer must not be empty.
`check_service` returns a CheckResult: ok, or one line naming the server, the model and what to change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from hpc_marker.llm.client import CONNECT_TIMEOUT_S, Endpoint, LlmCallFailed
from hpc_marker.util.text import one_line

SCHEMA_NAME = "HandwritingSchema"  # marker's processors/llm/llm_handwriting.py: an image of a block -> its Markdown
SCHEMA: dict[str, Any] = {
    "properties": {"markdown": {"title": "Markdown", "type": "string"}},
    "required": ["markdown"],
    "title": SCHEMA_NAME,
    "type": "object",
}
PROMPT = (
    "You are an expert editor specializing in accurately reproducing text from images.\n"
    "You will receive an image of a text block. Your task is to generate markdown to properly represent the "
    "content of the image.\n**Instructions:**\n1. Carefully examine the provided block image.\n"
    "2. Output the markdown representing the content of the image.\n"
)
# A 160x40 WebP of the words "Invoice 42: paid" (PIL, as marker's img_to_base64 encodes its block images).
IMAGE_WEBP = (
    "UklGRuQBAABXRUJQVlA4INgBAADQDQCdASqgACgAPm0ykUikIqEhJnqggA2JaQATyz9A/FWv9TRfuAvzPWd/kHYAekn+zfar74X+V9s3sC+QP+P7"
    "gn8d/n/+f/r3Yv/XL2D/2WFex1uOtSDbMVrA5u6NzS2T0F4Ue0Ucm3RYgvTTS3aWUAZ9o+GoAAD++/YAy/kd/pk2+gB8Cw+NmJ88xh+LBatjjKh/"
    "Lj6z/bF2/5HegTSq7YWJdESpwUexi8Q2v6Fqczz1E5FetNnDfD/QWVjINnqtv1fs/+riWRLZe+ITUiPKS47VFRUXfwHA6Rf1avmtz4TDZN/hQa+R"
    "wDU2/w1JUhOHmnOsdQjGY4x9qeT3BxZdtDYSZq/vB3SZ3jpWOv3imCfmjgnep+MVPGDvIrRErND6cHtopswjZ/+8EHEBg9ak1rL//MPvkOu/JQO9"
    "h5/wYmTAkvk/B1oPSBydKvJ7wXR19nz+OyuX502Lvx7vmeEmHOLdZ3PHvR5ihNu30EHWdVAXC0vjKuqXgAyw5rZYPCruXqZwqsZf12n+232v0j/Y"
    "8GAd+qezuGKWACvg38j+MF3auX0LPcf/8dvyix5wysO5nITDDf32uXWrLKqGkW4xBIGH3hoB/nsiNqcDlGCnUDHhhAAAAAAA"
)
CHAT_TEXT = "Invoice 42\npaid in full on 3 March"  # a page's extracted text, for the `text` engine's chat
SKIP = "--llm-check off skips this check"
FIX_SCHEMA = {
    "ollama": "use Ollama 0.5 or later (it takes a JSON schema as `format`) or choose another --llm model",
    "vllm": "serve the model with structured outputs (a vLLM release whose guided decoding takes a json_schema "
    "response_format for it) or choose another --llm model",
}
FIX_IMAGE = "choose a model that takes images (a vision model) for --llm: marker sends block and page images"
FIX_ANSWER = "choose a model that answers in the requested JSON (an instruct or vision model) for --llm"


@dataclass(frozen=True)
class CheckResult:
    """What the check found: ok, and one line (ok: how it was checked; not ok: what failed and what to change)."""

    ok: bool
    line: str


def marker_request(server: str, model: str, image: bool = True) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of the request marker's LLM service for `server` sends: its schema, prompt, image. Pure."""
    if server == "vllm":
        picture = [{"type": "image_url", "image_url": {"url": f"data:image/webp;base64,{IMAGE_WEBP}"}}]
        schema = {**SCHEMA, "additionalProperties": False}
        return "/v1/chat/completions", {
            "messages": [{"role": "user", "content": [*(picture if image else []), {"type": "text", "text": PROMPT}]}],
            "model": model,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": schema, "name": SCHEMA_NAME, "strict": True},
            },
            "stream": False,
        }
    schema = {"type": "object", "properties": SCHEMA["properties"], "required": SCHEMA["required"]}
    return "/api/generate", {
        "model": model,
        "prompt": PROMPT,
        "stream": False,
        "format": schema,
        "images": [IMAGE_WEBP] if image else [],
    }


def answer_text(server: str, data: Any) -> str:
    """The text marker's service would `json.loads` from an answer: `response` (Ollama), the first choice's
    message content (OpenAI). Pure."""
    if not isinstance(data, dict):
        return ""
    if server == "vllm":
        choices = data.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        return str((message or {}).get("content") or "")
    return str(data.get("response") or "")


def answer_problem(text: str) -> str | None:
    """What keeps marker from using this answer (None: nothing). Pure."""
    if not text.strip():
        return "its answer's content is empty (and no reasoning text to take it from)"
    try:
        value = json.loads(text)
    except ValueError:
        return f"its answer is not JSON ({one_line(text)[:80]!r})"
    if not isinstance(value, dict) or not isinstance(value.get("markdown"), str):
        return f"its answer lacks the schema's string field 'markdown' ({one_line(text)[:80]!r})"
    return None


def _error_message(reply: httpx.Response) -> str:
    try:
        data = reply.json()
    except ValueError:
        return one_line(reply.text)[:200]
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error or (data or {}).get("message")
    return one_line(str(message or reply.text))[:200]


def _post(endpoint: Endpoint, path: str, body: dict, timeout_s: float) -> httpx.Response | str:
    """The front's reply to one request (the secret in the path, as marker's Ollama service sends it; the
    front takes it from the path for either server), or why there is none."""
    timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
    try:
        return httpx.post(endpoint.base_url() + path, json=body, timeout=timeout, trust_env=False)
    except httpx.TimeoutException:
        return f"it did not answer within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return f"it did not answer ({type(exc).__name__})"


def _marker_problem(endpoint: Endpoint, image: bool, timeout_s: float) -> tuple[str | None, int | None]:
    """(what is wrong with the answer to marker's request or None, the HTTP status where one came back)."""
    path, body = marker_request(endpoint.server, endpoint.model, image)
    reply = _post(endpoint, path, body, timeout_s)
    if isinstance(reply, str):
        return reply, None
    if reply.status_code != 200:
        return f"it answered HTTP {reply.status_code} ({_error_message(reply)})", reply.status_code
    try:
        data = reply.json()
    except ValueError:
        return f"its answer is not an API answer ({one_line(reply.text)[:80]!r})", 200
    return answer_problem(answer_text(endpoint.server, data)), 200


def _check_marker(endpoint: Endpoint, timeout_s: float) -> tuple[str | None, str]:
    problem, status = _marker_problem(endpoint, True, timeout_s)
    if problem is None:
        return None, ""
    if status is not None and 400 <= status < 500:  # the schema or the image: asked again without the image
        without, _ = _marker_problem(endpoint, False, timeout_s)
        return problem, FIX_IMAGE if without is None else FIX_SCHEMA.get(endpoint.server, FIX_ANSWER)
    return problem, FIX_ANSWER if status == 200 else "see the server's log"


def _check_chat(endpoint: Endpoint, timeout_s: float) -> tuple[str | None, str]:
    client = endpoint.client(None, timeout_s)
    try:
        reply = client.chat(endpoint.model, [{"role": "user", "content": CHAT_TEXT}], max_tokens=64)
    except LlmCallFailed as exc:
        return f"it {'timed out' if exc.timed_out else 'failed'} ({exc.reason})", "see the server's log"
    finally:
        client.close()
    if not reply.text.strip():
        return "its answer's content is empty", "choose another --llm model"
    return None, ""


def check_service(kind: str, endpoint: Endpoint, server: str, timeout_s: float, log: str = "") -> CheckResult:
    """Send the `kind` check (marker, chat; off: none) to the replica at `endpoint` (its front) and judge the
    answer; `server` names it in the line ("vllm 0.11.0 on node7"), `log` is the server's log."""
    if kind == "off":
        return CheckResult(True, "not checked (--llm-check off)")
    what = "marker's constrained requests (a JSON schema and an image)" if kind == "marker" else "a chat request"
    problem, fix = (_check_marker if kind == "marker" else _check_chat)(endpoint, timeout_s)
    if problem is None:
        return CheckResult(True, f"{server} answers {what} with model {endpoint.model}")
    fix = fix.replace("the server's log", log or "the server's log")
    return CheckResult(False, f"{server} cannot answer {what} with model {endpoint.model}: {problem}; {fix} ({SKIP})")
