"""Rates recorded by finished runs and what they predict (issue 22: `estimate`): pure predictions, the user's
rates file adding samples up, and the command with and without a rate."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from runkit import invoke, run_local

from hpc_marker.planning.rates import Rate, predict, rate_key, read_rates, record_rate, smallest_gpus

KEY = rate_key("benchmark", {"output_format": "markdown"})


def test_a_prediction_is_start_up_plus_the_share_at_the_working_rate():
    rate = Rate(KEY, pages=1000, gpu_seconds=120.0, startup_gpu_seconds=20.0, idle_gpu_seconds=0.0, tasks=2)
    assert rate.pages_per_gpu_second == 10.0 and rate.startup_seconds == 10.0
    guess = predict(rate, pages=4000, gpus=4, price=3.0)
    assert guess.wall_seconds == 110.0  # 10 s start-up + 1000 pages at 10 pages/s
    assert guess.gpu_hours == pytest.approx(4 * 110 / 3600, abs=1e-4) and guess.cost == pytest.approx(0.37, abs=0.01)
    assert smallest_gpus(rate, 4000, deadline_s=110.0) == 4
    assert smallest_gpus(rate, 4000, deadline_s=111.0) == 4 and smallest_gpus(rate, 4000, deadline_s=109.0) == 5
    assert smallest_gpus(rate, 4000, deadline_s=10.0) is None  # start-up alone takes that long
    tail = Rate(KEY, pages=1000, gpu_seconds=140.0, startup_gpu_seconds=20.0, idle_gpu_seconds=20.0, tasks=2)
    assert tail.tail_factor == 1.2 and predict(tail, 4000, 4).wall_seconds == 130.0  # the last task's share, later


def test_the_rate_key_changes_with_what_changes_the_output():
    keys = {
        rate_key("marker", {"output_format": "markdown"}),
        rate_key("marker", {"output_format": "json"}),
        rate_key("marker", {"force_ocr": True}),
        rate_key("marker", {"ocr_auto": True}),  # --force-ocr auto: a mix of both, a rate of its own
        rate_key("marker", {"images": False}),
        rate_key("marker", {}, llm_model="llama3"),
        rate_key("marker", {"extra_config": {"a": 1}}),
        rate_key("text", {}),
    }
    assert len(keys) == 8


def test_samples_of_a_key_add_up_in_the_users_cache(tmp_path):
    record_rate(Rate(KEY, 100, 20.0, 2.0, 0.0, 1), home=tmp_path)
    both = record_rate(Rate(KEY, 300, 40.0, 4.0, 6.0, 2), home=tmp_path)
    assert (both.pages, both.gpu_seconds, both.tasks, both.runs) == (400, 60.0, 3, 2)
    assert read_rates(tmp_path)[KEY] == both
    (tmp_path / "rates.json").write_text("{not json")
    assert read_rates(tmp_path) == {}


def test_without_a_rate_estimate_says_so_and_how_to_get_one(tmp_path, sample_pdfs):
    result = invoke("estimate", "--pdfs", sample_pdfs, "--engine", "benchmark", "--gpus", "2")
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith("estimate: no rate yet for benchmark ")
    command = line.split("its run records one: ", 1)[1]
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    sample = command.split(" && hpcmarker submit")[0]  # the copying part runs as printed (submit: the next test)
    subprocess.run(["bash", "-c", sample], check=True, env=env)
    assert len(list((home / "hpcmarker-sample").glob("*.pdf"))) == 6
    argv = shlex.split(command.split(" && ")[-1])
    assert argv[:2] == ["hpcmarker", "submit"] and argv[argv.index("--engine") + 1] == "benchmark"


@pytest.mark.slow  # a whole local run
def test_after_a_run_estimate_predicts_from_its_rate(tmp_path, sample_pdfs, monkeypatch):
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.05")
    run = run_local(sample_pdfs, tmp_path / "out", "--engine", "benchmark", "--gpus", "1")
    assert run.summary["gpu_hours"] > 0
    result = invoke("estimate", "--pdfs", sample_pdfs, "--engine", "benchmark", "--gpus", "1", "--json")
    assert result.exit_code == 0, result.output
    guess = json.loads(result.output)
    assert guess["pages"] == 11 and guess["rate_source"] == "1 earlier run (11 pages)"
    assert guess["gpu_hours"] == pytest.approx(run.summary["gpu_hours"], rel=0.3)
    assert guess["wall_seconds"] == pytest.approx(run.summary["allocation_wall_seconds"], rel=0.3)
    for key in ("wall_seconds", "gpu_hours", "pages", "rate_pages_per_gpu_second", "rate_source"):
        assert guess[key] is not None, key
    human = invoke("estimate", "--pdfs", sample_pdfs, "--engine", "benchmark", "--deadline", "1h", "--price", "2")
    lines = human.output.strip().splitlines()
    assert lines[0].startswith("estimate: 11 pages on 1 GPU: ") and ", cost " in lines[0]
    assert lines[1].startswith("deadline 1h 0m: --gpus 1 (")
    other = invoke("estimate", "--pdfs", sample_pdfs, "--engine", "text", "--json")
    assert json.loads(other.output)["rate_source"] is None  # another engine: no rate
    again = invoke(
        "submit",
        "--pdfs",
        sample_pdfs,
        "--out",
        tmp_path / "again",
        "--engine",
        "benchmark",
        "--executor",
        "local",
        "--force",
    )
    assert "estimate: 11 pages on 1 GPU: " in again.output, again.output


def test_a_bad_deadline_is_one_line_exit_2(sample_pdfs):
    result = invoke("estimate", "--pdfs", sample_pdfs, "--deadline", "soon")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "--deadline" in result.output and "12h" in result.output


@pytest.mark.slow  # a whole local run
def test_calibrate_converts_a_sample_here_and_measures_the_rate(sample_pdfs, monkeypatch):
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.05")
    args = ("estimate", "--pdfs", sample_pdfs, "--engine", "benchmark", "--gpus", "2", "--json")
    result = invoke(*args, "--calibrate", "3", "--executor", "local")
    assert result.exit_code == 0, result.output
    guess = json.loads(result.output[result.output.index("{") :])
    assert guess["rate_source"].startswith("1 earlier run (") and guess["gpu_hours"] > 0 and guess["pages"] == 11
    assert json.loads(invoke(*args).output)["rate_source"] == guess["rate_source"]  # kept for the next estimate


def test_a_folder_without_pdfs_is_one_line_exit_2(tmp_path):
    result = invoke("estimate", "--pdfs", tmp_path)
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"Error: --pdfs {tmp_path}: no PDF files found (looked for *.pdf in any case, recursively)"
    ]
