"""`retry` is offered only where it could convert something (issue 19): PDFs the scan found unreadable, and
poison items (failed 3 times), are named with what can be done instead; a run with an item that may convert
on another try still says `next: hpcmarker retry RUN`."""

from __future__ import annotations

import shutil

import pytest
from inputs import EXAMPLES, make_bad_pdfs
from runkit import FINISHED_WITH_FAILURES, invoke, run_local

from hpc_marker.engines.benchmark import SECONDS_PER_PAGE_VARIABLE


@pytest.mark.slow
def test_pdfs_known_unreadable_at_scan_are_not_offered_to_retry(tmp_path):
    pdfs = tmp_path / "pdfs"
    make_bad_pdfs(pdfs)
    shutil.copy(EXAMPLES / "en" / "upref.pdf", pdfs / "good.pdf")
    run = run_local(pdfs, tmp_path / "out", expect=FINISHED_WITH_FAILURES)
    run_id = run.paths.root.name
    assert "hpcmarker retry" not in run.output, run.output
    assert "cannot be converted by `retry`: 6 cannot be read as they are" in " ".join(run.output.split())
    status = invoke("status", run_id)
    assert status.exit_code == FINISHED_WITH_FAILURES and "next:" not in status.output, status.output
    assert run.summary["retry"] == {"retryable": 0, "known_at_scan": 6, "poison": 0}


@pytest.mark.slow
def test_an_item_that_keeps_timing_out_is_offered_to_retry_until_it_is_poison(tmp_path, monkeypatch):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    shutil.copy(EXAMPLES / "en" / "upref.pdf", pdfs / "slow.pdf")
    monkeypatch.setenv(SECONDS_PER_PAGE_VARIABLE, "30")
    run = run_local(
        pdfs,
        tmp_path / "out",
        "--engine",
        "benchmark",
        "--item-timeout",
        "1",
        "--no-bisect",
        expect=FINISHED_WITH_FAILURES,
    )
    run_id, output = run.paths.root.name, run.output
    for _attempt in (2, 3):  # failed once, then twice: another try could still convert it
        assert f"next: hpcmarker retry {run_id}" in output, output
        again = invoke("retry", run_id)
        assert again.exit_code == FINISHED_WITH_FAILURES, again.output
        output = again.output
    assert "next:" not in output and "--include-poison` tries them once more" in output, output
    status = invoke("status", run_id)
    assert "next:" not in status.output, status.output
    assert f"`hpcmarker retry {run_id} --include-poison` tries them once more" in " ".join(status.output.split())
