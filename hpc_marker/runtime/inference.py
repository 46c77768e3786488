"""The per-task inference server of marker 2.x: one `vllm serve` per array task, without docker.

marker 2.x runs surya's VLM in an OpenAI-compatible server, which surya starts with `docker run`
(surya/inference/backends/vllm.py). Slurm nodes rarely have docker, so the task starts the same
server itself: `vllm serve` from the job's environment ("native") or inside an Apptainer/Singularity
image ("apptainer"), on 127.0.0.1 and a free port, with the task's CUDA_VISIBLE_DEVICES, in its own
process group. The workers then attach to it through SURYA_INFERENCE_URL, as surya documents, and
never spawn a server of their own. Owns: the settings for a run (from the profile and the installed
marker; their type, InferenceSettings, is servers/vllm.py's), the argv (pure, the arguments surya gives its
docker container), the check of the served model and the client environment. The process itself is a
servers.ManagedServer: its own process group that dies with the task, the bounded startup wait that
watches the process, stopping the whole group. Its first start with a configuration holds the lock of vLLM's
compile cache folder (servers/compilecache.py), so that tasks starting together do not compile into it at once.

The task uses it like this (the worker pool is created inside the block, so spawned workers inherit
the environment; `workers` sizes surya's request concurrency to the server):

    from hpc_marker.runtime.inference import InferenceSettings, task_inference_server

    with task_inference_server(record.inference or InferenceSettings(),
                               paths.logs / f"inference-task-{task_index}.log",
                               workers=workers) as env:
        os.environ.update(env)
        ...  # the worker pool and the claim loop

It raises InferenceServerFailed (one line: what happened, the server log's last lines, its path)
when the server exits or does not answer within `startup_timeout_s`. On leaving the block (normal
end, exception, or TaskStopped on SIGTERM) the process group gets SIGTERM, then SIGKILL after
`stop_grace_s`. Modes: docs/marker-versions.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.engines import marker as marker_engine
from hpc_marker.runtime.sizing import read_gpu_memory
from hpc_marker.servers.compilecache import compile_cache_dir, compile_key, first_compile
from hpc_marker.servers.managed import HOST, ManagedServer, ServerFailed, free_port
from hpc_marker.servers.vllm import (
    CHOICES,
    DEFAULT_STARTUP_TIMEOUT_S,
    NO_PHONING_HOME,
    InferenceConfigError,
    InferenceSettings,
    check_served_model,
    flag_value,
    in_container,
    resolve_executable,
    vllm_serve_argv,
)
from hpc_marker.util.locks import LockTimeout

logger = logging.getLogger(__name__)
LOG_TAIL_LINES = 20
# surya/inference/backends/vllm.py: server concurrency scaled from a 24 GB baseline by GPU memory.
BASELINE_VRAM_GB, BASELINE_MAX_BATCHED_TOKENS, BASELINE_MAX_NUM_SEQS = 24, 8192, 32
GPU_VRAM_GB = {
    "b300": 270,
    "b200": 180,
    "h200": 141,
    "h100": 80,
    "a100-80": 80,
    "a100": 40,
    "a100-40": 40,
    "l40s": 48,
    "a10": 24,
    "l4": 24,
    "5090": 32,
    "4090": 24,
    "3090": 24,
    "t4": 16,
}
MM_PROCESSOR_KWARGS = {"min_pixels": 3136, "max_pixels": 6291456}
# pip cannot install vllm beside marker-pdf 2.0 (surya-ocr 0.22 pins opencv-python-headless 4.11, vllm 0.20 wants
# >= 4.13): it gets a venv of its own, at the version of surya's VLLM_DOCKER_IMAGE (docs/marker-versions.md).
VLLM_INSTALL = "python -m venv ~/vllm && ~/vllm/bin/pip install vllm==0.20.1, then export PATH=~/vllm/bin:$PATH"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class InferenceServerFailed(ServerFailed):
    """The server is missing, exited, or did not answer in time; one line with its log's tail and path."""


