"""The LLM service job on a real Slurm cluster, with the stand-in `ollama` (tests/standin)."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest
import slurmkit
from faultkit import sacct_times
from runkit import invoke, manifest_records, read_summary, wait_for, wait_until
from slurmkit import run_options
from standin.harness import standin_pids

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def submit(pdfs, out, run_id, *extra):
    return slurmkit.submit(
        pdfs, out, run_id, *run_options(2, None), "--llm", "tiny:1b", "--llm-bind", "127.0.0.1", *extra
    )


def wait_for_endpoint(paths, timeout_s=60):
    wait_until(
        (paths.root / "llm" / "endpoint.json").exists, timeout_s, "the service never published its endpoint", 0.2
    )
    return json.loads((paths.root / "llm" / "endpoint.json").read_text())


def test_service_serves_the_array_only_with_the_secret_and_stops_after(
    tmp_path, sample_pdfs, standin_models, monkeypatch
):
    monkeypatch.setenv("STANDIN_OLLAMA_DELAY_PER_TOKEN_S", "0.01")  # keep the service up long enough to probe
    paths, record = submit(sample_pdfs, tmp_path / "out", "llm1", "--engine", "text")
    service_id = record["jobs"]["service"][0]
    endpoint = wait_for_endpoint(paths)
    secret = (paths.root / "llm" / "secret").read_text().strip()
    assert (paths.root / "llm" / "secret").stat().st_mode & 0o777 == 0o600
    assert secret not in json.dumps(endpoint)
    # without the secret (or with a wrong one): 403, never reaching Ollama
    assert httpx.get(f"{endpoint['url']}/api/tags", trust_env=False).status_code == 403
    assert httpx.get(f"{endpoint['url']}/not-the-secret/api/tags", trust_env=False).status_code == 403
    assert httpx.post(f"{endpoint['url']}/{secret}/api/pull", json={"model": "x"}, trust_env=False).status_code == 403
    assert httpx.get(f"{endpoint['url']}/{secret}/api/tags", trust_env=False).status_code == 200
    shown = subprocess.run(["scontrol", "show", "job", service_id], capture_output=True, text=True).stdout
    assert shown and secret not in shown

    wait_for("llm1", {"finished"}, timeout_s=300)
    summary = read_summary(paths)
    assert summary["ok"] == 6 and summary["llm"]["requests"] >= 11 and summary["llm"]["denied"] >= 2
    times = sacct_times([service_id] + record["jobs"]["convert"])
    records = manifest_records(paths)
    first_item = min(r.started for r in records)
    assert time.mktime(time.strptime(times[service_id][0], "%Y-%m-%dT%H:%M:%S")) <= first_item
    # the collector stopped the service: out of the queue, its processes gone
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert service_id not in queue and standin_pids(standin_models) == []
    # the secret is in no script, manifest or log
    for path in paths.root.rglob("*"):
        if path.is_file() and path.suffix in {".sbatch", ".sh", ".jsonl", ".csv", ".json", ".out", ".err", ".log"}:
            assert secret not in path.read_text(errors="replace"), path


def test_service_that_never_comes_up_fails_tasks_within_the_timeout(tmp_path, sample_pdfs, standin_models, monkeypatch):
    monkeypatch.setenv("STANDIN_OLLAMA_NEVER_READY", "1")
    paths, record = submit(sample_pdfs, tmp_path / "out", "llm2", "--engine", "text", "--llm-wait", "5")
    status = wait_for("llm2", {"incomplete"}, timeout_s=180)
    assert {t["state"] for t in status["tasks"]} == {"FAILED"}
    assert len(status["reasons"]) == 1 and "is not up after 5s" in status["reasons"][0], status["reasons"]
    assert "see `hpcmarker logs llm2 --service`, then: hpcmarker resume llm2" in status["reasons"][0]
    assert manifest_records(paths) == []
    log = "".join(p.read_text() for p in paths.logs.glob("task-*.out"))
    assert "is not up after 5s" in log
    times = sacct_times(record["jobs"]["convert"])
    for start, end in times.values():
        took = time.mktime(time.strptime(end, "%Y-%m-%dT%H:%M:%S")) - time.mktime(
            time.strptime(start, "%Y-%m-%dT%H:%M:%S")
        )
        assert took < 30
    assert standin_pids(standin_models) == []


def test_cancel_stops_the_service_too(tmp_path, sample_pdfs, standin_models, monkeypatch):
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "2")
    paths, record = submit(sample_pdfs, tmp_path / "out", "llm3", "--engine", "benchmark")
    wait_for_endpoint(paths)
    result = invoke("cancel", "llm3")
    assert result.exit_code == 0, result.output
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    ids = {jid.split("_")[0] for role in record["jobs"].values() for jid in role}
    assert not [line for line in queue if line.split("_")[0] in ids]
    deadline = time.time() + 20
    while standin_pids(standin_models) and time.time() < deadline:
        time.sleep(0.5)
    assert standin_pids(standin_models) == []
