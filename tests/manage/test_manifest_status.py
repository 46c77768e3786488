"""Manifests (torn lines, retries) and the pure status interpretation."""

from __future__ import annotations

import pandas as pd
from runkit import bare_record, manifest_record

from hpc_marker.manage.status import status_of
from hpc_marker.manage.tally import RunProgress, ShareCounts, share_counts
from hpc_marker.planning.plan import Plan, TaskPlan, WorkItem
from hpc_marker.planning.store import save_plan
from hpc_marker.runstate.manifest import ManifestRecord, append_record, read_manifest
from hpc_marker.runstate.progress import latest_commits
from hpc_marker.runstate.record import RunRecord
from hpc_marker.runstate.subitems import commit_lost_pages
from hpc_marker.runstate.summary import plan_frames, summarize_records


def record(item: str, status: str = "ok", task: int = 0, pages: int = 10, t: float = 100.0) -> ManifestRecord:
    error = None if status == "ok" else "boom"
    times = {"started": t, "finished": t + 1}
    return manifest_record(
        item, page_stop=pages, status=status, error=error, host="n1", job_id="7_0", task=task, **times
    )


def test_torn_last_line_is_reported_not_fatal(tmp_path):
    path = tmp_path / "task-0.jsonl"
    append_record(path, record("a"))
    with path.open("a") as fh:
        fh.write('{"item_id": "b", "pdf": "b.pd')  # killed mid-write
    read = read_manifest(path)
    assert [r.item_id for r in read.records] == ["a"]
    assert read.torn_lines == ["task-0.jsonl:2: unreadable line (JSONDecodeError)"]


def _plan() -> Plan:
    return Plan(
        tasks=[
            TaskPlan(0, [WorkItem("a", "a.pdf", 0, 10), WorkItem("b", "b.pdf", 0, 10)]),
            TaskPlan(1, [WorkItem("c", "c.pdf", 0, 30)]),
        ]
    )


def _record() -> RunRecord:
    return bare_record(jobs={"convert": ["7_0", "7_1"], "collect": ["8"]})


def _progress(commits: list[tuple[str, str, int, int, float]]) -> RunProgress:
    """The run's progress as the commit logs say it: (item, status, pages, share, started) per line, 1 s each."""
    frame = pd.DataFrame(
        [
            {"item_id": i, "status": s, "pages": p, "share": sh, "started": t, "finished": t + 1, "flags": ""}
            for i, s, p, sh, t in commits
        ]
    )
    return RunProgress(
        share_counts(latest_commits(frame)), float(frame["started"].min()), float(frame["finished"].max())
    )


def test_status_of_counts_rate_and_eta():
    shares = plan_frames(_plan())[1]
    status = status_of(
        _record(),
        shares,
        _progress([("a", "ok", 10, 0, 100.0), ("b", "failed", 10, 0, 104.0)]),
        {"7_0": "COMPLETED", "7_1": "RUNNING", "8": "PENDING"},
        now=110.0,
    )
    assert (status.ok, status.failed, status.pending) == (1, 1, 1)
    assert status.pages_done == 20 and status.pages == 50
    assert status.elapsed_seconds == 10.0 and status.pages_per_second == 2.0
    assert status.eta_seconds == 15.0  # 30 pages left at 2 pages/s
    assert status.state == "running"
    assert [t.state for t in status.tasks] == ["COMPLETED", "RUNNING"]


def test_retried_item_counts_once_with_its_newest_result():
    records = [record("a", "failed", t=1.0), record("a", "ok", t=5.0)]
    summary = summarize_records(_plan(), records, [])
    assert summary["ok"] == 1 and summary["failed"] == 0 and summary["missing"] == ["b", "c"]
    assert summary["shares"] == [{"share": 0, "ok": 1, "failed": 0, "partial": 0, "pages_done": 10, "degraded": 0}]
    progress = _progress([("a", "failed", 10, 0, 1.0), ("a", "ok", 10, 0, 5.0), ("c", "reopened", 30, 1, 6.0)])
    assert progress.shares == {0: ShareCounts(ok=1, failed=0, pages_done=10)}  # reopened: pending again


