"""serve_llm with `--llm-server vllm` against the stand-in vllm: the command line (--max-num-seqs from
parallel, tensor parallelism from gpus, max-model-len, extras), vLLM's own key kept off its command
line, nothing reaching vLLM but through the front (secret, allowlist), the OpenAI chat API through the
front with tokens counted, the Apptainer image, and one-line failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from standin.harness import path_with_standin, read_request_log, vllm_pids

from hpc_marker.llm.client import wait_for_service
from hpc_marker.llm.service import ServiceError, serve_llm
from hpc_marker.llm.settings import LlmPaths, LlmSettings

ROOT = Path(__file__).resolve().parents[2]
MODEL = "org/tiny-instruct"


def make_run(tmp_path: Path, **settings) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    values = {
        "model": MODEL,
        "server": "vllm",
        "bind_host": "127.0.0.1",
        "load_timeout_s": 20,
        "metrics_interval_s": 0.2,
    }
    LlmPaths(run_dir).save_settings(LlmSettings(**{**values, **settings}))
    return run_dir


def vllm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, PATH=path_with_standin(), STANDIN_VLLM_REQUEST_LOG=str(tmp_path / "requests.log"), **extra)


def start_service(run_dir: Path, env: dict, replica: int = 0) -> tuple[subprocess.Popen, Path]:
    log = run_dir.parent / f"service-{replica}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpc_marker.llm.service", str(run_dir), str(replica)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def test_vllm_answers_only_through_the_front_and_only_with_the_secret(tmp_path):
    run_dir = make_run(
        tmp_path, parallel=3, gpus=2, ctx=4096, options={"enforce-eager": True}, server_args=["--seed", "7"]
    )
    requests_log, paths = tmp_path / "requests.log", LlmPaths(run_dir)
    proc, log = start_service(run_dir, vllm_env(tmp_path))
    try:
        endpoint = wait_for_service(run_dir, timeout_s=20, poll_s=0.1)
        secret = paths.secret.read_text().strip()
        published = json.loads(paths.endpoint.read_text())
        assert (endpoint.server, endpoint.model, published["server"], published["replica"]) == (
            "vllm",
            MODEL,
            "vllm",
            0,
        )
        assert published["server_version"] == "0.0.0-standin" and published["capacity"] == 4
        argv = paths.server_log("vllm").read_text().splitlines()[0]
        port = int(argv.split("--port ")[1].split()[0])
        assert argv.endswith(
            f"vllm serve {MODEL} --host 127.0.0.1 --port {port} --served-model-name {MODEL} "
            "--max-num-seqs 3 --tensor-parallel-size 2 --max-model-len 4096 --enforce-eager --seed 7"
        )
        server_pid = vllm_pids(requests_log)[0]
        environ = Path(f"/proc/{server_pid}/environ").read_bytes().split(b"\0")
        key = next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"VLLM_API_KEY="))
        assert key not in argv and key.encode() not in Path(f"/proc/{server_pid}/cmdline").read_bytes()
        assert key != secret
        vllm = f"http://127.0.0.1:{port}"
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        # vLLM itself, on loopback: its own key, which only the front holds
        assert httpx.post(f"{vllm}/v1/chat/completions", json=body).status_code == 401
        assert httpx.get(f"{vllm}/v1/models").status_code == 401
        seen = len(read_request_log(requests_log))
        # the front: no secret, a wrong one, or a route off the allowlist never reach vLLM
        for call in (
            lambda: httpx.post(f"{endpoint.url}/v1/chat/completions", json=body),
            lambda: httpx.post(
                f"{endpoint.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret[:-1]}"}
            ),
            lambda: httpx.post(f"{endpoint.url}/{secret[:-1]}/v1/chat/completions", json=body),
            lambda: httpx.post(
                f"{endpoint.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ),
            lambda: httpx.post(
                f"{endpoint.url}/tokenize", json={"prompt": "x"}, headers={"Authorization": f"Bearer {secret}"}
            ),
            lambda: httpx.get(f"{endpoint.url}/{secret}/metrics"),
            lambda: httpx.post(f"{endpoint.url}/{secret}/api/generate", json={"model": MODEL}),
        ):
            assert call().status_code == 403
        assert len(read_request_log(requests_log)) == seen
        # the OpenAI chat API with the secret as the API key, counted per task
        client = endpoint.client(task="5.42", timeout_s=10)
        reply = client.chat(MODEL, [{"role": "user", "content": "one two three"}])
        client.close()
        assert (reply.text, reply.tokens_out) == ("ONE TWO THREE", 3)
        assert read_request_log(requests_log)[seen] == f"POST /v1/chat/completions model={MODEL}"
        counters = endpoint.task_stats("5.42")
        assert counters["requests"] == 1 and counters["tokens_out"] == 3 and counters["failures"] == 0
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert vllm_pids(requests_log) == []
    assert not paths.endpoint.exists() and not paths.secret.exists()
    for text in (log.read_text(), paths.server_log("vllm").read_text(), paths.metrics.read_text()):
        assert secret not in text and key not in text
    assert "vllm serve stopped by SIGTERM" in log.read_text()


def test_vllm_runs_in_the_profiles_image(tmp_path, monkeypatch):
    image = tmp_path / "vllm.sif"
    image.write_bytes(b"sif")
    run_dir = make_run(tmp_path, image=str(image))
    for name, value in vllm_env(tmp_path, STANDIN_APPTAINER_LOG=str(tmp_path / "apptainer.log")).items():
        monkeypatch.setenv(name, value)
    proc, _ = start_service(run_dir, dict(os.environ))
    try:
        endpoint = wait_for_service(run_dir, timeout_s=20, poll_s=0.1)
        assert endpoint.model == MODEL
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    argv = json.loads((tmp_path / "apptainer.log").read_text().splitlines()[0])
    assert argv[1:5] == ["exec", "--nv", str(image), "vllm"] and argv[5:7] == ["serve", MODEL]
    assert vllm_pids(tmp_path / "requests.log") == []


def test_vllm_failures_are_one_line_and_fast(tmp_path, monkeypatch):
    # the server that exits at start-up gets the usual 20 s to load: with 1 s, a stand-in still starting on a loaded
    # machine (CI) was told "did not answer" before its exit was seen
    run_dir, env = make_run(tmp_path), vllm_env(tmp_path, STANDIN_VLLM_EXIT_AT_STARTUP="CUDA out of memory")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(
        ServiceError,
        match=r"vllm serve \(vllm pid \d+\) exited with code 1 before answering .*"
        r"CUDA out of memory",
    ):
        serve_llm(str(run_dir))
    monkeypatch.delenv("STANDIN_VLLM_EXIT_AT_STARTUP")
    monkeypatch.setenv("STANDIN_VLLM_NEVER_HEALTHY", "1")
    make_run(tmp_path, load_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"did not answer on http://127\.0\.0\.1:\d+/health within 1s"):
        serve_llm(str(run_dir))
    assert time.monotonic() - started < 20
    assert vllm_pids(tmp_path / "requests.log") == []
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ServiceError, match=r"'?vllm'? is not on PATH on .*llm_image"):
        serve_llm(str(run_dir))
    LlmPaths(run_dir).save_settings(
        LlmSettings(model=MODEL, server="vllm", load_timeout_s=5, server_args=["--served-model-name", "renamed"])
    )
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.delenv("STANDIN_VLLM_NEVER_HEALTHY")
    with pytest.raises(ServiceError, match=rf"serves \['renamed'\], not '{MODEL}'"):
        serve_llm(str(run_dir))
    assert not LlmPaths(run_dir).endpoint.exists()
