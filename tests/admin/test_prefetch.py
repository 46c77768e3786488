"""prefetch: env.sh, `--llm` against the stand-in ollama (with and without its registry), and `--marker`
in a marker venv: fails fast and names what it could not fetch (refused, unresolvable, a server that
never answers), and fills a cache from a local mirror that doctor's cache check then accepts."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner
from standin.harness import free_port, manifest, path_with_standin, seed_model, standin_pids

from hpc_marker.admin.prefetch import CacheLayout, read_env_file, write_env_file
from hpc_marker.cli.admin import prefetch_command

ROOT = Path(__file__).resolve().parents[2]
HAS_MARKER = importlib.util.find_spec("marker") is not None


def invoke(*args: str):
    """`hpcmarker prefetch ARGS` through the group, which sets up the diagnostics (the progress lines)."""
    from hpc_marker.cli import cli

    return CliRunner().invoke(cli, ["prefetch", *args], catch_exceptions=False)


def bash_value(env_sh: Path, name: str) -> str:
    return subprocess.run(
        ["bash", "-c", f'source {shlex.quote(str(env_sh))} && printf %s "${name}"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_env_file_quotes_paths_and_merges(tmp_path):
    env_sh = tmp_path / "env.sh"
    odd = str(tmp_path / "a b" / "$(touch pwned)'q`x`")
    layout = CacheLayout(Path(odd))
    write_env_file(env_sh, layout.marker_env())
    lines = write_env_file(env_sh, {"OLLAMA_MODELS": odd + "/ollama"})
    assert bash_value(env_sh, "FONT_PATH") == odd + "/fonts/GoNotoCurrent-Regular.ttf"
    assert bash_value(env_sh, "OLLAMA_MODELS") == odd + "/ollama"  # merged: the marker lines stay
    assert bash_value(env_sh, "HF_HUB_OFFLINE") == "1" and bash_value(env_sh, "MODEL_CACHE_DIR") == odd + "/models"
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert read_env_file(env_sh) == {**layout.marker_env(), "OLLAMA_MODELS": odd + "/ollama"}
    assert f"export FONT_DIR={shlex.quote(odd + '/fonts')}" in lines
    assert set(layout.marker_env()) == {
        "MODEL_CACHE_DIR",
        "FONT_DIR",
        "FONT_PATH",
        "HF_HOME",
        "HF_HUB_CACHE",
        "DOCKER_HF_CACHE_PATH",
        "HF_HUB_OFFLINE",
    }


def test_nothing_asked_is_a_usage_error():
    result = CliRunner().invoke(prefetch_command, [])
    assert result.exit_code == 2 and "--marker and/or --llm MODEL" in result.output


@pytest.fixture
def standin_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_with_standin())
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.delenv("STANDIN_OLLAMA_REGISTRY", raising=False)
    return tmp_path


def test_llm_pull_into_the_cache_with_a_registry(standin_env, monkeypatch):
    registry = standin_env / "registry"
    seed_model(registry, "tiny:1b")
    monkeypatch.setenv("STANDIN_OLLAMA_REGISTRY", str(registry))
    cache = standin_env / "cache"
    result = invoke("--llm", "tiny:1b", "--cache", str(cache))
    assert result.exit_code == 0, result.output
    assert manifest(cache / "ollama", "tiny:1b") is not None
    assert bash_value(cache / "env.sh", "OLLAMA_MODELS") == str(cache / "ollama")
    assert f"export OLLAMA_MODELS={cache / 'ollama'}" in result.output
    assert standin_pids(cache / "ollama") == []  # the private server is gone
    monkeypatch.delenv("STANDIN_OLLAMA_REGISTRY")  # offline now: a model already there is not pulled again
    again = invoke("--llm", "tiny:1b", "--cache", str(cache))
    assert again.exit_code == 0 and f"tiny:1b is already in {cache / 'ollama'}" in again.output


def test_llm_pull_goes_to_OLLAMA_MODELS_when_set(standin_env, monkeypatch):
    registry, models = standin_env / "registry", standin_env / "shared-models"
    seed_model(registry, "tiny:1b")
    monkeypatch.setenv("STANDIN_OLLAMA_REGISTRY", str(registry))
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    assert invoke("--llm", "tiny:1b", "--cache", str(standin_env / "cache")).exit_code == 0
    assert manifest(models, "tiny:1b") is not None
    assert read_env_file(standin_env / "cache" / "env.sh") == {"OLLAMA_MODELS": str(models)}


def test_llm_pull_offline_is_one_clear_line(standin_env):
    cache = standin_env / "cache"
    started = time.monotonic()
    result = invoke("--llm", "tiny:1b", "--cache", str(cache))
    assert result.exit_code == 1 and time.monotonic() - started < 20
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(f"Error: could not pull tiny:1b into {cache / 'ollama'}: pull model manifest")
    assert "no such host" in error
    assert not (cache / "env.sh").exists() and standin_pids(cache / "ollama") == []


def test_llm_pull_without_ollama(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = invoke("--llm", "tiny:1b", "--cache", str(tmp_path / "cache"))
    assert result.exit_code == 1 and "'ollama' is not on PATH" in result.output


@pytest.mark.skipif(HAS_MARKER, reason="marker-pdf is installed in this venv")
def test_marker_not_installed(tmp_path):
    result = invoke("--marker", "--cache", str(tmp_path))
    assert result.exit_code == 1 and 'pip install "hpc-marker[marker]"' in result.output


class Mirror(BaseHTTPRequestHandler):
    """datalab's artifact and S3 URLs, locally: every manifest lists one file; every file is a few bytes."""

    requests: ClassVar[list[str]] = []

    def do_GET(self):
        Mirror.requests.append(self.path)
        body = json.dumps({"files": ["weights.bin"]}).encode() if self.path.endswith("manifest.json") else b"w" * 64
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def marker_urls(monkeypatch):
    """Point every marker download somewhere: returns a setter (never the real internet in tests)."""

    def point(datalab: str, hub: str) -> None:
        monkeypatch.setenv("ARTIFACT_URL", f"{datalab}/artifacts")
        monkeypatch.setenv("S3_BASE_URL", datalab)
        monkeypatch.setenv("HF_ENDPOINT", hub)

    for name in (
        "MODEL_CACHE_DIR",
        "FONT_PATH",
        "FONT_DIR",
        "HF_HOME",
        "HF_HUB_CACHE",
        "SURYA_INFERENCE_URL",
        "SURYA_INFERENCE_BACKEND",
    ):
        monkeypatch.delenv(name, raising=False)
    return point