def settings_for_run(
    requested: str | None,
    profile: Mapping,
    engine: str,
    marker_version: str | None,
    startup_timeout_s: float | None = None,
) -> InferenceSettings | None:
    """The run's settings from the flag (None or auto: the profile's, else auto), the profile and the
    installed marker; None when the engine is not marker. auto: native for marker 2.x, else off. Pure."""
    if engine != "marker":
        return None
    chosen = requested if requested and requested != "auto" else profile.get("inference_server") or "auto"
    if chosen not in CHOICES:
        raise InferenceConfigError(f"inference server {chosen!r}: choose from {', '.join(CHOICES)}")
    if (marker_engine.marker_major(marker_version) or 0) < 2:  # marker 1.x runs its models in the workers
        chosen = "off"
    elif chosen == "auto":
        chosen = "native"
    args = profile.get("inference_args") or []
    if isinstance(args, str):
        args = shlex.split(args)
    settings = InferenceSettings(
        mode=chosen,
        image=profile.get("inference_image"),
        extra_args=tuple(map(str, args)),
        startup_timeout_s=float(startup_timeout_s or DEFAULT_STARTUP_TIMEOUT_S),
    )
    settings.validate()
    return settings


@dataclass(frozen=True)
class VlmSettings:
    """What surya's vllm backend passes its container (surya.settings; defaults of surya 0.22)."""

    checkpoint: str = "datalab-to/surya-ocr-2"
    dtype: str = "bfloat16"
    max_model_len: int = 18000
    gpu_memory_utilization: float = 0.85
    enable_mtp: bool = True
    mtp_tokens: int = 2
    extra_args: str | None = None  # VLLM_EXTRA_ARGS
    gpu_type: str | None = None  # VLLM_GPU_TYPE, only when the user set it
    parallel: int | None = None  # SURYA_INFERENCE_PARALLEL, only when the user set it

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> VlmSettings:
        """The same values from the environment alone (surya not importable here). Pure."""
        d, get, mtp = cls(), environ.get, environ.get("VLLM_ENABLE_MTP")
        return cls(
            checkpoint=get("SURYA_MODEL_CHECKPOINT", d.checkpoint),
            dtype=get("VLLM_DTYPE", d.dtype),
            max_model_len=int(get("VLLM_MAX_MODEL_LEN", d.max_model_len)),
            gpu_memory_utilization=float(get("VLLM_GPU_MEMORY_UTILIZATION", d.gpu_memory_utilization)),
            enable_mtp=d.enable_mtp if mtp is None else mtp.strip().lower() in ("1", "true", "yes", "on"),
            mtp_tokens=int(get("VLLM_MTP_TOKENS", d.mtp_tokens)),
            extra_args=get("VLLM_EXTRA_ARGS") or None,
            gpu_type=get("VLLM_GPU_TYPE") or None,
            parallel=int(get("SURYA_INFERENCE_PARALLEL")) if get("SURYA_INFERENCE_PARALLEL") else None,
        )

    @classmethod
    def from_surya(cls, s, environ: Mapping[str, str]) -> VlmSettings:
        return cls(
            checkpoint=s.SURYA_MODEL_CHECKPOINT,
            dtype=s.VLLM_DTYPE,
            max_model_len=s.VLLM_MAX_MODEL_LEN,
            gpu_memory_utilization=s.VLLM_GPU_MEMORY_UTILIZATION,
            enable_mtp=s.VLLM_ENABLE_MTP,
            mtp_tokens=s.VLLM_MTP_TOKENS,
            extra_args=s.VLLM_EXTRA_ARGS,
            gpu_type=s.VLLM_GPU_TYPE if environ.get("VLLM_GPU_TYPE") else None,
            parallel=s.SURYA_INFERENCE_PARALLEL,
        )


def read_vlm_settings(environ: Mapping[str, str] | None = None) -> VlmSettings:
    """This process's: surya's own settings when surya imports (local.env included), else the
    environment's; a given `environ` is read alone."""
    if environ is not None:
        return VlmSettings.from_env(environ)
    try:
        from surya.settings import settings as s
    except Exception:
        return VlmSettings.from_env(os.environ)
    return (
        VlmSettings.from_surya(s, os.environ) if hasattr(s, "VLLM_MAX_MODEL_LEN") else VlmSettings.from_env(os.environ)
    )