def test_sacct_is_retried_before_the_scheduler_is_called_unreachable(monkeypatch):
    from hpc_marker.slurm import commands as slurm

    calls = []

    def flaky(argv):
        calls.append(argv)
        if len(calls) < 3:
            raise slurm.SlurmError("sacct: error: slurmdbd: Connection refused")
        return "JobID|State|NodeList\n7_0|RUNNING|n1\n"

    monkeypatch.setattr(slurm, "_run", flaky)
    monkeypatch.setattr(slurm.time, "sleep", lambda s: None)
    assert slurm.job_states(["7_0"]) == {"7_0": "RUNNING"} and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(slurm, "_run", lambda argv: (_ for _ in ()).throw(slurm.SlurmError("down")))
    import pytest as _pytest

    with _pytest.raises(slurm.SlurmError, match="scheduler unreachable after 4 tries"):
        slurm.job_states(["7_0"])


# squeue --me --noheader --format='%i|%T|%r|%E' on the test cluster (Slurm 22.05): job 548 failed, the pending
# array 549 was made to depend on it with afterok, and collector 550 waits on the array; plus a stranger's job.
WEDGED_SQUEUE = """\
550|PENDING|Dependency|afterany:549_*(unfulfilled)
549_[0-3]|PENDING|DependencyNeverSatisfied|afterok:548(failed)
560|RUNNING|None|(null)
"""
WEDGED_JOBS = {"service": ["548"], "convert": ["549_0", "549_1", "549_2", "549_3"], "collect": ["550"]}


def wedged_run(out, monkeypatch) -> tuple:
    """A run in OUT whose array pends with DependencyNeverSatisfied on the Slurm the test fakes (WEDGED_SQUEUE):
    its RunPaths, and the list the faked scancel records the job ids it cancels in."""
    from hpc_marker.runstate.layout import RunPaths
    from hpc_marker.slurm import commands as slurm
    from hpc_marker.slurm.parse import parse_squeue

    paths = RunPaths(out / ".hpcmarker" / "runs" / "r")
    paths.root.mkdir(parents=True)
    save_plan(_plan(), paths.plan)
    record = _record()
    record.jobs, record.out_dir = {"convert": ["549_0", "549_1"], "collect": ["550"]}, str(out)
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


def test_squeue_lines_and_dependencies_parse():
    from hpc_marker.slurm.parse import (
        Dependency,
        QueuedJob,
        parse_dependency,
        parse_squeue,
    )

    jobs = parse_squeue(WEDGED_SQUEUE + "\n")
    assert jobs[1] == QueuedJob("549_[0-3]", "PENDING", "DependencyNeverSatisfied", "afterok:548(failed)")
    assert jobs[1].base_id == "549" and jobs[2].dependency == "" and len(jobs) == 3
    assert parse_dependency("afterok:548(failed)?after:122+5(unfulfilled),afterany:549_*(unfulfilled)") == [
        Dependency("afterok", "548", "failed"),
        Dependency("after", "122", "unfulfilled"),
        Dependency("afterany", "549_*", "unfulfilled"),
    ]
    assert parse_dependency("") == []


def test_wedge_found_named_and_everything_queued_listed():
    from hpc_marker.slurm.parse import parse_squeue
    from hpc_marker.slurm.wedge import describe, find_wedge

    states = {"548": "FAILED", "549_0": "PENDING", "550": "PENDING"}
    wedge = find_wedge(WEDGED_JOBS, parse_squeue(WEDGED_SQUEUE), states)
    assert wedge.stuck == ("array 549",) and wedge.causes == ("service 548 FAILED",)
    assert wedge.queued == ("549_[0-3]", "550")  # not the stranger's 560
    assert describe("r1", wedge, cancelled=True) == (
        "run r1 is wedged: array 549 pending with DependencyNeverSatisfied (service 548 FAILED); "
        "cancelled array 549 and collector 550 — fix the cause, then: hpcmarker resume r1"
    )
    assert describe("r1", wedge, cancelled=False).endswith(
        "still queued (status cancels nothing): array 549 and collector 550 — fix the cause, then: "
        "hpcmarker cancel r1 && hpcmarker resume r1"
    )
    # a job outside the run: its state comes from squeue's own words
    outside = find_wedge({"convert": ["549_0"], "collect": ["550"]}, parse_squeue(WEDGED_SQUEUE), {})
    assert outside.causes == ("job 548 FAILED",)


def test_no_wedge_while_dependencies_can_still_be_met():
    from hpc_marker.slurm.parse import parse_squeue
    from hpc_marker.slurm.wedge import find_wedge

    waiting = (
        "550|PENDING|Dependency|afterany:549_*(unfulfilled)\n549_[0-3]|PENDING|Dependency|after:548(unfulfilled)\n"
    )
    assert find_wedge(WEDGED_JOBS, parse_squeue(waiting), {}) is None
    assert find_wedge({"convert": ["777_0"]}, parse_squeue(WEDGED_SQUEUE), {}) is None  # another run's wedge


