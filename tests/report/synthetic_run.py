"""A synthetic run folder of any size, for the report's size test and benchmark.

`make_run` writes run.json (RunRecord), the plan (planning/store.py) and one manifest per task
(ManifestRecord lines, written directly for speed) the way a real run leaves them before the
collector: items over `tasks` tasks on 4 GPUs per host, some retried (a failed attempt, then an
ok one), some failed for good, some degraded, some with no record at all, and the last task
idle (its work done by the others, as when it is stolen). It returns what the report must show.

    .venv/bin/python tests/report/synthetic_run.py [--records 200000] [--tasks 64] [--out DIR]

builds such a run per size and its report, and prints the report's size, the time it took (and how
much of it went to reading the folder and adding up the totals, code outside this package) and
the peak memory: the benchmark of the report (times belong there, not in tests).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpc_marker.engines.base import EngineOptions
from hpc_marker.planning.plan import Plan, TaskPlan, WorkItem
from hpc_marker.planning.store import save_plan
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import ManifestRecord
from hpc_marker.runstate.record import RunRecord

HOSTILE_PDF = "<img src=x onerror=alert(1)>.pdf"  # fails: a failure row, in the first rows shown
HOSTILE_HOST = "node<b>00</b>"  # task 0..3's host: a timeline row label
FIELDS = list(ManifestRecord.__dataclass_fields__)


@dataclass(frozen=True)
class Expected:
    """What the run's manifests add up to."""

    records: int
    tasks: int
    items: int
    ok: int
    failed: int
    missing: int
    pages_ok: int
    degraded: int
    idle_task: int


