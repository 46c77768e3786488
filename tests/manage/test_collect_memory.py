"""What the collector holds at 10^6 items (issue 24): past a range only a few rows of it, each record's light
columns as small numpy arrays, no frame of every record beyond them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from hpc_marker.manage.collectparts import collect_ranges
from hpc_marker.planning.store import load_summary
from hpc_marker.runstate import buckets
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.summary import ITEM_COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from synthetic_run import make_run

RECORDS = 4000  # past the report's bar-per-record limit (3000): the light columns, not every record whole


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("memory") / "run"
    make_run(root, records=RECORDS, tasks=8, missing=20)
    return root


def _pass(root: Path, monkeypatch, per_range: int):
    monkeypatch.setattr(buckets, "BUCKET_ITEMS", per_range)
    paths = RunPaths(root)
    record = paths.load_record()
    split = buckets.open_buckets(paths.plan, paths.manifests, load_summary(paths.plan), ITEM_COLUMNS, root)
    try:
        board = ClaimBoard(paths.root, owner="test", lease_s=record.lease_seconds)
        return split, collect_ranges(paths, record, split, board, whole_up_to=3000)
    finally:
        split.close()


def test_the_slowest_pdfs_kept_from_a_range_hold_their_own_strings_not_the_ranges(run, tmp_path, monkeypatch):
    """A range's few slowest PDFs, where many PDFs took as long (ties: all are candidates), were a slice of the
    range's grouped names: kept to the end, each range's names stayed allocated (25 MB of Arrow over the 50
    ranges of 10^6 items)."""
    tied = tmp_path / "run"
    shutil.copytree(run, tied)
    for manifest in RunPaths(tied).manifests.glob("task-*.jsonl"):
        lines = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
        manifest.write_text("".join(json.dumps({**r, "seconds": 2.0}) + "\n" for r in lines), encoding="utf-8")
    _, found = _pass(tied, monkeypatch, 300)
    assert len(found.slowest) == 14
    for frame in found.slowest:
        names = pa.array(frame["pdf"])  # the column's own Arrow array (no copy), buffers counted whole
        assert names.get_total_buffer_size() <= 64 * len(frame) + 128
