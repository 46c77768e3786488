"""The per-task inference server (hpc_marker/inference.py), against stand-in `vllm` and `apptainer`
commands (tests/standin/) on PATH: start, health wait, environment, failures, stopping the process group."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from hpc_marker.engines import marker as marker_engine
from hpc_marker.runtime import inference
from hpc_marker.runtime.inference import (
    InferenceConfigError,
    InferenceServerFailed,
    InferenceSettings,
    VlmSettings,
    task_inference_server,
)
from hpc_marker.servers.compilecache import LOCK_NAME
from hpc_marker.util.processes import group_members

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standin"


class Stopped(BaseException):
    """Like task.TaskStopped: a BaseException raised in the task on SIGTERM."""


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An environment with the stand-ins first on PATH, a GPU and marker 2.x; no server of the user's."""
    monkeypatch.setattr(marker_engine, "marker_version", lambda: "2.0.0")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SURYA_", "VLLM_", "STANDIN_"))}
    environ.update(
        PATH=f"{STANDIN}{os.pathsep}{os.environ['PATH']}",
        CUDA_VISIBLE_DEVICES="3",
        VLLM_GPU_TYPE="h100",
        STANDIN_VLLM_PID_FILE=str(tmp_path / "pids"),
        STANDIN_VLLM_REQUEST_LOG=str(tmp_path / "requests.log"),
    )
    return environ


def native(**kw) -> InferenceSettings:
    return InferenceSettings(**dict(dict(mode="native", startup_timeout_s=20, stop_grace_s=5), **kw))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def server_pids(tmp_path: Path) -> list[int]:
    return [int(x) for x in (tmp_path / "pids").read_text().split()]


# --- pure: settings, argv, environment --------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "profile", "engine", "version", "mode"),
    [
        (None, {}, "marker", "2.0.0", "native"),
        ("auto", {}, "marker", "2.0.0", "native"),
        (None, {}, "marker", "1.10.2", "off"),
        ("native", {}, "marker", "1.10.2", "off"),  # marker 1.x runs its models in the workers
        ("off", {"inference_server": "native"}, "marker", "2.0.0", "off"),
        (None, {"inference_server": "off"}, "marker", "2.0.0", "off"),
        ("auto", {"inference_server": "off"}, "marker", "2.0.0", "off"),  # auto: the profile's, else native
        ("native", {"inference_server": "off"}, "marker", "2.0.0", "native"),  # the flag beats the profile
    ],
)
def test_mode_comes_from_flag_profile_and_marker(flag, profile, engine, version, mode):
    assert inference.settings_for_run(flag, profile, engine, version).mode == mode


def test_settings_for_run_other_engines_and_errors(tmp_path):
    assert inference.settings_for_run("native", {}, "text", "2.0.0") is None
    image = tmp_path / "vllm.sif"
    image.write_bytes(b"sif")
    got = inference.settings_for_run(
        None,
        {
            "inference_server": "apptainer",
            "inference_image": str(image),
            "inference_args": "--enforce-eager --max-num-seqs 16",
        },
        "marker",
        "2.0.0",
        60,
    )
    assert (got.mode, got.image, got.extra_args, got.startup_timeout_s) == (
        "apptainer",
        str(image),
        ("--enforce-eager", "--max-num-seqs", "16"),
        60.0,
    )
    assert InferenceSettings.from_json(json.loads(json.dumps(got.to_json()))) == got
    assert InferenceSettings.from_json(None).mode == "off"
    for flag, profile, message in [
        ("apptainer", {}, "needs an image"),
        ("singularity", {"inference_image": str(tmp_path / "none.sif")}, "none.sif: no such file"),
        (None, {"inference_server": "docker"}, "'docker': choose from auto, off, native, apptainer, singularity"),
    ]:
        with pytest.raises(InferenceConfigError, match=message):
            inference.settings_for_run(flag, profile, "marker", "2.0.0")
    with pytest.raises(InferenceConfigError, match="must be positive"):
        inference.settings_for_run("native", {}, "marker", "2.0.0", -1)
    assert inference.settings_for_run(
        "apptainer", {"inference_image": "docker://vllm/vllm-openai:v0.20.1"}, "marker", "2.0.0"
    ).image.startswith("docker://")  # a URI is not a file


