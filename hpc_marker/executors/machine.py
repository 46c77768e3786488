"""This machine, as a local run sees it: its cores (this process's affinity, or HPCMARKER_LOCAL_CORES) and GPUs
(CUDA_VISIBLE_DEVICES, nvidia-smi, the driver), how many tasks fit it (runtime/sizing.fit_local), and each
task's share of the cores, and the GPUs a running task holds (`held_gpus`: what a grown task may not take).
(From local.py, which starts the processes.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

from hpc_marker.engines import engine_uses_gpu
from hpc_marker.runtime.sizing import LocalFit, fit_local, visible_gpus
from hpc_marker.util.errors import UserError
from hpc_marker.util.processes import process_environ

CORES_ENV = "HPCMARKER_LOCAL_CORES"  # fit local runs as if this machine had N cores (tests: N tasks on 2 cores)
GPU_QUERY_TIMEOUT_S = 30.0


class LocalDevicesError(UserError):
    """This machine's cores or GPUs, as the environment gives them, cannot be used for local tasks."""


@dataclass(frozen=True)
class Machine:
    """What a local run may use here."""

    cores: tuple[int, ...]  # the CPUs this process may run on (0..N-1 where HPCMARKER_LOCAL_CORES says N)
    pinned: bool  # the cores are real ones: each task is pinned to its share of them
    gpus: tuple[int, ...]  # device numbers


def _machine_gpus(environ: Mapping[str, str]) -> list[int]:
    """The GPUs local tasks may use: the caller's CUDA_VISIBLE_DEVICES where set (empty: none), else those
    `nvidia-smi -L` lists, else those of /proc/driver/nvidia/gpus; none without a driver."""
    listed = visible_gpus(environ)
    if listed is not None:
        try:
            return [int(x) for x in listed]
        except ValueError:
            raise LocalDevicesError(
                f"CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']!r}: local runs need device numbers"
            ) from None
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi:
        try:
            done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=GPU_QUERY_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError):
            return []
        return (
            list(range(sum(line.startswith("GPU ") for line in done.stdout.splitlines())))
            if not done.returncode
            else []
        )
    try:
        return list(range(len(os.listdir("/proc/driver/nvidia/gpus"))))
    except OSError:
        return []


def this_machine(environ: Mapping[str, str] | None = None) -> Machine:
    """This machine's cores (this process's affinity, or HPCMARKER_LOCAL_CORES) and GPUs."""
    environ = os.environ if environ is None else environ
    cores, pinned = tuple(sorted(os.sched_getaffinity(0))), True
    if pretend := environ.get(CORES_ENV, ""):
        if not pretend.isdigit() or int(pretend) < 1:
            raise LocalDevicesError(f"{CORES_ENV}={pretend!r}: a number of cores, at least 1")
        cores, pinned = tuple(range(int(pretend))), False
    return Machine(cores, pinned, tuple(_machine_gpus(environ)))


def fit_machine(asked: int, workers_per_gpu: int, engine: str, machine: Machine, mps: str = "auto") -> LocalFit:
    cores, gpus = len(machine.cores), list(machine.gpus)
    return fit_local(asked, workers_per_gpu, engine, cores, gpus, mps, gpu_work=engine_uses_gpu(engine))


@contextmanager
def pinned(machine: Machine, fit: LocalFit, slot: int) -> Iterator[None]:
    """Processes started here run on task slot `slot`'s share of the cores (inherited across fork and exec),
    so a task's auto workers and threads fit its share; unchanged where the cores are pretended."""
    if not machine.pinned:
        yield
        return
    share = fit.cores_per_task
    first = slot % max(1, len(machine.cores) // share) * share
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, machine.cores[first : first + share])
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def held_gpus(pids: list[int]) -> set[int]:
    """The GPUs these running task processes hold: the devices of the CUDA_VISIBLE_DEVICES each was started with
    (each local job is started with its task's GPU so: executors/localprocs.start_job; empty: the CPU)."""
    held: set[int] = set()
    for pid in pids:
        held.update(int(x) for x in process_environ(pid).get("CUDA_VISIBLE_DEVICES", "").split(",") if x.isdigit())
    return held


def gpus_for_grown(machine: Machine, held: set[int], tasks: int, engine: str, mps: str) -> Machine | str:
    """The machine as `tasks` grown tasks may use it: its GPUs that no running task holds (`held`); where the
    run's tasks get GPUs (fit_local: GPU work, or --mps on) and fewer than `tasks` are free, why not (one line:
    a local task never shares a GPU)."""
    free = tuple(gpu for gpu in machine.gpus if gpu not in held)
    if (engine_uses_gpu(engine) or mps == "on") and machine.gpus and len(free) < tasks:
        listed = ",".join(map(str, free)) or "none"
        return (
            f"{len(free)} of this machine's GPUs ({','.join(map(str, machine.gpus))}) free for {tasks} new "
            f"task{'s' if tasks != 1 else ''} (free: {listed}; a local task takes a GPU no running task holds)"
        )
    return replace(machine, gpus=free)
