"""Whole local runs with `--llm-server vllm --llm-replicas 2` and the stand-in vllm: both replicas serve
the text engine's refinement, status and summary show each replica, MPS comes and goes with each task;
and killing one replica mid-run converts every PDF anyway, the manifest marking exactly the items
whose requests it cut off."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from runkit import LOCAL_TEXT, invoke, manifest_records, read_summary
from standin.harness import path_with_standin, vllm_pids, vllm_trace

from hpc_marker.llm.settings import LlmPaths
from hpc_marker.manage.tally import read_progress
from hpc_marker.runstate.index import resolve_run
from hpc_marker.util.processes import process_tree
from hpc_marker.util.text import plural

MODEL = "org/tiny-instruct"


@pytest.fixture
def standin(tmp_path, monkeypatch):
    template = str(tmp_path / "vllm-{port}.requests")
    monkeypatch.setenv("PATH", path_with_standin())
    monkeypatch.setenv("STANDIN_VLLM_REQUEST_LOG", template)
    return template


def submit_args(pdfs: Path, out: Path, *extra: str) -> list[str]:
    server = ("--llm", MODEL, "--llm-server", "vllm", "--llm-replicas", "2")
    llm = (*server, "--llm-parallel", "2", "--llm-bind", "127.0.0.1")
    return ["submit", "--pdfs", str(pdfs), "--out", str(out), *LOCAL_TEXT, "--gpus", "2", *llm, *extra]


def replica_logs(run_dir: Path, template: str) -> list[Path]:
    """Each replica's request log (the stand-in names it by its port, which vllm's argv line shows)."""
    logs = []
    for replica in range(2):
        argv = LlmPaths(run_dir, replica).server_log("vllm").read_text().splitlines()[0]
        logs.append(Path(template.replace("{port}", argv.split("--port ")[1].split()[0])))
    return logs


def page_keys(pdf: Path, start: int, stop: int) -> set[str]:
    """The stand-in's key of each page request the text engine sends for pages [start, stop)."""
    from pdftext.extraction import paginated_plain_text_output

    texts = paginated_plain_text_output(str(pdf), sort=True, hyphens=False, page_range=list(range(start, stop)))
    return {hashlib.sha256(t.encode()).hexdigest()[:12] for t in texts if t.strip()}


