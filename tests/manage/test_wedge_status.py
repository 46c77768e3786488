"""`hpcmarker status` of a wedged run is read-only (issue 19): it reports the wedge and the exact command that
fixes it; only `status --fix` (or `hpcmarker cancel`, the command it prints) cancels, and says so."""

from __future__ import annotations

import json

from runkit import invoke
from test_manifest_status import wedged_run


def test_plain_status_of_a_wedged_run_cancels_nothing_and_prints_the_fix(tmp_path, monkeypatch):
    paths, cancelled = wedged_run(tmp_path / "out", monkeypatch)
    for args in ([], ["--json"], ["--watch"]):
        result = invoke("status", paths.root, *args)
        assert result.exit_code == 4, result.output
        assert cancelled == [] and paths.load_record().cancelled is None, args  # read-only
    result = invoke("status", paths.root)
    assert "next: hpcmarker cancel r && hpcmarker resume r" in result.output.splitlines()
    assert (
        "run r is wedged: array 549 pending with DependencyNeverSatisfied (job 548 FAILED); still queued "
        "(status cancels nothing): array 549 and collector 550 — fix the cause, then: hpcmarker cancel r && "
        "hpcmarker resume r"
    ) in result.output.splitlines()
    assert json.loads(invoke("status", paths.root, "--json").stdout)["state"] == "wedged"
    fixed = invoke("cancel", paths.root)  # the printed command's first half: it cancels
    assert fixed.exit_code == 0 and fixed.output.startswith("cancelled run r: "), fixed.output
    assert set(fixed.output.strip().split(": ", 1)[1].split(", ")) == {"549_[0-3]", "550"}
    assert cancelled and paths.load_record().cancelled is not None


def test_status_fix_cancels_what_a_wedged_run_left_queued_and_says_so(tmp_path, monkeypatch):
    paths, cancelled = wedged_run(tmp_path / "out", monkeypatch)
    result = invoke("status", paths.root, "--fix")
    assert cancelled == ["549_[0-3]", "550"] and paths.load_record().cancelled is not None
    assert (
        "run r is wedged: array 549 pending with DependencyNeverSatisfied (job 548 FAILED); cancelled array 549 "
        "and collector 550 — fix the cause, then: hpcmarker resume r"
    ) in result.output.splitlines(), result.output
    assert result.exit_code == 4 and "next: hpcmarker resume r" in result.output.splitlines()
