"""Shared helpers for the tests that submit runs to a real Slurm cluster (one copy of each).

- `run_options`: the options most of them submit with (tasks, engine, one CPU each, a time limit).
- `submit`: `hpcmarker submit` to the test cluster, asserted to be accepted; the run's folder and run.json.
"""

from __future__ import annotations

from pathlib import Path

from runkit import invoke, read_record

from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.layout import RunPaths


def run_options(gpus: int, engine: str | None = "text", time: int = 20) -> tuple[str, ...]:
    """`--gpus GPUS --engine ENGINE --cpus-per-task 1 --time TIME` (no `--engine` for None: the default one)."""
    return ("--gpus", str(gpus), *(("--engine", engine) if engine else ()), "--cpus-per-task", "1", "--time", str(time))


def submit(pdfs: Path, out: Path, run_id: str, *options: object) -> tuple[RunPaths, dict]:
    """`hpcmarker submit --pdfs PDFS --out OUT OPTIONS... --run-id RUN_ID`, asserted to be accepted (exit 0):
    the run's folder and its run.json (the job ids it was given)."""
    result = invoke("submit", "--pdfs", pdfs, "--out", out, *options, "--run-id", run_id)
    assert result.exit_code == 0, result.output
    paths = resolve_run(run_id)
    return paths, read_record(paths)
