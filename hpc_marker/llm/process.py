"""The local `ollama serve` process: find the binary, start it on a loopback port, wait, stop.

Every step is bounded: `wait_ready` gives up after its timeout (with the tail of ollama's log),
`stop` terminates, then kills after a grace period. The process gets SIGTERM if its parent dies.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hpc_marker.util.processes import parent_death_signal


class OllamaError(Exception):
    """ollama is missing, did not start, or did not answer in time."""


def find_ollama(name: str = "ollama") -> str:
    path = shutil.which(name)
    if path is None:
        raise OllamaError(f"{name!r} is not on PATH on {socket.gethostname()}: install Ollama or load its module "
                          "(e.g. in the template's setup lines)")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(log is empty)"


@dataclass
class OllamaProcess:
    """A running `ollama serve` bound to 127.0.0.1:port; its output goes to `log`."""

    binary: str
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, log: Path, *, binary: str = "ollama", parallel: int = 1, keep_alive: str | None = None,
              models_dir: str | None = None, max_queue: int | None = None, port: int | None = None) -> OllamaProcess:
        exe = find_ollama(binary)
        port = port or free_port()
        env = dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_NUM_PARALLEL=str(parallel))
        if keep_alive is not None:
            env["OLLAMA_KEEP_ALIVE"] = str(keep_alive)
        if models_dir:
            env["OLLAMA_MODELS"] = str(models_dir)
        if max_queue is not None:
            env["OLLAMA_MAX_QUEUE"] = str(max_queue)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen([exe, "serve"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, preexec_fn=parent_death_signal(), close_fds=True)
        return cls(binary=exe, port=port, log=log, env=env, proc=proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float) -> str:
        """Poll /api/version until it answers; returns Ollama's version. Bounded by timeout_s."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise OllamaError(f"ollama serve exited (code {code}) before answering; "
                                  f"last lines of {self.log}: {log_tail(self.log)}")
            try:
                resp = httpx.get(f"{self.url}/api/version", timeout=min(2.0, max(0.1, timeout_s)), trust_env=False)
                if resp.status_code == 200:
                    return str(resp.json().get("version", "?"))
                last = f"HTTP {resp.status_code}"
            except (httpx.HTTPError, ValueError) as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise OllamaError(f"ollama serve did not answer on {self.url} within {timeout_s:g}s ({last}); "
                                  f"last lines of {self.log}: {log_tail(self.log)}")
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after grace_s; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace_s)
        return self.proc.returncode
