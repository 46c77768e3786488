"""Preflight checks: a check's result (`Check`), the two helpers every check uses, and one small function per
part that doctor.py checks.

`guard` (a check that raises is a failed check, never a crash of the others) and `run_command` (a command's exit
code and last line, bounded in time). The parts: Slurm and accounting, the partition's GPUs, marker's install,
import, inference server and cache, ollama and the LLM model, the output folder, thread caps. (The template check
and the order of the checks are doctor.py's.)
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.util.text import one_line

OK, WARN, FAIL = "ok", "warn", "fail"
TIMEOUT_S = 15.0  # any one command a check runs
PREFETCH_FIX = "on a login node with internet: {}"  # engines/cachepieces.py's PREFETCH_COMMAND
SERVER_CHECK = "marker: inference server"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    detail: str
    fix: str = ""


def guard(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    """`check()` as a list of checks; an unexpected error in it becomes one failed check."""
    try:
        result = check()
    except Exception as exc:  # a check must never take the others down
        return [
            Check(
                name,
                FAIL,
                f"the check itself failed: {one_line(exc, with_type=True, empty='no detail')}",
                "report this with the detail",
            )
        ]
    return result if isinstance(result, list) else [result]


def run_command(argv: list[str], timeout_s: float = TIMEOUT_S) -> tuple[int, str]:
    """(exit code, last non-empty output line); 127 when the program is missing, 124 on timeout."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found on PATH"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {timeout_s:g}s"
    lines = [x.strip() for x in (done.stderr + "\n" + done.stdout).splitlines() if x.strip()]
    return done.returncode, (lines[-1] if lines else "")


def check_slurm() -> list[Check]:
    """sinfo answers (the cluster is reachable) and sacct answers (accounting, which `status` needs)."""
    from hpc_marker.slurm import commands as slurm

    if shutil.which("sinfo") is None:
        return [
            Check(
                "slurm",
                WARN,
                "sinfo is not on PATH: no Slurm here, `submit` runs on this machine",
                "run on a Slurm login node (or load the Slurm module) to use the cluster",
            )
        ]
    try:
        found = slurm.partitions()
        checks = [Check("slurm: sinfo", OK, f"{len(found)} partitions: {', '.join(sorted(found))}")]
    except slurm.SlurmError as exc:
        checks = [Check("slurm: sinfo", FAIL, str(exc), "check SLURM_CONF and that slurmctld is up (`scontrol ping`)")]
    code, last = run_command(["sacct", "--noheader", "-X", "--starttime", "now", "--format=JobID", "--parsable2"])
    if code == 0:
        checks.append(Check("slurm: sacct", OK, "accounting answers"))
    else:
        checks.append(
            Check(
                "slurm: sacct",
                FAIL,
                f"sacct: {last or f'exit code {code}'}",
                "`hpcmarker status` needs Slurm accounting: ask the admins to enable slurmdbd",
            )
        )
    return checks


def check_partition(partition: str | None, known: dict[str, str], default: str | None) -> Check:
    """The partition (given, else the cluster's default) exists and has GPUs in its GRES."""
    gpu_parts = sorted(p for p, gres in known.items() if "gpu" in gres)
    hint = f"pass --partition {' or '.join(gpu_parts)}" if gpu_parts else "no partition here has GPUs in its GRES"
    name = partition or default
    if name is None:
        return Check("partition", FAIL, "no --partition and the cluster has no default partition", hint)
    if name not in known:
        return Check(f"partition {name}", FAIL, f"no such partition; partitions: {', '.join(sorted(known))}", hint)
    if "gpu" not in known[name]:
        return Check(f"partition {name}", FAIL, f"no GPUs (GRES {known[name] or 'none'})", hint)
    return Check(f"partition {name}", OK, f"GRES {known[name]}" + ("" if partition else " (the default partition)"))