def make_run(
    root: Path,
    *,
    records: int = 200_000,
    tasks: int = 64,
    hours: float = 10.0,
    seed: int = 0,
    retried_share: float = 0.02,
    failed_share: float = 0.01,
    degraded_share: float = 0.01,
    missing: int = 50,
    long_strings: bool = False,
) -> Expected:
    """Write a run folder at `root` (not collected) with `records` manifest records; with
    `long_strings`, PDF paths, errors and degraded reasons of about 400 characters each."""
    pad = "a-rather-deeply-nested-folder/" * 12 if long_strings else ""
    tail = " (a long message: " + "x" * 360 + ")" if long_strings else ""
    rng = np.random.default_rng(seed)
    retried = int(records * retried_share)
    recorded = records - retried  # items with at least one record
    n_items = recorded + missing
    pages = rng.integers(1, 40, size=n_items)
    failed = np.zeros(n_items, bool)
    retry = np.arange(1, retried + 1)  # items that fail once, then convert
    failed[:recorded] = rng.random(recorded) < failed_share
    failed[retry], failed[0] = False, True  # item 0: the hostile name, failed for good
    degraded = ~failed & (rng.random(n_items) < degraded_share)
    degraded[recorded:] = False
    items = [
        WorkItem(
            item_id=f"{i:07d}",
            pdf=HOSTILE_PDF if i == 0 else f"{pad}dir{i % 97:02d}/paper-{i:07d}.pdf",
            page_start=0,
            page_stop=int(pages[i]),
            scan_status="ok",
            doc_id=f"{i:07d}",
        )
        for i in range(n_items)
    ]
    paths = RunPaths(Path(root))
    paths.create()
    created = 1_760_000_000.0
    paths.save_record(
        RunRecord(
            run_id=paths.run_id,
            created=created,
            pdfs_root="/data/papers",
            out_dir="/scratch/papers-md",
            engine="marker",
            engine_options=EngineOptions(),
            executor="slurm",
            tasks=tasks,
            gpus=tasks,
            workers_per_gpu=2,
            cpus_per_task=8,
            template="default",
            time_limit="04:00:00",
            steal=True,
            lease_seconds=120.0,
            item_timeout="auto",
            umask=0o077,
            profile="generic",
        )
    )
    save_plan(Plan(tasks=[TaskPlan(index=t, items=items[t::tasks]) for t in range(tasks)]), paths.plan)
    # Who does what: items round-robin over all tasks but the last (idle: its share was stolen);
    # a retried item fails first (a third of its time), then its ok attempt comes after every first
    # attempt of the next task. Each task works through its records one after another.
    first = np.arange(recorded)
    item = np.concatenate([first, retry])
    task = np.concatenate([first % (tasks - 1), (retry % (tasks - 1) + 1) % (tasks - 1)])
    took = (pages[item] * rng.uniform(0.2, 1.5, size=records)).round(3)
    crashed = np.zeros(records, bool)
    crashed[retry] = True  # their first attempt
    took[crashed] = (took[crashed] / 3).round(3)
    kind = np.where(crashed, 3, np.where(failed[item], item % 3, 4))  # 0-2: a failure status, 3: crash, 4: ok
    order = np.lexsort((np.arange(records), task))
    frame = pd.DataFrame({"i": item[order], "task": task[order], "took": took[order], "kind": kind[order]})
    offset = created + 60 + rng.uniform(0, 300, size=tasks)  # tasks start within 5 minutes
    frame["started"] = (
        offset[frame["task"]]
        + frame.groupby("task")["took"].cumsum()
        - frame["took"]
        + 0.05 * frame.groupby("task").cumcount()
    )
    statuses = np.array(["failed", "timeout", "encrypted", "failed", "ok"])
    status = statuses[frame["kind"]]
    records_frame = pd.DataFrame(
        {
            "item_id": [items[i].item_id for i in frame["i"]],
            "pdf": [items[i].pdf for i in frame["i"]],
            "page_start": 0,
            "page_stop": pages[frame["i"]],
            "pages": pages[frame["i"]],
            "status": status,
            "error": [
                None
                if k == 4
                else "worker crashed (exit -9)" + tail
                if k == 3
                else f"{statuses[k]}: synthetic <error> #{i}{tail}"
                for i, k in zip(frame["i"], frame["kind"], strict=False)
            ],
            "seconds": frame["took"],
            "engine": "marker",
            "host": np.where(frame["task"] < 4, HOSTILE_HOST, [f"node{t // 4:02d}" for t in frame["task"]]),
            "gpu": (frame["task"] % 4).astype(str),
            "job_id": [f"1000_{t}" for t in frame["task"]],
            "task": frame["task"],
            "output": [
                f"/scratch/papers-md/{i}" if k == 4 else None for i, k in zip(frame["i"], frame["kind"], strict=False)
            ],
            "started": frame["started"].round(3),
            "finished": (frame["started"] + frame["took"]).round(3),
            "degraded": np.where((frame["kind"] == 4) & degraded[frame["i"]], "LLM timed out twice" + tail, None),
        },
        columns=FIELDS,
    )
    for index, lines in records_frame.groupby("task"):
        lines.to_json(
            paths.task_manifest(int(index)), orient="records", lines=True, force_ascii=False, double_precision=3
        )
    ok = ~failed[:recorded]
    return Expected(
        records=records,
        tasks=tasks,
        items=n_items,
        ok=int(ok.sum()),
        failed=int(failed.sum()),
        missing=missing,
        pages_ok=int(pages[:recorded][ok].sum()),
        degraded=int(degraded.sum()),
        idle_task=tasks - 1,
    )


def main(argv: list[str] | None = None) -> None:
    from hpc_marker.report import page

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[200_000], help="one run per size")
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="hpcmarker-report-"))
    print("records  tasks  report MB  report s  (reading s  totals s)  peak MB")
    for records in args.records:
        root = out / f"run-{records}"
        make_run(root, records=records, tasks=args.tasks)
        began = time.perf_counter()
        view = page.load_run(RunPaths(root))
        read = time.perf_counter()
        page.run_totals(view)
        totals = time.perf_counter()
        del view
        began_all = time.perf_counter()
        report = page.write_report(root)
        took = time.perf_counter() - began_all
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{records:>7}  {args.tasks:>5}  {report.stat().st_size / 1e6:>9.2f}  {took:>8.1f}  "
            f"({read - began:>9.1f}  {totals - read:>8.1f})  {peak:>7.0f}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
