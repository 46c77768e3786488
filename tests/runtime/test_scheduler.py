"""The scheduler of one task: batches its earlier run held are taken over, and only while unfinished; what
it reads of the others' heartbeats."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from hpc_marker.planning.plan import WorkItem, make_plan
from hpc_marker.planning.store import load_share, load_summary, save_plan
from hpc_marker.runstate.claims import FINISHED, ClaimBoard, batch_name
from hpc_marker.runstate.progress import EXITED, WAITING, Heartbeat, read_heartbeats, write_heartbeat
from hpc_marker.runtime import scheduler as scheduler_module
from hpc_marker.runtime.scheduler import IDLE_POLL_ENV, SAMPLE, SWEEPERS, Scheduler, idle_poll_seconds

LEASE_S = 60.0


def _scheduler(tmp_path, owner: str, steal: bool = True) -> Scheduler:
    items = [
        WorkItem(item_id=f"{n:06d}", pdf=f"d{n}.pdf", page_start=0, page_stop=40, scan_status="ok", doc_id=f"{n:06d}")
        for n in range(16)
    ]
    plan_folder = tmp_path / "plan"
    if not plan_folder.exists():
        save_plan(make_plan(items, 2, split_pages=0), plan_folder)
    summaries = load_summary(plan_folder)
    (tmp_path / "progress").mkdir(exist_ok=True)
    board = ClaimBoard(tmp_path, owner=owner, lease_s=LEASE_S)
    return Scheduler(
        0,
        summaries,
        load_share(plan_folder, summaries[0]),
        board,
        plan_folder,
        tmp_path / "progress",
        steal=steal,
        lease_s=LEASE_S,
    )


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
    items = [
        WorkItem(item_id=f"{n:06d}", pdf=f"d{n}.pdf", page_start=0, page_stop=1, scan_status="ok", doc_id=f"{n:06d}")
        for n in range(2 * 2 * LEASES_PER_FOLDER + 40)
    ]
    plan_folder = tmp_path / "plan"
    plan = make_plan(items, 2, split_pages=0)
    for task in plan.tasks:  # one item a batch: each share has over 2,000 batches
        task.items = [dataclasses.replace(item, batch=k) for k, item in enumerate(task.items)]
    save_plan(plan, plan_folder)
    (tmp_path / "progress").mkdir()
    summaries = load_summary(plan_folder)
    assert summaries[1].batches > 2 * LEASES_PER_FOLDER
    thief = Scheduler(
        0,
        summaries,
        load_share(plan_folder, summaries[0]),
        ClaimBoard(tmp_path, "n:1:task-0", LEASE_S),
        plan_folder,
        tmp_path / "progress",
        steal=True,
        lease_s=LEASE_S,
    )
    thief.cursor = len(thief.own)  # its own share is done
    last = summaries[1].batches - 1
    owner = ClaimBoard(tmp_path, "n:2:task-1", LEASE_S)
    for index in range(LEASES_PER_FOLDER * 2 - 5, last + 1):  # the owner's tail folder is all claimed
        assert owner.claim("1", batch_name(index)) is not None
    stolen = thief.next_batch()
    assert stolen is not None and stolen.label == f"1/{batch_name(LEASES_PER_FOLDER * 2 - 6)}"
    assert len({p.parent.name for p in (tmp_path / "claims" / "1").rglob("b*")}) == 2


def _many(tmp_path, tasks: int, task: int, first_start: bool = False) -> Scheduler:
    items = [
        WorkItem(item_id=f"{n:06d}", pdf=f"d{n}.pdf", page_start=0, page_stop=4, scan_status="ok", doc_id=f"{n:06d}")
        for n in range(8 * tasks)
    ]
    plan_folder = tmp_path / "plan"
    if not plan_folder.exists():
        save_plan(make_plan(items, tasks, split_pages=0), plan_folder)
        (tmp_path / "progress").mkdir()
    summaries = load_summary(plan_folder)
    return Scheduler(
        task,
        summaries,
        load_share(plan_folder, summaries[task]),
        ClaimBoard(tmp_path, f"n:{task}:task-{task}", LEASE_S),
        plan_folder,
        tmp_path / "progress",
        steal=True,
        lease_s=LEASE_S,
        first_start=first_start,
    )


def _counting_reads(monkeypatch) -> list[int]:
    """Every heartbeat file the scheduler opens, by task number."""
    opened: list[int] = []
    real = scheduler_module.read_heartbeats

    def counting(folder, tasks=None, skip=frozenset()):
        beats = real(folder, tasks, skip)
        names = tasks if tasks is not None else [int(p.stem.split("-")[1]) for p in folder.glob("task-*.json")]
        opened.extend(t for t in names if t not in skip)
        return beats

    monkeypatch.setattr(scheduler_module, "read_heartbeats", counting)
    return opened


def test_a_thief_reads_a_sample_of_heartbeats_and_a_sweeper_does_not_read_the_exited_again(tmp_path, monkeypatch):
    tasks = 4 * SAMPLE
    progress = tmp_path / "progress"
    sweeper = _many(tmp_path, tasks, 0, first_start=True)
    for other in range(1, tasks):  # everyone else has exited since task 0 started, but task 5, still waiting
        write_heartbeat(
            progress,
            Heartbeat(task=other, owner=f"n:{other}:task-{other}", state=WAITING if other == 5 else EXITED, cursor=8),
        )
    opened = _counting_reads(monkeypatch)
    sweeper.cursor = len(sweeper.own)  # its own share is claimed
    assert sweeper.next_batch() is None
    assert len(opened) == SAMPLE  # the sample, not every task
    assert SWEEPERS > 0 and not sweeper.should_wait()  # nobody holds a batch
    assert sorted(opened[SAMPLE:]) == sorted(set(range(1, tasks)) - set(opened[:SAMPLE]))  # the rest, once
    assert sweeper.gone == set(range(1, tasks)) - {5}
    opened.clear()
    sweeper._sampled = None
    assert not sweeper.should_wait()
    assert opened == [5]  # only the task not seen exiting is read again


def test_a_sweeper_reads_heartbeats_only_until_one_says_a_task_holds_a_batch(tmp_path, monkeypatch):
    """Whether a sweeper stays is decided by the first live holder (or dead holder of an unfinished batch) it
    finds: the sample it read in the same turn first, then one heartbeat at a time, not every task's."""
    tasks = 4 * SAMPLE
    progress = tmp_path / "progress"
    sweeper = _many(tmp_path, tasks, 0, first_start=True)
    for other in range(1, tasks):  # everyone else still works on a batch of its own share
        write_heartbeat(
            progress, Heartbeat(task=other, owner=f"n:{other}:task-{other}", cursor=8, held=[f"{other}/b00003"])
        )
    opened = _counting_reads(monkeypatch)
    sweeper.cursor = len(sweeper.own)
    assert sweeper.next_batch() is None and len(opened) == SAMPLE
    assert sweeper.should_wait() and len(opened) == SAMPLE  # the sample decided: nothing more is read
    opened.clear()
    sweeper._sampled = None  # a later turn, the sample not read again
    assert sweeper.should_wait() and len(opened) == 1
    for other in range(1, tasks):  # ... and once all have exited, every one of them is read (once)
        write_heartbeat(progress, Heartbeat(task=other, owner=f"n:{other}:task-{other}", state=EXITED, cursor=8))
    opened.clear()
    assert not sweeper.should_wait() and sorted(opened) == list(range(1, tasks))


