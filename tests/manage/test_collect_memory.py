"""What the collector holds at 10^6 items (issue 24): past a range only a few rows of it, each record's light
columns as small numpy arrays, no frame of every record beyond them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from hpc_marker.manage.collectparts import collect_ranges
from hpc_marker.planning.store import load_items_table, load_summary
from hpc_marker.report import frames
from hpc_marker.runstate import buckets
from hpc_marker.runstate.claims import ClaimBoard
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.light import LIGHT, LightColumns
from hpc_marker.runstate.manifest import read_manifest_frame
from hpc_marker.runstate.summary import ITEM_COLUMNS, summarize
from hpc_marker.util.frames import distinct_rows

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


def _arrow_light(tables: list[pa.Table]) -> pd.DataFrame:
    """The light frame as the collector made it before (Arrow dictionary columns, converted at the end): the
    oracle."""
    import pyarrow.compute as pc

    blocks = []
    for table in tables:
        columns = {}
        for name in LIGHT:
            column = table.column(name)
            columns[name] = pc.dictionary_encode(column) if pa.types.is_string(column.type) else column
            if name in ("task", "pages"):
                columns[name] = column.cast(pa.int32())
        blocks.append(pa.table(columns))
    light = pa.concat_tables(blocks).to_pandas()
    for name in ("status", "host", "gpu", "degraded"):
        light[name] = light[name].cat.reorder_categories(sorted(light[name].cat.categories))
    flagged = np.array([isinstance(v, str) and bool(v) for v in light["degraded"].cat.categories] + [False])
    degraded = flagged[light["degraded"].cat.codes.to_numpy()]
    codes = np.where((light["status"] != "ok").to_numpy(), 2, np.where(degraded, 1, 0))
    light["state"] = pd.Categorical.from_codes(codes, ["ok", "degraded", "failed"])
    return light.drop(columns="degraded")


@pytest.mark.parametrize("nulls", [False, True])
def test_light_columns_are_the_frame_the_arrow_columns_gave(nulls):
    """Blocks of records added one by one (more than 127 hosts: the codes outgrow a byte; nulls in every kind of
    column) give the frame the Arrow dictionary columns converted at the end gave, value for value and type."""
    rng = np.random.default_rng(1)
    light, tables = LightColumns(), []
    for block in range(40):
        n = int(rng.integers(1, 400))
        rows = {
            "task": rng.integers(0, 9, n),
            "status": rng.choice(["ok", "failed", "bisected", "timeout"], n),
            "pages": rng.integers(0, 30, n),
            "seconds": rng.random(n) * 10,
            "started": 1e9 + rng.random(n) * 100,
            "finished": 1e9 + 100 + rng.random(n) * 100,
            "host": [f"node{block * 5 + int(k)}" for k in rng.integers(0, 5, n)],  # 200 hosts in all
            "gpu": rng.choice(["0", "1", "2,3"], n),
            "degraded": rng.choice(["", "llm timeout", "partial"], n),
        }
        table = pa.table(rows)
        if nulls:
            masked = {name: pa.array(list(values), mask=rng.random(n) < 0.1) for name, values in rows.items()}
            table = pa.table(masked)
        tables.append(table)
        light.add(table)
    assert len(light) == sum(len(t) for t in tables)
    pd.testing.assert_frame_equal(light.frame(), _arrow_light(tables))


def test_the_per_task_figures_are_a_groupbys(run):
    """summary.json's `tasks`, counted from the task codes, are what a groupby of every record gives; records of
    no task are left out, a missing page count counts none."""
    paths = RunPaths(run)
    records, torn = read_manifest_frame(paths.manifests)
    records["task"] = records["task"].astype(float)
    records.loc[records.index[::50], "task"] = np.nan
    records.loc[records.index[1::70], "pages"] = np.nan
    items = load_items_table(paths.plan, columns=ITEM_COLUMNS).to_pandas()
    tasks = summarize(items, load_summary(paths.plan), records, torn)["tasks"]
    grouped = records.groupby("task")
    assert len(tasks) == 8 and records["task"].isna().any()
    for row in tasks:
        group = grouped.get_group(row["task"]) if row["task"] in grouped.groups else records.iloc[:0]
        ok = group["status"] == "ok"
        assert row["ok"] == ok.sum() and row["failed"] == len(group) - ok.sum() - (group["status"] == "bisected").sum()
        assert row["pages_ok"] == group.loc[ok, "pages"].sum()
        assert row["busy_seconds"] == round(float(group["seconds"].sum()), 3)
        assert row["gpu"] == sorted(set(group["gpu"])) and row["hosts"] == sorted(set(group["host"]))


def _spread_whole_chunks(started, finished, weights, edges) -> np.ndarray:
    """report.frames.spread as it was: every chunk of records by every bucket at once (the oracle)."""
    duration = np.maximum(finished - started, 1e-6)
    started, total = finished - duration, np.zeros(len(edges) - 1)
    for lo in range(0, len(finished), frames._CHUNK):
        s, f = started[lo : lo + frames._CHUNK, None], finished[lo : lo + frames._CHUNK, None]
        overlap = np.clip(np.minimum(f, edges[None, 1:]) - np.maximum(s, edges[None, :-1]), 0, None)
        total += (overlap / duration[lo : lo + frames._CHUNK, None] * weights[lo : lo + frames._CHUNK, None]).sum(0)
    return total


@pytest.mark.parametrize("buckets", [1, 2, 33, 65, 121])
def test_spread_a_block_of_buckets_at_a_time_is_bit_for_bit_the_whole(buckets):
    """The timeline's pages per bucket, spread in blocks of 32 buckets with integer pages, equal the sums over
    every bucket at once with float pages to the last bit: the report's figures stay byte for byte."""
    rng = np.random.default_rng(buckets)
    for n in (1, frames._CHUNK + 1, 3 * frames._CHUNK + 7):
        started = 1e9 + rng.random(n) * 1000
        finished = started + rng.random(n) * 50 * (rng.random(n) > 0.1)  # some take no time
        pages = rng.integers(1, 40, n).astype(np.int32)
        edges = np.linspace(1e9, 1e9 + 1050, buckets + 1)
        expected = _spread_whole_chunks(started, finished, pages.astype(float), edges)
        assert np.array_equal(frames.spread(started, finished, pages, edges), expected)


def test_distinct_rows_a_chunk_at_a_time_are_drop_duplicates():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "task": rng.integers(0, 20, 50_000).astype(np.int32),
            "host": pd.Categorical(rng.choice(["a", "b", None], 50_000)),
            "gpu": rng.choice(["0", "1"], 50_000),
        }
    )
    expected = frame[["task", "host", "gpu"]].drop_duplicates()
    pd.testing.assert_frame_equal(distinct_rows(frame, ["task", "host", "gpu"], chunk=999), expected)
