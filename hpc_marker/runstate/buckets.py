"""Buckets: a run's planned items and manifest records split by PDF name into ranges, each spilled to its own
Arrow file, so that the collector holds one range at a time, never the whole run (issue 24).

Every record of an item, of its halves (bisected) and of its document's other parts names the same PDF, so what
is worked out per item or per document (the latest record, folded halves, merged parts) is whole in one bucket,
and the buckets come in PDF order: per-bucket rows sorted by PDF, put end to end, are sorted over the run.
Manifests are read in blocks of whole lines (BLOCK_BYTES), never a file at once; each record keeps its place in
the order they were read (`seq`), the tie-break of "the latest record" (runstate/manifest.py) across buckets.
What the summary adds up over every record (per task, over time) comes from `light`, a few small columns of
every record (runstate/light.py).
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from hpc_marker.planning.store import ITEMS, ShareSummary
from hpc_marker.runstate.light import LightColumns
from hpc_marker.runstate.manifest import COLUMNS, ManifestRecord, parse_manifest
from hpc_marker.runstate.summary import SHARE
from hpc_marker.util.memory import give_back
from hpc_marker.util.processes import process_alive

logger = logging.getLogger(__name__)

BUCKET_ITEMS = 20_000  # planned items per bucket: what the collector holds as frames at once
SAMPLE_EVERY = 16  # of the plan's PDFs, those read to choose where the buckets start
BLOCK_BYTES = 2 * 2**20  # manifest bytes parsed at once (whole lines)
SPILL_PREFIX = ".collect-"  # the spill folder: .collect-<pid>@<host>-<random>, in the run folder
SPILL_STALE_S = 24 * 3600  # a spill folder this old is stale whoever made it (a collector on another node)
SEQ = "seq"  # a record's place in the order the manifests were read
_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "list": pa.list_(pa.int64())}


def record_schema() -> pa.Schema:
    """ManifestRecord's fields as Arrow types (str, int, float, list of int; each may be null)."""
    kinds = {
        name: str(kind).split("|")[0].strip().split("[")[0] for name, kind in ManifestRecord.__annotations__.items()
    }
    return pa.schema([(name, _TYPES[kinds[name]]) for name in COLUMNS])


def bucket_bounds(items_file: pq.ParquetFile) -> np.ndarray:
    """The PDF names that start buckets 1..K-1 (K: one per BUCKET_ITEMS planned items), cut at quantiles of
    a sample of the plan's PDFs (SAMPLE_EVERY-th of each batch): about BUCKET_ITEMS items each."""
    buckets = max(1, math.ceil(items_file.metadata.num_rows / BUCKET_ITEMS))
    if buckets == 1:
        return np.array([], dtype=object)
    sample = pa.concat_arrays(
        [
            batch.column("pdf").take(np.arange(0, len(batch), SAMPLE_EVERY))
            for batch in items_file.iter_batches(columns=["pdf"])
        ]
    )
    ordered = pc.take(sample, pc.sort_indices(sample))
    cuts = [ordered[len(ordered) * k // buckets].as_py() for k in range(1, buckets)]
    return np.array(sorted(set(cuts)), dtype=object)


def bucket_of(pdfs: pa.ChunkedArray | pa.Array, bounds: np.ndarray) -> np.ndarray:
    """Each PDF's bucket: how many bounds sort at or before it (Python's order of str, UTF-8's byte order)."""
    if not len(bounds):
        return np.zeros(len(pdfs), dtype=np.int64)
    return np.searchsorted(bounds, pdfs.to_numpy(zero_copy_only=False), side="right")


@dataclass
class Spill:
    """One Arrow stream file per bucket, appended to in any order; read back one bucket at a time."""

    folder: Path
    schema: pa.Schema
    count: int
    _writers: dict[int, ipc.RecordBatchStreamWriter] = field(default_factory=dict)

    def path(self, bucket: int) -> Path:
        return self.folder / f"{self.schema.metadata[b'name'].decode()}-{bucket}.arrows"

    def add(self, table: pa.Table, buckets: np.ndarray) -> None:
        order = np.argsort(buckets, kind="stable")
        ids, starts = np.unique(buckets[order], return_index=True)
        ordered = table.take(order)  # one take; each bucket's rows a slice of it
        for bucket, lo, hi in zip(ids.tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)], strict=True):
            if bucket not in self._writers:
                self._writers[bucket] = ipc.new_stream(self.path(bucket), self.schema)
            self._writers[bucket].write_table(ordered.slice(lo, hi - lo))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def read(self, bucket: int) -> pd.DataFrame:
        """The bucket's rows in the order they were added (an empty frame of the schema where none was)."""
        path = self.path(bucket)
        if not path.exists():
            return self.schema.empty_table().to_pandas()
        with ipc.open_stream(path) as reader:
            return reader.read_all().to_pandas()


