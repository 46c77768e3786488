"""On a real Slurm cluster (scripts/slurm-test-cluster.sh up): the whole pipeline, end to end.

Skipped where no cluster answers, unless HPCMARKER_REQUIRE_SLURM=1 (CI), where that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CORPUS

from hpc_marker.cli import cli
from hpc_marker.planning.scan import find_pdfs
from hpc_marker.planning.store import load_plan
from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.manifest import read_manifests
from hpc_marker.submission.scripts import split_dry_run


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


if not _cluster_answers():
    if os.environ.get("HPCMARKER_REQUIRE_SLURM") == "1":
        raise RuntimeError("HPCMARKER_REQUIRE_SLURM=1 but no Slurm cluster answers (is SLURM_CONF exported?)")
    pytest.skip("no Slurm cluster answers here (scripts/slurm-test-cluster.sh up)", allow_module_level=True)

pytestmark = pytest.mark.slurm
if not CORPUS.is_dir():
    pytest.skip("shared corpus not present", allow_module_level=True)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def wait_for(run_id: str, states: set[str], timeout_s: float = 600) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = json.loads(invoke("status", run_id, "--json").output)
        if status["state"] in states:
            return status
        time.sleep(2)
    raise AssertionError(f"run {run_id} not in {states} after {timeout_s}s: {status}")


def sacct_times(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    argv = ["sacct", "-n", "-P", "-X", "-o", "JobID,Start,End"]
    for jid in {j.split("_")[0] for j in job_ids}:
        argv += ["-j", jid]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return {line.split("|")[0]: tuple(line.split("|")[1:3]) for line in out.splitlines() if line}


def processes_of_job(array_id: str) -> list[int]:
    """PIDs whose environment says they belong to Slurm job `array_id` (workers included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_ARRAY_JOB_ID={array_id}".encode() in env:
            found.append(int(entry.name))
    return found


def test_corpus_converts_on_4_gpus_exactly_once(tmp_path):
    out = tmp_path / "out"
    args = ["submit", "--pdfs", str(CORPUS), "--out", str(out), "--gpus", "4", "--engine", "text",
            "--cpus-per-task", "1", "--time", "20", "--run-id", "corpus4"]
    dry = invoke(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    paths = resolve_run("corpus4")
    record = json.loads(paths.record.read_text())
    status = wait_for("corpus4", {"finished"})

    # --dry-run printed exactly what sbatch was given
    scripts = split_dry_run(dry.output)
    array_id = record["jobs"]["convert"][0].split("_")[0]
    assert (paths.jobs / f"{array_id}_submission.sh").read_text() == scripts["convert"]
    assert (paths.jobs / f"{record['jobs']['collect'][0]}_submission.sh").read_text() == scripts["collect"]

    # every work item: exactly one manifest line; every PDF: exactly one document
    pdfs = [rel for rel, _ in find_pdfs(CORPUS)]
    plan_ids = [i.item_id for i in load_plan(paths.plan).items]
    assert len(plan_ids) > len(pdfs)  # the large manuals were split into page ranges
    records = read_manifests(paths.manifests).records
    assert sorted(r.item_id for r in records) == sorted(plan_ids)
    assert {r.pdf for r in records} == set(pdfs)
    assert all(r.status == "ok" for r in records), [r.error for r in records if r.status != "ok"]
    documents = sorted(p for p in out.rglob("*.md") if ".hpcmarker" not in p.parts)
    assert len(documents) == len(pdfs)
    assert all((out / Path(rel).with_suffix("") / f"{Path(rel).stem}.md").is_file() for rel in pdfs)

    # each task saw its own GPU
    gpu_by_task = {}
    for r in records:
        gpu_by_task.setdefault(r.task, set()).add(r.gpu)
    assert len(gpu_by_task) == 4 and all(len(g) == 1 for g in gpu_by_task.values())
    assert len({g for gs in gpu_by_task.values() for g in gs}) == 4

    # the collector ran after the array
    times = sacct_times(record["jobs"]["convert"] + record["jobs"]["collect"])
    collect_start = times[record["jobs"]["collect"][0]][0]
    assert all(times[t][1] <= collect_start for t in record["jobs"]["convert"]), times
    summary = json.loads(paths.summary.read_text())
    assert summary["documents_ok"] == summary["documents"] == len(pdfs) and summary["missing"] == []
    assert summary["ok"] == len(plan_ids)
    assert sorted(p.name for p in paths.logs.iterdir()) == sorted(
        f"task-{i}.{s}" for i in range(4) for s in ("out", "err"))

    assert status["ok"] == len(plan_ids) and status["pending"] == 0
    assert {t["state"] for t in status["tasks"]} == {"COMPLETED"}
    assert status["collector"] == "COMPLETED"
    # the collector job wrote the run's report; it renders in a real browser without errors
    from test_report import PLOTS, SECTIONS, _browse, _chromium, _uncaught

    page, probe, stderr = _browse(_chromium(), paths.root / "report.html", tmp_path, "--dump-dom")
    assert probe == {"errors": [], "alerts": 0} and not _uncaught(stderr)
    assert set(SECTIONS) <= page.ids and set(PLOTS) <= page.svg_in
    assert page.points.get("timeline-plot", 0) >= len(records)


def test_cancel_leaves_nothing_in_squeue_and_no_process(tmp_path):
    out = tmp_path / "out"
    pdfs = tmp_path / "pdfs"
    for copy in range(3):  # about 45 s of work for one task: cancel lands well inside it
        shutil.copytree(CORPUS, pdfs / f"copy{copy}")
    result = invoke("submit", "--pdfs", str(pdfs), "--out", str(out), "--gpus", "1", "--engine", "text",
                    "--cpus-per-task", "1", "--time", "20", "--run-id", "tocancel")
    assert result.exit_code == 0, result.output
    paths = resolve_run("tocancel")
    record = json.loads(paths.record.read_text())
    array_id = record["jobs"]["convert"][0].split("_")[0]
    deadline = time.time() + 120
    while not read_manifests(paths.manifests).records:  # converting, with most of the corpus to go
        assert time.time() < deadline, "the task never started converting"
        time.sleep(0.2)
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
    records = read_manifests(paths.manifests).records
    assert len(records) < 3 * len(find_pdfs(CORPUS))  # it really was stopped midway
    assert all(r.status == "ok" for r in records)  # the stop did not fail the item in flight
    assert max(r.finished for r in records) < cancelled_at + 3  # nothing converted after the cancel
    status = wait_for("tocancel", {"cancelled", "stopped"}, timeout_s=60)
    assert status["pending"] > 0


@pytest.mark.parametrize("args, message", [
    (["--gpus", "0"], "needs at least one GPU"),
    (["--partition", "nosuch"], "--partition nosuch: no such partition; partitions here:"),
])
def test_bad_cluster_settings_exit_2_and_submit_nothing(tmp_path, args, message):
    before = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
    result = invoke("submit", "--pdfs", str(CORPUS), "--out", str(tmp_path / "o"), "--engine", "text", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == before
