"""`hpcmarker export`: one row per document, shards of a bounded size written atomically, a manifest of
the shards, follow-up runs, and what a crash leaves. On synthetic finished runs (synthetic_export.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from synthetic_export import make_export_run, pages_of, record_of, relpath_of, text_of

from hpc_marker.cli import cli
from hpc_marker.engines.base import EngineOptions
from hpc_marker.export import MANIFEST, SCHEMA, ExportError, export_run, rows
from hpc_marker.runstate.layout import RUNS_SUBDIR, RunPaths
from hpc_marker.runstate.manifest import append_record
from hpc_marker.runstate.output import document_dir, document_stem
from hpc_marker.runstate.record import ParentRun

BIG = 1 << 40


def read_rows(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder)


def test_parquet_has_one_row_per_ok_document_with_its_text(tmp_path):
    paths, expected = make_export_run(tmp_path, 300)
    result = export_run(paths, tmp_path / "ds", "parquet", rows_per_shard=100_000, shard_bytes=BIG)
    frame = read_rows(tmp_path / "ds")
    assert len(frame) == result.rows == expected.ok and result.by_status == {
        "ok": expected.ok,
        "failed": expected.failed,
    }
    assert frame["id"].is_unique and list(frame["id"]) == sorted(frame["id"])
    for row in frame.itertuples():
        i = int(row.path.rsplit("-", 1)[1].removesuffix(".pdf"))
        assert row.text == text_of(i, 2000) and row.id == hashlib.sha256(row.path.encode()).hexdigest()[:32]
        assert (row.pages, row.page_start, row.page_stop) == (pages_of(i), 0, pages_of(i))
        assert row.status == "ok" and row.engine == "text" and row.format == "markdown" and pd.isna(row.llm)
        assert list(row.garbled_pages) == ([0] if i % 23 == 0 else []) and list(row.empty_pages) == []
        assert json.loads(row.metadata)["hpcmarker_source"]["pages"] == [0, pages_of(i)]
    split = frame[frame["path"] == relpath_of(50)].iloc[0]  # two parts, merged
    assert split["pages"] == pages_of(50) and split["seconds"] == pytest.approx(0.1 * pages_of(50))
    assert relpath_of(31) in set(frame["path"])  # failed once, then converted


def test_include_failed_and_jsonl(tmp_path):
    paths, expected = make_export_run(tmp_path, 200)
    result = export_run(paths, tmp_path / "ds", "jsonl", include_failed=True, rows_per_shard=100_000, shard_bytes=BIG)
    lines = [json.loads(line) for line in (tmp_path / "ds" / "part-00000.jsonl").read_text().splitlines()]
    assert len(lines) == result.rows == expected.documents
    failed = [row for row in lines if row["status"] != "ok"]
    assert len(failed) == expected.failed and all(r["text"] is None and r["error"] for r in failed)
    assert list(lines[0]) == SCHEMA.names


def test_shards_are_bounded_and_listed_with_their_hashes(tmp_path):
    paths, expected = make_export_run(tmp_path, 250)
    export_run(paths, tmp_path / "by-rows", "parquet", rows_per_shard=100, shard_bytes=BIG)
    manifest = json.loads((tmp_path / "by-rows" / MANIFEST).read_text())
    assert [s["rows"] for s in manifest["shards"]] == [100, 100, expected.ok - 200]
    for shard in manifest["shards"]:
        data = (tmp_path / "by-rows" / shard["file"]).read_bytes()
        assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
    assert manifest["rows"] == expected.ok and manifest["runs"][0]["run_id"] == "synthetic"
    export_run(paths, tmp_path / "by-size", "jsonl", rows_per_shard=100_000, shard_bytes=20_000)
    sizes = json.loads((tmp_path / "by-size" / MANIFEST).read_text())["shards"]
    assert len(sizes) > 10 and all(s["rows"] <= 11 for s in sizes)  # about 2 kB of text a row
    assert sum(s["rows"] for s in sizes) == expected.ok
    assert sorted(p.name for p in (tmp_path / "by-size").iterdir()) == sorted([MANIFEST] + [s["file"] for s in sizes])


def test_a_crash_leaves_whole_shards_and_no_manifest(tmp_path, monkeypatch):
    paths, _ = make_export_run(tmp_path, 250)
    real, seen = rows.build_row, []

    def dying(source, doc):
        seen.append(doc.pdf)
        if len(seen) == 150:
            raise KeyboardInterrupt  # killed mid-shard
        return real(source, doc)

    monkeypatch.setattr("hpc_marker.export.build_row", dying)
    with pytest.raises(KeyboardInterrupt):
        export_run(paths, tmp_path / "ds", "parquet", rows_per_shard=100, shard_bytes=BIG)
    left = sorted(p.name for p in (tmp_path / "ds").iterdir())
    assert left == ["part-00000.parquet"]  # the whole first shard; the second was never renamed
    assert len(read_rows(tmp_path / "ds")) == 100
    with pytest.raises(ExportError, match="--overwrite"):
        export_run(paths, tmp_path / "ds", "parquet", rows_per_shard=100, shard_bytes=BIG)
    monkeypatch.setattr("hpc_marker.export.build_row", real)
    export_run(paths, tmp_path / "ds", "parquet", rows_per_shard=100, shard_bytes=BIG, overwrite=True)
    assert (tmp_path / "ds" / MANIFEST).exists()


def test_refuses_a_folder_holding_other_files(tmp_path):
    paths, _ = make_export_run(tmp_path, 5)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError) as info:
        export_run(paths, tmp_path / "ds", "parquet", rows_per_shard=10, shard_bytes=BIG, overwrite=True)
    assert "not empty" in str(info.value) and (tmp_path / "ds" / "notes.txt").exists()


def test_torn_lines_and_missing_outputs_are_reported_not_fatal(tmp_path):
    paths, _expected = make_export_run(tmp_path, 40, tasks=2)
    with paths.task_manifest(0).open("a") as fh:
        fh.write('{"item_id": "x", "pdf": "torn')
    gone = document_dir(Path(paths.load_record().out_dir), relpath_of(3))
    (gone / f"{document_stem(relpath_of(3))}.md").unlink()
    result = export_run(paths, tmp_path / "ds", "parquet", include_failed=True, rows_per_shard=100, shard_bytes=BIG)
    assert result.torn_lines == 1 and result.by_status["unreadable"] == 1
    row = read_rows(tmp_path / "ds").set_index("path").loc[relpath_of(3)]
    assert row["status"] == "unreadable" and "No such file" in row["error"] and pd.isna(row["text"])


def _follow_up(tmp_path: Path, parent: RunPaths, run_id: str, created: float, fmt: str = "markdown") -> RunPaths:
    record = parent.load_record()
    paths = RunPaths(tmp_path / "out" / RUNS_SUBDIR / run_id)
    paths.create()
    paths.save_record(
        replace(
            record,
            run_id=run_id,
            created=created,
            engine="marker",
            engine_options=EngineOptions(output_format=fmt),
            parent=ParentRun(run_id=record.run_id, select="garbled", min_share=0.1, documents=2),
        )
    )
    return paths


def test_follow_up_runs_give_each_document_its_newest_ok_result(tmp_path):
    paths, expected = make_export_run(tmp_path, 100)
    out = tmp_path / "out"
    second = _follow_up(tmp_path, paths, "second", 1_770_000_000.0)
    redone, failed_again, was_failed = 23, 46, 0  # garbled (ok) docs; doc 0 failed in the first run
    for i, status in ((redone, "ok"), (failed_again, "failed"), (was_failed, "ok")):
        record = replace(
            record_of(i, f"{i:07d}", 0, pages_of(i), status, 0, 1_770_000_100.0, False, out), engine="marker"
        )
        append_record(second.task_manifest(0), record)
        if status == "ok":  # the follow-up replaced the document on disk
            folder = document_dir(out, relpath_of(i))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{document_stem(relpath_of(i))}.md").write_text(f"OCR of {i}")
            (folder / f"{document_stem(relpath_of(i))}_meta.json").write_text(
                json.dumps({"hpcmarker_source": {"format": "markdown", "pages": [0, pages_of(i)], "engine": "marker"}})
            )
    result = export_run(paths, tmp_path / "ds", "parquet", rows_per_shard=1000, shard_bytes=BIG)
    frame = read_rows(tmp_path / "ds").set_index("path")
    assert result.rows == expected.ok + 1  # doc 0 converted in the follow-up
    assert frame.loc[relpath_of(redone), "text"] == f"OCR of {redone}"
    assert frame.loc[relpath_of(redone), ["engine", "run_id"]].tolist() == ["marker", "second"]
    assert frame.loc[relpath_of(failed_again), "run_id"] == "synthetic"  # its first result is still there
    assert frame.loc[relpath_of(was_failed), "run_id"] == "second"
    alone = export_run(
        paths,
        tmp_path / "alone",
        "parquet",
        rows_per_shard=1000,
        shard_bytes=BIG,
        follow_ups=False,
        include_failed=True,
    )
    assert alone.rows == expected.documents and alone.by_status["replaced"] == 1  # doc 23: marker's now
    # the first run's own row for a redone document: its file on disk is the follow-up's now (in json)
    json_run = _follow_up(tmp_path, paths, "third", 1_780_000_000.0, fmt="json")
    append_record(
        json_run.task_manifest(0),
        replace(
            record_of(redone, f"{redone:07d}", 0, pages_of(redone), "ok", 0, 1_780_000_100.0, False, out),
            engine="marker",
        ),
    )
    folder = document_dir(out, relpath_of(redone))
    (folder / f"{document_stem(relpath_of(redone))}.md").unlink()
    (folder / f"{document_stem(relpath_of(redone))}.json").write_text('{"children": []}')
    (folder / f"{document_stem(relpath_of(redone))}_meta.json").write_text(
        json.dumps({"hpcmarker_source": {"format": "json", "pages": [0, pages_of(redone)]}})
    )
    only_first = export_run(
        paths, tmp_path / "first-only", "parquet", rows_per_shard=1000, shard_bytes=BIG, follow_ups=False
    )
    assert only_first.by_status["unreadable"] == 1  # its Markdown is gone
    newest = read_rows(export_run(paths, tmp_path / "all", "parquet", rows_per_shard=1000, shard_bytes=BIG).folder)
    row = newest.set_index("path").loc[relpath_of(redone)]
    assert (row["format"], row["run_id"], row["text"]) == ("json", "third", '{"children": []}')


def test_cli_export_reads_its_defaults_from_the_config(tmp_path, monkeypatch):
    paths, expected = make_export_run(tmp_path, 30)
    monkeypatch.setenv("HPCMARKER_EXPORT_ROWS_PER_SHARD", "10")
    result = CliRunner().invoke(cli, ["export", str(paths.root), "--format", "parquet", "--to", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert f"{expected.ok} rows in 3 shards" in result.output and f"{expected.failed} failed" in result.output
    bad = CliRunner().invoke(
        cli, ["export", str(paths.root), "--format", "parquet", "--to", str(tmp_path / "x"), "--shard-size", "lots"]
    )
    assert bad.exit_code == 2 and "--shard-size 'lots'" in bad.output
