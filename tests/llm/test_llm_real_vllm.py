"""The vLLM service against a REAL `vllm`, where one is on PATH and HPCMARKER_TEST_VLLM_MODEL names a
model it can load from this node's Hugging Face cache (skipped otherwise: these machines have no GPU).

The same checks as the stand-in's (tests/llm/test_llm_vllm.py): vLLM answers only through the front,
only with the secret, only on the allowlist; its own API key (VLLM_API_KEY, which vLLM reads) turns
away a direct request on loopback; a chat completion comes back with its tokens counted.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from standin.harness import STANDIN_DIR, real_executable, serve_in_thread

from hpc_marker.llm.client import wait_for_service
from hpc_marker.llm.service import serve_llm
from hpc_marker.llm.settings import LlmPaths, LlmSettings

REAL, MODEL = real_executable("vllm"), os.environ.get("HPCMARKER_TEST_VLLM_MODEL")
pytestmark = pytest.mark.skipif(
    REAL is None or not MODEL,
    reason="no real `vllm` on PATH, or no HPCMARKER_TEST_VLLM_MODEL (the stand-in does not count)",
)


def test_real_vllm_behind_the_front(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    paths = LlmPaths(run_dir)
    paths.save_settings(
        LlmSettings(
            model=MODEL,
            server="vllm",
            parallel=4,
            bind_host="127.0.0.1",
            load_timeout_s=1800,
            options={"gpu-memory-utilization": 0.5},
        )
    )
    monkeypatch.setenv(
        "PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != STANDIN_DIR)
    )
    thread, stop, errors = serve_in_thread(serve_llm, str(run_dir))
    try:
        endpoint = wait_for_service(run_dir, timeout_s=1800, poll_s=2)
        secret = paths.secret.read_text().strip()
        port = paths.server_log("vllm").read_text().splitlines()[0].split("--port ")[1].split()[0]
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
        assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60).status_code == 401
        assert httpx.post(f"{endpoint.url}/v1/chat/completions", json=body, timeout=60).status_code == 403
        assert (
            httpx.post(
                f"{endpoint.url}/tokenize",
                json={"model": MODEL, "prompt": "x"},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=60,
            ).status_code
            == 403
        )
        client = endpoint.client(task="0.1", timeout_s=300)
        reply = client.chat(MODEL, [{"role": "user", "content": "Say hello."}], max_tokens=16)
        client.close()
        assert reply.text.strip() and reply.tokens_out > 0
        assert endpoint.task_stats("0.1")["tokens_out"] == reply.tokens_out
    finally:
        stop.set()
        thread.join(timeout=120)
    assert errors == [] and not paths.endpoint.exists() and not paths.secret.exists()
