"""The local `ollama serve`: find the binary, start it on a loopback port, wait until it answers, stop.

The process is a servers.ManagedServer (its own process group, which dies with its parent even on
SIGKILL; its log; `stop` terminates the group, then kills after a grace period); this module adds
only what is Ollama's: the binary on PATH, the OLLAMA_* environment, /api/version as the health
check (which tells the version) and OllamaError for everything that goes wrong.

    with start_ollama(log, parallel=4) as ollama_serve:
        version = ollama_serve.wait_ready(60)
        ...  # ollama_serve.url
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.servers.health import NotReady, http_ok
from hpc_marker.servers.managed import HOST, ManagedServer, ServerFailed, free_port

READY_POLL_S = 0.2


class OllamaError(ServerFailed):
    """ollama is missing, did not start, or did not answer in time."""


def find_ollama(name: str = "ollama") -> str:
    path = shutil.which(name)
    if path is None:
        raise OllamaError(
            f"{name!r} is not on PATH on {socket.gethostname()}: install Ollama or load its module "
            "(e.g. in the template's setup lines)"
        )
    return path


@dataclass
class OllamaProcess(ManagedServer):
    """A running `ollama serve` bound to 127.0.0.1:port; its output goes to `log_path`."""

    port: int = 0
    name: str = "ollama serve"
    tail_lines: int = 8
    error: type[ServerFailed] = OllamaError

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _version(self, seconds_left: float) -> str | NotReady:
        reply = http_ok(f"{self.url}/api/version", seconds_left)
        if isinstance(reply, NotReady):
            return reply
        try:
            return str(reply.json().get("version", "?"))
        except ValueError:
            return NotReady("/api/version answered without JSON")

    def wait_ready(self, timeout_s: float) -> str:
        """Poll /api/version until it answers; returns Ollama's version. Bounded by timeout_s; OllamaError."""
        return self.wait_until_healthy(timeout_s, self._version, interval_s=READY_POLL_S)


def start_ollama(
    log: Path,
    *,
    binary: str = "ollama",
    parallel: int = 1,
    keep_alive: str | None = None,
    models_dir: str | None = None,
    max_queue: int | None = None,
    port: int | None = None,
) -> OllamaProcess:
    """Start `ollama serve` on 127.0.0.1:port (a free one by default) with these OLLAMA_* settings."""
    exe = find_ollama(binary)
    port = port or free_port()
    env = dict(os.environ, OLLAMA_HOST=f"{HOST}:{port}", OLLAMA_NUM_PARALLEL=str(parallel))
    if keep_alive is not None:
        env["OLLAMA_KEEP_ALIVE"] = str(keep_alive)
    if models_dir:
        env["OLLAMA_MODELS"] = str(models_dir)
    if max_queue is not None:
        env["OLLAMA_MAX_QUEUE"] = str(max_queue)
    return OllamaProcess(
        [exe, "serve"], Path(log), env=env, port=port, health_url=f"http://{HOST}:{port}/api/version"
    ).start()
