"""How hpcmarker starts a `vllm serve`: the command line, the container around it, the executable,
and the check that a healthy server serves the model asked for; InferenceSettings, how a task of marker 2.x
gets its per-task server (kept on the run record as `inference`).

Shared by the two vLLM servers hpcmarker runs: marker 2.x's per-task VLM server
(runtime/inference.py) and a run's LLM service with `--llm-server vllm` (llm/vllm.py). Each adds
its own flags; the process itself is a ManagedServer. Pure apart from `served_models` (one GET)
and `resolve_executable` (a PATH lookup).
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpc_marker.servers.managed import HOST, ManagedServer, ServerFailed

CONTAINER_MODES = ("apptainer", "singularity")  # interchangeable: either executable runs either mode
NO_PHONING_HOME = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}  # compute nodes: no usage reports
MODES = ("off", "native", *CONTAINER_MODES)  # of marker 2.x's per-task inference server
CHOICES = ("auto", *MODES)  # what --inference-server takes
DEFAULT_STARTUP_TIMEOUT_S = 900.0


class InferenceConfigError(ValueError):
    """Unusable inference settings (bad mode, no image, bad timeout): one line, found at submit."""


@dataclass(frozen=True)
class InferenceSettings:
    """How a task gets its inference server (runtime/inference.py); the run record keeps it as `inference`."""

    mode: str = "off"  # off | native | apptainer | singularity
    image: str | None = None  # the .sif (or docker:// URI) for the container modes
    extra_args: tuple[str, ...] = ()  # appended to `vllm serve` (after surya's, so they win)
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    port: int = 0  # 0: a free port
    stop_grace_s: float = 15.0  # SIGTERM, then SIGKILL after this long

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> InferenceSettings:
        """From run.json (None or {}: off); keys it does not know are left out."""
        if not data:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["extra_args"] = tuple(known.get("extra_args") or ())
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return dict(asdict(self), extra_args=list(self.extra_args))

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InferenceConfigError(f"inference server {self.mode!r}: choose from {', '.join(CHOICES)}")
        if self.mode in CONTAINER_MODES and not self.image:
            raise InferenceConfigError(
                f"inference server {self.mode!r} needs an image: set inference_image in "
                "the profile (a .sif with vllm, e.g. built from vllm/vllm-openai)"
            )
        if self.image and "://" not in self.image and self.mode in CONTAINER_MODES and not Path(self.image).is_file():
            raise InferenceConfigError(f"inference_image {self.image}: no such file")
        if not self.startup_timeout_s > 0:
            raise InferenceConfigError(f"--inference-startup-timeout {self.startup_timeout_s:g}: must be positive")


def vllm_serve_argv(model: str, port: int, served_name: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`vllm serve MODEL` on 127.0.0.1:port under `served_name`, then `extra` (later flags win in
    vllm's parser). argv[0] is a name, resolved with resolve_executable. Pure."""
    return ["vllm", "serve", model, "--host", HOST, "--port", str(port), "--served-model-name", served_name, *extra]


def in_container(mode: str | None, image: str | None, argv: list[str]) -> list[str]:
    """`argv` as is, or run by `apptainer|singularity exec --nv IMAGE` for a container mode. Pure."""
    if mode not in CONTAINER_MODES:
        return argv
    return [mode, "exec", "--nv", str(image), *argv]


def resolve_executable(
    name: str, hint: str, which: Callable[[str], str | None] = shutil.which, error: type[ServerFailed] = ServerFailed
) -> str:
    """The path of argv[0]; a container mode takes apptainer or singularity, whichever is here.
    Raises `error` naming what is missing and `hint` (what to do)."""
    names = [name] + [m for m in CONTAINER_MODES if m != name] if name in CONTAINER_MODES else [name]
    for path in filter(None, map(which, names)):
        return path
    raise error(f"{' or '.join(names)} is not on PATH on {socket.gethostname()}: {hint}")


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of `flag` in an argv (`--flag V` or `--flag=V`; the last one wins, as in vllm). Pure."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def served_models(url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 5.0) -> list[str]:
    """The model ids an OpenAI-compatible server at `url` lists on /v1/models (loopback: no proxy).
    Raises httpx.HTTPError or ValueError."""
    import httpx  # here: a task imports this module for its settings (the run record), and httpx costs 0.1 s

    reply = httpx.get(f"{url}/v1/models", headers=dict(headers or {}), timeout=timeout_s, trust_env=False)
    reply.raise_for_status()
    data = reply.json()
    entries = data.get("data") if isinstance(data, dict) else None
    return [str(m.get("id")) for m in entries or [] if isinstance(m, dict)]


def check_served_model(
    server: ManagedServer, url: str, model: str, why: str = "", headers: Mapping[str, str] | None = None
) -> None:
    """The healthy `server` at `url` serves `model`, else server.error (one line, with its log's path)."""
    import httpx

    try:
        served = served_models(url, headers)
    except (httpx.HTTPError, ValueError) as exc:
        raise server.error(
            f"{server.label} is healthy but {url}/v1/models failed ({type(exc).__name__}); log: {server.log_path}"
        ) from None
    if model not in served:
        raise server.error(f"{server.label} serves {served}, not {model!r}{why}; log: {server.log_path}")