def test_a_task_that_claimed_its_last_own_batch_says_so_at_once(tmp_path):
    task = _many(tmp_path, 2, 1, first_start=True)
    assert (tmp_path / "claims" / "1" / "0000").is_dir()  # made at its first start, before any claim
    while task.cursor < len(task.own):
        assert task.next_batch() is not None
    beat = read_heartbeats(tmp_path / "progress", [1])[1]
    assert beat.cursor == len(task.own) and beat.remaining_pages == 0 and len(beat.held) == len(task.own)


def test_an_earlier_exit_is_read_again(tmp_path):
    """A task that exited before this one started (an earlier run of the run) may be running again now."""
    progress = tmp_path / "progress"
    old = _many(tmp_path, 2, 0)
    write_heartbeat(progress, Heartbeat(task=1, owner="n:1:task-1", state=EXITED, cursor=8))
    old.started = time.time() + 1
    old.should_wait()
    assert old.gone == set()


def test_an_idle_task_looks_again_every_eighth_of_the_lease_unless_told(monkeypatch):
    """1-15 s by default; HPCMARKER_IDLE_POLL_S (the tests' 0.5 s: tests/conftest.py) instead, where it is a
    number. A sweeper waits for the last holder this long, so every run of several tasks ends up to it late."""
    monkeypatch.delenv(IDLE_POLL_ENV, raising=False)
    assert [idle_poll_seconds(lease) for lease in (120.0, 400.0, 8.0, 2.0)] == [15.0, 15.0, 1.0, 1.0]
    monkeypatch.setenv(IDLE_POLL_ENV, "0.25")
    assert idle_poll_seconds(120.0) == 0.25
    monkeypatch.setenv(IDLE_POLL_ENV, "soon")
    assert idle_poll_seconds(120.0) == 15.0