def test_status_of_a_wedged_run_reports_and_cancels_only_when_asked(tmp_path, monkeypatch):
    from hpc_marker.manage.status import load_status
    from hpc_marker.manage.statustable import watch_status

    paths, cancelled = wedged_run(tmp_path / "out", monkeypatch)
    only_report = load_status(paths, cancel_wedged=False)
    assert only_report.state == "wedged" and "array 549 and collector 550" in only_report.wedged
    assert only_report.next == "hpcmarker cancel r && hpcmarker resume r" and only_report.exit_code == 4
    assert cancelled == [] and paths.load_record().cancelled is None
    assert watch_status(paths, 0.0).state == "wedged"  # --watch stops at a wedged run
    settled = load_status(paths, cancel_wedged=True)
    assert cancelled == ["549_[0-3]", "550"] and paths.load_record().cancelled is not None
    assert settled.state == "incomplete" and "cancelled array 549 and collector 550" in settled.wedged
    assert settled.reasons == ["2 tasks (0,1): cancelled before it started — next: hpcmarker resume r"]
    assert {t.state for t in settled.tasks} == {"CANCELLED"}
    assert load_status(paths, cancel_wedged=True).wedged is None  # nothing left to report


def test_jobs_sacct_does_not_know_yet_take_squeues_state():
    """Right after sbatch, slurmdbd has no record of the jobs: status must not call the run 'stopped'."""
    from hpc_marker.slurm.parse import QueuedJob, expand_queued_id, fill_from_queue

    assert expand_queued_id("772_[0-2,5%2]") == ["772_0", "772_1", "772_2", "772_5"]
    assert expand_queued_id("772_3") == ["772_3"] and expand_queued_id("773") == ["773"]
    queued = [
        QueuedJob("772_[1-3]", "PENDING", "Resources"),
        QueuedJob("772_0", "RUNNING", "None"),
        QueuedJob("773", "PENDING", "Dependency"),
    ]
    ids = ["772_0", "772_1", "772_2", "772_3", "773", "771"]
    states = fill_from_queue({"771": "COMPLETED", "772_0": "RUNNING"}, ids, queued)
    assert states == {
        "771": "COMPLETED",
        "772_0": "RUNNING",
        "772_1": "PENDING",
        "772_2": "PENDING",
        "772_3": "PENDING",
        "773": "PENDING",
    }
    assert fill_from_queue({"772_0": "COMPLETED"}, ["772_0"], [QueuedJob("772_0", "RUNNING", "None")]) == {
        "772_0": "COMPLETED"
    }  # sacct wins where it knows the job


def test_status_names_a_pending_reason_that_never_clears(tmp_path, monkeypatch):
    """squeue's PartitionConfig (a request the partition can never run) is shown with what to do; an
    ordinary wait (Resources, Dependency) is not."""
    from hpc_marker.manage.status import load_status
    from hpc_marker.runstate.layout import RunPaths
    from hpc_marker.slurm import commands as slurm
    from hpc_marker.slurm.parse import parse_squeue

    paths = RunPaths(tmp_path / "r")
    paths.root.mkdir()
    save_plan(_plan(), paths.plan)
    record = _record()
    record.jobs = {"convert": ["549_0", "549_1"], "collect": ["550"]}
    paths.save_record(record)
    monkeypatch.setattr(slurm, "job_states", lambda ids: {job: "PENDING" for job in ids})
    monkeypatch.setattr(slurm, "job_accounting", lambda ids, earlier=None: (slurm.job_states(ids), {}))  # one sacct
    monkeypatch.setattr(
        slurm,
        "queue",
        lambda ids: parse_squeue(
            "549_[0-1]|PENDING|PartitionConfig|(null)\n550|PENDING|Dependency|afterany:549_*(unfulfilled)\n"
        ),
    )
    status = load_status(paths)
    assert status.state == "pending" and status.exit_code == 0
    assert status.reasons == [
        (
            "2 tasks (0,1): pending with PartitionConfig: the partition can never run this request (more CPUs, memory "
            "or GPUs per node than its nodes have, or a setting it does not allow) — ask for less (--cpus-per-task, "
            "--mem, --time) or another --partition, then: hpcmarker cancel r && hpcmarker resume r"
        )
    ]
    assert status.next == "hpcmarker cancel r && hpcmarker resume r"


