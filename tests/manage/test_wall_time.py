"""Wall time and pages/s of a run that was retried: the idle time between its submissions is not work
(runstate/summary.py for summary.json and the report, manage/status.py before collection)."""

from __future__ import annotations

from test_manifest_status import _record

from hpc_marker.manage.status import status_of
from hpc_marker.manage.tally import read_progress, summary_progress
from hpc_marker.planning.plan import Plan, TaskPlan, WorkItem
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import ManifestRecord
from hpc_marker.runstate.progress import REOPEN_LOG, CommitLog
from hpc_marker.runstate.stops import DONE, RUNNING, TaskStop
from hpc_marker.runstate.summary import plan_frames, summarize_records
from hpc_marker.util.frames import busy_seconds

RETRY_AT = 1600.0  # the retry's task started 25 minutes after the first submission ended


def _plan() -> Plan:
    return Plan(
        tasks=[
            TaskPlan(0, [WorkItem("a", "a.pdf", 0, 10), WorkItem("b", "b.pdf", 0, 10)]),
            TaskPlan(1, [WorkItem("c", "c.pdf", 0, 30)]),
        ]
    )


def _attempts() -> list[tuple[str, str, int, int, float, float]]:
    """(item, status, pages, task, started, finished): a first submission of 5 s, c failing, then c retried."""
    return [
        ("a", "ok", 10, 0, 100.0, 101.0),
        ("b", "ok", 10, 0, 100.5, 104.0),
        ("c", "failed", 30, 1, 100.0, 105.0),
        ("c", "ok", 30, 1, RETRY_AT, RETRY_AT + 10),
    ]


def test_busy_time_is_the_union_of_the_work_without_the_long_idle_gaps():
    assert busy_seconds([], []) == 0.0
    assert busy_seconds([0, 1, 2], [1, 2, 3]) == 3.0  # back to back
    assert busy_seconds([0, 0.5], [10, 2]) == 10.0  # overlapping, the longer first
    assert busy_seconds([0, 13], [10, 15]) == 15.0  # a short gap (claiming the next item) is work
    assert busy_seconds([RETRY_AT, 0], [RETRY_AT + 10, 5]) == 15.0  # in any order; the 25 minutes between are not


def test_summary_of_a_retried_run_counts_the_time_it_worked():
    records = [
        ManifestRecord(
            item_id=i,
            pdf=f"{i}.pdf",
            page_start=0,
            page_stop=p,
            pages=p,
            status=s,
            error=None if s == "ok" else "boom",
            seconds=f - t,
            engine="text",
            host="n1",
            gpu="0",
            job_id=f"7_{task}",
            task=task,
            output=None,
            started=t,
            finished=f,
        )
        for i, s, p, task, t, f in _attempts()
    ]
    summary = summarize_records(_plan(), records, [])
    assert summary["wall_seconds"] == 15.0 and summary["pages_per_second"] == round(50 / 15, 3)  # not 1,510 s
    assert [t["wall_seconds"] for t in summary["tasks"]] == [4.0, 15.0]
    assert summary_progress(summary).busy_seconds == 15.0
    shares = plan_frames(_plan())[1]
    status = status_of(
        _record(),
        shares,
        summary_progress(summary),
        {"7_0": "COMPLETED", "7_1": "COMPLETED"},
        now=RETRY_AT + 3600,
        collected=True,
    )
    assert status.elapsed_seconds == 15.0 and status.pages_per_second == round(50 / 15, 2)


def test_status_before_collection_leaves_the_idle_gap_out_too(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.progress.mkdir(parents=True)
    logs = {task: CommitLog(paths.progress, task) for task in (0, 1)}
    for item, status, pages, task, started, finished in _attempts()[:3]:
        logs[task].append(item, status, pages, task, started, finished)
    (paths.progress / REOPEN_LOG).write_text(f"c\treopened\t30\t1\t{RETRY_AT - 60:.3f}\t{RETRY_AT - 60:.3f}\t\n")
    shares = plan_frames(_plan())[1]
    running = {"7_0": "COMPLETED", "7_1": "RUNNING"}
    stops = {0: TaskStop(0, DONE, started=99.0, stopped=105.0), 1: TaskStop(1, RUNNING, started=RETRY_AT)}
    loading = status_of(_record(), shares, read_progress(paths), running, now=RETRY_AT + 5, stops=stops)
    assert loading.elapsed_seconds == 5.0 + 5.0 and loading.pages_per_second == 2.0  # the retry's task starting
    item, status, pages, task, started, finished = _attempts()[3]
    logs[task].append(item, status, pages, task, started, finished)
    working = status_of(_record(), shares, read_progress(paths), running, now=RETRY_AT + 20, stops=stops)
    assert working.elapsed_seconds == 5.0 + 20.0  # its work so far, and the stretch since its last item
    over = status_of(
        _record(), shares, read_progress(paths), {"7_0": "COMPLETED", "7_1": "COMPLETED"}, now=RETRY_AT + 3600
    )
    assert over.elapsed_seconds == 15.0 and over.pages_per_second == round(50 / 15, 2)
