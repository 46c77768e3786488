"""The same path against a REAL `ollama` binary, where one is on PATH (skipped otherwise).

Without a model only the server is checked (start, the front's secret and allowlist). With
HPCMARKER_TEST_OLLAMA_MODEL=<an installed model> a generation goes through the front too.
"""

from __future__ import annotations

import os
import secrets

import httpx
import ollama
import pytest
from standin.harness import real_executable

from hpc_marker.llm.front import Front
from hpc_marker.llm.process import OllamaProcess

REAL = real_executable("ollama")
pytestmark = pytest.mark.skipif(REAL is None, reason="no real `ollama` binary on PATH (the stand-in does not count)")


def test_real_ollama_behind_the_front(tmp_path):
    model = os.environ.get("HPCMARKER_TEST_OLLAMA_MODEL")
    process = OllamaProcess.start(
        tmp_path / "ollama.log",
        binary=REAL,
        parallel=2,
        models_dir=os.environ.get("OLLAMA_MODELS") if model else str(tmp_path / "models"),
    )
    secret = secrets.token_urlsafe(32)
    try:
        assert process.wait_ready(60)
        with Front(process.url, secret, timeout_s=600) as front:
            assert httpx.get(f"{front.url}/{secret}/api/version").status_code == 200
            assert httpx.get(f"{front.url}/api/version").status_code == 403
            assert httpx.post(f"{front.url}/{secret}/api/pull", json={"model": "x"}).status_code == 403
            if model:
                answer = ollama.Client(host=f"{front.url}/{secret}/task/0").generate(
                    model=model, prompt="Say hello.", options={"num_predict": 16}, stream=False
                )
                assert answer.eval_count and front.stats()["tasks"]["0"]["tokens_out"] == answer.eval_count
    finally:
        process.stop()
    assert secret not in (tmp_path / "ollama.log").read_text(errors="replace")
