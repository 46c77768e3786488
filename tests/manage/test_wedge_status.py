"""`hpcmarker status` of a wedged run is read-only (issue 19): it reports the wedge and the exact command that
fixes it; only `status --fix` (or `hpcmarker cancel`, the command it prints) cancels, and says so."""

from __future__ import annotations

import json

from runkit import invoke
from test_manifest_status import WEDGED_SQUEUE, _plan, _record

from hpc_marker.planning.store import save_plan
from hpc_marker.runstate.layout import RunPaths


def _wedged_run(tmp_path, monkeypatch) -> tuple[RunPaths, list[str]]:
    """A run whose array pends with DependencyNeverSatisfied on the Slurm the test fakes; scancel is recorded."""
    from hpc_marker.slurm import commands as slurm
    from hpc_marker.slurm.parse import parse_squeue

    paths = RunPaths(tmp_path / "out" / ".hpcmarker" / "runs" / "r")
    paths.root.mkdir(parents=True)
    save_plan(_plan(), paths.plan)
    record = _record()
    record.jobs, record.out_dir = {"convert": ["549_0", "549_1"], "collect": ["550"]}, str(tmp_path / "out")
    paths.save_record(record)
    queue, cancelled = [WEDGED_SQUEUE], []
    monkeypatch.setattr(
        slurm,
        "job_states",
        lambda ids: (
            {"549_0": "PENDING", "549_1": "PENDING", "550": "PENDING"}
            if queue[0]
            else {"549_0": "CANCELLED", "549_1": "CANCELLED", "550": "CANCELLED"}
        ),
    )
    monkeypatch.setattr(slurm, "job_accounting", lambda ids, earlier=None: (slurm.job_states(ids), {}))  # one sacct
    monkeypatch.setattr(slurm, "queue", lambda ids: parse_squeue(queue[0]))
    monkeypatch.setattr(
        slurm,
        "queued_jobs",
        lambda ids: [j.job_id for j in slurm.queue(ids) if j.base_id in {i.split("_")[0] for i in ids}],
    )

    def scancel(ids):
        cancelled.extend(ids)
        queue[0] = ""

    monkeypatch.setattr(slurm, "cancel_jobs", scancel)
    return paths, cancelled


def test_plain_status_of_a_wedged_run_cancels_nothing_and_prints_the_fix(tmp_path, monkeypatch):
    paths, cancelled = _wedged_run(tmp_path, monkeypatch)
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
    paths, cancelled = _wedged_run(tmp_path, monkeypatch)
    result = invoke("status", paths.root, "--fix")
    assert cancelled == ["549_[0-3]", "550"] and paths.load_record().cancelled is not None
    assert (
        "run r is wedged: array 549 pending with DependencyNeverSatisfied (job 548 FAILED); cancelled array 549 "
        "and collector 550 — fix the cause, then: hpcmarker resume r"
    ) in result.output.splitlines(), result.output
    assert result.exit_code == 4 and "next: hpcmarker resume r" in result.output.splitlines()
