"""A real run where one PDF is too slow and one too big: only those items fail, the task goes on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from inputs import EXAMPLES, pathological_pdf
from runkit import FINISHED_WITH_FAILURES, run_local

from hpc_marker.runstate.manifest import read_manifests

GOOD = len(list(EXAMPLES.rglob("*.pdf")))
pytestmark = pytest.mark.slow  # each test is a whole local run with a PDF that takes seconds or gigabytes


def _submit(pdfs, out, *extra):
    run = run_local(pdfs, out, "--gpus", "1", *extra, expect=FINISHED_WITH_FAILURES)  # the bad PDF fails
    return run.result, run.paths, run.by_pdf


def test_a_slow_pdf_times_out_alone(tmp_path):
    pdfs = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, pdfs)
    (pdfs / "zz-slow.pdf").write_bytes(pathological_pdf(400_000))  # about 8 s of text extraction here
    result, paths, records = _submit(pdfs, tmp_path / "out", "--workers-per-gpu", "2", "--item-timeout", "2+0.5/page")
    slow = records.pop("zz-slow.pdf")
    assert slow.status == "timeout" and "no result after" in slow.error and slow.seconds < 6
    assert "1 timeout" in result.output
    assert {r.status for r in records.values()} == {"ok"} and len(records) == GOOD
    summary = json.loads(paths.summary.read_text())
    assert summary["by_status"]["timeout"] == 1 and summary["ok"] == GOOD
    log = "".join(p.read_text() for p in paths.jobs.glob("*_log.out"))
    assert "1 worker replaced" in log


def test_a_memory_hungry_pdf_fails_alone_under_a_worker_cap(tmp_path):
    pdfs = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, pdfs)
    (pdfs / "hog.pdf").write_bytes(pathological_pdf(1_200_000))  # about 2 GB to extract
    # 400M, not 1G: the hog reaches the cap in under 1 CPU s instead of 8 (each of its two tries); the good PDFs need
    # far less (the bisect tests convert a book's pages under 300M, and see the cap as Python's MemoryError)
    _result, _paths, records = _submit(pdfs, tmp_path / "out", "--worker-memory", "400M")
    hog = records.pop("hog.pdf")
    assert hog.status == "failed"
    # Python's MemoryError, or PDFium's C++ allocator aborting the worker (tried twice): either way one line
    assert "out of memory" in hog.error or "killed by SIGABRT" in hog.error, hog.error
    assert {r.status for r in records.values()} == {"ok"} and len(records) == GOOD


@pytest.mark.root
def test_the_kernels_oom_killer_ends_one_worker_not_the_run(tmp_path):
    """A run inside a 768 MiB memory cgroup (what Slurm's ConstrainRAMSpace does to a job): the kernel
    kills the worker converting the 2 GB PDF; the task replaces it, records the item, goes on. The run without
    the PDF peaks at about 230 MiB there; a 1 GiB cgroup only let the PDF's worker burn more CPU before its kill
    (27.5 CPU s against 18.4 for the whole test)."""
    group = Path("/sys/fs/cgroup/memory") / f"hpcmarker-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(768 * 2**20))
        pdfs = tmp_path / "pdfs"
        shutil.copytree(EXAMPLES, pdfs)
        (pdfs / "hog.pdf").write_bytes(pathological_pdf(1_200_000))
        env = dict(
            os.environ,
            HPCMARKER_STATE_DIR=str(tmp_path / "state"),
            PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        )
        argv = [
            str(Path(sys.executable).parent / "hpcmarker"),
            "submit",
            "--pdfs",
            str(pdfs),
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "text",
            "--executor",
            "local",
            "--gpus",
            "1",
            "--workers-per-gpu",
            "2",
        ]
        joined = lambda: (group / "cgroup.procs").write_text(str(os.getpid()))  # noqa: E731 - runs in the child
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, preexec_fn=joined)
        assert result.returncode == FINISHED_WITH_FAILURES, result.stdout + result.stderr  # hog.pdf failed alone
        oom_kills = [line for line in (group / "memory.oom_control").read_text().splitlines() if "oom_kill " in line]
        paths = next((tmp_path / "out" / ".hpcmarker" / "runs").iterdir())
        records = {r.pdf: r for r in read_manifests(paths / "manifests").records}
        hog = records.pop("hog.pdf")
        assert hog.status == "failed" and "killed by SIGKILL" in hog.error, (hog.error, oom_kills)
        assert {r.status for r in records.values()} == {"ok"} and len(records) == GOOD
        assert not oom_kills or int(oom_kills[0].split()[1]) >= 2  # the kernel killed it on both tries (measured: 2)
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            subprocess.run(["kill", "-9", pid], check=False)
        group.rmdir()
