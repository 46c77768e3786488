"""Workers per GPU when the user leaves `--workers-per-gpu` at `auto`.

Owns: what one worker needs per engine (marker 1.x loads its models in every worker, about 3.5 GB of
GPU memory each; marker 2.x workers are thin clients of the task's inference server, so CPUs bound
them; the text and benchmark engines run on CPUs only), reading the visible GPU's memory
(nvidia-smi, else torch in a short-lived subprocess so the task itself never holds a CUDA context),
and `choose_workers`, which the task calls once and which logs its choice and reasons in one line:

    workers = choose_workers(record.workers_per_gpu or None, record.engine, cpus)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hpc_marker.engines import marker as marker_engine
from hpc_marker.util.text import plural

logger = logging.getLogger(__name__)

MARKER1_GB_PER_WORKER = 3.5  # users measured 2.5-3.4 GB per marker 1.x worker
GPU_HEADROOM_GB = 1.0  # CUDA contexts, fragmentation
CPUS_PER_MARKER_WORKER = 2  # pdftext, rendering and post-processing keep about two CPUs busy
DEFAULT_CAP = 8
QUERY = "--query-gpu=index,uuid,memory.total,memory.free"
TORCH_PROBE = "import json, torch\nprint(json.dumps(torch.cuda.mem_get_info(0) if torch.cuda.is_available() else None))"


@dataclass(frozen=True)
class GpuMemory:
    total_mb: float
    free_mb: float

    def describe(self) -> str:
        return f"{self.free_mb / 1024:.1f} of {self.total_mb / 1024:.1f} GB free"


def derive_workers(
    engine: str, marker_major: int | None, cpus: int, gpu: GpuMemory | None, cap: int = DEFAULT_CAP
) -> tuple[int, str]:
    """(workers, why) for one task. marker_major None (unknown) is treated as 1.x. Pure."""
    cpus, cap = max(1, cpus), max(1, cap)
    if engine != "marker":
        return min(cpus, cap), (
            f"engine {engine} runs on CPUs only: one worker per CPU ({plural(cpus, 'CPU')}), cap {cap}"
        )
    by_cpu = max(1, cpus // CPUS_PER_MARKER_WORKER)
    cpu_why = f"{by_cpu} by CPUs ({cpus} CPUs, {CPUS_PER_MARKER_WORKER} per worker)"
    if (marker_major or 1) >= 2:
        return min(by_cpu, cap), f"marker 2.x workers are thin clients of the inference server: {cpu_why}, cap {cap}"
    if gpu is None:
        return min(by_cpu, cap), f"marker 1.x, GPU memory unknown: {cpu_why}, cap {cap}"
    by_memory = max(1, math.floor((gpu.free_mb / 1024 - GPU_HEADROOM_GB) / MARKER1_GB_PER_WORKER))
    memory_why = f"{by_memory} by GPU memory ({gpu.describe()}, {MARKER1_GB_PER_WORKER:g} GB per worker)"
    return min(by_memory, by_cpu, cap), f"marker 1.x: {memory_why}, {cpu_why}, cap {cap}"


def visible_gpus(environ: Mapping[str, str]) -> list[str] | None:
    """The GPUs CUDA_VISIBLE_DEVICES lists (indices or UUIDs); [] when it hides them all; None when unset. Pure."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    listed = [x.strip() for x in value.split(",") if x.strip()]
    return [] if not listed or listed[0] in ("-1", "NoDevFiles") else listed


def visible_gpu(environ: Mapping[str, str]) -> str | None:
    """The task's first visible GPU (index or UUID); '' when none is visible; None when unset. Pure."""
    gpus = visible_gpus(environ)
    return None if gpus is None else (gpus[0] if gpus else "")


def parse_nvidia_smi(text: str, visible: str | None) -> GpuMemory | None:
    """nvidia-smi's `index, uuid, total, free` rows (MiB) -> the visible GPU's memory; None when it is
    not one of them (or ambiguous). Pure."""
    if visible == "":
        return None
    rows = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            try:
                rows.append((parts[0], parts[1], GpuMemory(total_mb=float(parts[2]), free_mb=float(parts[3]))))
            except ValueError:
                continue
    if visible is None:
        return rows[0][2] if rows else None
    for index, uuid, memory in rows:
        if visible == index or (not visible.isdigit() and uuid.startswith(visible)):
            return memory
    return rows[0][2] if len(rows) == 1 else None  # device cgroups often renumber the one GPU a job sees


