"""Preemption on a real Slurm cluster (issue 21, item 2): a run on the test cluster's `scavenger` partition
(PreemptMode=REQUEUE, GraceTime=30, SlurmctldParameters=preempt_send_user_signal: scripts/slurm-test-cluster.sh),
through a profile marked `preemptible = true`, is preempted by a job in `urgent` that needs the GPUs.

The preempted tasks get USR2 at once, drain, record `preempted` (status names it), stay until Slurm's kill at the
end of the grace, and are requeued; once requeued they take their shares back and the run finishes by itself in its
one round: every item ok exactly once. The benchmark engine at 0.5 s a page: 86 pages, about 20 s of work per task,
no item over 11 s, so a drain fits in the grace. About 2 min: 30 s of grace, Slurm's ~32 s requeue hold, the collector.
The fault suite's test_preemption_with_requeue stands a preemption in with `scontrol requeue` (SIGTERM at once, no
USR2, no grace) in the middle of the mixed corpus; this is the real one, through the partitions' priorities.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import faultkit as fk
import pytest
from conftest import TEST_USER_CONFIG
from runkit import invoke, manifest_records, wait_until
from slurmkit import submit
from test_slurm_faults import SMALL_PDFS, assert_each_item_once, pdfs  # noqa: F401 (a fixture)
from test_slurm_truth import my_queue

pytestmark = [pytest.mark.slurm, pytest.mark.corpus, pytest.mark.slow]
GPUS = 4  # the test cluster's node (gres/gpu=4)
PROFILE = (
    '[profiles.scavenger]\ntemplate = "generic"\npartition = "scavenger"\ngres = "gpu:1"\ncpus_per_task = 1\n'
    "preemptible = true\n"
)


def gpus_held_by_others(run_id: str) -> int:
    """GPUs that running jobs outside this run hold in partitions `urgent` cannot preempt (other tests' jobs)."""
    lines = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%P|%j|%b"], capture_output=True, text=True, check=True
    ).stdout
    held = 0
    for line in lines.splitlines():
        partition, name, gres = line.split("|")
        if run_id not in name and partition != "scavenger" and gres.startswith(("gres:gpu:", "gres/gpu:", "gpu:")):
            held += int(gres.rsplit(":", 1)[-1] or 0)
    return held


def causes_when(run_id: str, cause: str, timeout_s: float) -> dict:
    """`status --json`, polled until `cause` is among the causes of its tasks' stops."""
    deadline, status = time.time() + timeout_s, {}
    while time.time() < deadline:
        status = json.loads(invoke("status", run_id, "--json").output)
        if cause in status["causes"] or status["state"] in ("finished", "incomplete"):
            return status
        time.sleep(0.5)
    return status


def test_a_preempted_run_drains_is_requeued_and_finishes_by_itself(tmp_path, pdfs, monkeypatch):  # noqa: F811
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "hpcmarker" / "config.toml"
    config.write_text(TEST_USER_CONFIG + PROFILE)
    monkeypatch.setenv("HPCMARKER_BENCH_SECONDS_PER_PAGE", "0.5")
    options = ("--engine", "benchmark", "--profile", "scavenger", "--gpus", "2", "--workers-per-gpu", "1")
    paths, record = submit(pdfs, tmp_path / "out", "preempt", *options, "--split-pages", "0", "--time", "10")
    assert record["partition"] == "scavenger" and record["job_settings"]["preemptible"] is True
    # both tasks have committed (the shared test cluster's GPUs may be busy with other tests' jobs first)
    wait_until(lambda: {r.task for r in manifest_records(paths)} == {0, 1}, 300, "the tasks never got going", 0.2)
    urgent = ""
    try:
        wanted = GPUS - gpus_held_by_others("preempt")
        urgent = fk.sh(
            "sbatch", "--parsable", "-p", "urgent", f"--gres=gpu:{wanted}", "-o", "/dev/null", "--wrap", "sleep 10"
        ).stdout.strip()
        preempted_at = time.time()
        seen = causes_when("preempt", "preempted", timeout_s=60)
        assert "preempted" in seen["causes"], seen
        tasks = seen["causes"]["preempted"]
        line = next(r for r in seen["reasons"] if "preempted by a job of higher priority" in r)
        assert line.endswith("— next: hpcmarker resume preempt"), seen["reasons"]
        status = causes_when("preempt", "never", timeout_s=300)  # until it is finished or incomplete
    finally:
        if urgent:
            subprocess.run(["scancel", urgent], check=False)
    assert status["state"] == "finished" and status["exit_code"] == 0, status
    assert status["rounds"] == 1  # Slurm's requeue, not a second round
    deadline = time.time() + 30
    while my_queue("preempt"):  # the collector leaves the queue
        assert time.time() < deadline, my_queue("preempt")
        time.sleep(0.5)
    array = record["jobs"]["convert"][0].split("_")[0]
    for task in tasks:
        states = fk.sacct_states(f"{array}_{task}")
        assert "PREEMPTED" in states and states[-1] == "COMPLETED", (task, states)  # requeued, then finished
        log = "".join(p.read_text() for p in paths.jobs.glob(f"*_{task}_log.out"))
        assert "waiting for Slurm to end the job" in log, log
    records = assert_each_item_once(paths)  # every item ok, each once: none lost, none twice
    assert len(records) == len(SMALL_PDFS)
    if len(tasks) == 2:  # no task was left to take their work: the requeued tasks converted what they had left
        assert any(r.started > preempted_at + 30 and r.task in tasks for r in records), records