def check_marker_install() -> Check:
    """marker-pdf installed (package metadata only, no import) and a version hpcmarker supports."""
    from hpc_marker.engines.marker import INSTALL_HINT, SUPPORTED, _series, marker_version

    version = marker_version()
    wanted = ", ".join(f"{a}.{b}.x" for a, b in SUPPORTED)
    if version is None:
        return Check("marker", FAIL, f"marker-pdf is not installed for {sys.executable}", INSTALL_HINT.split(": ")[-1])
    if _series(version) not in SUPPORTED:
        return Check(
            "marker",
            FAIL,
            f"marker-pdf {version} is not a supported version ({wanted})",
            f'pip install "marker-pdf=={wanted.split(", ")[-1].replace(".x", ".*")}"',
        )
    return Check("marker", OK, f"marker-pdf {version} (supported: {wanted})")


def _import(name: str) -> object:
    return importlib.import_module(name)


def check_marker_import() -> Check:
    """`import marker.models` works (catches broken torch/torchvision builds)."""
    started = time.monotonic()
    try:
        _import("marker.models")
    except Exception as exc:
        return Check(
            "marker: import",
            FAIL,
            f"import marker.models: {one_line(exc, with_type=True, empty='no detail')}",
            "reinstall torch and torchvision as a matching pair (docs/marker-versions.md, Installing)",
        )
    return Check("marker: import", OK, f"import marker.models took {time.monotonic() - started:.1f}s")


def check_marker_cache(server: bool = False) -> Check:
    """The font, weights and (2.x) inference pieces marker needs are on this node: no download at run time.
    `server`: the task starts marker 2.x's VLM server itself (only its weights are needed here)."""
    from hpc_marker.engines.cachepieces import PREFETCH_COMMAND, is_cache_piece
    from hpc_marker.engines.marker import missing_cache_pieces

    missing = missing_cache_pieces(server=server)
    if not missing:
        return Check("marker: cache", OK, "font and model weights present on this node")
    node = [p for p in missing if not is_cache_piece(p)]
    fix = PREFETCH_FIX.format(PREFETCH_COMMAND) + (f"; not a cache: {'; '.join(node)}" if node else "")
    if len(node) == len(missing):
        fix = "; ".join(node)
    return Check("marker: cache", FAIL, f"missing: {'; '.join(missing)}", fix)


def check_marker_server(profile: str) -> list[Check]:
    """marker 2.x: the inference server's binary (vllm, apptainer/singularity) is where the profile's jobs look."""
    from hpc_marker.config import ConfigError, load_config
    from hpc_marker.engines.marker import marker_version
    from hpc_marker.runtime import inference

    try:
        keys = {k: v for k, v in load_config().profile(profile).items() if k.startswith("inference_")}
        settings = inference.settings_for_run(None, keys, "marker", marker_version())
    except ConfigError:  # the template check names the unknown profile
        return []
    except inference.InferenceConfigError as exc:
        return [Check(SERVER_CHECK, FAIL, str(exc), f"fix the inference_* settings of profile {profile}")]
    mode, why = inference.effective_mode(settings, marker_version(), os.environ)
    what, _, fix = (inference.server_preflight(settings, marker_version()) or "").partition(": ")
    return [
        Check(SERVER_CHECK, FAIL, what, fix)
        if what
        else Check(SERVER_CHECK, OK, f"none started: {why}" if mode == "off" else f"{mode} ({why}): its binary is here")
    ]


def check_ollama(required: bool) -> Check:
    from hpc_marker.llm.process import OllamaError, find_ollama

    try:
        return Check("ollama", OK, find_ollama())
    except OllamaError as exc:
        return Check(
            "ollama",
            FAIL if required else WARN,
            str(exc) + ("" if required else " (only --llm needs it)"),
            "install Ollama or load its module on the nodes the LLM service job runs on",
        )


