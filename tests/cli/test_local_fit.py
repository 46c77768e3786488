"""Local runs fit the machine (issue 19): no more tasks than its cores (marker: its GPUs) hold, the tasks on
the CPU where there is no GPU (CUDA_VISIBLE_DEVICES empty), each pinned to its share of the cores, tasks ×
workers within them, and one note that says what was chosen. (conftest.py pretends 64 cores for every other
test, with HPCMARKER_LOCAL_CORES, so that their --gpus N stays N tasks; here the real cores are used.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from runkit import read_record, run_folder

from hpc_marker.executors.machine import LocalDevicesError, this_machine
from hpc_marker.runtime.sizing import fit_local, local_fit_note


def test_fit_to_cores_and_gpus():
    no_gpu = fit_local(4, 0, "benchmark", 2, [])
    assert (no_gpu.tasks, no_gpu.cores_per_task, no_gpu.gpus, no_gpu.workers) == (2, 1, (), 1)
    assert (
        local_fit_note(no_gpu, 4, "benchmark", 2, [])
        == "note: local run: 2 cores, no GPU: 2 tasks × 1 worker on the CPU (asked --gpus 4)"
    )
    assert local_fit_note(fit_local(2, 0, "text", 2, []), 2, "text", 2, []) is None  # as asked: nothing to say
    marker = fit_local(4, 0, "marker", 16, [0, 1])  # a GPU each, the cores shared
    assert (marker.tasks, marker.cores_per_task, marker.gpus, marker.workers) == (2, 8, (0, 1), None)
    assert (
        local_fit_note(marker, 4, "marker", 16, [0, 1])
        == "note: local run: 16 cores, 2 GPUs (0,1): 2 tasks × auto workers each on its own GPU (asked --gpus 4)"
    )
    on_cpu = fit_local(4, 0, "marker", 6, [])  # marker without a GPU: two cores a worker
    assert (on_cpu.tasks, on_cpu.gpus) == (3, ())
    assert local_fit_note(on_cpu, 4, "marker", 6, []).endswith("3 tasks × auto workers on the CPU (asked --gpus 4)")
    assert local_fit_note(fit_local(1, 0, "marker", 6, []), 1, "marker", 6, []) is not None  # marker on the CPU
    explicit = fit_local(4, 2, "text", 4, [])  # --workers-per-gpu 2 is honoured: fewer tasks
    assert (explicit.tasks, explicit.workers) == (2, 2)
    assert fit_local(3, 8, "text", 2, []).tasks == 1  # never none
    assert fit_local(2, 0, "text", 8, [0, 1]).gpus == ()  # the text engine needs no GPU...
    assert fit_local(2, 0, "text", 8, [0, 1], mps="on").gpus == (0, 1)  # ...unless MPS is asked for: GPU work


def _script(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{body}\n")
    (folder / name).chmod(0o755)


def test_the_machine_is_read_from_the_driver_or_the_callers_devices(tmp_path):
    _script(tmp_path / "bin", "nvidia-smi", 'echo "GPU 0: H100 (UUID: GPU-a)"; echo "GPU 1: H100 (UUID: GPU-b)"')
    path = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin"}
    assert this_machine(path).gpus == (0, 1)
    assert this_machine(dict(path, CUDA_VISIBLE_DEVICES="3,5")).gpus == (3, 5)  # the caller's choice wins
    assert this_machine(dict(path, CUDA_VISIBLE_DEVICES="")).gpus == ()
    assert this_machine({"PATH": str(tmp_path / "none"), "CUDA_VISIBLE_DEVICES": "-1"}).gpus == ()
    mine = this_machine({"PATH": str(tmp_path / "none"), "CUDA_VISIBLE_DEVICES": ""})
    assert mine.cores == tuple(sorted(os.sched_getaffinity(0))) and mine.pinned
    assert this_machine({"HPCMARKER_LOCAL_CORES": "8", "CUDA_VISIBLE_DEVICES": ""}).cores == tuple(range(8))
    for bad in ({"HPCMARKER_LOCAL_CORES": "many"}, {"CUDA_VISIBLE_DEVICES": "GPU-a"}):
        with pytest.raises(LocalDevicesError):
            this_machine(bad)


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_gpus_4_on_2_cores_without_a_gpu_is_2_tasks_of_1_worker_on_the_cpu(tmp_path, sample_pdfs):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "HPCMARKER_LOCAL_CORES"}
    env.update(CUDA_VISIBLE_DEVICES="", HPCMARKER_BENCH_SECONDS_PER_PAGE="0.05")
    two = sorted(os.sched_getaffinity(0))[:2]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpc_marker",
            "submit",
            "--pdfs",
            str(sample_pdfs),
            "--out",
            str(out),
            "--engine",
            "benchmark",
            "--executor",
            "local",
            "--gpus",
            "4",
            "--min-task-pages",
            "1",
            "--run-id",
            "fit",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, two),
    )  # a 2-core machine
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "note: local run: 2 cores, no GPU: 2 tasks × 1 worker on the CPU (asked --gpus 4)" in done.stderr.splitlines()
    ), done.stderr
    paths = run_folder(out, "fit")
    assert read_record(paths)["tasks"] == 2 and len(read_record(paths)["jobs"]["convert"]) == 2
    logs = " ".join(p.read_text() for p in paths.jobs.glob("*_log.out"))
    said = re.findall(r"(\d+) CPUs, (\d+) workers x \d+ threads, CUDA_VISIBLE_DEVICES=(\S+)", logs)
    assert sorted(said) == [("1", "1", "(none)")] * 2, logs  # each task: its own core, one worker, no GPU
