"""Manifests (torn lines, retries) and the pure status interpretation."""

from __future__ import annotations

from hpc_marker.collect import summarize_records
from hpc_marker.manifest import ManifestRecord, append_record, read_manifest
from hpc_marker.plan import Plan, TaskPlan, WorkItem
from hpc_marker.runs import RunRecord
from hpc_marker.status import run_state, summarize


def record(item: str, status: str = "ok", task: int = 0, pages: int = 10, t: float = 100.0) -> ManifestRecord:
    return ManifestRecord(item_id=item, pdf=f"{item}.pdf", page_start=0, page_stop=pages, pages=pages,
                          status=status, error=None if status == "ok" else "boom", seconds=1.0, engine="text",
                          host="n1", gpu="0", job_id="7_0", task=task, output=None, started=t, finished=t + 1)


def test_torn_last_line_is_reported_not_fatal(tmp_path):
    path = tmp_path / "task-0.jsonl"
    append_record(path, record("a"))
    with path.open("a") as fh:
        fh.write('{"item_id": "b", "pdf": "b.pd')  # killed mid-write
    read = read_manifest(path)
    assert [r.item_id for r in read.records] == ["a"]
    assert read.torn_lines == ["task-0.jsonl:2: unreadable line (JSONDecodeError)"]


def _plan() -> Plan:
    return Plan(tasks=[TaskPlan(0, [WorkItem("a", "a.pdf", 0, 10), WorkItem("b", "b.pdf", 0, 10)]),
                       TaskPlan(1, [WorkItem("c", "c.pdf", 0, 30)])])


def _record() -> RunRecord:
    return RunRecord(run_id="r", created=0, pdfs_root="/p", out_dir="/o", engine="text", engine_options={},
                     executor="slurm", tasks=2, gpus=2, workers_per_gpu=1, cpus_per_task=1, template="generic",
                     jobs={"convert": ["7_0", "7_1"], "collect": ["8"]})


def test_summarize_counts_rate_and_eta():
    status = summarize(_record(), _plan(), [record("a", t=100.0), record("b", "failed", t=104.0)],
                       {"7_0": "COMPLETED", "7_1": "RUNNING", "8": "PENDING"}, now=110.0)
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


def test_run_state_words():
    assert run_state(["PENDING", "PENDING"], "PENDING", False) == "pending"
    assert run_state(["COMPLETED", "RUNNING"], "PENDING", False) == "running"
    assert run_state(["CANCELLED", "CANCELLED"], "CANCELLED", False) == "cancelled"
    assert run_state(["COMPLETED", "FAILED"], "RUNNING", False) == "collecting"
    assert run_state(["COMPLETED"], "COMPLETED", True) == "finished"
    assert run_state(["COMPLETED"], "RUNNING", True) == "collecting"  # summary written, report still coming


def test_sacct_is_retried_before_the_scheduler_is_called_unreachable(monkeypatch):
    from hpc_marker import slurm

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
