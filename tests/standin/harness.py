"""Test harness around the STAND-IN ollama (tests/standin/ollama): start it, seed models, inspect it.

Tests only. Models exist for the stand-in as JSON manifests in OLLAMA_MODELS; `seed_model` writes
one (in a real installation `ollama pull` would). `requests()` reads the stand-in's request log,
which is how tests prove that a refused request never reached "Ollama".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import httpx

STANDIN_DIR = Path(__file__).resolve().parent
STANDIN = STANDIN_DIR / "ollama"
KNOBS = {
    "delay_per_token_s": "STANDIN_OLLAMA_DELAY_PER_TOKEN_S",
    "fail_every": "STANDIN_OLLAMA_FAIL_EVERY",
    "never_ready": "STANDIN_OLLAMA_NEVER_READY",
    "registry": "STANDIN_OLLAMA_REGISTRY",
    "num_parallel": "OLLAMA_NUM_PARALLEL",
    "max_queue": "OLLAMA_MAX_QUEUE",
    "reject_schema": "STANDIN_OLLAMA_REJECT_SCHEMA",
    "thinking": "STANDIN_OLLAMA_THINKING",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def path_with_standin(path: str | None = None) -> str:
    return f"{STANDIN_DIR}{os.pathsep}{path if path is not None else os.environ.get('PATH', '')}"


def knob_env(**knobs) -> dict[str, str]:
    env = {}
    for name, value in knobs.items():
        if value is not None:
            env[KNOBS[name]] = str(int(value) if isinstance(value, bool) else value)
    return env


def seed_model(models_dir: Path, name: str, parameters: dict | None = None) -> None:
    """Make `name` exist for the stand-in (as if pulled)."""
    full = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
    models_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"name": full, "from": None, "parameters": parameters or {}, "modified_at": "2026-01-01T00:00:00Z"}
    (models_dir / (urllib.parse.quote(full, safe="") + ".json")).write_text(json.dumps(manifest))


def manifest(models_dir: Path, name: str) -> dict | None:
    full = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
    path = models_dir / (urllib.parse.quote(full, safe="") + ".json")
    return json.loads(path.read_text()) if path.exists() else None


def read_request_log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _pids(env_entry: str, *commands: bytes) -> list[int]:
    """Processes (of this user) whose environment holds `env_entry` and whose command line contains one of
    `commands`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if env_entry.encode() in environ and any(command in cmdline for command in commands):
            pids.append(int(entry.name))
    return pids


def standin_pids(models_dir: Path) -> list[int]:
    """Stand-in processes (of this user) serving `models_dir`: to prove none is left running."""
    return _pids(f"OLLAMA_MODELS={models_dir}", str(STANDIN).encode())


class StandinOllama:
    """`ollama serve` (the stand-in) on 127.0.0.1:<free port> with its own models folder and request log."""

    def __init__(self, root: Path, **knobs) -> None:
        self.root = root
        self.models = root / "models"
        self.models.mkdir(parents=True, exist_ok=True)
        self.request_log = root / "standin-requests.log"
        self.port = free_port()
        self.env = dict(
            os.environ,
            OLLAMA_HOST=f"127.0.0.1:{self.port}",
            OLLAMA_MODELS=str(self.models),
            STANDIN_OLLAMA_REQUEST_LOG=str(self.request_log),
            **knob_env(**knobs),
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> StandinOllama:
        self.proc = subprocess.Popen(
            [str(STANDIN), "serve"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/", timeout=0.5, trust_env=False).status_code == 200:
                    self.request_log.unlink(missing_ok=True)  # the readiness probe does not count
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("stand-in ollama did not start")

    def requests(self) -> list[str]:
        return read_request_log(self.request_log)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


VLLM = STANDIN_DIR / "vllm"


def vllm_pids(request_log: Path) -> list[int]:
    """Stand-in vllm processes (server and "engine core") started with this request log."""
    return _pids(f"STANDIN_VLLM_REQUEST_LOG={request_log}", str(VLLM).encode(), b"import signal, time")


def _check_keys() -> set[str]:
    """The stand-in vllm's keys of the service's capability check requests (llm/check.py: chat, marker)."""
    import hashlib

    from hpc_marker.llm.check import CHAT_TEXT, PROMPT

    return {hashlib.sha256(text.encode()).hexdigest()[:12] for text in (CHAT_TEXT, PROMPT)}


def vllm_trace(request_log: Path) -> dict[str, list[str]]:
    """The stand-in vllm's completions by outcome: {"begin": [key...], "end": [...], "abort": [...], "fail": [...]},
    where begin lists the content keys (sha256[:12] of the last message) and end/abort/fail the keys they closed;
    without the service's capability check (the tasks' requests only)."""
    keys: dict[str, str] = {}
    skip = _check_keys()
    out: dict[str, list[str]] = {"begin": [], "end": [], "abort": [], "fail": []}
    for line in read_request_log(request_log):
        word, *rest = line.split()
        if word == "begin":
            keys[rest[0]] = rest[1]
            if rest[1] not in skip:
                out["begin"].append(rest[1])
        elif word in ("end", "abort", "fail") and rest and keys.get(rest[0], "?") not in skip:
            out[word].append(keys.get(rest[0], "?"))
    return out


def real_executable(name: str) -> str | None:
    """A real `name` on PATH (never the stand-in of tests/standin), else None: what the real-server tests run."""
    import shutil

    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != STANDIN_DIR
    )
    found = shutil.which(name, path=path)
    if found is None:
        return None
    with open(found, "rb") as fh:
        if b"STAND-IN" in fh.read(4096):
            return None
    return found


def start_vllm(port: int, model: str, env: dict[str, str], *extra: str, timeout_s: float = 20.0) -> subprocess.Popen:
    """The stand-in vllm on 127.0.0.1:port, once its /health answers."""
    proc = subprocess.Popen(
        [str(VLLM), "serve", model, "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1, trust_env=False).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the stand-in vllm did not start")
        time.sleep(0.1)


def serve_in_thread(serve, *args) -> tuple:
    """Run serve(*args, stop=event) in a thread: (thread, stop event, errors raised in it)."""
    import threading

    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            serve(*args, stop=stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, stop, errors
