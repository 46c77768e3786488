"""A real run where one PDF is too slow and one too big: only those items fail, the task goes on."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner
from inputs import EXAMPLES, pathological_pdf

from hpc_marker.cli import cli
from hpc_marker.manifest import read_manifests
from hpc_marker.runs import resolve_run

GOOD = len(list(EXAMPLES.rglob("*.pdf")))


def _submit(pdfs, out, *extra):
    result = CliRunner().invoke(cli, ["submit", "--pdfs", str(pdfs), "--out", str(out), "--engine", "text",
                                      "--executor", "local", "--gpus", "1", *extra], catch_exceptions=False)
    paths = resolve_run(None)
    return result, paths, {r.pdf: r for r in read_manifests(paths.manifests).records}


def test_a_slow_pdf_times_out_alone(tmp_path):
    pdfs = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, pdfs)
    (pdfs / "zz-slow.pdf").write_bytes(pathological_pdf(400_000))  # about 8 s of text extraction here
    result, paths, records = _submit(pdfs, tmp_path / "out", "--workers-per-gpu", "2", "--item-timeout", "2+0.5/page")
    assert result.exit_code == 0, result.output
    slow = records.pop("zz-slow.pdf")
    assert slow.status == "timeout" and "no result after" in slow.error and slow.seconds < 6
    assert "1 timeout" in result.output
    assert {r.status for r in records.values()} == {"ok"} and len(records) == GOOD
    summary = json.loads(paths.summary.read_text())
    assert summary["by_status"]["timeout"] == 1 and summary["ok"] == GOOD
    log = "".join(p.read_text() for p in paths.jobs.glob("*_log.out"))
    assert "workers were replaced" in log


def test_a_memory_hungry_pdf_fails_alone_under_a_worker_cap(tmp_path):
    pdfs = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, pdfs)
    (pdfs / "hog.pdf").write_bytes(pathological_pdf(1_200_000))  # about 2 GB to extract
    result, paths, records = _submit(pdfs, tmp_path / "out", "--worker-memory", "1G")
    assert result.exit_code == 0, result.output
    hog = records.pop("hog.pdf")
    assert hog.status == "failed"
    # Python's MemoryError, or PDFium's C++ allocator aborting the worker (tried twice): either way one line
    assert "out of memory" in hog.error or "killed by SIGABRT" in hog.error, hog.error
    assert {r.status for r in records.values()} == {"ok"} and len(records) == GOOD
