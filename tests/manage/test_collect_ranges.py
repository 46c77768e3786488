"""The collector reads a run a PDF range at a time (runstate/buckets.py, manage/collectparts.py): it never holds
more than a range's records as a frame, and what it writes is what the whole frame at once gives: manifest.csv,
summary.json and the report are the same whatever the ranges, and the summary is `summarize` of every record."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_marker.manage.collect import collect_run, retry_outlook
from hpc_marker.planning.store import load_items_table, load_summary
from hpc_marker.runstate import buckets
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.manifest import read_manifest_frame, read_manifests
from hpc_marker.runstate.progress import REOPENED, failed_commits, failures_per_item, read_commits
from hpc_marker.runstate.summary import ITEM_COLUMNS, summarize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from synthetic_run import make_run

RECORDS = 4000  # past the report's bar-per-record limit (3000): the collector keeps only a few columns of each


def _collected(root: Path) -> tuple[bytes, dict, str]:
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    summary.pop("collected")
    report = re.sub(r"(generated|collected) [0-9][^<·]*", "", (root / "report.html").read_text(encoding="utf-8"))
    return (root / "manifest.csv").read_bytes(), summary, report


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ranges") / "run"
    make_run(root, records=RECORDS, tasks=8, missing=20)
    with open(RunPaths(root).task_manifest(2), "a", encoding="utf-8") as fh:
        fh.write('{"item_id": "00001')  # a task killed mid-write
    return root


def test_outputs_are_the_same_whatever_the_ranges_and_a_range_is_all_that_is_held(run, tmp_path, monkeypatch):
    written, held = [], []
    read = buckets.Spill.read

    def spy(self, bucket):
        frame = read(self, bucket)
        held.append(len(frame))
        return frame

    monkeypatch.setattr(buckets.Spill, "read", spy)
    for n, per_range in enumerate((10**9, 300)):
        monkeypatch.setattr(buckets, "BUCKET_ITEMS", per_range)
        monkeypatch.setattr(buckets, "BLOCK_BYTES", 10**9 if n == 0 else 50_000)  # manifests in blocks of lines
        copy = tmp_path / f"run-{n}"
        shutil.copytree(run, copy)
        held.clear()
        collect_run(str(copy))
        written.append(_collected(copy))
        assert len(held) == (2 if n == 0 else 2 * 14)  # items and records, per range
    assert max(held) < 2 * RECORDS / 14
    assert written[0][0] == written[1][0]  # manifest.csv, byte for byte
    assert written[0][1] == written[1][1]
    assert written[0][2] == written[1][2]  # the report but its times


def test_summary_is_the_whole_frames(run, tmp_path, monkeypatch):
    """What the ranges add up to is `summarize` of the whole frames (items, every record at once)."""
    monkeypatch.setattr(buckets, "BUCKET_ITEMS", 250)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    paths = RunPaths(copy)
    records, torn = read_manifest_frame(paths.manifests)
    items = load_items_table(paths.plan, columns=ITEM_COLUMNS).to_pandas()
    whole = summarize(items, load_summary(paths.plan), records, torn)
    summary = collect_run(str(copy))
    assert torn and summary["torn_manifest_lines"] == torn
    assert {key: summary[key] for key in whole} == whole


def test_manifest_blocks_report_torn_lines_where_a_whole_read_does(run, tmp_path, monkeypatch):
    monkeypatch.setattr(buckets, "BLOCK_BYTES", 3_000)  # a few lines a block
    paths = RunPaths(run)
    split = buckets.open_buckets(paths.plan, paths.manifests, load_summary(paths.plan), ITEM_COLUMNS, tmp_path)
    try:
        whole = read_manifests(paths.manifests)
        assert split.torn == whole.torn_lines and split.total == len(whole.records)
    finally:
        split.close()


def test_failed_commits_give_the_outlook_every_line_gives(tmp_path):
    lines = {
        "task-0.log": ["a\tok\t1\t0\t1.0\t2.0\t", "b\tfailed\t2\t0\t2.0\t3.0\t", "c\tfailed\t1\t0\t3.0\t4.0\t"],
        "task-1.log": ["c\tok\t1\t1\t5.0\t6.0\t", "d\tencrypted\t3\t1\t6.0\t7.0\t", "e\tfailed\t1\t1\t7.0\t8.0\t"],
        "task-reopened.log": [f"e\t{REOPENED}\t1\t1\t9.0\t9.0\t"],
        "task-2.log": ["e\tfailed\t1\t1\t10.0\t11.0\t", "b\tfailed\t2\t0\t12.0\t13.0\t", "f\tok\t1"],  # torn: skipped
    }
    (tmp_path / "task-3.log").write_bytes(b"")  # a task that committed nothing
    for name, rows in lines.items():
        (tmp_path / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    every = read_commits(tmp_path)
    commits, reopened = failed_commits(tmp_path)
    assert reopened and set(commits["item_id"]) == {"b", "c", "d", "e"}
    assert failures_per_item(commits).to_dict() == failures_per_item(every).to_dict()
    assert retry_outlook(commits, {"d"}, reopened) == retry_outlook(every, {"d"})


def test_failed_commits_open_each_log_once_and_stat_none_by_path(tmp_path, monkeypatch):
    """The collector's look at the failures opens each commit log once: Arrow's reader of a path stats it before
    opening it, and a size by path is one more stat (three operations a log, two of them gone)."""
    import pyarrow.csv as pacsv

    (tmp_path / "task-0.log").write_text("a\tok\t1\t0\t1.0\t2.0\t\t0.0\nb\tfailed\t2\t0\t2.0\t3.0\t\t0.0\n")
    (tmp_path / "task-1.log").write_text("c\tfailed\t1\t1\t5.0\t6.0\t\n")  # from before the llm_s column
    (tmp_path / "task-2.log").write_bytes(b"")
    given, real = [], pacsv.open_csv
    monkeypatch.setattr(pacsv, "open_csv", lambda source, **kw: given.append(source) or real(source, **kw))
    monkeypatch.setattr(os.path, "getsize", lambda path: pytest.fail(f"stat of {path}"))
    commits, reopened = failed_commits(tmp_path)
    assert sorted(commits["item_id"]) == ["b", "c"] and not reopened
    assert given and not any(isinstance(source, (str, os.PathLike)) for source in given)


def test_a_killed_collectors_spill_folder_is_removed_by_the_next(run, tmp_path):
    """A collector killed mid-pass leaves its spill folder in the run folder: the next collector removes it (its
    process, of this host, is gone), not a live collector's, nor one of another host still young."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    dead = copy / f"{buckets.SPILL_PREFIX}{int(gone.stdout)}@{host}-k1ll3d"
    live = copy / f"{buckets.SPILL_PREFIX}{os.getpid()}@{host}-al1ve"
    elsewhere = copy / f"{buckets.SPILL_PREFIX}{int(gone.stdout)}@other-{host}-n0de"
    for folder in (dead, live, elsewhere):
        folder.mkdir()
        (folder / "records-0.arrows").write_bytes(b"spilled")
    collect_run(str(copy))
    assert not dead.exists()
    assert live.exists() and elsewhere.exists()
    assert sorted(p.name for p in copy.glob(f"{buckets.SPILL_PREFIX}*")) == sorted([live.name, elsewhere.name])
    old = time.time() - buckets.SPILL_STALE_S - 60
    os.utime(elsewhere, (old, old))
    assert buckets.sweep_spills(copy) == [elsewhere] and not elsewhere.exists()


def test_the_collector_loads_plotly_only_to_draw_the_report():
    """Importing the collector (it reads the report's frames) leaves plotly and Jinja2 out until the page is drawn:
    ~10 MB less held through the ranges."""
    code = (
        "import sys\nimport hpc_marker.manage.collect\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'plotly', 'jinja2'}))\n"
        "from hpc_marker.report import write_report\nprint('plotly' in sys.modules, callable(write_report))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True True"]