def test_argv_is_what_surya_gives_its_container():
    vlm = VlmSettings(extra_args="--max-num-seqs 12 --trust-remote-code")
    argv = inference.server_argv(native(extra_args=("--enforce-eager",)), vlm, 41234, inference.vllm_capacity(80))
    assert argv[:11] == [
        "vllm",
        "serve",
        "datalab-to/surya-ocr-2",
        "--host",
        "127.0.0.1",
        "--port",
        "41234",
        "--served-model-name",
        "datalab-to/surya-ocr-2",
        "--no-enforce-eager",
        "--max-num-seqs",
    ]
    pairs = dict(itertools.pairwise(argv[:-4]))  # consecutive pairs, before the extra args
    assert pairs["--max-num-seqs"] == "104" and pairs["--max-num-batched-tokens"] == "16384"
    assert pairs["--dtype"] == "bfloat16" and pairs["--max-model-len"] == "18000"
    assert pairs["--gpu-memory-utilization"] == "0.85"
    assert json.loads(pairs["--mm-processor-kwargs"]) == {"min_pixels": 3136, "max_pixels": 6291456}
    assert json.loads(pairs["--speculative-config"]) == {"method": "mtp", "num_speculative_tokens": 2}
    assert argv[-4:] == ["--max-num-seqs", "12", "--trust-remote-code", "--enforce-eager"]  # user's last: they win
    assert inference.server_max_num_seqs(argv) == 12
    no_mtp = inference.server_argv(native(), VlmSettings(enable_mtp=False), 1, (1024, 8))
    assert "--speculative-config" not in no_mtp and inference.server_max_num_seqs(no_mtp) == 8


def test_apptainer_argv_wraps_the_same_serve_command():
    vlm, capacity = VlmSettings(), inference.vllm_capacity(24)
    serve = inference.server_argv(native(), vlm, 5000, capacity)
    for mode in ("apptainer", "singularity"):
        argv = inference.server_argv(InferenceSettings(mode=mode, image="/c/vllm.sif"), vlm, 5000, capacity)
        assert argv == [mode, "exec", "--nv", "/c/vllm.sif", *serve]
    assert inference.resolve_binary("singularity", {"apptainer": "/opt/bin/apptainer"}.get) == "/opt/bin/apptainer"
    with pytest.raises(InferenceServerFailed, match="apptainer or singularity is not on PATH"):
        inference.resolve_binary("apptainer", lambda name: None)


def test_capacity_follows_surya_table():
    assert inference.vllm_capacity(24) == (8192, 32)  # surya's baseline (its default VLLM_GPU_TYPE 4090)
    assert inference.vllm_capacity(16) == (4096, 16)
    assert inference.vllm_capacity(81559 / 1024) == inference.vllm_capacity(80)  # an H100 as nvidia-smi reports it


def test_client_env_sizes_concurrency_and_bypasses_proxies():
    vlm = VlmSettings()
    env = inference.client_env("http://127.0.0.1:5000", 104, 4, vlm, {})
    assert env == {
        "SURYA_INFERENCE_URL": "http://127.0.0.1:5000/v1",
        "SURYA_INFERENCE_BACKEND": "vllm",
        "SURYA_INFERENCE_AUTOSTART": "false",
        "SURYA_INFERENCE_KEEP_ALIVE": "false",
        "SURYA_INFERENCE_PARALLEL": "39",
    }  # ceil(104 * 1.5 / 4), like marker's own CLI
    assert inference.client_env("u", 8, 100, vlm, {})["SURYA_INFERENCE_PARALLEL"] == "1"
    assert "SURYA_INFERENCE_PARALLEL" not in inference.client_env("u", 8, 1, VlmSettings(parallel=5), {})
    proxied = inference.client_env("u", 8, 1, vlm, {"https_proxy": "http://proxy:3128", "no_proxy": "corp,localhost"})
    assert proxied["no_proxy"] == proxied["NO_PROXY"] == "corp,localhost,127.0.0.1"


