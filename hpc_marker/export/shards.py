"""Shards: rows written to Parquet (pyarrow, zstd) or JSON Lines files of a bounded size, atomically.

A shard is written under a temporary name (`.part-00000.parquet.tmp`, hidden from pyarrow's and
pandas' folder readers), flushed to the storage, hashed and only then renamed to `part-00000.parquet`;
a crash leaves complete shards and at most one temporary file, never a half shard under a final
name. Parquet rows are buffered in row groups of at most ROW_GROUP_ROWS rows or ROW_GROUP_BYTES of
text, so memory stays bounded by one row group, not by the shard. A shard is closed when it holds
`rows_per_shard` rows or `shard_bytes` of text and metadata (UTF-8, before compression).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = {"parquet": "parquet", "jsonl": "jsonl"}  # --format -> file extension
ROW_GROUP_ROWS = 1000
ROW_GROUP_BYTES = 64 << 20

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("text", pa.large_string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("format", pa.string()),
        ("engine", pa.string()),
        ("run_id", pa.string()),
        ("pages", pa.int32()),
        ("page_start", pa.int32()),
        ("page_stop", pa.int32()),
        ("llm", pa.string()),
        ("llm_degraded", pa.string()),
        ("empty_pages", pa.list_(pa.int32())),
        ("garbled_pages", pa.list_(pa.int32())),
        ("lost_pages", pa.list_(pa.int32())),
        ("output_flags", pa.string()),
        ("source", pa.string()),
        ("output", pa.string()),
        ("metadata", pa.large_string()),
        ("seconds", pa.float64()),
        ("finished", pa.float64()),
    ]
)


@dataclass(frozen=True)
class Shard:
    file: str
    rows: int
    bytes: int  # the file's size
    sha256: str


def row_bytes(row: dict[str, Any]) -> int:
    """The UTF-8 size of a row's text and metadata, what bounds a shard and a row group."""
    return sum(len(row[key].encode("utf-8")) for key in ("text", "metadata") if row.get(key))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Takes rows one at a time; `close()` returns the shards written, in order."""

    def __init__(self, folder: Path, export_format: str, rows_per_shard: int, shard_bytes: int) -> None:
        self.folder, self.format = Path(folder), export_format
        self.rows_per_shard, self.shard_bytes = rows_per_shard, shard_bytes
        self.shards: list[Shard] = []
        self._file: IO[str] | pq.ParquetWriter | None = None
        self._rows = self._bytes = 0
        self._group: list[dict[str, Any]] = []
        self._group_bytes = 0

    def name(self, index: int) -> str:
        return f"part-{index:05d}.{FORMATS[self.format]}"

    def temporary(self, index: int) -> Path:
        return self.folder / f".{self.name(index)}.tmp"

    def add(self, row: dict[str, Any]) -> None:
        size = row_bytes(row)
        if self._file is None:
            self._open()
        if self.format == "jsonl":
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            self._group.append(row)
            self._group_bytes += size
            if len(self._group) >= ROW_GROUP_ROWS or self._group_bytes >= ROW_GROUP_BYTES:
                self._flush_group()
        self._rows += 1
        self._bytes += size
        if self._rows >= self.rows_per_shard or self._bytes >= self.shard_bytes:
            self._close_shard()

    def close(self) -> list[Shard]:
        if self._file is not None:
            self._close_shard()
        return self.shards

    def abort(self) -> None:
        """After a failure: drop the shard being written (its temporary file), keep the ones done."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.temporary(len(self.shards)).unlink(missing_ok=True)

    def _open(self) -> None:
        path = self.temporary(len(self.shards))
        if self.format == "jsonl":
            self._file = path.open("w", encoding="utf-8")
        else:
            self._file = pq.ParquetWriter(path, SCHEMA, compression="zstd")
        self._rows = self._bytes = 0

    def _flush_group(self) -> None:
        if self._group:
            columns = {name: [row[name] for row in self._group] for name in SCHEMA.names}
            self._file.write_table(pa.Table.from_pydict(columns, schema=SCHEMA))  # 40x faster than from_pylist
            self._group, self._group_bytes = [], 0

    def _close_shard(self) -> None:
        if self.format == "parquet":
            self._flush_group()
        self._file.close()
        self._file = None
        index = len(self.shards)
        temporary, final = self.temporary(index), self.folder / self.name(index)
        _sync(temporary)
        shard = Shard(file=final.name, rows=self._rows, bytes=temporary.stat().st_size, sha256=_sha256(temporary))
        os.replace(temporary, final)
        self.shards.append(shard)


def shard_list(shards: list[Shard]) -> list[dict]:
    return [asdict(shard) for shard in shards]
