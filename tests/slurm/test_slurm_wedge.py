"""A wedged run on a real Slurm cluster: its array pends forever with DependencyNeverSatisfied.

The fault is made for real: the run is submitted held, its array is made to depend (afterok) on a
job that failed, then released; Slurm keeps it pending forever (this cluster does not set
kill_invalid_depend). `hpcmarker status` must say so in one line and cancel what the run left
queued, and `hpcmarker resume` must then finish the run, every PDF converted once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import faultkit
import pytest
from runkit import (
    document,
    documents,
    invoke,
    manifest_records,
    plan_item_ids,
    wait_for,
)
from slurmkit import run_options, submit

from hpc_marker.planning.scan import find_pdfs
from hpc_marker.slurm import commands
from hpc_marker.slurm.parse import SQUEUE_FORMAT, QueuedJob, parse_squeue

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def squeue_lines(ids: set[str]) -> list[QueuedJob]:
    out = subprocess.run(
        ["squeue", "--me", "-h", f"--format={SQUEUE_FORMAT}"], capture_output=True, text=True, check=True
    ).stdout
    return [job for job in parse_squeue(out) if job.base_id in ids]


def failed_job() -> str:
    done = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--partition=debug",
            "--time=1",
            "--job-name=hpcmarker-test-fails",
            "--output=/dev/null",
            "--wrap",
            "false",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().split(";")[0]


@faultkit.recorded(
    "wedged dependency",
    "array made to depend (afterok) on a failed job: pending forever with "
    "DependencyNeverSatisfied; `hpcmarker status` reports it, `status --fix` cancels it, then "
    "`hpcmarker resume RUN`",
)
def test_wedged_run_is_reported_cancelled_and_resumed(tmp_path, sample_pdfs, request):
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:  # the run's jobs are submitted held, so they cannot start yet
        submission = commands.sbatch_argv
        patch.setattr(commands, "sbatch_argv", lambda *args: ["sbatch", "--hold", *submission(*args)[1:]])
        paths, record = submit(sample_pdfs, out, "wedged", *run_options(2))
    array, collector = record["jobs"]["convert"][0].split("_")[0], record["jobs"]["collect"][0]
    request.addfinalizer(
        lambda: subprocess.run(["scancel", array, collector], capture_output=True, check=False)
    )  # none left
    assert {j.reason for j in squeue_lines({array, collector})} == {"JobHeldUser"}

    failed = failed_job()
    subprocess.run(["scontrol", "update", f"JobId={array}", f"Dependency=afterok:{failed}"], check=True)
    subprocess.run(["scontrol", "release", array, collector], check=True)
    deadline = time.time() + 90
    while not [j for j in squeue_lines({array}) if j.reason == "DependencyNeverSatisfied"]:
        assert time.time() < deadline, f"the array never showed DependencyNeverSatisfied: {squeue_lines({array})}"
        time.sleep(1)

    reported = invoke("status", "wedged", "--json")  # status only reports: it changes nothing
    assert reported.exit_code == 4, reported.output  # wedged: a script waiting on status must not wait forever
    status = json.loads(reported.stdout)
    assert status["state"] == "wedged" and "status cancels nothing" in status["wedged"]
    assert status["next"] == "hpcmarker cancel wedged && hpcmarker resume wedged"
    shown = invoke("status", "wedged")
    assert (
        shown.exit_code == 4
        and (
            f"run wedged is wedged: array {array} pending with DependencyNeverSatisfied (job {failed} FAILED); still "
            f"queued (status cancels nothing): array {array} and collector {collector} — fix the cause, then: "
            "hpcmarker cancel wedged && hpcmarker resume wedged"
        )
        in shown.output.splitlines()
    ), shown.output
    assert {j.base_id for j in squeue_lines({array, collector})} == {array, collector}  # only reported
    assert json.loads(paths.record.read_text())["cancelled"] is None

    settled = invoke("status", "wedged", "--fix")
    assert settled.exit_code == 4, settled.output
    assert (
        f"run wedged is wedged: array {array} pending with DependencyNeverSatisfied (job {failed} FAILED); "
        f"cancelled array {array} and collector {collector} — fix the cause, then: hpcmarker resume wedged"
    ) in settled.output.splitlines()
    assert squeue_lines({array, collector}) == []
    assert json.loads(paths.record.read_text())["cancelled"] is not None
    assert wait_for("wedged", {"incomplete"}, timeout_s=60)["wedged"] is None  # once sacct has caught up
    assert manifest_records(paths) == []  # nothing ran

    resumed = invoke("resume", "wedged")
    assert resumed.exit_code == 0, resumed.output
    assert "resubmitted tasks 0,1" in resumed.output
    final = wait_for("wedged", {"finished"}, timeout_s=300)
    assert final["wedged"] is None and final["pending"] == 0

    pdfs = sorted(rel for rel, _ in find_pdfs(sample_pdfs))
    plan_ids = plan_item_ids(paths)
    records = manifest_records(paths)
    faultkit.note(
        inputs=len(pdfs),
        items=len(plan_ids),
        lost=len(set(plan_ids) - {r.item_id for r in records}),
        twice=len(records) - len({r.item_id for r in records}),
        healed_by="status --fix, resume",
        wrong_status=sum(r.status != "ok" for r in records),
    )
    assert sorted(r.item_id for r in records) == plan_ids  # each item once
    assert sorted({r.pdf for r in records}) == pdfs and all(r.status == "ok" for r in records)
    assert len(documents(out)) == len(pdfs)
    assert all(document(out, rel).is_file() for rel in pdfs)
    assert os.path.getsize(paths.summary) > 0
