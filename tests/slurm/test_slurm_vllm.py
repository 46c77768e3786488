"""`--llm-server vllm --llm-replicas 2` on a real Slurm cluster, with the stand-in `vllm` (tests/standin):
both replicas serve the run, no listener the run opens answers a model request without a secret,
nothing is left afterwards; and a replica killed mid-run loses no PDF, the manifest marking exactly
the items whose requests it cut off."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import slurmkit
from runkit import invoke, manifest_records, read_summary, wait_for
from slurmkit import run_options
from standin.harness import path_with_standin, vllm_pids, vllm_trace

from hpc_marker.llm.settings import LlmPaths
from hpc_marker.util.processes import process_tree

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
MODEL = "org/tiny-instruct"


@pytest.fixture
def standin(tmp_path, monkeypatch):
    template = str(tmp_path / "vllm-{port}.requests")
    monkeypatch.setenv("PATH", path_with_standin())  # sbatch passes the environment on to the jobs
    monkeypatch.setenv("STANDIN_VLLM_REQUEST_LOG", template)
    return template


def submit(pdfs: Path, out: Path, *extra: str):
    run_id = f"vllm-{secrets.token_hex(3)}"
    options = ("--llm", MODEL, "--llm-server", "vllm", "--llm-replicas", "2", "--llm-cpus", "1", "--llm-parallel", "2")
    return run_id, *slurmkit.submit(pdfs, out, run_id, *run_options(2), *options, *extra)


def replica_logs(paths, template: str) -> list[Path] | None:
    """Each replica's request log (named by its port, which vllm's argv line shows), once both started."""
    logs = []
    for replica in range(2):
        log = LlmPaths(paths.root, replica).server_log("vllm")
        if not log.exists() or "--port " not in log.read_text():
            return None
        port = log.read_text().splitlines()[0].split("--port ")[1].split()[0]
        logs.append(Path(template.replace("{port}", port)))
    return logs


def listeners(pids: set[int]) -> set[tuple[str, int]]:
    """TCP sockets listening, owned by these processes: (address, port)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = str(fd.readlink()) if fd.is_symlink() else ""
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            address, port = fields[1].split(":")
            found.add((".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)), int(port, 16)))
    return found


def run_processes(paths) -> set[int]:
    """The run's job processes (the job runner on the run's jobs folder) and what they started."""
    roots = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(paths.jobs).encode() in (entry / "cmdline").read_bytes():
                    roots.append(int(entry.name))
            except OSError:
                continue
    return {pid for root in roots for pid in process_tree(root)}


def answers_a_model_request(host: str, port: int) -> list[str]:
    """What a listener gives a model request without a secret (empty: nothing)."""
    answered = []
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "prompt": "hi"}
    for method, path in (
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/api/tags"),
        ("POST", "/api/generate"),
        ("POST", "/api/chat"),
    ):
        for headers in ({}, {"Authorization": "Bearer not-the-secret"}):
            try:
                reply = httpx.request(
                    method, f"http://{host}:{port}{path}", json=body, headers=headers, timeout=5, trust_env=False
                )
            except httpx.HTTPError:
                continue
            if reply.status_code < 400:
                answered.append(f"{method} {path} -> {reply.status_code}")
    return answered


def page_keys(pdf: Path, start: int, stop: int) -> set[str]:
    from pdftext.extraction import paginated_plain_text_output

    texts = paginated_plain_text_output(str(pdf), sort=True, hyphens=False, page_range=list(range(start, stop)))
    return {hashlib.sha256(t.encode()).hexdigest()[:12] for t in texts if t.strip()}


def nothing_left(record: dict, template: str) -> None:
    ids = {jid.split("_")[0] for role in record["jobs"].values() for jid in role}
    deadline = time.time() + 30
    while True:
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=False).stdout.split()
        left = [line for line in queue if line.split("_")[0] in ids] + vllm_pids(Path(template))
        if not left or time.time() > deadline:
            break
        time.sleep(1)
    assert left == []