def fail_fast(cache: Path, *args: str, limit_s: float = 30.0) -> tuple[str, float]:
    """`hpcmarker prefetch --marker` in a process of its own, killed (with its child) if it hangs."""
    code = "from hpc_marker.cli.admin import prefetch_command; prefetch_command(prog_name='hpcmarker prefetch')"
    argv = [sys.executable, "-c", code, "--marker", "--cache", str(cache), *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"prefetch --marker did not fail within {limit_s:g}s")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, output
    return output.strip().splitlines()[-1], elapsed


@pytest.mark.marker
def test_marker_refused_fails_fast_and_names_the_piece(tmp_path, marker_urls):
    closed = f"http://127.0.0.1:{free_port()}"
    marker_urls(closed, closed)
    error, _ = fail_fast(tmp_path / "cache")
    assert error.startswith(f"Error: could not fetch font GoNotoCurrent-Regular.ttf from {closed}/artifacts/")
    assert (
        "connection refused" in error and "not fetched either: " in error and "model s3://ocr_error_detection" in error
    )
    assert not (tmp_path / "cache" / "fonts" / "GoNotoCurrent-Regular.ttf").exists()
    assert not (tmp_path / "cache" / "env.sh").exists()


@pytest.mark.marker
def test_marker_unresolvable_host_fails_fast(tmp_path, marker_urls):
    marker_urls("https://models.invalid", "https://hub.invalid")
    error, _ = fail_fast(tmp_path / "cache")
    assert "https://models.invalid/artifacts/GoNotoCurrent-Regular.ttf" in error and "ConnectionError" in error


@pytest.mark.marker
def test_marker_silent_server_times_out(tmp_path, marker_urls):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    try:
        marker_urls(f"http://127.0.0.1:{silent.getsockname()[1]}", "https://hub.invalid")
        error, elapsed = fail_fast(tmp_path / "cache", "--timeout", "2")
    finally:
        silent.close()
    assert "could not fetch font" in error and "timed out" in error and elapsed >= 2


@pytest.mark.marker
def test_marker_from_a_mirror_then_doctor_accepts_the_cache(tmp_path, marker_urls, mirror):
    from hpc_marker.engines.marker import _series, marker_version

    closed = f"http://127.0.0.1:{free_port()}"
    marker_urls(mirror, closed)
    cache = tmp_path / "cache"
    result = invoke("--marker", "--cache", str(cache))
    font = cache / "fonts" / "GoNotoCurrent-Regular.ttf"
    assert font.read_bytes() == b"w" * 64
    if _series(marker_version())[0] >= 2:  # fast layout comes from the Hugging Face hub: refused here
        assert result.exit_code == 1
        assert f"could not fetch Hugging Face model datalab-to/surya_layout2 from {closed}/datalab-to/" in result.output
        return
    assert result.exit_code == 0, result.output
    models = cache / "models"
    assert (models / "layout" / "2025_09_23" / "weights.bin").is_file()
    env_sh = cache / "env.sh"
    assert bash_value(env_sh, "MODEL_CACHE_DIR") == str(models) and bash_value(env_sh, "FONT_PATH") == str(font)
    code = "from hpc_marker.admin.checks import check_marker_cache as c; print(c().status, c().detail)"
    check = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(env_sh))} && {shlex.quote(sys.executable)} -c {shlex.quote(code)}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("ARTIFACT_URL", "S3_BASE_URL")},
    )
    assert check.stdout.startswith("ok "), check.stdout + check.stderr
    assert "/layout/2025_09_23/weights.bin" in Mirror.requests
    before = len(Mirror.requests)
    again = invoke("--marker", "--cache", str(cache))  # everything there: nothing is downloaded twice
    assert again.exit_code == 0 and len(Mirror.requests) == before
