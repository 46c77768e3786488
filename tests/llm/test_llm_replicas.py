"""Replicas: a task's relay sends its requests to its own replica, and when that replica dies (its job
killed with SIGKILL, so its endpoint file stays behind), the requests in flight move to a live one
and are counted as failovers of their worker; the dead replica gets nothing more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ollama
import pytest
from runkit import wait_until
from standin.harness import (
    path_with_standin,
    read_request_log,
    seed_model,
    standin_pids,
    vllm_pids,
    vllm_trace,
)

from hpc_marker.llm import replicas as replicas_module
from hpc_marker.llm.client import Endpoint, probe_replica
from hpc_marker.llm.replicas import PROBE_INTERVAL_S, task_relay
from hpc_marker.llm.settings import LlmPaths, LlmSettings

ROOT = Path(__file__).resolve().parents[2]


def start_replicas(
    tmp_path: Path, settings: LlmSettings, count: int, only: list[int] | None = None, **env: str
) -> tuple[Path, list[subprocess.Popen]]:
    """Replicas 0..count-1 (or those in `only`) of a run's service, each up and answering."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    LlmPaths(run_dir).save_settings(settings)
    return run_dir, [start_replica(tmp_path, run_dir, replica, **env) for replica in (only or range(count))]


def start_replica(tmp_path: Path, run_dir: Path, replica: int, **env: str) -> subprocess.Popen:
    environ = dict(
        os.environ, PATH=path_with_standin(), STANDIN_VLLM_REQUEST_LOG=str(tmp_path / f"vllm-{replica}.log"), **env
    )
    with open(tmp_path / f"service-{replica}.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpc_marker.llm.service", str(run_dir), str(replica)],
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not isinstance(probe_replica(run_dir, replica, 2.0), Endpoint):
        assert time.monotonic() < deadline, f"replica {replica} did not come up"
        time.sleep(0.2)
    return proc


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.mark.slow
def test_relay_prefers_its_replica_and_moves_requests_in_flight_when_it_dies(tmp_path, log_lines):
    settings = LlmSettings(
        model="org/tiny",
        server="vllm",
        parallel=4,
        replicas=2,
        bind_host="127.0.0.1",
        load_timeout_s=20,
        metrics_interval_s=0.2,
    )
    run_dir, procs = start_replicas(tmp_path, settings, 2, STANDIN_VLLM_SECONDS_PER_REQUEST="1.5")
    logs = [tmp_path / "vllm-0.log", tmp_path / "vllm-1.log"]
    try:
        with task_relay(run_dir, replicas=2, task=1, server="vllm", model="org/tiny", timeout_s=60) as relay:
            assert relay.url.startswith("http://127.0.0.1:") and relay.server == "vllm"
            client = relay.client("1.100", timeout_s=30)
            assert client.chat("org/tiny", [{"role": "user", "content": "warm up"}]).text == "WARM UP"
            # the stand-in logs "end" once its reply is sent: the client may read the reply first
            wait_until(lambda: vllm_trace(logs[1])["end"], 30, "replica 1 never logged its answer")
            assert not vllm_trace(logs[0])["begin"]  # task 1: replica 1
            replies: list[str] = []

            def ask(words: str) -> None:
                replies.append(client.chat("org/tiny", [{"role": "user", "content": words}]).text)

            threads = [threading.Thread(target=ask, args=(f"page {i} text",)) for i in range(3)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while len(vllm_trace(logs[1])["begin"]) < 4:  # all three running at replica 1
                assert time.monotonic() < deadline
                time.sleep(0.05)
            procs[1].send_signal(signal.SIGKILL)  # replica 1's job dies at once: front gone, endpoint file stays
            for thread in threads:
                thread.join(timeout=30)
            assert sorted(replies) == ["PAGE 0 TEXT", "PAGE 1 TEXT", "PAGE 2 TEXT"]
            stats = relay.task_stats("1.100")
            assert stats["failovers"] == 3 and stats["failures"] == 0 and stats["requests"] == 4
            wait_until(lambda: len(vllm_trace(logs[0])["end"]) == 3, 30, "replica 0 did not log the three answers")
            trace0, trace1 = vllm_trace(logs[0]), vllm_trace(logs[1])
            assert len(trace1["begin"]) == 4 and len(trace1["end"]) == 1  # three cut off by the kill...
            assert sorted(set(trace1["begin"]) - set(trace1["end"])) == sorted(trace0["end"])  # ...done at replica 0
            assert LlmPaths(run_dir, 1).endpoint.exists()  # stale: the relay must not trust it
            time.sleep(PROBE_INTERVAL_S + 1)
            seen1 = len(read_request_log(logs[1]))
            assert client.chat("org/tiny", [{"role": "user", "content": "after"}]).text == "AFTER"
            assert relay.task_stats("1.100")["failovers"] == 3  # no new failover: replica 1 is known to be gone
            assert len(read_request_log(logs[1])) == seen1
            client.close()
        assert any("replica 1 stopped answering" in line for line in log_lines()), log_lines()
    finally:
        stop(procs)
    deadline = time.monotonic() + 10
    while any(vllm_pids(log) for log in logs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [vllm_pids(log) for log in logs] == [[], []]  # even the SIGKILLed job's vllm (parent death signal)


@pytest.mark.slow
def test_a_request_whose_only_live_replica_dies_goes_to_one_that_came_up_since(tmp_path, monkeypatch, log_lines):
    """Replica 0 comes up after the relay last looked (CI caught this: the request failed with a 502 and its
    page was degraded); the relay looks again when the last replica it knew of dies under a request."""
    monkeypatch.setattr(replicas_module, "PROBE_INTERVAL_S", 3600.0)  # no background look during the test
    settings = LlmSettings(
        model="org/tiny",
        server="vllm",
        parallel=4,
        replicas=2,
        bind_host="127.0.0.1",
        load_timeout_s=20,
        metrics_interval_s=0.2,
    )
    run_dir, procs = start_replicas(tmp_path, settings, 2, only=[1], STANDIN_VLLM_SECONDS_PER_REQUEST="60")
    try:
        with task_relay(run_dir, replicas=2, task=1, server="vllm", model="org/tiny", timeout_s=60) as relay:
            assert any("replicas [1] answer" in line for line in log_lines()), log_lines()
            client = relay.client("1.100", timeout_s=30)
            replies: list[str] = []
            thread = threading.Thread(
                target=lambda: replies.append(client.chat("org/tiny", [{"role": "user", "content": "late page"}]).text)
            )
            thread.start()
            deadline = time.monotonic() + 10
            while not vllm_trace(tmp_path / "vllm-1.log")["begin"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            procs.append(start_replica(tmp_path, run_dir, 0, STANDIN_VLLM_SECONDS_PER_REQUEST="0.2"))  # the relay
            # has not looked since: it knows replica 1 only
            procs[0].send_signal(signal.SIGKILL)
            thread.join(timeout=30)
            assert replies == ["LATE PAGE"]
            stats = relay.task_stats("1.100")
            assert stats["failovers"] == 1 and stats["failures"] == 0
            assert vllm_trace(tmp_path / "vllm-0.log")["end"]
            client.close()
    finally:
        stop(procs)


@pytest.mark.slow
def test_relay_to_ollama_replicas_keeps_the_secret_in_the_path(tmp_path, monkeypatch):
    models = tmp_path / "models"
    seed_model(models, "tiny:1b")
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    settings = LlmSettings(
        model="tiny:1b",
        parallel=2,
        replicas=2,
        bind_host="127.0.0.1",
        ready_timeout_s=10,
        load_timeout_s=10,
        metrics_interval_s=0.2,
    )
    run_dir, procs = start_replicas(tmp_path, settings, 2)
    try:
        with task_relay(run_dir, replicas=2, task=0, server="ollama", model="tiny:1b", timeout_s=30) as relay:
            client = ollama.Client(host=relay.base_url("0.7"))  # what marker's OllamaService is given
            assert client.generate(model="tiny:1b", prompt="a b", stream=False).response == "A B"
            assert relay.task_stats("0.7")["tokens_out"] == 2
            replica0 = probe_replica(run_dir, 0, 2.0)
            assert replica0.task_stats("0.7")["requests"] == 1  # task 0's own replica, counted per worker
    finally:
        stop(procs)
    assert standin_pids(models) == []