def vllm_capacity(vram_gb: float) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) for a GPU of this size: surya's `_gpu_settings` formula. Pure."""
    ratio = vram_gb / BASELINE_VRAM_GB
    tokens = max(1024, 2 ** math.floor(math.log2(max(1.0, BASELINE_MAX_BATCHED_TOKENS * ratio))))
    return tokens, max(8, (int(BASELINE_MAX_NUM_SEQS * ratio) // 8) * 8)


def server_argv(settings: InferenceSettings, vlm: VlmSettings, port: int, capacity: tuple[int, int]) -> list[str]:
    """`vllm serve` with the arguments surya gives its docker container, bound to 127.0.0.1:port,
    inside `apptainer exec --nv IMAGE` for the container modes. argv[0] is a name, not a path. Pure."""
    tokens, seqs = capacity
    flags = [
        "--no-enforce-eager",
        "--max-num-seqs",
        str(seqs),
        "--dtype",
        vlm.dtype,
        "--max-model-len",
        str(vlm.max_model_len),
        "--max-num-batched-tokens",
        str(tokens),
        "--gpu-memory-utilization",
        str(vlm.gpu_memory_utilization),
        "--enable-prefix-caching",
        "--mm-processor-kwargs",
        json.dumps(MM_PROCESSOR_KWARGS),
    ]
    if vlm.enable_mtp:
        flags += ["--speculative-config", json.dumps({"method": "mtp", "num_speculative_tokens": vlm.mtp_tokens})]
    flags += (vlm.extra_args or "").split() + list(settings.extra_args)
    return in_container(settings.mode, settings.image, vllm_serve_argv(vlm.checkpoint, port, vlm.checkpoint, flags))


def server_max_num_seqs(argv: list[str]) -> int:
    """The concurrency the server was told (the last --max-num-seqs wins, as in vllm's parser). Pure."""
    return int(flag_value(argv, "--max-num-seqs") or BASELINE_MAX_NUM_SEQS)


def client_env(
    url: str, max_num_seqs: int, workers: int, vlm: VlmSettings, environ: Mapping[str, str]
) -> dict[str, str]:
    """What the workers need to use this server: surya attaches to SURYA_INFERENCE_URL and spawns
    nothing; the vllm client; ~1.5x the server's concurrency in flight over all workers (as marker's
    own `marker` command budgets it), unless the user set SURYA_INFERENCE_PARALLEL; loopback never
    through a proxy. Pure."""
    env = {
        "SURYA_INFERENCE_URL": f"{url}/v1",
        "SURYA_INFERENCE_BACKEND": "vllm",
        "SURYA_INFERENCE_AUTOSTART": "false",
        "SURYA_INFERENCE_KEEP_ALIVE": "false",
    }
    if vlm.parallel is None:
        env["SURYA_INFERENCE_PARALLEL"] = str(max(1, math.ceil(max_num_seqs * 1.5 / max(1, workers))))
    if any(environ.get(name) for name in PROXY_VARIABLES):
        hosts = [x for name in ("no_proxy", "NO_PROXY") for x in environ.get(name, "").split(",") if x]
        env["no_proxy"] = env["NO_PROXY"] = ",".join(dict.fromkeys([*hosts, HOST, "localhost"]))
    return env


def effective_mode(
    settings: InferenceSettings, marker_version: str | None, environ: Mapping[str, str]
) -> tuple[str, str]:
    """(mode, why) at run time: off when marker is not 2.x here or the user points at a server. Pure."""
    if settings.mode == "off":
        return "off", "off in the run's settings"
    if (marker_engine.marker_major(marker_version) or 0) < 2:
        return "off", f"marker-pdf {marker_version or '(not installed)'} runs its models in the workers"
    if environ.get("SURYA_INFERENCE_URL"):
        return "off", f"using your SURYA_INFERENCE_URL={environ['SURYA_INFERENCE_URL']}"
    return settings.mode, f"{settings.mode} for marker-pdf {marker_version}"


def resolve_binary(name: str, which: Callable[[str], str | None] = shutil.which) -> str:
    """The executable for argv[0]; the container modes take either apptainer or singularity."""
    hint = (
        f"install vllm where the jobs find it ({VLLM_INSTALL}), use --inference-server apptainer with a vLLM "
        "image, or set SURYA_INFERENCE_URL to your own server"
        if name == "vllm"
        else "load its module in the profile's setup lines"
    )
    return resolve_executable(name, hint, which, error=InferenceServerFailed)


def find_binary(name: str, environ: Mapping[str, str]) -> str | None:
    """`name` on the jobs' PATH, else beside the jobs' Python (a venv's bin folder, not activated)."""
    folders = [environ.get("PATH"), str(Path(sys.executable).parent)]
    return shutil.which(name, path=os.pathsep.join(filter(None, folders)))


def server_preflight(
    settings: InferenceSettings | None, marker_version: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """At submit: why this environment (the jobs', when nothing changes it) cannot start the run's inference
    server, in one line: vllm, or apptainer/singularity, not found; None when it can, or none is needed."""
    environ = os.environ if environ is None else environ
    mode = effective_mode(settings, marker_version, environ)[0] if settings is not None else "off"
    if mode == "off":
        return None
    try:
        resolve_binary("vllm" if mode == "native" else mode, lambda name: find_binary(name, environ))
    except InferenceServerFailed as exc:
        return str(exc)
    return None


def _gpu_vram_gb(vlm: VlmSettings, environ: Mapping[str, str]) -> float:
    if vlm.gpu_type:
        if vlm.gpu_type not in GPU_VRAM_GB:
            raise InferenceServerFailed(f"VLLM_GPU_TYPE {vlm.gpu_type!r} is unknown; known: {', '.join(GPU_VRAM_GB)}")
        return GPU_VRAM_GB[vlm.gpu_type]
    memory = read_gpu_memory(environ)
    if memory is None:
        logger.warning(
            f"inference server: GPU memory unknown here, sized for {BASELINE_VRAM_GB} GB (set VLLM_GPU_TYPE)"
        )
        return BASELINE_VRAM_GB
    return memory.total_mb / 1024


@contextmanager
def task_inference_server(
    settings: InferenceSettings,
    log_path: Path,
    *,
    workers: int = 1,
    environ: Mapping[str, str] | None = None,
) -> Iterator[dict[str, str]]:
    """Start the task's server (unless off), yield the environment the workers need, stop it on exit."""
    vlm_environ, environ = environ, dict(os.environ if environ is None else environ)  # given: tests
    mode, why = effective_mode(settings, marker_engine.marker_version(), environ)
    if mode == "off":
        logger.info(f"inference server: none started ({why})")
        yield {}
        return
    vlm = read_vlm_settings(vlm_environ)
    port = settings.port or free_port()
    vram_gb = _gpu_vram_gb(vlm, environ)
    argv = server_argv(settings, vlm, port, vllm_capacity(vram_gb))
    argv[0] = resolve_binary(argv[0], lambda name: find_binary(name, environ))
    url = f"http://{HOST}:{port}"
    server_env = dict(NO_PHONING_HOME, **environ)  # compute nodes: no phoning home, unless the user says
    started = time.monotonic()
    with _compile_lock(argv, f"{vram_gb:.0f}GB", server_env, settings.startup_timeout_s) as compiled:
        server = ManagedServer(
            argv,
            Path(log_path),
            env=server_env,
            name="inference server",
            health_url=f"{url}/health",
            tail_lines=LOG_TAIL_LINES,
            error=InferenceServerFailed,
            stop_grace_s=settings.stop_grace_s,
        ).start()  # dies with the task, even on SIGKILL
        try:
            logger.info(
                f"inference server ({server.process_name}, {why}) starting on {url}, CUDA_VISIBLE_DEVICES="
                f"{environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}, up to {settings.startup_timeout_s:g}s; "
                f"log {log_path}"
            )
            server.wait_until_healthy(settings.startup_timeout_s)
            check_served_model(server, url, vlm.checkpoint, why=" (surya's SURYA_MODEL_CHECKPOINT)")
            compiled()  # its compile cache is filled: other tasks start without the lock
        except BaseException:
            logger.info(f"{server.label} {server.stop()}")
            raise
    try:
        env = client_env(url, server_max_num_seqs(argv), workers, vlm, environ)
        logger.info(
            f"inference server ready after {time.monotonic() - started:.1f}s: {vlm.checkpoint} at {url}/v1, "
            f"{env.get('SURYA_INFERENCE_PARALLEL', vlm.parallel)} requests in flight per worker x {workers} workers"
        )
        yield env
    finally:
        logger.info(f"{server.label} {server.stop()}")


@contextmanager
def _compile_lock(argv: list[str], gpu: str, environ: Mapping[str, str], timeout_s: float) -> Iterator[Callable]:
    """servers/compilecache.first_compile around the server's first start; InferenceServerFailed when another
    task holds the cache folder's lock past `timeout_s`."""
    try:
        with first_compile(compile_cache_dir(environ), compile_key(argv, gpu), timeout_s=timeout_s) as compiled:
            yield compiled
    except LockTimeout as exc:
        raise InferenceServerFailed(f"inference server not started: {exc}") from None
