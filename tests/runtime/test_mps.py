"""MPS for a task's workers, against the stand-in nvidia-cuda-mps-control: when a task starts one
(auto, on, off; never over gres/mps or a running daemon), its own pipe and log folders under the
job's temporary space, the environment the workers get, and the daemon stopped however the task
ends (a normal end, an exception, SIGTERM's TaskStopped, a daemon that ignores quit)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from standin.harness import path_with_standin

from hpc_marker.runtime import mps
from hpc_marker.runtime.mps import MpsFailed, decide, task_mps
from hpc_marker.util.processes import processes_with_env

GPU = {"CUDA_VISIBLE_DEVICES": "0"}


@pytest.fixture
def job_tmp():
    """A job's temporary folder with a short path, as Slurm's are (/tmp/slurm-<id>, /local/<id>)."""
    folder = Path(tempfile.mkdtemp(prefix="job-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def environ(tmp_path, job_tmp) -> dict[str, str]:
    return dict(
        os.environ,
        PATH=path_with_standin(),
        TMPDIR=str(job_tmp),
        CUDA_VISIBLE_DEVICES="1",
        SLURM_JOB_ID="77",
        SLURM_ARRAY_TASK_ID="3",
        CUDA_MPS_PIPE_DIRECTORY=str(tmp_path / "no-daemon"),
    )


def daemons(pipe: str) -> list[int]:
    return processes_with_env("CUDA_MPS_PIPE_DIRECTORY", pipe, command_has="nvidia-cuda-mps")


def test_decide_follows_the_engine_the_workers_and_what_already_shares_the_gpu(tmp_path):
    none = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    assert decide("auto", "marker", 1, 3, {**GPU, **none}).start
    assert not decide("auto", "marker", 1, 1, {**GPU, **none}).start  # one worker: nothing to share
    assert "inference server" in decide("auto", "marker", 2, 4, {**GPU, **none}).why
    assert "does not run models" in decide("auto", "text", None, 4, {**GPU, **none}).why
    assert decide("on", "text", None, 1, {**GPU, **none}).start  # on: whenever there is a GPU
    assert not decide("on", "marker", 1, 4, none).start and not decide("off", "marker", 1, 4, {**GPU, **none}).start
    for shared in (
        {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50"},
        {"SLURM_JOB_GRES": "gpu:0,mps:50"},
        {"SLURM_TRES_PER_TASK": "gres/mps:25"},
    ):
        decision = decide("on", "marker", 1, 4, {**GPU, **none, **shared})
        assert not decision.start and "gres/mps" in decision.why
    (tmp_path / "control").touch()  # a daemon already listens on this pipe folder
    running = decide("auto", "marker", 1, 4, {**GPU, **none})
    assert not running.start and "already runs" in running.why


def test_a_task_starts_its_own_daemon_and_stops_it_after(environ, job_tmp, tmp_path, log_lines):
    with task_mps("auto", "marker", 3, environ=environ) as env:
        pipe, logs = Path(env["CUDA_MPS_PIPE_DIRECTORY"]), Path(env["CUDA_MPS_LOG_DIRECTORY"])
        assert pipe.parent.parent == job_tmp and pipe.parent.name.startswith("hpcm-mps-77-3-")
        assert (pipe / "control").exists() and len(str(pipe / "control")) < 108
        assert oct(pipe.stat().st_mode & 0o777) == "0o700" and oct(pipe.parent.stat().st_mode & 0o777) == "0o700"
        assert len(daemons(str(pipe))) == 1
        assert "CUDA_VISIBLE_DEVICES=1" in (logs / "control.log").read_text()  # the task's GPU only
        control_log = logs / "control.log"
        started = control_log.read_text()
    assert daemons(str(pipe)) == [] and not pipe.parent.exists()
    assert "start daemon" in started
    assert (
        any("control daemon started" in line for line in log_lines())
        and log_lines()[-1] == "MPS: control daemon stopped"
    )
    deep = tmp_path / ("a-long-job-temporary-folder-" * 3)  # its socket paths would not fit: /tmp instead
    deep.mkdir()
    with task_mps("auto", "marker", 3, environ={**environ, "TMPDIR": str(deep)}) as env:
        assert Path(env["CUDA_MPS_PIPE_DIRECTORY"]).parent.parent == Path("/tmp")
    assert daemons(env["CUDA_MPS_PIPE_DIRECTORY"]) == []


def test_the_daemon_is_stopped_however_the_block_ends(environ, monkeypatch, log_lines):
    class Stopped(BaseException):  # like the task's TaskStopped on SIGTERM
        pass

    for error in (RuntimeError("engine failed"), Stopped("SIGTERM")):
        with pytest.raises(type(error)), task_mps("on", "text", 1, environ=environ) as env:
            pipe = env["CUDA_MPS_PIPE_DIRECTORY"]
            raise error
        assert daemons(pipe) == []
    monkeypatch.setattr(mps, "STOP_TIMEOUT_S", 1.0)
    with task_mps("on", "text", 1, environ={**environ, "STANDIN_MPS_IGNORE_QUIT": "1"}) as env:
        pipe = env["CUDA_MPS_PIPE_DIRECTORY"]
    assert daemons(pipe) == [] and any("still runs" in line for line in log_lines())


def test_missing_or_failing_daemon_skips_under_auto_and_fails_under_on(environ, job_tmp, tmp_path, log_lines):
    bare = {**environ, "PATH": str(tmp_path / "empty")}
    with task_mps("auto", "marker", 2, environ=bare) as env:
        assert env == {}
    assert "not on PATH" in log_lines()[-1]
    with (
        pytest.raises(MpsFailed, match="--mps on: nvidia-cuda-mps-control is not on PATH"),
        task_mps("on", "marker", 2, environ=bare),
    ):
        pass
    broken = {**environ, "STANDIN_MPS_FAIL_START": "MPS is not supported on this GPU"}
    with task_mps("auto", "marker", 2, environ=broken) as env:
        assert env == {}
    assert "-d failed: MPS is not supported on this GPU" in log_lines()[-1]
    with pytest.raises(MpsFailed, match="not supported"), task_mps("on", "marker", 2, environ=broken):
        pass
    assert not list(job_tmp.iterdir())  # nothing left in the job's temporary space
    with task_mps("off", "marker", 4, environ=environ) as env:
        assert env == {}
    assert log_lines()[-1] == "MPS: not started: off (--mps off)"
