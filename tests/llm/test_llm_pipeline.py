"""The LLM service as part of a run, locally, with the stand-in `ollama` (tests/standin)."""

from __future__ import annotations

import json

import pytest
from runkit import LOCAL_TEXT, invoke
from standin.harness import seed_model, standin_pids

from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.manifest import read_manifests
from hpc_marker.runstate.progress import read_commits


@pytest.fixture
def standin(tmp_path, monkeypatch):
    from standin.harness import path_with_standin

    models = tmp_path / "models"
    seed_model(models, "tiny:1b")
    monkeypatch.setenv("PATH", path_with_standin())
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    return models


def run_with_llm(pdfs, out, *extra):
    llm = ("--llm", "tiny:1b", "--llm-bind", "127.0.0.1", "--llm-parallel", "2")
    return invoke("submit", "--pdfs", pdfs, "--out", out, *LOCAL_TEXT, "--gpus", "2", *llm, *extra)


@pytest.mark.slow
def test_text_engine_refined_by_the_run_service(tmp_path, sample_pdfs, standin):
    result = run_with_llm(sample_pdfs, tmp_path / "out", "--llm-ctx", "4096")
    assert result.exit_code == 0, result.output
    paths = resolve_run(None)
    summary = json.loads(paths.summary.read_text())
    assert summary["ok"] == 6 and summary["degraded"] == []
    assert summary["llm"]["requests"] >= 11  # one per page
    assert summary["llm"]["tokens_out"] > 0 and summary["llm"]["service_stopped"]
    meta = json.loads((tmp_path / "out" / "en" / "upref" / "upref_meta.json").read_text())
    assert meta["llm"]["refined_pages"] == 2 and meta["llm"]["degraded_pages"] == 0
    assert standin_pids(standin) == []  # the collector stopped the service
    # the derived model (num_ctx) was created once, with a deterministic name
    assert any(p.name.startswith("tiny") and "hpcm" in p.name for p in standin.iterdir())
    # the secret is nowhere but its own file
    secret = (paths.root / "llm" / "secret").read_text().strip() if (paths.root / "llm" / "secret").exists() else None
    assert secret is None  # removed when the service stopped
    status = json.loads(invoke("status", "--json").output)
    assert status["llm"]["requests"] == summary["llm"]["requests"] and status["degraded"] == 0
    # the time the tasks waited on the service (to come up, and on each refinement) is accounted as LLM wait
    assert (read_commits(paths.progress)["llm_s"] > 0).sum() == 6  # each item's worker waited on its refinement
    waits = [(row["llm_wait"], row["startup"]) for row in status["gpu_tasks"]]
    assert len(waits) == 2 and all(llm > 0 for llm, _ in waits), waits
    assert sum(status["gpu_time"].values()) == pytest.approx(status["gpu_hours"], abs=1e-3)


@pytest.mark.slow
def test_failing_llm_calls_mark_items_degraded(tmp_path, sample_pdfs, standin, monkeypatch):
    monkeypatch.setenv("STANDIN_OLLAMA_FAIL_EVERY", "2")
    result = run_with_llm(sample_pdfs, tmp_path / "out")
    assert result.exit_code == 0, result.output
    paths = resolve_run(None)
    records = read_manifests(paths.manifests).records
    assert all(r.status == "ok" for r in records)  # the extracted text is kept
    degraded = [r for r in records if r.degraded]
    assert degraded and all("kept their extracted text" in r.degraded for r in degraded)
    summary = json.loads(paths.summary.read_text())
    assert summary["llm"]["failures"] >= len(degraded)
    assert json.loads(invoke("status", "--json").output)["degraded"] == len(degraded)
    assert "degraded" in invoke("status").output


@pytest.mark.slow
def test_service_that_never_comes_up_fails_tasks_clearly_and_in_time(tmp_path, sample_pdfs, standin, monkeypatch):
    monkeypatch.setenv("STANDIN_OLLAMA_NEVER_READY", "1")
    result = run_with_llm(sample_pdfs, tmp_path / "out", "--llm-wait", "4")
    assert result.exit_code == 4, result.output  # incomplete: nothing was converted
    paths = resolve_run(None)
    assert f"run {paths.run_id}: incomplete: 6 of 6 items not converted (llm service)" in result.output
    assert "2 tasks (0,1): the LLM service of run" in result.output and "is not up after 4s" in result.output
    assert f"see `hpcmarker logs {paths.run_id} --service`, then: hpcmarker resume {paths.run_id}" in result.output
    assert read_manifests(paths.manifests).records == []  # nothing converted without the service
    log = "".join(p.read_text() for p in paths.logs.glob("task-*.out"))
    assert "is not up after 4s" in log
    assert standin_pids(standin) == []


def test_llm_options_need_a_model(tmp_path, sample_pdfs):
    result = invoke(
        "submit", "--pdfs", str(sample_pdfs), "--out", str(tmp_path / "o"), *LOCAL_TEXT, "--llm-ctx", "8192"
    )
    assert result.exit_code == 2 and "need --llm MODEL" in result.output
