"""How hpcmarker starts a `vllm serve`: the command line, the container around it, the executable,
and the check that a healthy server serves the model asked for.

Shared by the two vLLM servers hpcmarker runs: marker 2.x's per-task VLM server
(runtime/inference.py) and a run's LLM service with `--llm-server vllm` (llm/vllm.py). Each adds
its own flags; the process itself is a ManagedServer. Pure apart from `served_models` (one GET)
and `resolve_executable` (a PATH lookup).
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Mapping

import httpx

from hpc_marker.servers.managed import HOST, ManagedServer, ServerFailed

CONTAINER_MODES = ("apptainer", "singularity")  # interchangeable: either executable runs either mode
NO_PHONING_HOME = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}  # compute nodes: no usage reports


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
    reply = httpx.get(f"{url}/v1/models", headers=dict(headers or {}), timeout=timeout_s, trust_env=False)
    reply.raise_for_status()
    data = reply.json()
    entries = data.get("data") if isinstance(data, dict) else None
    return [str(m.get("id")) for m in entries or [] if isinstance(m, dict)]


def check_served_model(
    server: ManagedServer, url: str, model: str, why: str = "", headers: Mapping[str, str] | None = None
) -> None:
    """The healthy `server` at `url` serves `model`, else server.error (one line, with its log's path)."""
    try:
        served = served_models(url, headers)
    except (httpx.HTTPError, ValueError) as exc:
        raise server.error(
            f"{server.label} is healthy but {url}/v1/models failed ({type(exc).__name__}); log: {server.log_path}"
        ) from None
    if model not in served:
        raise server.error(f"{server.label} serves {served}, not {model!r}{why}; log: {server.log_path}")
