"""`hpcmarker llm` commands against the stand-in ollama: bench (a row per concurrency, --json,
--start), pull, create; one-line errors."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from standin.harness import StandinOllama, free_port, manifest, path_with_standin, seed_model, start_vllm, vllm_pids

from hpc_marker.cli.llm import llm, parse_option
from hpc_marker.llm.bench import BenchRow, display_url, suggest_parallel


@pytest.fixture
def standin(tmp_path):
    server = StandinOllama(tmp_path / "standin", registry=tmp_path / "registry").start()
    seed_model(server.models, "tiny:1b")
    yield server
    server.stop()


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(llm, list(args), env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)


def table_rows(output: str) -> list[list[str]]:
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) == 9 and cells[0].rstrip(" *").isdigit():
            rows.append(cells)
    return rows


def test_bench_prints_one_row_per_concurrency(standin):
    result = invoke(
        "bench",
        "tiny:1b",
        "--url",
        standin.url,
        "--parallel",
        "4,1,2",
        "--requests",
        "4",
        "--prompt-tokens",
        "30",
        "--max-tokens",
        "8",
    )
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert [r[0].rstrip(" *") for r in rows] == ["1", "2", "4"]
    for row in rows:
        assert row[1:4] == ["4", "4", "0"] and row[4] == "32"  # requests, ok, failed; 4 x 8 tokens
        assert float(row[5]) > 0
    assert "suggested --llm-parallel:" in result.output
    assert standin.requests().count("POST /api/generate") == 1 + 3 * 4  # warm-up + 3 levels


def test_bench_json_and_start_a_local_ollama(tmp_path, monkeypatch):
    models = tmp_path / "models"
    seed_model(models, "tiny:1b")
    monkeypatch.setenv("PATH", path_with_standin())
    result = invoke(
        "bench",
        "tiny:1b",
        "--start",
        "--models-dir",
        str(models),
        "--parallel",
        "1,2",
        "--requests",
        "3",
        "--max-tokens",
        "5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["concurrency"] for r in data["rows"]] == [1, 2]
    assert all(r["tokens_out"] == 15 and r["tokens_per_s"] > 0 and r["failed"] == 0 for r in data["rows"])
    assert data["suggested_parallel"] in (1, 2) and "OLLAMA_NUM_PARALLEL=2" in data["server"]


def test_bench_errors_are_one_line():
    result = CliRunner().invoke(llm, ["bench", "m", "--url", f"http://127.0.0.1:{free_port()}/SECRETPATH"])
    assert result.exit_code == 1
    assert (
        result.output.startswith("Error: cannot reach Ollama at http://127.0.0.1:")
        and "SECRETPATH" not in result.output
    )
    assert CliRunner().invoke(llm, ["bench", "m", "--parallel", "0,2"]).exit_code == 2
    assert CliRunner().invoke(llm, ["bench", "m", "--url", "http://x", "--start"]).exit_code == 2


def test_bench_reports_a_missing_model(standin):
    result = CliRunner().invoke(llm, ["bench", "nope:1b", "--url", standin.url])
    assert result.exit_code == 1 and 'model "nope:1b" not found' in result.output


def test_pull_and_create_prepare_models(standin, tmp_path):
    seed_model(tmp_path / "registry", "big:70b")
    result = invoke("pull", "big:70b", "--url", standin.url)
    assert result.exit_code == 0 and "pulled big:70b" in result.output
    assert manifest(standin.models, "big:70b") is not None
    result = CliRunner().invoke(llm, ["pull", "absent:1b", "--url", standin.url])
    assert result.exit_code == 1 and "pull absent:1b: pull model manifest: file does not exist" in result.output
    result = invoke(
        "create",
        "big-8k",
        "--from",
        "big:70b",
        "--ctx",
        "8192",
        "--option",
        "temperature=0.2",
        "--option",
        'stop=["END"]',
        "--url",
        standin.url,
    )
    assert result.exit_code == 0, result.output
    assert manifest(standin.models, "big-8k")["parameters"] == {"num_ctx": 8192, "temperature": 0.2, "stop": ["END"]}
    assert CliRunner().invoke(llm, ["create", "x", "--from", "big:70b", "--option", "novalue"]).exit_code == 2


def test_pure_helpers():
    assert parse_option("temperature=0") == ("temperature", 0)
    assert parse_option("stop=###") == ("stop", "###")
    row = dict(
        requests=8,
        ok=8,
        failed=0,
        wall_s=1.0,
        tokens_in=0,
        tokens_out=0,
        latency_p50_s=0.0,
        latency_p95_s=0.0,
        latency_max_s=0.0,
    )
    rows = [
        BenchRow(concurrency=c, tokens_per_s=t, **row) for c, t in ((1, 100), (2, 190), (4, 350), (8, 370), (16, 372))
    ]
    assert suggest_parallel(rows) == 4
    rows[2].failed = 1
    assert suggest_parallel(rows) == 8
    assert display_url("http://10.1.2.3:4000/secret/task/1") == "http://10.1.2.3:4000"
    assert display_url("127.0.0.1:11434") == "http://127.0.0.1:11434"


def test_bench_speaks_the_openai_api_to_vllm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_with_standin())
    monkeypatch.setenv("STANDIN_VLLM_REQUEST_LOG", str(tmp_path / "requests.log"))
    result = invoke(
        "bench",
        "org/tiny",
        "--server",
        "vllm",
        "--start",
        "--parallel",
        "1,3",
        "--requests",
        "3",
        "--max-tokens",
        "5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["concurrency"] for r in data["rows"]] == [1, 3] and "--max-num-seqs 3" in data["server"]
    assert all(r["ok"] == 3 and r["tokens_out"] == 15 and r["tokens_per_s"] > 0 for r in data["rows"])
    log = (tmp_path / "requests.log").read_text()
    assert log.count("POST /v1/chat/completions model=org/tiny") == 1 + 2 * 3  # warm-up + 2 levels
    # a vLLM someone started, with its own --api-key: the key is needed, and a missing model is one line
    port = free_port()
    env = {**os.environ, "STANDIN_VLLM_REQUEST_LOG": str(tmp_path / "own.log")}
    server = start_vllm(port, "org/tiny", env, "--api-key", "k3y")
    try:
        url = f"http://127.0.0.1:{port}"
        ok = invoke(
            "bench",
            "org/tiny",
            "--server",
            "vllm",
            "--url",
            url,
            "--api-key",
            "k3y",
            "--parallel",
            "2",
            "--requests",
            "2",
            "--max-tokens",
            "4",
        )
        assert ok.exit_code == 0, ok.output
        assert [r[:5] for r in table_rows(ok.output)] == [["2 *", "2", "2", "0", "8"]]
        denied = CliRunner().invoke(llm, ["bench", "org/tiny", "--server", "vllm", "--url", url])
        assert denied.exit_code == 1 and "HTTP 401 (give --api-key)" in denied.output
        missing = CliRunner().invoke(llm, ["bench", "org/other", "--server", "vllm", "--url", url, "--api-key", "k3y"])
        assert missing.exit_code == 1 and "org/other: not served at" in missing.output and "org/tiny" in missing.output
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert vllm_pids(tmp_path / "requests.log") == []