def test_effective_mode_turns_off_for_marker1_and_a_users_server():
    assert inference.effective_mode(native(), "1.10.2", {})[0] == "off"
    mode, why = inference.effective_mode(native(), "2.0.0", {"SURYA_INFERENCE_URL": "http://gpu7:8000/v1"})
    assert mode == "off" and "http://gpu7:8000/v1" in why
    assert inference.effective_mode(native(), "2.0.0", {}) == ("native", "native for marker-pdf 2.0.0")


def test_vlm_settings_from_env():
    vlm = VlmSettings.from_env(
        {
            "SURYA_MODEL_CHECKPOINT": "/models/surya",
            "VLLM_DTYPE": "float16",
            "VLLM_ENABLE_MTP": "false",
            "VLLM_EXTRA_ARGS": "--x 1",
            "SURYA_INFERENCE_PARALLEL": "6",
        }
    )
    assert (vlm.checkpoint, vlm.dtype, vlm.enable_mtp, vlm.extra_args, vlm.parallel, vlm.gpu_type) == (
        "/models/surya",
        "float16",
        False,
        "--x 1",
        6,
        None,
    )
    assert VlmSettings.from_env({}) == VlmSettings()


# --- the server's lifecycle, with the stand-in -----------------------------------------------


def test_healthy_start_yields_env_and_stop_ends_the_process_group(env, tmp_path, log_lines):
    log_path = tmp_path / "logs" / "inference-task-0.log"
    with task_inference_server(native(), log_path, workers=4, environ=env) as got:
        server, child = server_pids(tmp_path)
        assert alive(server) and alive(child) and os.getpgid(child) == server  # its own group, led by the server
        url = got["SURYA_INFERENCE_URL"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert got["SURYA_INFERENCE_PARALLEL"] == "39"  # VLLM_GPU_TYPE=h100: max_num_seqs 104
        models = httpx.get(f"{url}/models", trust_env=False).json()
        assert [m["id"] for m in models["data"]] == ["datalab-to/surya-ocr-2"]
        reply = httpx.post(
            f"{url}/chat/completions",
            trust_env=False,
            json={"model": "datalab-to/surya-ocr-2", "messages": [{"role": "user", "content": "hi"}]},
        ).json()
        assert reply["choices"][0]["message"]["content"]
    assert not alive(server) and not alive(child)
    assert group_members(server) == []
    text = log_path.read_text()
    assert "CUDA_VISIBLE_DEVICES=3" in text and "--port" in text  # the task's GPU; our argv heads the log
    assert any("ready after" in line for line in log_lines())
    assert "stopped by SIGTERM" in log_lines()[-1]


def test_crash_at_startup_fails_fast_with_the_log_tail(env, tmp_path):
    env["STANDIN_VLLM_EXIT_AT_STARTUP"] = "ValueError: No available memory for the cache blocks."
    log_path = tmp_path / "inference.log"
    started = time.monotonic()
    with (
        pytest.raises(InferenceServerFailed) as info,
        task_inference_server(native(startup_timeout_s=60), log_path, environ=env),
    ):
        pytest.fail("the block must not run")
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "exited with code 1" in message and "No available memory for the cache blocks" in message
    assert str(log_path) in message and "\n" not in message


def test_never_healthy_fails_at_the_startup_timeout_and_leaves_nothing(env, tmp_path):
    env["STANDIN_VLLM_NEVER_HEALTHY"] = "1"
    started = time.monotonic()
    with (
        pytest.raises(InferenceServerFailed, match=r"did not answer .*/health within 2s \(HTTP 503\)"),
        task_inference_server(native(startup_timeout_s=2), tmp_path / "i.log", environ=env),
    ):
        pass
    assert 2 <= time.monotonic() - started < 12
    server, child = server_pids(tmp_path)
    assert not alive(server) and not alive(child)


def test_slow_start_is_waited_for(env, tmp_path):
    env["STANDIN_VLLM_STARTUP_DELAY_S"] = "1.5"
    started = time.monotonic()
    with task_inference_server(native(), tmp_path / "i.log", environ=env) as got:
        assert time.monotonic() - started >= 1.5
        assert httpx.get(got["SURYA_INFERENCE_URL"].removesuffix("/v1") + "/health", trust_env=False).status_code == 200


def test_tasks_starting_together_compile_one_at_a_time(env, tmp_path, log_lines):
    """Two tasks' servers of one configuration and one compile cache: the second starts once the first answers, so
    the stand-in's compile (1.5 s into the cache folder) runs once, alone."""
    env["STANDIN_VLLM_COMPILE_S"] = "1.5"
    env["STANDIN_VLLM_STARTUP_DELAY_S"] = "1"
    env["VLLM_CACHE_ROOT"] = str(tmp_path / "vllm-cache")
    ready: dict[int, float] = {}

    def task(index: int) -> None:
        with task_inference_server(native(), tmp_path / f"inference-{index}.log", environ=env):
            ready[index] = time.monotonic()

    started = time.monotonic()
    tasks = [threading.Thread(target=task, args=(index,)) for index in range(2)]
    for thread in tasks:
        thread.start()
    for thread in tasks:
        thread.join(60)
    lines = log_lines()
    assert sum("holding its lock for this first start" in line for line in lines) == 1, lines
    assert sum("filled for this server" in line for line in lines) == 1, lines
    assert len(ready) == 2 and max(ready.values()) - started >= 3.5  # one after the other: 2.5 s, then 1 s
    assert not (tmp_path / "vllm-cache" / LOCK_NAME).exists()
    compiled = tmp_path / "vllm-cache" / "standin-compile"
    assert sorted(p.name for p in compiled.iterdir()) == ["compiled"]  # no CORRUPT mark: never two at once
    assert len((compiled / "compiled").read_text().split()) == 1


def test_a_compile_lock_held_too_long_fails_the_start_in_one_line(env, tmp_path):
    cache = tmp_path / "vllm-cache"
    cache.mkdir()
    env["VLLM_CACHE_ROOT"] = str(cache)
    (cache / LOCK_NAME).write_text(json.dumps({"host": "gpu-node-7", "pid": 1, "since": time.time(), "token": "t"}))
    refused = r"^inference server not started: compile cache lock \S+ still held by gpu-node-7 pid 1 for \d+ s"
    server = task_inference_server(native(startup_timeout_s=0.5), tmp_path / "i.log", environ=env)
    with pytest.raises(InferenceServerFailed, match=refused) as info, server:
        pass
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pids").exists()  # no server was started


def test_server_ignoring_sigterm_is_killed_after_the_grace(env, tmp_path, log_lines):
    env["STANDIN_VLLM_IGNORE_SIGTERM"] = "1"
    with task_inference_server(native(stop_grace_s=1), tmp_path / "i.log", environ=env):
        server, child = server_pids(tmp_path)
    assert not alive(server) and not alive(child)
    assert "killed (SIGKILL) after 1s" in log_lines()[-1]


def test_exception_in_the_block_stops_the_server_and_propagates(env, tmp_path):
    with (
        pytest.raises(Stopped),
        task_inference_server(native(), tmp_path / "i.log", environ=env),
    ):
        server, child = server_pids(tmp_path)
        raise Stopped("SIGTERM")
    assert not alive(server) and not alive(child)


def test_wrong_served_model_is_an_error(env, tmp_path):
    settings = native(extra_args=("--served-model-name", "someone/else"))
    with (
        pytest.raises(InferenceServerFailed, match=r"serves \['someone/else'\], not 'datalab-to/surya-ocr-2'"),
        task_inference_server(settings, tmp_path / "i.log", environ=env),
    ):
        pass
    assert not any(alive(pid) for pid in server_pids(tmp_path))


def test_missing_vllm_is_one_line_and_starts_nothing(env, tmp_path):
    env["PATH"] = "/usr/bin:/bin"
    with (
        pytest.raises(InferenceServerFailed, match=r"vllm is not on PATH on .*: install vllm where the jobs find it"),
        task_inference_server(native(), tmp_path / "i.log", environ=env),
    ):
        pass
    assert not (tmp_path / "pids").exists()


def test_off_starts_nothing(env, tmp_path, monkeypatch, log_lines):
    monkeypatch.setattr(marker_engine, "marker_version", lambda: "1.10.2")
    with task_inference_server(native(), tmp_path / "i.log", environ=env) as got:
        assert got == {}
    with task_inference_server(InferenceSettings(), tmp_path / "i.log", environ=env) as got:
        assert got == {}
    assert not (tmp_path / "pids").exists() and not (tmp_path / "i.log").exists()
    assert log_lines()[0] == "inference server: none started (marker-pdf 1.10.2 runs its models in the workers)"


def test_apptainer_mode_runs_vllm_in_the_image(env, tmp_path):
    image = tmp_path / "vllm.sif"
    image.write_bytes(b"sif")
    env["STANDIN_APPTAINER_LOG"] = str(tmp_path / "apptainer.log")
    settings = InferenceSettings(mode="apptainer", image=str(image), startup_timeout_s=20, stop_grace_s=5)
    with task_inference_server(settings, tmp_path / "i.log", environ=env) as got:
        server, child = server_pids(tmp_path)
        assert httpx.get(got["SURYA_INFERENCE_URL"] + "/models", trust_env=False).status_code == 200
    assert not alive(server) and not alive(child)
    argv = json.loads((tmp_path / "apptainer.log").read_text().splitlines()[0])
    assert argv[1:6] == ["exec", "--nv", str(image), "vllm", "serve"]
    image.unlink()  # a missing image: apptainer's own error comes back
    with (
        pytest.raises(InferenceServerFailed, match="could not open image"),
        task_inference_server(settings, tmp_path / "i.log", environ=env),
    ):
        pass


SIGTERM_TASK = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    from hpc_marker.engines import marker
    from hpc_marker.runtime.inference import InferenceSettings, task_inference_server
    from hpc_marker.util.logs import configure
    marker.marker_version = lambda: "2.0.0"
    configure(0, job="task 0")

    class TaskStopped(BaseException):
        pass

    def stopped(signum, frame):
        signal.signal(signum, signal.SIG_IGN)
        raise TaskStopped("SIGTERM")

    signal.signal(signal.SIGTERM, stopped)
    out = Path(sys.argv[1])
    try:
        with task_inference_server(InferenceSettings(mode="native", startup_timeout_s=20, stop_grace_s=5),
                                   out / "i.log") as env:
            (out / "env.json").write_text(json.dumps(env))
            time.sleep(60)
    except TaskStopped:
        sys.exit(143)
""")


def test_sigterm_to_the_task_stops_the_server(env, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_TASK, str(tmp_path)],
        env=dict(env, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "env.json").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert (tmp_path / "env.json").exists(), proc.communicate(timeout=10)[0]
        server, child = server_pids(tmp_path)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, output
    assert not alive(server) and not alive(child)
    assert "stopped by SIGTERM" in output


# --- plumbing: flag, profile, run record -------------------------------------------------------


def test_cli_offers_the_modules_choices():
    from hpc_marker.cli.run import submit

    option = next(p for p in submit.params if p.name == "inference_server")
    assert tuple(option.type.choices) == inference.CHOICES


def test_submit_records_the_inference_settings(sample_pdfs, tmp_path, monkeypatch):
    from hpc_marker.submission import launch
    from hpc_marker.submission.launch import prepare_run
    from hpc_marker.submission.request import LaunchError, SubmitRequest

    image = tmp_path / "vllm.sif"
    image.write_bytes(b"sif")
    site = tmp_path / "site.toml"
    site.write_text(
        f'[profiles.sif]\ntemplate = "generic"\ninference_server = "apptainer"\n'
        f'inference_image = "{image}"\ninference_args = ["--enforce-eager"]\n'
    )
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(site))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    monkeypatch.setattr(launch, "check_engine", lambda *_: None)  # marker-pdf is not installed in this venv
    monkeypatch.setattr(launch, "marker_version", lambda: "2.0.0")
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")  # vllm and apptainer are here

    def record(**kw):
        request = SubmitRequest.with_defaults(pdfs=sample_pdfs, out=tmp_path / "out", gpus=1, executor="local", **kw)
        return prepare_run(request, create=False).record

    got = record(engine="marker", profile="sif", inference_startup_timeout=120)
    assert got.inference == InferenceSettings(
        mode="apptainer", image=str(image), extra_args=("--enforce-eager",), startup_timeout_s=120.0
    )
    assert got.workers_per_gpu == 0  # auto: each task chooses
    assert record(engine="marker", profile="sif", inference_server="native").inference.mode == "native"
    assert record(engine="marker").inference.mode == "native"  # generic profile, marker 2.x: auto
    assert record(engine="text", profile="sif").inference is None
    with pytest.raises(LaunchError, match="inference server 'apptainer' needs an image"):
        record(engine="marker", inference_server="apptainer")
    with pytest.raises(LaunchError, match="--workers-per-gpu -1: must be at least 1"):
        record(engine="text", workers_per_gpu=-1)
    monkeypatch.setattr(launch, "marker_version", lambda: "1.10.2")
    assert record(engine="marker", profile="sif").inference.mode == "off"


def test_submit_refuses_when_the_jobs_cannot_start_the_server(sample_pdfs, tmp_path, monkeypatch):
    """Issue 19: marker 2.x with its default native server, no vllm where the jobs look (their PATH, their
    Python's bin folder): refused before anything is queued, in one line with the fix; a profile whose setup
    lines change the jobs' environment (a module, a venv) is not second-guessed."""
    from hpc_marker.submission import launch
    from hpc_marker.submission.launch import prepare_run
    from hpc_marker.submission.request import LaunchError, SubmitRequest

    site = tmp_path / "site.toml"
    site.write_text('[profiles.module]\ntemplate = "generic"\nsetup = ["module load vllm"]\n')
    monkeypatch.setenv("HPCMARKER_SITE_CONFIG", str(site))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    monkeypatch.setattr(launch, "check_engine", lambda *_: None)  # marker-pdf is not installed in this venv
    monkeypatch.setattr(launch, "marker_version", lambda: "2.0.0")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("SURYA_INFERENCE_URL", raising=False)

    def prepare(**kw):
        request = SubmitRequest.with_defaults(pdfs=sample_pdfs, out=tmp_path / "out", gpus=1, executor="local", **kw)
        return prepare_run(request, create=False).record

    refused = r"^--inference-server native: vllm is not on PATH on .*vllm==0\.20\.1"
    with pytest.raises(LaunchError, match=refused) as info:
        prepare(engine="marker")
    assert "\n" not in str(info.value)
    assert prepare(engine="marker", profile="module").inference.mode == "native"
    assert prepare(engine="marker", inference_server="off").inference.mode == "off"
    bin_dir = tmp_path / "venv-bin"  # vllm beside the jobs' Python (a venv not activated) is found too
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text("#!/bin/sh\n")
    (bin_dir / "vllm").chmod(0o755)
    monkeypatch.setattr(inference.sys, "executable", str(bin_dir / "python"))
    assert prepare(engine="marker").inference.mode == "native"
    monkeypatch.setenv("SURYA_INFERENCE_URL", "http://gpu7:8000/v1")  # the user's own server: nothing to start
    monkeypatch.setattr(inference.sys, "executable", "/usr/bin/python3")
    assert prepare(engine="marker").inference.mode == "native"


# --- the task runs its items inside the server's lifetime --------------------------------------


CLIENT_KEYS = (
    "SURYA_INFERENCE_URL",
    "SURYA_INFERENCE_BACKEND",
    "SURYA_INFERENCE_AUTOSTART",
    "SURYA_INFERENCE_PARALLEL",
    "SURYA_INFERENCE_KEEP_ALIVE",
    "no_proxy",
    "NO_PROXY",
)


def _text_run_with_server(sample_pdfs, tmp_path, monkeypatch, env):
    """A text-engine run whose record asks for a native server: the task's wiring, without marker's models."""
    from hpc_marker.submission.launch import prepare_run
    from hpc_marker.submission.request import SubmitRequest

    for key in [k for k in os.environ if k.startswith(("SURYA_", "STANDIN_"))] + list(CLIENT_KEYS):
        monkeypatch.setenv(key, "")  # tracked, so the task's additions to os.environ go after the test
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    prepared = prepare_run(
        SubmitRequest.with_defaults(
            pdfs=sample_pdfs, out=tmp_path / "out", gpus=1, engine="text", executor="local", workers_per_gpu=1
        )
    )
    record = prepared.record
    record.inference = native(startup_timeout_s=15)
    prepared.paths.save_record(record)
    return prepared.paths


def test_a_task_converts_inside_its_servers_lifetime(sample_pdfs, tmp_path, monkeypatch, env, capsys):
    from hpc_marker.runstate.manifest import read_manifests
    from hpc_marker.runtime.task import run_task
    from hpc_marker.util.logs import configure

    paths = _text_run_with_server(sample_pdfs, tmp_path, monkeypatch, env)
    configure(0, job="task 0")  # as the task's job does: its log lines on stdout, in order
    result = run_task(str(paths.root), 0)
    out = capsys.readouterr().out
    assert result.ok == len(list(sample_pdfs.rglob("*.pdf")))
    server, child = server_pids(tmp_path)
    assert not alive(server) and not alive(child)  # stopped when the task ended
    assert os.environ["SURYA_INFERENCE_URL"].startswith("http://127.0.0.1:")  # what the workers inherited
    lines = out.splitlines()
    ready = next(i for i, line in enumerate(lines) if "ready after" in line)
    first_item = next(i for i, line in enumerate(lines) if re.search(r"(\] [\d:]+|task 0:) ok\s", line))
    stopped = next(i for i, line in enumerate(lines) if "stopped by SIGTERM" in line)
    assert ready < first_item < stopped, out
    assert {r.status for r in read_manifests(paths.manifests).records} == {"ok"}


def test_a_server_that_cannot_start_fails_the_task_fast_and_claims_nothing(sample_pdfs, tmp_path, monkeypatch, env):
    from hpc_marker.planning.store import load_plan
    from hpc_marker.runstate.claims import ClaimBoard, batch_name
    from hpc_marker.runstate.stops import read_stops
    from hpc_marker.runtime.task import run_task

    env["STANDIN_VLLM_EXIT_AT_STARTUP"] = "RuntimeError: CUDA out of memory while loading weights"
    paths = _text_run_with_server(sample_pdfs, tmp_path, monkeypatch, env)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="CUDA out of memory while loading weights"):
        run_task(str(paths.root), 0)
    assert time.monotonic() - started < 15
    stop = read_stops(paths.progress)[0]  # the task's own record says why, for status and the summary
    assert stop.cause == "inference" and "CUDA out of memory while loading weights" in stop.detail
    board = ClaimBoard(paths.root, owner="check", lease_s=60)
    plan = load_plan(paths.plan)
    batches = [(task.index, batch[0].batch) for task in plan.tasks for batch in task.batches()]
    assert batches and all(board.claim(str(share), batch_name(index)) for share, index in batches)  # nothing left held
    assert not any(board.is_done(item.item_id) for item in plan.items)