def ollama_url(host: str | None = None) -> str:
    """OLLAMA_HOST as ollama writes it (`host:port`, `0.0.0.0`, a URL) to a URL this node can call."""
    value = (host or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434").strip().rstrip("/")
    scheme, _, rest = value.rpartition("://")
    hostport = rest.split("/", 1)[0]
    name, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
    name = "127.0.0.1" if name in ("", "0.0.0.0") else name
    return f"{scheme or 'http'}://{name}:{port or '11434'}"


def manifest_path(models_dir: Path, model: str) -> Path:
    """Where a real Ollama keeps MODEL's manifest: manifests/<registry>/<namespace>/<name>/<tag>."""
    name, _, tag = model.rpartition(":") if ":" in model.rsplit("/", 1)[-1] else (model, "", "latest")
    parts = name.split("/")
    if len(parts) == 1:
        parts = ["library", *parts]
    if len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    return models_dir.joinpath("manifests", *parts, tag)


def check_llm_model(
    model: str, host: str | None = None, models_dir: str | None = None, timeout_s: float = 2.0
) -> Check:
    """MODEL is on the Ollama server at OLLAMA_HOST (when one answers) or its manifest is in OLLAMA_MODELS."""
    import httpx
    import ollama

    from hpc_marker.llm.client import ollama_client
    from hpc_marker.llm.settings import normalize_model

    url = ollama_url(host)
    folder = Path(models_dir or os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")
    fix = f"on a login node: hpcmarker prefetch --llm {model} (into the OLLAMA_MODELS the jobs use)"
    client = ollama_client(url, timeout_s)
    try:
        if normalize_model(model) in {normalize_model(m.model) for m in client.list().models if m.model}:
            return Check(f"llm {model}", OK, f"on the Ollama at {url}")
        server = f"not on the Ollama at {url}"
    except (httpx.HTTPError, ConnectionError, ollama.ResponseError):
        server = f"no Ollama answers at {url}"
    if manifest_path(folder, model).is_file():
        return Check(f"llm {model}", OK, f"manifest in OLLAMA_MODELS={folder} (blobs not verified; {server})")
    return Check(f"llm {model}", FAIL, f"{server}, and no manifest in OLLAMA_MODELS={folder}", fix)


def check_out(out: Path, min_free_gb: float = 10.0) -> Check:
    """OUT is (or can be made) a writable folder with at least `min_free_gb` free."""
    out = Path(out).expanduser()
    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    if base.exists() and not base.is_dir():
        return Check(f"out {out}", FAIL, f"{base} is not a folder", "choose another --out")
    try:
        if base == out:
            with tempfile.NamedTemporaryFile(dir=out, prefix=".hpcmarker-doctor-"):
                pass
        elif not os.access(base, os.W_OK | os.X_OK):
            raise PermissionError(f"{base} is not writable")
    except OSError as exc:
        return Check(f"out {out}", FAIL, f"cannot write there ({exc.strerror or exc})", "choose a folder you can write")
    free_gb = shutil.disk_usage(base).free / 1e9
    where = "writable" if base == out else f"can be created (under {base})"
    if free_gb < min_free_gb:
        return Check(
            f"out {out}",
            WARN,
            f"{where}; only {free_gb:.1f} GB free (< {min_free_gb:g} GB)",
            "free space or choose another --out (Markdown, images and logs land there)",
        )
    return Check(f"out {out}", OK, f"{where}; {free_gb:.0f} GB free")


def check_threads(env: dict[str, str] | None = None, cpus: int | None = None) -> Check:
    """OMP_NUM_THREADS unset on a many-core node: fine for hpcmarker's tasks (they cap themselves), not by hand."""
    env = os.environ if env is None else env
    cpus = cpus or os.cpu_count() or 1
    if env.get("OMP_NUM_THREADS"):
        return Check("threads", OK, f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} ({cpus} CPUs)")
    if cpus > 16:
        return Check(
            "threads",
            WARN,
            f"OMP_NUM_THREADS unset on {cpus} CPUs: hpcmarker's tasks cap their threads, "
            "but marker run by hand starts a thread per CPU in every pool",
            "export OMP_NUM_THREADS=4",
        )
    return Check("threads", OK, f"OMP_NUM_THREADS unset; {cpus} CPUs")
