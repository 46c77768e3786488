"""NVIDIA MPS for a task's workers: several processes share one GPU without time-slicing it.

marker 1.x loads its models in every worker, so `--workers-per-gpu K` puts K CUDA processes on one
GPU; without MPS the GPU switches between their contexts (users saw 15-20 % GPU use with one worker,
and little gain from more). marker's own multi-GPU script starts an MPS control daemon per GPU;
here the task does it, for its own GPU only:

- `decide(mode, engine, marker_major, workers, environ)` (pure): `off` never; `on` always where the
  task has a GPU; `auto` only for marker 1.x with more than one worker. Neither starts one where
  Slurm already shares the GPU through gres/mps (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, gres/mps in the
  job's GRES) or an MPS daemon already answers on CUDA_MPS_PIPE_DIRECTORY (or /tmp/nvidia-mps).
- `task_mps(...)` starts `nvidia-cuda-mps-control -d` with its own pipe and log folders in a private
  folder under the job's temporary space ($TMPDIR, else /tmp: the pipe path must stay short), yields
  the CUDA_MPS_PIPE_DIRECTORY / CUDA_MPS_LOG_DIRECTORY the workers need (the task puts them in its
  environment before any worker is spawned), and stops the daemon however the task ends: `quit` on
  its control pipe, then SIGTERM/SIGKILL to whatever still runs with that pipe folder, then the
  folder is removed. (A task killed by SIGKILL cannot stop it; Slurm's cgroup ends it with the job.)

    with task_mps(record.mps, record.engine, workers) as env:
        os.environ.update(env)
        ...  # the worker pool
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.engines.marker import marker_major, marker_version
from hpc_marker.servers.health import NotReady, WaitTimeout, poll_until
from hpc_marker.util.errors import UserError
from hpc_marker.util.processes import processes_with_env, terminate_tree

logger = logging.getLogger(__name__)
MODES = ("auto", "on", "off")
CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE_DIRECTORY = "/tmp/nvidia-mps"
MAX_SOCKET_PATH = 100  # the daemon's UNIX sockets live in the pipe folder: sun_path holds 108 bytes
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class MpsFailed(RuntimeError):
    """`--mps on` and the daemon cannot be started (one line)."""


class MpsModeError(UserError):
    """An --mps value that is not auto, on or off."""


@dataclass(frozen=True)
class Decision:
    start: bool
    why: str


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise MpsModeError(f"--mps {mode!r}: choose from {', '.join(MODES)}")
    return mode


def shared_by_slurm(environ: Mapping[str, str]) -> bool:
    """Slurm's gres/mps already shares this GPU (it sets CUDA_MPS_ACTIVE_THREAD_PERCENTAGE). Pure."""
    if environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"):
        return True
    return any("mps" in environ.get(name, "") for name in ("SLURM_JOB_GRES", "SLURM_STEP_GRES", "SLURM_TRES_PER_TASK"))


def running_daemon(environ: Mapping[str, str]) -> str | None:
    """The pipe folder of an MPS daemon this process would use already, or None."""
    folder = environ.get("CUDA_MPS_PIPE_DIRECTORY") or DEFAULT_PIPE_DIRECTORY
    return folder if Path(folder, "control").exists() else None


def decide(mode: str, engine: str, major: int | None, workers: int, environ: Mapping[str, str]) -> Decision:
    """Whether this task starts an MPS daemon, and why (for its log). Pure apart from one stat."""
    if mode == "off":
        return Decision(False, "off (--mps off)")
    gpus = environ.get("CUDA_VISIBLE_DEVICES", "")
    if not gpus or gpus == "NoDevFiles":
        return Decision(False, "this task has no GPU")
    if shared_by_slurm(environ):
        return Decision(False, "Slurm already shares this GPU through gres/mps")
    running = running_daemon(environ)
    if running:
        return Decision(False, f"an MPS daemon already runs (pipe folder {running})")
    if mode == "auto":
        if engine != "marker":
            return Decision(False, f"engine {engine} does not run models on the GPU")
        if (major or 1) >= 2:
            return Decision(False, "marker 2.x runs its models in the inference server, not in the workers")
        if workers < 2:
            return Decision(False, "one worker on this GPU")
    return Decision(True, f"{workers} workers share GPU {gpus}" + (" (--mps on)" if mode == "on" else ""))