@dataclass
class Buckets:
    """A run's items and records split into `count` PDF ranges (`open_buckets`); `light`: every record's light
    columns, `torn`: the unreadable manifest lines, `total`: how many records were read."""

    items: Spill
    records: Spill
    light: LightColumns
    torn: list[str]
    total: int
    tmp: tempfile.TemporaryDirectory

    @property
    def count(self) -> int:
        return self.items.count

    def bucket(self, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Bucket k's planned items (plan order, with SHARE) and manifest records (read order, with SEQ)."""
        give_back()  # the previous range's frames
        return self.items.read(k), self.records.read(k)

    def close(self) -> None:
        self.items.close()
        self.records.close()
        self.tmp.cleanup()


def open_buckets(plan: Path, manifests: Path, shares: list[ShareSummary], columns: list[str], where: Path) -> Buckets:
    """Split the plan's items (`columns` of them) and the manifests of `manifests` into PDF ranges of about
    BUCKET_ITEMS items, spilled under a temporary folder in `where`."""
    items_file = pq.ParquetFile(Path(plan) / ITEMS)
    bounds = bucket_bounds(items_file)
    sweep_spills(where)
    tmp = tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{os.getpid()}@{socket.gethostname()}-", dir=where)
    folder = Path(tmp.name)
    item_schema = _item_schema(items_file, columns)
    items = Spill(folder, item_schema.with_metadata({"name": "items"}), len(bounds) + 1)
    share_of = np.repeat([s.index for s in shares], [s.items for s in shares])
    start = 0
    for batch in items_file.iter_batches(columns=[c for c in columns if c in items_file.schema_arrow.names]):
        table = _with_defaults(pa.Table.from_batches([batch]), item_schema)
        shares_here = share_of[start : start + len(table)]
        table = table.append_column(SHARE, pa.array(shares_here, pa.int64()))
        items.add(table, bucket_of(table.column("pdf"), bounds))
        start += len(table)
    items.close()
    schema = record_schema()
    records = Spill(folder, schema.append(pa.field(SEQ, pa.int64())).with_metadata({"name": "records"}), items.count)
    light, torn, seq = LightColumns(), [], 0
    for table in _record_blocks(Path(manifests), schema, torn):
        table = table.append_column(SEQ, pa.array(np.arange(seq, seq + len(table)), pa.int64()))
        seq += len(table)
        records.add(table, bucket_of(table.column("pdf"), bounds))
        light.add(table)
    records.close()
    return Buckets(items, records, light, torn, seq, tmp)


def spill_stale(name: str, modified: float, now: float) -> bool:
    """Whether the spill folder `name` (modified at `modified`) is a dead collector's: its process, of this host,
    is gone, or it is older than SPILL_STALE_S (another host's, or of a name without its owner). Pure but for the
    process lookup."""
    owner, _, rest = name.removeprefix(SPILL_PREFIX).partition("@")
    host = rest.rpartition("-")[0]
    if owner.isdigit() and host == socket.gethostname() and not process_alive(int(owner)):
        return True
    return now - modified > SPILL_STALE_S


def sweep_spills(where: Path) -> list[Path]:
    """Remove the spill folders that killed collectors left in `where` (a live collector's stays); returns them."""
    swept, now = [], time.time()
    for folder in Path(where).glob(f"{SPILL_PREFIX}*"):
        try:
            stale = folder.is_dir() and spill_stale(folder.name, folder.stat().st_mtime, now)
        except FileNotFoundError:  # its collector has just removed it
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            logger.info(f"removed {folder.name}: the spill folder of a collector that is gone")
            swept.append(folder)
    return swept


def _item_schema(items_file: pq.ParquetFile, columns: list[str]) -> pa.Schema:
    from hpc_marker.planning.plan import SCHEMA

    stored = items_file.schema_arrow
    return pa.schema(
        [stored.field(c) if c in stored.names else SCHEMA.field(c) for c in columns] + [pa.field(SHARE, pa.int64())]
    )


def _with_defaults(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with the plan columns an older plan lacks, as their WorkItem defaults (store.load_items_table)."""
    from dataclasses import fields

    from hpc_marker.planning.plan import WorkItem

    for name in schema.names:
        if name != SHARE and name not in table.column_names:
            default = next(f.default for f in fields(WorkItem) if f.name == name)
            table = table.append_column(schema.field(name), pa.array([default] * len(table), schema.field(name).type))
    return table.select([n for n in schema.names if n != SHARE])


def _record_blocks(folder: Path, schema: pa.Schema, torn: list[str]) -> Iterator[pa.Table]:
    """Every task manifest's records, in file and line order, a block of whole lines at a time; a block with a
    torn line is read line by line (the line reported in `torn`, as read_manifest does)."""
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    for path in sorted(Path(folder).glob("task-*.jsonl")):
        for first_line, block in _blocks(path):
            try:
                table = pajson.read_json(io.BytesIO(block), parse_options=options)
            except pa.ArrowInvalid:  # a torn line (a task killed mid-write): the slow, forgiving way
                table = _forgiving(path.name, first_line, block, schema, torn)
            if len(table):
                yield table.select(schema.names).cast(schema)


def _blocks(path: Path) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, bytes) of whole-line blocks of about BLOCK_BYTES; the last may lack its \\n."""
    line, rest = 1, b""
    with open(path, "rb") as fh:
        while data := fh.read(BLOCK_BYTES):
            data = rest + data
            cut = data.rfind(b"\n") + 1
            block, rest = data[:cut], data[cut:]
            if block:
                yield line, block
                line += block.count(b"\n")
    if rest:
        yield line, rest


def _forgiving(name: str, first_line: int, block: bytes, schema: pa.Schema, torn: list[str]) -> pa.Table:
    part = parse_manifest(name, block, first_line)
    torn.extend(part.torn_lines)
    return pa.Table.from_pylist([asdict(r) for r in part.records], schema=schema)
