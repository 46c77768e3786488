"""The LLM service's capability check and reasoning models on a real Slurm cluster, with the stand-in servers
(tests/standin): an Ollama that rejects marker's JSON-schema `format` ends the run's tasks at once, with one
line naming the model, the server and what to change, and no further round; a vLLM reasoning model that answers
in `reasoning_content` with empty content serves the whole run, every refinement done, none degraded."""

from __future__ import annotations

import secrets
import time

import pytest
import slurmkit
from faultkit import sacct_times
from runkit import invoke, manifest_records, read_record, read_summary, wait_for
from slurmkit import run_options
from standin.harness import path_with_standin, standin_pids

from hpc_marker.llm.settings import LlmPaths
from hpc_marker.runstate.index import resolve_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def submit(pdfs, out, *extra: str) -> tuple[str, dict]:
    run_id = f"check-{secrets.token_hex(3)}"
    options = ("--llm-bind", "127.0.0.1", "--llm-cpus", "1")
    # marker's constrained request, though the text engine refines with a plain chat
    _, record = slurmkit.submit(pdfs, out, run_id, *run_options(2), *options, "--llm-check", "marker", *extra)
    return run_id, record


def seconds(start: str, end: str) -> float:
    return time.mktime(time.strptime(end, "%Y-%m-%dT%H:%M:%S")) - time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S"))


def test_a_server_that_rejects_the_json_schema_ends_the_run_at_once(tmp_path, sample_pdfs, standin_models, monkeypatch):
    monkeypatch.setenv("STANDIN_OLLAMA_REJECT_SCHEMA", "1")
    run_id, record = submit(sample_pdfs, tmp_path / "out", "--llm", "tiny:1b", "--llm-wait", "600", "--max-rounds", "3")
    status = wait_for(run_id, {"incomplete"}, timeout_s=240)
    assert {t["state"] for t in status["tasks"]} == {"FAILED"}
    reason = status["reasons"][0]
    assert "cannot answer marker's constrained requests (a JSON schema and an image) with model tiny:1b" in reason
    assert "ollama 0.0.0-standin on " in reason and "answered HTTP 400" in reason and "Ollama 0.5" in reason
    assert "submit again" in reason
    assert manifest_records(resolve_run(run_id)) == []
    times = sacct_times(record["jobs"]["convert"])
    assert all(seconds(start, end) < 60 for start, end in times.values()), times  # not --llm-wait's 600 s
    record = read_record(resolve_run(run_id))
    assert len(record["rounds"]) == 1 and "cannot cure llm unfit" in record["rounds"][0]["note"]  # no next round
    assert "capability check failed: ollama 0.0.0-standin on " in invoke("logs", run_id, "--service").output
    assert standin_pids(standin_models) == []


def test_a_reasoning_model_serves_the_run_with_every_refinement_done(tmp_path, sample_pdfs, monkeypatch):
    monkeypatch.setenv("PATH", path_with_standin())  # sbatch passes the environment on to the jobs
    monkeypatch.setenv("STANDIN_VLLM_REASONING", "1")
    run_id, _ = submit(sample_pdfs, tmp_path / "out", "--llm", "org/tiny-instruct", "--llm-server", "vllm")
    wait_for(run_id, {"finished"}, timeout_s=300)
    paths = resolve_run(run_id)
    summary = read_summary(paths)
    assert summary["ok"] == 6 and summary["degraded"] == []
    assert summary["llm"]["failures"] == 0 and summary["llm"]["answers_moved"] >= 11  # one per page
    assert all(not r.degraded for r in manifest_records(paths))
    assert (
        "a reasoning model: its answers arrive in thinking/reasoning_content"
        in invoke("logs", run_id, "--service").output
    )
    assert not LlmPaths(paths.root).unfit.exists()