@pytest.mark.slow
def test_two_vllm_replicas_serve_the_run_with_mps_per_task(tmp_path, sample_pdfs, standin, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the GPUs of this "node" (the stand-in MPS daemon's)
    result = invoke(*submit_args(sample_pdfs, tmp_path / "out", "--mps", "on"))  # --mps on: GPU work, a GPU a task
    assert result.exit_code == 0, result.output
    paths = resolve_run(None)
    summary = read_summary(paths)
    assert summary["ok"] == 6 and summary["degraded"] == [] and summary["llm"]["server"] == "vllm"
    llm = summary["llm"]
    assert llm["requests"] >= 11 and llm["tokens_out"] > 0 and llm["failures"] == 0 and llm["timeouts"] == 0
    assert [r["replica"] for r in llm["replicas"]] == [0, 1]
    assert all(r["requests"] > 0 for r in llm["replicas"]), llm["replicas"]  # both replicas served
    assert len(llm["service_stopped"]) == 2
    meta = json.loads((tmp_path / "out" / "en" / "upref" / "upref_meta.json").read_text())
    assert meta["llm"]["refined_pages"] == 2 and meta["llm"]["degraded_pages"] == 0
    markdown = (tmp_path / "out" / "en" / "upref" / "upref.md").read_text()
    assert markdown.upper() == markdown  # the stand-in's answer (upper case) made it into the document
    status = json.loads(invoke("status", "--json").output)
    assert [r["state"] for r in status["llm"]["replicas"]] == ["COMPLETED", "COMPLETED"]
    assert "replica 1 (job" in invoke("status").output
    report = (paths.root / "report.html").read_text()
    assert '<table id="llm-replicas-table">' in report and "tokens out per s" in report
    assert status["llm"]["bound"]["bound"] in ("llm", "conversion")
    logs = "".join(p.read_text() for p in paths.logs.glob("task-*.out"))
    assert logs.count("MPS: control daemon started") == 2 and logs.count("MPS: control daemon stopped") == 2
    assert "LLM budget: 4 workers x 2 requests in flight = 8 for 4 server slots" in logs
    assert "LLM relay on http://127.0.0.1:" in logs
    for replica in range(2):
        assert not LlmPaths(paths.root, replica).secret.exists() and not LlmPaths(paths.root, replica).endpoint.exists()
    assert vllm_pids(Path(standin)) == []


@pytest.mark.slow
def test_killing_one_replica_mid_run_loses_nothing_and_marks_exactly_the_affected_items(
    tmp_path, sample_pdfs, standin, monkeypatch
):
    monkeypatch.setenv("STANDIN_VLLM_SECONDS_PER_REQUEST", "1.0")
    outcome: list = []
    run = threading.Thread(
        target=lambda: outcome.append(invoke(*submit_args(sample_pdfs, tmp_path / "out", "--workers-per-gpu", "2")))
    )
    run.start()
    deadline = time.monotonic() + 120
    while True:  # until replica 1 runs requests
        runs = list((tmp_path / "out" / ".hpcmarker" / "runs").glob("*"))
        if runs and (runs[0] / "llm" / "vllm-1.log").exists() and (runs[0] / "llm" / "vllm.log").exists():
            logs = replica_logs(runs[0], standin)
            trace = vllm_trace(logs[1])
            if len(trace["begin"]) > len(trace["end"]) + len(trace["abort"]):
                break
        assert time.monotonic() < deadline and run.is_alive(), "replica 1 never got a request"
        time.sleep(0.05)
    record = json.loads((runs[0] / "run.json").read_text())
    killed_at = time.time()
    for pid in process_tree(int(record["jobs"]["service"][1])):  # the whole replica: service, front, vllm
        os.kill(pid, signal.SIGKILL)
    run.join(timeout=300)
    assert outcome and outcome[0].exit_code == 0, outcome and outcome[0].output
    records = manifest_records(resolve_run(None))
    assert len(records) == 6 and all(r.status == "ok" and not r.degraded for r in records)  # every PDF, refined
    trace1 = vllm_trace(logs[1])
    cut_keys = set(trace1["begin"]) - set(trace1["end"])
    assert cut_keys and cut_keys <= set(vllm_trace(logs[0])["end"])  # each cut request was answered by replica 0
    affected = {r.item_id for r in records if page_keys(sample_pdfs / r.pdf, r.page_start, r.page_stop) & cut_keys}
    marked = {r.item_id for r in records if r.llm_failover}
    assert affected and affected <= marked, (affected, marked)
    for r in records:  # any other marked item had a request sent to the dead replica in the moment it died
        if r.item_id in marked - affected:
            assert r.started <= killed_at + 1 and r.finished >= killed_at, r
    assert all("moved to another replica" in r.llm_failover for r in records if r.llm_failover)
    paths = resolve_run(None)
    summary = read_summary(paths)
    assert summary["ok"] == 6 and summary["llm"]["failures"] == 0 and len(summary["llm_failover"]) == len(marked)
    assert json.loads(invoke("status", "--json").output)["failed_over"] == len(marked)
    assert f"{plural(len(marked), 'item')} had LLM requests moved to another replica" in invoke("status").output
    aside = paths.summary.rename(paths.summary.with_name("summary.aside"))
    try:
        assert read_progress(paths, failed_over=True).failed_over == len(marked)  # the commit logs, before collection
    finally:
        aside.rename(paths.summary)
    assert vllm_pids(Path(standin)) == []


@pytest.mark.slow
def test_failed_vllm_calls_mark_exactly_their_items_degraded_in_status_summary_and_report(
    tmp_path, sample_pdfs, standin, monkeypatch
):
    """The Ollama path's degraded accounting, with vLLM: each completion the server fails keeps its
    page's extracted text; the manifest marks exactly the items that had one; status, summary.json and
    the report count them, and each replica's failures add up to what the servers failed."""
    monkeypatch.setenv("STANDIN_VLLM_FAIL_EVERY", "2")
    result = invoke(*submit_args(sample_pdfs, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    paths = resolve_run(None)
    records = manifest_records(paths)
    assert len(records) == 6 and all(r.status == "ok" for r in records)  # the extracted text is kept
    traces = [vllm_trace(log) for log in replica_logs(paths.root, standin)]
    failed_keys = {key for trace in traces for key in trace["fail"]}
    failed = sum(len(trace["fail"]) for trace in traces)
    affected = {r.item_id for r in records if page_keys(sample_pdfs / r.pdf, r.page_start, r.page_stop) & failed_keys}
    assert affected and {r.item_id for r in records if r.degraded} == affected
    assert all("kept their extracted text" in r.degraded for r in records if r.degraded)
    summary = read_summary(paths)
    llm = summary["llm"]
    assert llm["failures"] == failed and sum(r["failures"] for r in llm["replicas"]) == failed
    assert llm["tokens_out"] > 0 and llm["tokens_out_per_s"] > 0
    assert len(summary["degraded"]) == len(affected)
    status = json.loads(invoke("status", "--json").output)
    assert status["degraded"] == len(affected) and status["llm"]["failures"] == failed
    text = invoke("status").output
    assert f"{plural(len(affected), 'item')} with degraded LLM refinement" in text and f"{failed} failed" in text
    table = (paths.root / "report.html").read_text().split('<table id="degraded-table">')[1].split("</table>")[0]
    assert all(r.pdf in table for r in records if r.degraded)
    assert vllm_pids(Path(standin)) == []
