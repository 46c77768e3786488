"""Export: a run's documents as one dataset, `hpcmarker export RUN --format parquet|jsonl --to DIR`.

One row per document (a split PDF is one row), streamed (rows.py: bounded memory at any run size)
into shards of a bounded size written atomically (shards.py), and a manifest of the shards
(`_export.json`: files, rows, bytes, sha256, the runs read) written last: an export is complete
when its manifest is there. By default only `ok` and `partial` documents (a placeholder stands for
each lost page, listed in `lost_pages`); `include_failed` adds every other one (text null, status and
error said). Columns: docs/user-guide.md. The shards and the manifest are as private
as the run's outputs (its `--permissions`), unless the export is given other permissions. A run with
nothing converted yet is refused (ExportError) before anything is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpc_marker.export.rows import RunSource, build_row, documents, index_of, lineage
from hpc_marker.export.shards import FORMATS, SCHEMA, Shard, ShardWriter, shard_list
from hpc_marker.runstate.docindex import ManifestIndex
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.permissions import file_mode_mask
from hpc_marker.util.commands import command_line
from hpc_marker.util.errors import UserError
from hpc_marker.util.files import atomic_write

MANIFEST = "_export.json"


class ExportError(UserError):
    """The export cannot be written where or how it was asked."""


@dataclass
class ExportResult:
    folder: Path
    shards: list[Shard]
    rows: int
    by_status: dict[str, int] = field(default_factory=dict)  # every document read, by status
    torn_lines: int = 0


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    """`folder` exists and is empty; with `overwrite`, a previous export there is removed first."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        present = sorted(folder.iterdir())
    except OSError as exc:
        raise ExportError(f"--to {folder}: cannot use it ({exc.strerror})") from None
    if not present:
        return
    ours = [p for p in present if p.name == MANIFEST or p.name.startswith(("part-", ".part-"))]
    if not overwrite or len(ours) != len(present):
        raise ExportError(
            f"--to {folder} is not empty"
            + (" (--overwrite replaces a previous export there)" if len(ours) == len(present) else "")
        )
    for path in ours:
        path.unlink()


def export_run(
    paths: RunPaths,
    folder: Path,
    export_format: str,
    *,
    include_failed: bool = False,
    rows_per_shard: int,
    shard_bytes: int,
    follow_ups: bool = True,
    overwrite: bool = False,
    umask: int | None = None,
) -> ExportResult:
    """Write the run's documents (with `follow_ups`: each document's newest ok result from the run
    and its follow-up runs) to `folder` as shards, then the shard manifest, under `umask` (None: the run's,
    what its --permissions gave its outputs)."""
    if export_format not in FORMATS:
        raise ExportError(f"--format {export_format!r}: choose from {', '.join(FORMATS)}")
    if rows_per_shard < 1 or shard_bytes < 1:
        raise ExportError("--rows-per-shard and --shard-size must be at least 1")
    sources = lineage(paths, follow_ups)
    index = index_of(sources)
    if not len(index.keys):
        raise ExportError(
            f"run {paths.run_id}: nothing converted yet, so nothing to export "
            f"(see {command_line('status', paths.run_id)})"
        )
    with file_mode_mask(sources[0].record.umask if umask is None else umask):
        return _write(
            paths,
            Path(folder).resolve(),
            export_format,
            sources,
            index,
            include_failed=include_failed,
            rows_per_shard=rows_per_shard,
            shard_bytes=shard_bytes,
            overwrite=overwrite,
        )


def _write(
    paths: RunPaths,
    folder: Path,
    export_format: str,
    sources: list[RunSource],
    index: ManifestIndex,
    *,
    include_failed: bool,
    rows_per_shard: int,
    shard_bytes: int,
    overwrite: bool,
) -> ExportResult:
    """The shards, then the manifest, into `folder` (made empty first)."""
    _prepare_folder(folder, overwrite)
    writer = ShardWriter(folder, export_format, rows_per_shard, shard_bytes)
    result = ExportResult(folder=folder, shards=[], rows=0, torn_lines=index.torn)
    try:
        for source, doc in documents(sources, index):
            row = build_row(source, doc)
            result.by_status[row["status"]] = result.by_status.get(row["status"], 0) + 1
            if row["status"] in ("ok", "partial") or include_failed:
                writer.add(row)
                result.rows += 1
        result.shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    manifest = {
        "run_id": paths.run_id,
        "format": export_format,
        "include_failed": include_failed,
        "created": time.time(),
        "runs": [
            {
                "run_id": s.record.run_id,
                "engine": s.record.engine,
                "output_format": s.output_format,
                "parent": s.record.parent.run_id if s.record.parent else None,
            }
            for s in sources
        ],
        "rows": result.rows,
        "documents_by_status": result.by_status,
        "torn_manifest_lines": index.torn,
        "columns": SCHEMA.names,
        "shards": shard_list(result.shards),
    }
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", fsync=True)
    return result