def test_two_vllm_replicas_serve_the_run_and_nothing_answers_without_the_secret(
    tmp_path, sample_pdfs, standin, monkeypatch
):
    monkeypatch.setenv("STANDIN_VLLM_SECONDS_PER_REQUEST", "0.5")  # keep the run up long enough to probe it
    run_id, paths, record = submit(sample_pdfs, tmp_path / "out")
    assert len(record["jobs"]["service"]) == 2
    seen: set[tuple[str, int]] = set()
    deadline = time.time() + 240
    while time.time() < deadline:  # the run's listeners, while it runs: two fronts, two vllm, each task's relay
        seen |= listeners(run_processes(paths))
        if len(seen) >= 6 or json.loads(invoke("status", run_id, "--json").output)["state"] == "finished":
            break
        time.sleep(0.5)
    assert len(seen) >= 4, seen  # at least the two fronts and the two vllm servers were seen
    for host, port in sorted(seen):
        assert answers_a_model_request("127.0.0.1" if host == "0.0.0.0" else host, port) == [], (host, port)
    wait_for(run_id, {"finished"}, timeout_s=400)
    summary = read_summary(paths)
    assert summary["ok"] == 6 and summary["degraded"] == []
    replicas = summary["llm"]["replicas"]
    assert [r["replica"] for r in replicas] == [0, 1] and all(r["requests"] > 0 for r in replicas), replicas
    logs = replica_logs(paths, standin)
    assert all(vllm_trace(log)["end"] for log in logs)  # both vLLMs answered completions
    nothing_left(record, standin)
    for replica in range(2):
        assert not LlmPaths(paths.root, replica).secret.exists()


def test_a_replica_killed_mid_run_loses_no_pdf_and_marks_exactly_the_affected_items(
    tmp_path, sample_pdfs, standin, monkeypatch
):
    monkeypatch.setenv("STANDIN_VLLM_SECONDS_PER_REQUEST", "1.0")
    run_id, paths, record = submit(sample_pdfs, tmp_path / "out", "--workers-per-gpu", "2")
    deadline = time.time() + 300
    while True:  # until replica 1 runs requests
        logs = replica_logs(paths, standin)
        if logs:
            trace = vllm_trace(logs[1])
            if len(trace["begin"]) > len(trace["end"]) + len(trace["abort"]):
                break
        assert time.time() < deadline, "replica 1 never ran a request"
        time.sleep(0.05)
    killed_at = time.time()
    victim = record["jobs"]["service"][1]
    subprocess.run(["scancel", "--full", "--signal=KILL", victim], check=True)  # every process of its job
    wait_for(run_id, {"finished"}, timeout_s=400)
    records = manifest_records(paths)
    assert len(records) == 6 and all(r.status == "ok" and not r.degraded for r in records)
    trace1 = vllm_trace(logs[1])
    cut = set(trace1["begin"]) - set(trace1["end"])
    assert cut and cut <= set(vllm_trace(logs[0])["end"])  # every cut request was answered by replica 0
    affected = {r.item_id for r in records if page_keys(sample_pdfs / r.pdf, r.page_start, r.page_stop) & cut}
    marked = {r.item_id for r in records if r.llm_failover}
    assert affected and affected <= marked, (affected, marked)
    for r in records:  # another marked item had a request sent to the dead replica as it died
        if r.item_id in marked - affected:
            assert r.started <= killed_at + 2 and r.finished >= killed_at, r
    summary = read_summary(paths)
    assert summary["ok"] == 6 and summary["llm"]["failures"] == 0
    status = json.loads(invoke("status", run_id, "--json").output)
    assert [r["state"] for r in status["llm"]["replicas"]][1] != "RUNNING"
    nothing_left(record, standin)


def test_cancel_stops_every_replica(tmp_path, sample_pdfs, standin, monkeypatch):
    monkeypatch.setenv("STANDIN_VLLM_SECONDS_PER_REQUEST", "2")
    run_id, paths, record = submit(sample_pdfs, tmp_path / "out")
    deadline = time.time() + 240
    while not all(LlmPaths(paths.root, r).endpoint.exists() for r in range(2)):
        assert time.time() < deadline, "the replicas never published their endpoints"
        time.sleep(0.5)
    result = invoke("cancel", run_id)
    assert result.exit_code == 0, result.output
    nothing_left(record, standin)
    for replica in range(2):
        assert not LlmPaths(paths.root, replica).secret.exists()
