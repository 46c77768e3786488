"""8 real task processes race over 600 items with stealing: every item is finished exactly once.

The late half of the tasks start only once a thief has claimed a batch of one of their shares, so each late task
claims its share from the head while thieves take it from the tail (and from each other), whatever the load: the
races the claims exist for (owner against thief, thief against thief, on 5 batches a share). More tasks or items
only repeat the same races (16 tasks over 2,000 items took 124 CPU s)."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import EXAMPLES

from hpc_marker.planning.plan import WorkItem, make_plan
from hpc_marker.planning.store import save_plan
from hpc_marker.runstate.claims import FINISHED, ClaimBoard
from hpc_marker.runstate.manifest import read_manifest_frame
from hpc_marker.runstate.progress import read_commits
from hpc_marker.runtime.task import run_task
from hpc_marker.submission.launch import prepare_run
from hpc_marker.submission.request import SubmitRequest

pytestmark = pytest.mark.slow
ITEMS, TASKS, LATE = 600, 8, 4  # tasks LATE.. start late: their shares are stolen from


def _task(run_dir: str, index: int, late: bool) -> None:
    """Task `index`; a late one starts once a thief holds a batch of a late share (at most 300 s later)."""
    deadline = time.monotonic() + 300
    late_shares = [Path(run_dir) / "claims" / str(share) for share in range(LATE, TASKS)]
    while late and time.monotonic() < deadline and not any(any(f.rglob("b*")) for f in late_shares if f.exists()):
        time.sleep(0.05)
    run_task(run_dir, index)


def test_eight_tasks_steal_over_six_hundred_items_and_finish_each_once(tmp_path):
    pdfs = tmp_path / "pdfs"
    (pdfs / "many").mkdir(parents=True)
    source = EXAMPLES / "en" / "upref.pdf"
    (pdfs / "one.pdf").symlink_to(source)
    request = SubmitRequest.with_defaults(
        pdfs, tmp_path / "out", gpus=1, engine="text", executor="local", workers_per_gpu=1, lease_seconds=20.0
    )
    prepared = prepare_run(request)
    paths, record = prepared.paths, prepared.record
    for n in range(ITEMS):  # distinct names (and outputs) for one small real PDF
        (pdfs / "many" / f"d{n:05d}.pdf").symlink_to(source)
    pages = prepared.plan.items[0].pages
    items = [
        WorkItem(
            item_id=f"{n:06d}",
            pdf=f"many/d{n:05d}.pdf",
            page_start=0,
            page_stop=pages,
            scan_status="ok",
            doc_id=f"{n:06d}",
        )
        for n in range(ITEMS)
    ]
    plan = make_plan(items, TASKS, split_pages=0)
    save_plan(plan, paths.plan)
    record.tasks = TASKS
    paths.save_record(record)

    context = multiprocessing.get_context("spawn")
    tasks = [context.Process(target=_task, args=(str(paths.root), i, i >= LATE)) for i in range(TASKS)]
    for process in tasks:
        process.start()
    for process in tasks:
        process.join(timeout=600)
    assert [p.exitcode for p in tasks] == [0] * TASKS

    share_of = {item.item_id: task.index for task in plan.tasks for item in task.items}
    commits = read_commits(paths.progress)
    assert sorted(commits["item_id"]) == sorted(share_of)  # one commit line per item: none lost, none twice
    records, torn = read_manifest_frame(paths.manifests)
    assert not torn and Counter(records["item_id"]) == Counter(share_of.keys())  # one manifest line per item
    assert (records["status"] == "ok").all()
    stolen = sum(share_of[item] != task for item, task in zip(records["item_id"], records["task"], strict=False))
    assert stolen > 0, "no task stole anything"
    board = ClaimBoard(paths.root, owner="check", lease_s=20)
    assert all(board.is_done(item) for item in share_of)
    leases = [p for p in (paths.root / "claims").rglob("b*") if not p.name.endswith(".old")]
    assert leases and all(p.stat().st_mtime == FINISHED for p in leases)  # every batch finished, none held
    outputs = list((tmp_path / "out" / "many").glob("*/*.md"))
    assert len(outputs) == ITEMS
    assert not os.listdir(paths.staging)