def test_status_table_of_a_thousand_tasks_has_a_row_per_state_and_the_worst_tasks():
    from rich.console import Console

    from hpc_marker.manage.status import RunStatus, TaskStatus
    from hpc_marker.manage.statustable import WORST_TASKS, status_table

    states = ["COMPLETED"] * 900 + ["RUNNING"] * 80 + ["FAILED"] * 20
    tasks = [
        TaskStatus(
            task=i,
            job_id=f"7_{i}",
            state=state,
            items=10,
            ok=10 if state == "COMPLETED" else 4,
            failed=i % 7 if state == "FAILED" else 0,
            pending=0 if state == "COMPLETED" else 6 - (i % 7 if state == "FAILED" else 0),
            pages=30,
            pages_done=30 if state == "COMPLETED" else 12,
        )
        for i, state in enumerate(states)
    ]
    status = RunStatus(
        run_id="big",
        run_dir="/x",
        executor="slurm",
        state="running",
        items=10_000,
        ok=sum(t.ok for t in tasks),
        failed=sum(t.failed for t in tasks),
        pending=sum(t.pending for t in tasks),
        pages=30_000,
        pages_done=0,
        elapsed_seconds=60,
        pages_per_second=None,
        eta_seconds=None,
        collector="PENDING",
        tasks=tasks,
    )
    table = status_table(status)
    assert table.row_count == WORST_TASKS + 3
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "900 tasks: 0-899" in text and "80 tasks: 900-979" in text and "20 tasks: 980-999" in text
    worst = [t for t in tasks if t.failed == 6]  # the most failed items come first
    assert f"7_{worst[0].task}" in text
    small = status_table(RunStatus(**{**status.__dict__, "tasks": tasks[:64]}))
    assert small.row_count == 64


def test_bisected_item_is_pending_until_its_pages_are_finished_then_partial():
    lines = [
        ("a", "bisected", 10, 0, 1.0),
        ("a.r0-5", "ok", 5, 0, 2.0),
        ("a.r5-10", "bisected", 5, 0, 3.0),
        ("a.r5-7", "ok", 2, 0, 4.0),
        ("a.r7-10", "bisected", 3, 0, 5.0),
        ("a.r7-8", "timeout", 1, 0, 6.0),
    ]
    going = _progress(lines)
    assert going.shares == {}  # pages 9-10 not finished: the item is pending
    done = _progress([*lines, ("a.r8-10", "ok", 2, 0, 7.0), ("b", "ok", 10, 0, 8.0)])
    assert done.shares == {0: ShareCounts(ok=1, failed=0, pages_done=20, partial=1)}
    frame = pd.DataFrame(
        [
            {"item_id": i, "status": s, "pages": p, "share": sh, "started": t, "finished": t, "flags": ""}
            for i, s, p, sh, t in lines
        ]
    )
    assert commit_lost_pages(latest_commits(frame)) == ["document a page 8: timeout"]
    status = status_of(_record(), plan_frames(_plan())[1], done, {}, now=10.0)
    assert (status.ok, status.partial, status.failed, status.pending) == (1, 1, 0, 1)


def test_a_grown_task_is_a_task_of_the_run_its_state_counts():
    """A task `hpcmarker grow` added (round 1's `grown`, its job after the planned ones) is listed, marked grown,
    with its round; while it runs, the run is running (not collecting), though every share is done."""
    from dataclasses import replace

    from hpc_marker.runstate.record import Round

    record = replace(
        _record(), jobs={"convert": ["7_0", "7_1", "9_2"], "collect": ["8"]}, rounds=[Round(1, 0.0, (0, 1), grown=(2,))]
    )
    done = _progress([("a", "ok", 10, 0, 100.0), ("b", "ok", 10, 0, 101.0), ("c", "ok", 30, 1, 102.0)])
    states = {"7_0": "COMPLETED", "7_1": "COMPLETED", "9_2": "RUNNING", "8": "PENDING"}
    status = status_of(record, plan_frames(_plan())[1], done, states, now=110.0)
    assert status.state == "running" and status.grown == 1 and status.pending == 0
    assert [(t.task, t.job_id, t.state, t.grown, t.round) for t in status.tasks][2] == (2, "9_2", "RUNNING", True, 1)
    over = status_of(record, plan_frames(_plan())[1], done, dict(states, **{"9_2": "COMPLETED"}), now=110.0)
    assert over.state == "collecting"
