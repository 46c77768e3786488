"""Manifest: one JSON line per work item, appended by the task that did it.

Lines are written whole with one `write` on an O_APPEND descriptor and fsynced, so a task
killed at any instant leaves at most one torn last line, which `read_manifest` reports
instead of failing on it.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from hpc_marker.util.frames import last_per_key

if TYPE_CHECKING:  # pandas and pyarrow load only where manifests are read (never in a task)
    import pandas as pd

STATUSES = ("ok", "failed", "timeout", "encrypted")
FAILURE_STATUSES = STATUSES[1:]  # every status but ok: counted as failed, listed with its reason


@dataclass
class ManifestRecord:
    item_id: str
    pdf: str
    page_start: int
    page_stop: int
    pages: int
    status: str  # one of STATUSES
    error: str | None
    seconds: float
    engine: str
    host: str
    gpu: str
    job_id: str
    task: int
    output: str | None
    started: float
    finished: float
    degraded: str | None = None  # why the LLM refinement of this item was partial, if it was
    llm_failover: str | None = None  # LLM requests of this item that moved to another replica, if any
    # Text-layer flags (engines/textlayer.py): 0-based indices of the item's empty and garbled pages;
    # None where nothing was checked (a failed item, marker's unpaginated Markdown or HTML).
    empty_pages: list[int] | None = None
    garbled_pages: list[int] | None = None
    # Output flags (quality/flags.py): `repetition:3,5-7 wide-table` (1-based pages; a bare name: the whole
    # item); "" when none was raised, None where nothing was judged (a failed item, an older run).
    output_flags: str | None = None

    def to_line(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False) + "\n"


_FIELDS = {f.name for f in fields(ManifestRecord)}


class ManifestWriter:
    """A task's manifest, open for the task's whole life: one whole-line write and an fsync per record
    (no open or close per item: those are metadata operations on a shared filesystem)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(self, record: ManifestRecord) -> None:
        os.write(self._fd, record.to_line().encode("utf-8"))
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def append_record(path: Path, record: ManifestRecord) -> None:
    """Append one record to the manifest at `path` (opened and closed for it)."""
    writer = ManifestWriter(path)
    try:
        writer.append(record)
    finally:
        writer.close()


@dataclass
class ManifestRead:
    records: list[ManifestRecord]
    torn_lines: list[str]  # "<file>:<line>: <reason>"


def read_manifest(path: Path) -> ManifestRead:
    if not path.exists():
        return ManifestRead([], [])
    return parse_manifest(path.name, path.read_bytes())


def parse_manifest(name: str, data: bytes, first_line: int = 1) -> ManifestRead:
    """The records of manifest lines (`data`, from line `first_line` of the file `name`), torn ones reported."""
    records: list[ManifestRecord] = []
    torn: list[str] = []
    raw = data.decode("utf-8", errors="replace")
    for number, line in enumerate(raw.splitlines(), start=first_line):
        if not line.strip():
            continue
        try:
            found = json.loads(line)
            records.append(ManifestRecord(**{k: v for k, v in found.items() if k in _FIELDS}))
        except (json.JSONDecodeError, TypeError) as exc:
            torn.append(f"{name}:{number}: unreadable line ({type(exc).__name__})")
    return ManifestRead(records, torn)


def read_manifests(folder: Path) -> ManifestRead:
    """All task manifests in a run's manifests/ folder."""
    records: list[ManifestRecord] = []
    torn: list[str] = []
    for path in sorted(Path(folder).glob("task-*.jsonl")):
        part = read_manifest(path)
        records.extend(part.records)
        torn.extend(part.torn_lines)
    return ManifestRead(records, torn)


COLUMNS = [f.name for f in fields(ManifestRecord)]


def read_manifest_frame(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """All task manifests of a run's manifests/ folder as one frame (columns COLUMNS), and their torn
    lines. Arrow's JSON reader parses each file; a file with a torn line is read line by line instead."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.json as pajson

    frames, torn = [], []
    for path in sorted(Path(folder).glob("task-*.jsonl")):
        try:
            table = pajson.read_json(io.BytesIO(path.read_bytes()))  # one open (Arrow's own stats the path first)
            frame = table.to_pandas()
        except pa.ArrowInvalid:  # a torn line (a task killed mid-write): the slow, forgiving way
            part = read_manifest(path)
            torn.extend(part.torn_lines)
            frame = pd.DataFrame([asdict(r) for r in part.records], columns=COLUMNS)
        frames.append(frame.reindex(columns=COLUMNS))
    if not frames:
        return pd.DataFrame(columns=COLUMNS), torn
    frame = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    return frame, torn


# "The latest record of each item" has this one home, for manifests, commit logs (runstate/progress.py) and
# the report's frames alike: a retried item's newest attempt wins, the one that finished last, on a tie the
# record read later.


def latest_frame(records: pd.DataFrame) -> pd.DataFrame:
    """The last record of each item (a frame with `item_id` and `finished`), sorted by `finished`. Pure."""
    return last_per_key(records, "item_id", "finished")


def latest_by_item(records: list[ManifestRecord]) -> dict[str, ManifestRecord]:
    """The last record of each item, by item id: `latest_frame` for a list of records."""
    latest: dict[str, ManifestRecord] = {}
    for record in sorted(records, key=lambda r: r.finished):
        latest[record.item_id] = record
    return latest