def _private_base(environ: Mapping[str, str]) -> Path:
    """A new 0700 folder under the job's temporary space ($TMPDIR), or /tmp where $TMPDIR's path would
    make the daemon's socket paths too long."""
    prefix = f"hpcm-mps-{environ.get('SLURM_JOB_ID') or 'local'}-{environ.get('SLURM_ARRAY_TASK_ID') or os.getpid()}-"
    longest = f"/{prefix}XXXXXXXX/pipe/control_privileged"  # mkdtemp adds 8 characters
    for parent in (environ.get("TMPDIR"), "/tmp"):
        if parent and os.path.isdir(parent) and len(parent.rstrip("/") + longest) <= MAX_SOCKET_PATH:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    return Path(tempfile.mkdtemp(prefix="hpcm-mps-", dir="/tmp"))


def _daemons(pipe: Path) -> list[int]:
    return processes_with_env("CUDA_MPS_PIPE_DIRECTORY", str(pipe), command_has="nvidia-cuda-mps")


def _stop(exe: str, env: dict[str, str], pipe: Path) -> None:
    """`quit` to the daemon; what still runs with this pipe folder is terminated."""
    try:
        quit_run = subprocess.run(
            [exe], input="quit\n", env=env, capture_output=True, text=True, timeout=STOP_TIMEOUT_S, check=False
        )
        answer = (quit_run.stderr or quit_run.stdout).strip()
        if quit_run.returncode != 0:
            logger.warning(f"MPS: quit answered {quit_run.returncode}: {answer[:200]}")
    except subprocess.TimeoutExpired:
        logger.warning(f"MPS: quit got no answer within {STOP_TIMEOUT_S:g}s")

    def gone(_left: float) -> bool | NotReady:
        return True if not _daemons(pipe) else NotReady("still running")

    try:
        poll_until(gone, STOP_TIMEOUT_S, interval_s=0.1)
    except WaitTimeout:
        left = _daemons(pipe)
        logger.warning(f"MPS: daemon {left} still runs {STOP_TIMEOUT_S:g}s after quit: terminating it")
        for pid in left:
            terminate_tree(pid, grace_s=5.0)


@contextmanager
def task_mps(
    mode: str,
    engine: str,
    workers: int,
    *,
    environ: Mapping[str, str] | None = None,
    binary: str = CONTROL,
) -> Iterator[dict[str, str]]:
    """Start this task's MPS daemon if `decide` says so; yield the environment the workers need ({}
    without one); stop the daemon and remove its folders on leaving, however the block ends."""
    environ = dict(os.environ if environ is None else environ)
    decision = decide(mode, engine, marker_major(marker_version()), workers, environ)
    exe = shutil.which(binary, path=environ.get("PATH")) if decision.start else None
    if decision.start and exe is None:
        if mode == "on":
            raise MpsFailed(f"--mps on: {binary} is not on PATH (load the CUDA module in the profile's setup lines)")
        decision = Decision(False, f"{binary} is not on PATH")
    if not decision.start:
        logger.info(f"MPS: not started: {decision.why}")
        yield {}
        return
    assert exe is not None
    base = _private_base(environ)
    pipe, logs = base / "pipe", base / "log"
    own = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logs)}
    env = dict(environ, **own)
    try:
        _start(exe, env, pipe, logs)
    except MpsFailed as exc:
        if _daemons(pipe):  # started, but not as it should: do not leave it behind
            _stop(exe, env, pipe)
        shutil.rmtree(base, ignore_errors=True)
        if mode == "on":
            raise
        logger.warning(f"MPS: not started: {exc}")
        yield {}
        return
    logger.info(f"MPS: control daemon started for {decision.why}; pipe folder {pipe}, logs {logs}")
    try:
        yield own
    finally:
        _stop(exe, env, pipe)
        shutil.rmtree(base, ignore_errors=True)
        logger.info("MPS: control daemon stopped")


def _start(exe: str, env: dict[str, str], pipe: Path, logs: Path) -> None:
    """`nvidia-cuda-mps-control -d` (it returns once the daemon runs); MpsFailed with its message."""
    pipe.mkdir(mode=0o700)
    logs.mkdir(mode=0o700)
    try:
        started = subprocess.run(
            [exe, "-d"], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise MpsFailed(f"{Path(exe).name} -d did not return within {START_TIMEOUT_S:g}s") from None
    if started.returncode != 0:
        why = (started.stderr or started.stdout).strip().splitlines() or [f"exit code {started.returncode}"]
        raise MpsFailed(f"{Path(exe).name} -d failed: {why[-1][:300]}")

    def listening(_left: float) -> bool | NotReady:
        return True if (pipe / "control").exists() else NotReady(f"no {pipe / 'control'} yet")

    try:  # workers that connect before the daemon listens would run without it
        poll_until(listening, START_TIMEOUT_S, interval_s=0.05)
    except WaitTimeout as timeout:
        raise MpsFailed(
            f"the MPS control daemon did not open its pipe within {START_TIMEOUT_S:g}s ({timeout.last})"
        ) from None
