"""An in-process LLM server for tests of marker's own LLM service classes (tests only).

`answering_llm` answers Ollama's /api/generate and OpenAI's chat completions (/v1/chat/completions) with a fixed
JSON text as the model's answer, after an optional delay, and records each request it gets (path, JSON body).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _reply(path: str, text: str) -> dict:
    """What Ollama (/api/generate) or an OpenAI-compatible server (otherwise) sends back for the answer `text`."""
    if path.endswith("/api/generate"):
        return {"response": text, "prompt_eval_count": 1, "eval_count": 1}
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@contextmanager
def answering_llm(answer: dict, delay_s: float = 0.0) -> Iterator[tuple[str, list[tuple[str, dict]]]]:
    """A server on 127.0.0.1 that answers every POST, after `delay_s`, with `answer` as the model's (JSON) text.
    Yields its base URL and the list of the requests it got, (path, body), in order; stops on leaving."""
    seen: list[tuple[str, dict]] = []
    text = json.dumps(answer)

    class Answering(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            time.sleep(delay_s)
            data = json.dumps(_reply(self.path, text)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
