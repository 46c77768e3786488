"""Runs past MaxArraySize on the real Slurm cluster (MaxArraySize 1001 there): several arrays, one run.

`--gpus 1100` queues 1,100 array tasks (held, so that the shared cluster is not kept busy), `status` counts
them as one run and `cancel` leaves nothing in squeue. A small run split into two arrays (MaxArraySize read
as 3) converts every item exactly once, each task under its own global index, the collector after both.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from inputs import raw_pdf
from slurmkit import run_options, submit
from test_slurm import invoke, sacct_times, wait_for  # skips this module too where no cluster answers

from hpc_marker.planning.store import load_plan
from hpc_marker.runstate.index import resolve_run
from hpc_marker.runstate.manifest import read_manifests
from hpc_marker.slurm import commands
from hpc_marker.slurm.arrays import ArrayLimits
from hpc_marker.submission.scripts import split_dry_run

pytestmark = pytest.mark.slurm


def queued_tasks(base_ids: set[str]) -> dict[str, int]:
    """Array id -> how many of its tasks squeue lists (--array: one line each)."""
    out = subprocess.run(
        ["squeue", "--me", "--array", "-h", "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout
    counts: dict[str, int] = {}
    for job_id in out.split():
        base = job_id.split("_")[0]
        if base in base_ids:
            counts[base] = counts.get(base, 0) + 1
    return counts


def test_1100_tasks_past_max_array_size_are_queued_watched_and_cancelled_as_one_run(tmp_path, request):
    assert commands.array_limits(None, None).max_array_size == 1001, "this test expects the CI cluster's limit"
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    for i in range(1100):
        (pdfs / f"p{i:04d}.pdf").write_bytes(raw_pdf(b"BT /F1 12 Tf 72 700 Td (item %d) Tj ET" % i))
    args = [
        "submit",
        "--pdfs",
        str(pdfs),
        "--out",
        str(tmp_path / "out"),
        *run_options(1100, time=5),
        "--run-id",
        "big1100",
    ]
    dry = invoke(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    scripts = split_dry_run(dry.output)
    assert list(scripts) == ["convert-0", "convert-1", "collect"]
    with pytest.MonkeyPatch.context() as patch:  # held: nothing of it runs on the shared cluster
        submission = commands.sbatch_argv
        patch.setattr(commands, "sbatch_argv", lambda *args: ["sbatch", "--hold", *submission(*args)[1:]])
        result = invoke(*args)
    assert result.exit_code == 0, result.output
    record = json.loads(resolve_run("big1100").record.read_text())
    arrays = list(dict.fromkeys(job_id.split("_")[0] for job_id in record["jobs"]["convert"]))
    collector = record["jobs"]["collect"][0]
    request.addfinalizer(lambda: subprocess.run(["scancel", *arrays, collector], capture_output=True))
    assert f"submitted: arrays {', '.join(arrays)} (1,100 tasks: 1,001 + 99), collector {collector}" in result.output

    assert len(arrays) == 2 and len(record["jobs"]["convert"]) == 1100
    assert queued_tasks(set(arrays)) == {arrays[0]: 1001, arrays[1]: 99}
    jobs = resolve_run("big1100").jobs
    assert [(jobs / f"{array}_submission.sh").read_text() for array in arrays] == [
        scripts["convert-0"],
        scripts["convert-1"],
    ]
    status = json.loads(invoke("status", "big1100", "--json").output)
    assert status["state"] == "pending" and status["items"] == 1100 and status["pending"] == 1100
    assert len(status["tasks"]) == 1100 and {t["state"] for t in status["tasks"]} == {"PENDING"}
    assert status["tasks"][1050]["job_id"] == f"{arrays[1]}_49"

    cancelled = invoke("cancel", "big1100")
    assert cancelled.exit_code == 0, cancelled.output
    assert queued_tasks({*arrays, collector}) == {}
    assert wait_for("big1100", {"incomplete"}, timeout_s=60)["pending"] == 1100


@pytest.mark.slow
def test_a_run_in_two_arrays_converts_every_item_once_under_its_task_index(tmp_path, sample_pdfs, monkeypatch):
    monkeypatch.setattr(commands, "array_limits", lambda account, partition: ArrayLimits(max_array_size=3))
    paths, record = submit(sample_pdfs, tmp_path / "out", "twoarrays", *run_options(4, time=10))
    status = wait_for("twoarrays", {"finished"}, timeout_s=300)
    convert = record["jobs"]["convert"]
    assert len({job_id.split("_")[0] for job_id in convert}) == 2 and [j.split("_")[1] for j in convert] == [
        "0",
        "1",
        "2",
        "0",
    ]
    records = read_manifests(paths.manifests).records
    plan = load_plan(paths.plan)
    assert sorted(r.item_id for r in records) == sorted(i.item_id for i in plan.items)
    assert all(r.job_id == convert[r.task] for r in records)  # task i ran as its own array task
    times = sacct_times(convert + record["jobs"]["collect"])
    assert all(times[t][1] <= times[record["jobs"]["collect"][0]][0] for t in convert), times
    assert status["ok"] == len(records) and {t["state"] for t in status["tasks"]} == {"COMPLETED"}
    assert sorted(p.name for p in paths.logs.iterdir()) == sorted(
        f"task-{i}.{s}" for i in range(4) for s in ("out", "err")
    )
