"""Manifest: one JSON line per work item, appended by the task that did it.

Lines are written whole with one `write` on an O_APPEND descriptor and fsynced, so a task
killed at any instant leaves at most one torn last line, which `read_manifest` reports
instead of failing on it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

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

    def to_line(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False) + "\n"


_FIELDS = {f.name for f in fields(ManifestRecord)}


def append_record(path: Path, record: ManifestRecord) -> None:
    data = record.to_line().encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ManifestRead:
    records: list[ManifestRecord]
    torn_lines: list[str]  # "<file>:<line>: <reason>"


def read_manifest(path: Path) -> ManifestRead:
    records: list[ManifestRecord] = []
    torn: list[str] = []
    if not path.exists():
        return ManifestRead(records, torn)
    raw = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            records.append(ManifestRecord(**{k: v for k, v in data.items() if k in _FIELDS}))
        except (json.JSONDecodeError, TypeError) as exc:
            torn.append(f"{path.name}:{number}: unreadable line ({type(exc).__name__})")
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


def latest_by_item(records: list[ManifestRecord]) -> dict[str, ManifestRecord]:
    """The last record of each item (a retried item's newest attempt wins)."""
    latest: dict[str, ManifestRecord] = {}
    for record in sorted(records, key=lambda r: r.finished):
        latest[record.item_id] = record
    return latest
