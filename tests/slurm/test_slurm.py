"""On a real Slurm cluster (scripts/slurm-test-cluster.sh up): the whole pipeline, end to end, on the
shared corpus. Marked `slurm` (skipped where no cluster answers; failed instead under
HPCMARKER_REQUIRE=slurm, as in CI) and `slow` (each test waits for real jobs).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
from faultkit import pids_with, sacct_times
from inputs import CORPUS
from runkit import (
    document,
    documents,
    invoke,
    manifest_records,
    plan_item_ids,
    read_record,
    read_summary,
    wait_for,
    wait_until,
)
from slurmkit import run_options, submit

from hpc_marker.planning.scan import find_pdfs
from hpc_marker.runstate.index import resolve_run
from hpc_marker.submission.scripts import split_dry_run

pytestmark = [pytest.mark.slurm, pytest.mark.corpus, pytest.mark.slow]


def processes_of_job(array_id: str) -> list[int]:
    """PIDs whose environment says they belong to Slurm job `array_id` (workers included)."""
    return pids_with(SLURM_ARRAY_JOB_ID=array_id)


@pytest.mark.browser  # the collector's report is checked in a real browser
def test_corpus_converts_on_4_gpus_exactly_once(tmp_path, chromium):
    out = tmp_path / "out"
    args = ["submit", "--pdfs", CORPUS, "--out", out, *run_options(4), "--run-id", "corpus4"]
    dry = invoke(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    paths = resolve_run("corpus4")
    record = read_record(paths)
    status = wait_for("corpus4", {"finished"})

    # --dry-run printed exactly what sbatch was given
    scripts = split_dry_run(dry.output)
    array_id = record["jobs"]["convert"][0].split("_")[0]
    assert (paths.jobs / f"{array_id}_submission.sh").read_text() == scripts["convert"]
    assert (paths.jobs / f"{record['jobs']['collect'][0]}_submission.sh").read_text() == scripts["collect"]

    # every work item: exactly one manifest line; every PDF: exactly one document
    pdfs = [rel for rel, _ in find_pdfs(CORPUS)]
    plan_ids = plan_item_ids(paths)
    assert len(plan_ids) > len(pdfs)  # the large manuals were split into page ranges
    records = manifest_records(paths)
    assert sorted(r.item_id for r in records) == plan_ids
    assert {r.pdf for r in records} == set(pdfs)
    assert all(r.status == "ok" for r in records), [r.error for r in records if r.status != "ok"]
    assert len(documents(out)) == len(pdfs)
    assert all(document(out, rel).is_file() for rel in pdfs)

    # each task saw its own GPU: in its log, and in the records of the items it converted (a task that
    # started last may have found its whole share stolen by then)
    gpu_by_task = {}
    for r in records:
        gpu_by_task.setdefault(r.task, set()).add(r.gpu)
    assert all(len(g) == 1 for g in gpu_by_task.values()) and len(gpu_by_task) >= 2
    logged = {
        i: re.findall(r"CUDA_VISIBLE_DEVICES=(\S+)", (paths.logs / f"task-{i}.out").read_text()) for i in range(4)
    }
    assert all(len(g) == 1 for g in logged.values()) and len({g[0] for g in logged.values()}) == 4, logged
    assert all(gpu_by_task[t] == {logged[t][0]} for t in gpu_by_task), (gpu_by_task, logged)

    # the collector ran after the array
    times = sacct_times(record["jobs"]["convert"] + record["jobs"]["collect"])
    collect_start = times[record["jobs"]["collect"][0]][0]
    assert all(times[t][1] <= collect_start for t in record["jobs"]["convert"]), times
    summary = read_summary(paths)
    assert summary["documents_ok"] == summary["documents"] == len(pdfs) and summary["missing"] == []
    assert summary["ok"] == len(plan_ids)
    assert sorted(p.name for p in paths.logs.iterdir()) == sorted(
        f"task-{i}.{s}" for i in range(4) for s in ("out", "err")
    )

    assert status["ok"] == len(plan_ids) and status["pending"] == 0
    assert {t["state"] for t in status["tasks"]} == {"COMPLETED"}
    assert status["collector"] == "COMPLETED"
    # the collector job wrote the run's report; it renders in a real browser without errors
    from pagecheck import PLOTS, SECTIONS, browse, uncaught

    page, probe, stderr = browse(chromium, paths.root / "report.html", tmp_path, "--dump-dom")
    assert probe == {"errors": [], "alerts": 0} and not uncaught(stderr)
    assert set(SECTIONS) <= page.ids and set(PLOTS) <= page.svg_in
    assert page.points.get("timeline-plot", 0) >= len(records)


def test_cancel_leaves_nothing_in_squeue_and_no_process(tmp_path):
    out = tmp_path / "out"
    pdfs = tmp_path / "pdfs"
    for copy in range(3):  # about 45 s of work for one task: cancel lands well inside it
        shutil.copytree(CORPUS, pdfs / f"copy{copy}")
    paths, record = submit(pdfs, out, "tocancel", *run_options(1))
    array_id = record["jobs"]["convert"][0].split("_")[0]
    wait_until(lambda: manifest_records(paths), 120, "the task never started converting", 0.2)  # most still to go
    assert processes_of_job(array_id)
    cancelled_at = time.time()
    result = invoke("cancel", "tocancel")
    assert result.exit_code == 0, result.output
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    ids = {array_id, record["jobs"]["collect"][0]}
    assert not [line for line in queue.split() if line.split("_")[0] in ids]
    deadline = time.time() + 30
    while processes_of_job(array_id) and time.time() < deadline:
        time.sleep(0.5)
    assert processes_of_job(array_id) == []
    records = manifest_records(paths)
    assert len(records) < 3 * len(find_pdfs(CORPUS))  # it really was stopped midway
    assert all(r.status == "ok" for r in records)  # the stop did not fail the item in flight
    assert max(r.finished for r in records) < cancelled_at + 3  # nothing converted after the cancel
    status = wait_for("tocancel", {"incomplete"}, timeout_s=60)  # not "finished": items are left
    assert status["pending"] > 0 and status["exit_code"] == 4
    assert status["reasons"][0].startswith("1 task (0): cancelled") and status["next"] == "hpcmarker resume tocancel"
    assert invoke("status", "tocancel").exit_code == 4
    again = invoke("cancel", "tocancel")  # nothing is left: it says so instead of naming jobs long gone
    assert again.exit_code == 0 and again.output.startswith("run tocancel was already over: "), again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus", "0"], "--gpus 0: must be at least 1"),
        (["--partition", "nosuch"], "--partition nosuch: no such partition; partitions here:"),
    ],
)
def test_bad_cluster_settings_exit_2_and_submit_nothing(tmp_path, args, message):
    before = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
    result = invoke("submit", "--pdfs", CORPUS, "--out", tmp_path / "o", "--engine", "text", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == before