def read_gpu_memory(
    environ: Mapping[str, str] | None = None, python: str = sys.executable, timeout_s: float = 60.0
) -> GpuMemory | None:
    """The visible GPU's total and free memory, or None without a GPU (or an answer)."""
    environ = os.environ if environ is None else environ
    visible = visible_gpu(environ)
    if visible == "":
        return None
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi:
        try:
            out = subprocess.run(
                [smi, QUERY, "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=dict(environ),
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return parse_nvidia_smi(out.stdout, visible) if out.returncode == 0 else None
    try:  # torch sees only the visible GPUs, so device 0 is the task's
        out = subprocess.run(
            [python, "-c", TORCH_PROBE], capture_output=True, text=True, timeout=timeout_s, env=dict(environ)
        )
        free, total = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, IndexError):
        return None
    return GpuMemory(total_mb=total / 2**20, free_mb=free / 2**20)


def choose_workers(
    requested: int | None,
    engine: str,
    cpus: int,
    *,
    cap: int = DEFAULT_CAP,
    gpu_reader: Callable[[], GpuMemory | None] = read_gpu_memory,
) -> int:
    """`requested` when given (> 0), else derived for this engine, these CPUs and this GPU; logged."""
    if requested:
        logger.info("workers per GPU: %d (requested)", requested)
        return requested
    major = marker_engine.marker_major(marker_engine.marker_version()) if engine == "marker" else None
    gpu = gpu_reader() if engine == "marker" and (major or 1) < 2 else None
    workers, why = derive_workers(engine, major, cpus, gpu, cap)
    logger.info("workers per GPU: %d (auto: %s)", workers, why)
    return workers


@dataclass(frozen=True)
class LocalFit:
    """A local run fitted to this machine: how many tasks, each with which cores and GPU."""

    tasks: int
    cores_per_task: int
    gpus: tuple[int, ...]  # the GPU of each task slot; empty: the tasks run on the CPU
    workers: int | None  # per task, where known now (requested, or a CPU engine's auto); None: each task chooses


def fit_local(
    asked: int,
    workers_per_gpu: int,
    engine: str,
    cores: int,
    gpus: list[int],
    mps: str = "auto",
    gpu_work: bool | None = None,
) -> LocalFit:
    """Tasks for `--gpus asked` on a machine of `cores` cores and `gpus` GPUs: marker (or any engine whose
    `gpu_work` is true: engines.engine_uses_gpu) gets a GPU per task where there are GPUs, and so does any engine with
    `--mps on` (MPS daemons are asked for: GPU work); the CPU
    engines (and marker without a GPU) run on the CPU, one task per core at most
    (marker: CPUS_PER_MARKER_WORKER); tasks × workers stay within the cores (an explicit count of workers per
    task is honoured: fewer tasks). Each task gets an equal share of the cores. Pure."""
    cores = max(1, cores)
    per_task = (CPUS_PER_MARKER_WORKER if engine == "marker" else 1) * max(1, workers_per_gpu)
    gpu_work = engine == "marker" if gpu_work is None else gpu_work
    on_gpus = (gpu_work or mps == "on") and bool(gpus)
    tasks = max(1, min([asked, cores // per_task] + ([len(gpus)] if on_gpus else [])))
    share = max(1, cores // tasks)
    workers = workers_per_gpu or (min(share, DEFAULT_CAP) if engine != "marker" else None)
    return LocalFit(tasks, share, tuple(gpus[:tasks]) if on_gpus else (), workers)


def local_fit_note(fit: LocalFit, asked: int, engine: str, cores: int, gpus: list[int]) -> str | None:
    """The one line that says how a local run was fitted to the machine, where that is not what was asked
    (fewer tasks, or marker on the CPU); None otherwise. Pure."""
    if fit.tasks >= asked and (engine != "marker" or fit.gpus):
        return None
    found = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} ({','.join(map(str, gpus))})" if gpus else "no GPU"
    workers = f"{fit.workers} worker{'s' if fit.workers != 1 else ''}" if fit.workers else "auto workers"
    where = "each on its own GPU" if fit.gpus else "on the CPU"
    return (
        f"note: local run: {cores} cores, {found}: {fit.tasks} task{'s' if fit.tasks != 1 else ''} × {workers} "
        f"{where} (asked --gpus {asked})"
    )