def test_a_grown_task_steals_and_one_that_dies_holding_a_batch_is_taken_over(tmp_path):
    """A task `hpcmarker grow` added has no share: it steals. Listed in progress/grown.txt, its heartbeat is read
    by the others, so a batch it died holding, in a share whose owner has passed it, is taken over (not left
    for the next round)."""
    from hpc_marker.planning.plan import TaskPlan
    from hpc_marker.runstate.progress import add_grown, heartbeat_path

    first, second = _many(tmp_path, 2, 0), _many(tmp_path, 2, 1)
    assert first.next_batch() is not None
    first.write()  # share 0 has less left than share 1 now
    summaries = load_summary(tmp_path / "plan")
    board = ClaimBoard(tmp_path, "n:2:task-2", LEASE_S)
    grown = Scheduler(2, summaries, TaskPlan(2), board, tmp_path / "plan", tmp_path / "progress", steal=True,
                      lease_s=LEASE_S, first_start=True)  # fmt: skip
    add_grown(tmp_path / "progress", [2])
    batch = grown.next_batch()
    assert batch is not None and batch.share == 1 and grown.stolen == 1 and not grown.own
    assert batch.label not in _drain(second)  # its owner passes it (and steals the rest of share 0)
    beat = json.loads(heartbeat_path(tmp_path / "progress", 2).read_text())  # the grown task dies: stale heartbeat
    assert beat["held"] == [batch.label]
    heartbeat_path(tmp_path / "progress", 2).write_text(json.dumps(dict(beat, updated=time.time() - 2 * LEASE_S)))
    lease = ClaimBoard(tmp_path, "reader", LEASE_S).lease_path("1", batch_name(batch.index))
    os.utime(lease, (time.time() - 2 * LEASE_S,) * 2)  # ... and its lease expires
    second._sampled = None  # its next look reads the heartbeats again (as it does every lease/8)
    assert _drain(second) == [batch.label]


def test_on_a_first_start_an_own_batch_a_thief_holds_is_passed_without_reading_its_lease(tmp_path, monkeypatch):
    """No earlier run of the task exists (its stop record says so): whoever holds its batch is a thief, so the
    lease's holder is not read (one operation less for each own batch stolen before the owner reached it)."""
    task = _many(tmp_path, 2, 0, first_start=True)
    thief = ClaimBoard(tmp_path, "n:1:task-1", LEASE_S)
    last = len(task.own) - 1
    assert thief.claim("0", batch_name(last)) is not None
    read = []
    monkeypatch.setattr(task.board, "holder", lambda group, name: read.append(name))
    labels = []
    while task.cursor < len(task.own):
        batch = task.next_batch()
        if batch is not None:
            labels.append(batch.label)
    own = [label for label in labels if label.startswith("0/")]  # (it may steal from share 1 after its own)
    assert f"0/{batch_name(last)}" not in own and len(own) == last
    assert read == [] and task.inherited == []
