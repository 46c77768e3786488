"""The GPU proof's plumbing (benchmarks/gpu_check.sh): the benchmark engine runs a workload file in each worker,
a local run gives such an engine's tasks a GPU, and the script refuses in one line without a GPU; its --dry-run
does the whole check on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hpc_marker.engines import engine_uses_gpu
from hpc_marker.engines.base import EngineOptions
from hpc_marker.engines.benchmark import NULL_VARIABLE, SECONDS_PER_PAGE_VARIABLE, WORKLOAD_VARIABLE, BenchmarkEngine
from hpc_marker.executors.machine import Machine, fit_machine

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_the_workload_loads_once_per_engine_and_works_every_page(monkeypatch, tmp_path):
    calls = tmp_path / "calls.txt"
    workload = tmp_path / "workload.py"
    workload.write_text(
        f"def load():\n    open({str(calls)!r}, 'a').write('load\\n')\n"
        f"def work(pages):\n    open({str(calls)!r}, 'a').write(f'work {{pages}}\\n')\n"
    )
    monkeypatch.setenv(SECONDS_PER_PAGE_VARIABLE, "0")
    monkeypatch.setenv(NULL_VARIABLE, "1")
    monkeypatch.setenv(WORKLOAD_VARIABLE, str(workload))
    engine = BenchmarkEngine(EngineOptions())
    engine.convert(tmp_path / "never-opened.pdf", range(0, 3))
    engine.convert(tmp_path / "never-opened.pdf", range(3, 5))
    assert calls.read_text().split("\n")[:-1] == ["load", "work 3", "work 2"]


def test_a_gpu_workload_makes_the_benchmark_engine_a_gpu_engine_for_local_runs(monkeypatch):
    machine = Machine(cores=tuple(range(8)), pinned=False, gpus=(3,))
    monkeypatch.delenv(WORKLOAD_VARIABLE, raising=False)
    assert not engine_uses_gpu("benchmark") and engine_uses_gpu("marker")
    assert fit_machine(1, 2, "benchmark", machine, "off").gpus == ()  # a CPU engine: the CPU
    monkeypatch.setenv(WORKLOAD_VARIABLE, "/anywhere/gpu_workload.py")
    assert engine_uses_gpu("benchmark") and not engine_uses_gpu("text")
    assert fit_machine(1, 2, "benchmark", machine, "off").gpus == (3,)  # its task gets the GPU, MPS or not


def test_without_a_gpu_the_script_says_so_in_one_line(tmp_path):
    path = ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "nvidia-smi").exists())
    done = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          env=dict(os.environ, PATH=path))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "gpu_check: no NVIDIA GPU here: nvidia-smi is not on PATH (--dry-run checks the plumbing on the CPU)"
    )
    assert not list(tmp_path.iterdir())  # nothing was run


@pytest.mark.slow
def test_the_dry_run_checks_every_worker_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--workers", "2", "--pages", "16", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert [run["run"] for run in result["runs"]] == ["w2-mps-off", "w2-mps-on"]
    for run in result["runs"]:
        assert run["problems"] == [] and run["pages"] == 16 and run["workers_reporting"] == 2
        assert run["pages_per_s"] > 0
    assert "| 2 worker(s), --mps on |" in done.stdout and "| bare loop, 1 process |" in done.stdout
