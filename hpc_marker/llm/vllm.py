"""The service's `vllm serve` (`--llm-server vllm`): its command line and start, on a loopback port.

The command is servers/vllm.py's, shared with marker 2.x's per-task server: `vllm serve MODEL` on
127.0.0.1 under the model's own name, with the settings' flags (--max-num-seqs from --llm-parallel,
--tensor-parallel-size from --llm-gpus, --max-model-len from --llm-ctx, --llm-option and the
profile's llm_args), inside `apptainer exec --nv IMAGE` when the profile names an llm_image. The
process is a ManagedServer; its health URL is vLLM's /health. vLLM gets an API key of its own
(VLLM_API_KEY in its environment, never on its command line, where `ps` would show it): only the
front, which holds the key, gets through vLLM's own check; the front's allowlist still decides
what reaches it, since vLLM's key does not guard every route.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import httpx

from hpc_marker.llm.settings import LlmSettings
from hpc_marker.servers.managed import HOST, ManagedServer, ServerFailed, free_port
from hpc_marker.servers.vllm import (
    NO_PHONING_HOME,
    check_served_model,
    in_container,
    resolve_executable,
    vllm_serve_argv,
)

HINT = (
    "install vllm in the job's environment (the profile's setup lines), or set llm_image in the profile "
    "to an Apptainer image with vllm"
)


class VllmError(ServerFailed):
    """vllm is missing, exited, did not answer in time, or serves another model; one line."""


def vllm_argv(settings: LlmSettings, port: int) -> list[str]:
    """The service's `vllm serve` argv (argv[0] a name, not a path). Pure."""
    serve = vllm_serve_argv(settings.model, port, settings.model, settings.vllm_flags())
    serve[0] = settings.vllm
    return in_container("apptainer" if settings.image else None, settings.image, serve)


def start_vllm(
    settings: LlmSettings, log_path: Path, api_key: str, environ: Mapping[str, str] | None = None
) -> tuple[ManagedServer, str]:
    """Start `vllm serve` on a free loopback port; (the server, its URL). Wait for it with `wait_vllm`."""
    environ = dict(os.environ if environ is None else environ)
    port = free_port()
    argv = vllm_argv(settings, port)
    argv[0] = resolve_executable(
        argv[0], HINT, lambda name: shutil.which(name, path=environ.get("PATH")), error=VllmError
    )
    env = dict(NO_PHONING_HOME, **environ, VLLM_API_KEY=api_key)
    url = f"http://{HOST}:{port}"
    server = ManagedServer(
        argv, Path(log_path), env=env, name="vllm serve", health_url=f"{url}/health", error=VllmError, stop_grace_s=15.0
    ).start()  # dies with the service, even on SIGKILL
    return server, url


def wait_vllm(server: ManagedServer, url: str, settings: LlmSettings, api_key: str) -> str:
    """Until /health answers (it does once the weights are loaded), at most load_timeout_s; then the
    model must be served. Returns vLLM's version. VllmError otherwise."""
    server.wait_until_healthy(settings.load_timeout_s)
    check_served_model(server, url, settings.model, headers={"Authorization": f"Bearer {api_key}"})
    try:
        return str(httpx.get(f"{url}/version", timeout=5.0, trust_env=False).json().get("version", "?"))
    except (httpx.HTTPError, ValueError, AttributeError):
        return "?"
