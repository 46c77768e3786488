"""The scheduler of one task: batches its earlier run held are taken over, and only while unfinished."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from hpc_marker.planning.plan import WorkItem, make_plan
from hpc_marker.planning.store import load_share, load_summary, save_plan
from hpc_marker.runstate.claims import FINISHED, ClaimBoard, batch_name
from hpc_marker.runstate.progress import Heartbeat, write_heartbeat
from hpc_marker.runtime.scheduler import Scheduler

LEASE_S = 60.0


def _scheduler(tmp_path, owner: str, steal: bool = True) -> Scheduler:
    items = [WorkItem(item_id=f"{n:06d}", pdf=f"d{n}.pdf", page_start=0, page_stop=40, scan_status="ok",
                      doc_id=f"{n:06d}") for n in range(16)]
    plan_folder = tmp_path / "plan"
    if not plan_folder.exists():
        save_plan(make_plan(items, 2, split_pages=0), plan_folder)
    summaries = load_summary(plan_folder)
    (tmp_path / "progress").mkdir(exist_ok=True)
    board = ClaimBoard(tmp_path, owner=owner, lease_s=LEASE_S)
    return Scheduler(0, summaries, load_share(plan_folder, summaries[0]), board, plan_folder, tmp_path / "progress",
                     steal=steal, lease_s=LEASE_S)


def _held_by_earlier_run(tmp_path, index: int, age_s: float) -> None:
    """Task 0's earlier run (another pid) holds its own batch `index`; its heartbeat never listed it."""
    path = ClaimBoard(tmp_path, "reader", LEASE_S).lease_path("0", batch_name(index))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"owner": "node7:4242:task-0", "time": time.time()}), encoding="utf-8")
    then = time.time() - age_s
    os.utime(path, (then, then))


def _drain(scheduler: Scheduler) -> list[str]:
    labels = []
    while (batch := scheduler.next_batch()) is not None:
        labels.append(batch.label)
        scheduler.board.finish(batch.lease)
    return labels


def test_own_batch_held_by_an_earlier_run_is_waited_for_then_taken_over(tmp_path):
    _held_by_earlier_run(tmp_path, 1, age_s=5)  # killed 5 s ago: its lease is still alive
    scheduler = _scheduler(tmp_path, "node7:5000:task-0", steal=False)
    first = _drain(scheduler)
    assert "0/b00001" not in first and first
    assert scheduler.should_wait()  # not gone: the earlier run's lease must expire first
    lease = ClaimBoard(tmp_path, "reader", LEASE_S).lease_path("0", batch_name(1))
    os.utime(lease, (time.time() - 2 * LEASE_S,) * 2)  # ... and now it has
    assert _drain(scheduler) == ["0/b00001"]
    assert not scheduler.should_wait()


def test_a_batch_the_earlier_run_listed_then_finished_is_not_waited_for(tmp_path):
    """The earlier run's last heartbeat listed the batch; it finished it before it died (the heartbeat
    was not written again): nothing to wait for (this task used to wait for it forever)."""
    _held_by_earlier_run(tmp_path, 1, age_s=5)
    (tmp_path / "progress").mkdir()
    write_heartbeat(tmp_path / "progress", Heartbeat(task=0, owner="node7:4242:task-0", held=["0/b00001"]))
    scheduler = _scheduler(tmp_path, "node7:5000:task-0", steal=False)
    assert scheduler.inherited == ["0/b00001"]
    _drain(scheduler)
    lease = ClaimBoard(tmp_path, "reader", LEASE_S).lease_path("0", batch_name(1))
    os.utime(lease, (FINISHED, FINISHED))  # the earlier run finished it after all
    assert not scheduler.should_wait()


def test_own_batch_held_by_a_live_thief_is_not_inherited(tmp_path):
    path = ClaimBoard(tmp_path, "reader", LEASE_S).lease_path("0", batch_name(1))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"owner": "node9:77:task-1", "time": time.time()}), encoding="utf-8")
    scheduler = _scheduler(tmp_path, "node7:5000:task-0", steal=False)
    assert "0/b00001" not in _drain(scheduler)
    assert scheduler.inherited == [] and not scheduler.should_wait()


def test_leases_live_in_folders_of_a_thousand_and_a_thief_walks_across_them(tmp_path):
    from hpc_marker.runstate.claims import LEASES_PER_FOLDER, lease_shard

    assert lease_shard(batch_name(999)) != lease_shard(batch_name(LEASES_PER_FOLDER)) == lease_shard(batch_name(1999))
    assert lease_shard("000123") == lease_shard("000999") != lease_shard("001000")  # merges: by document number
    items = [WorkItem(item_id=f"{n:06d}", pdf=f"d{n}.pdf", page_start=0, page_stop=1, scan_status="ok",
                      doc_id=f"{n:06d}") for n in range(2 * 2 * LEASES_PER_FOLDER + 40)]
    plan_folder = tmp_path / "plan"
    plan = make_plan(items, 2, split_pages=0)
    for task in plan.tasks:  # one item a batch: each share has over 2,000 batches
        task.items = [dataclasses.replace(item, batch=k) for k, item in enumerate(task.items)]
    save_plan(plan, plan_folder)
    (tmp_path / "progress").mkdir()
    summaries = load_summary(plan_folder)
    assert summaries[1].batches > 2 * LEASES_PER_FOLDER
    thief = Scheduler(0, summaries, load_share(plan_folder, summaries[0]), ClaimBoard(tmp_path, "n:1:task-0", LEASE_S),
                      plan_folder, tmp_path / "progress", steal=True, lease_s=LEASE_S)
    thief.cursor = len(thief.own)  # its own share is done
    last = summaries[1].batches - 1
    owner = ClaimBoard(tmp_path, "n:2:task-1", LEASE_S)
    for index in range(LEASES_PER_FOLDER * 2 - 5, last + 1):  # the owner's tail folder is all claimed
        assert owner.claim("1", batch_name(index)) is not None
    stolen = thief.next_batch()
    assert stolen is not None and stolen.label == f"1/{batch_name(LEASES_PER_FOLDER * 2 - 6)}"
    assert len({p.parent.name for p in (tmp_path / "claims" / "1").rglob("b*")}) == 2
