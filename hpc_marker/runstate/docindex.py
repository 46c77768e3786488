"""Document index: the manifest lines of one or more runs, read back one document at a time.

Memory stays bounded whatever the run's size: the manifests are read line by line into a compact
index (per line a 64-bit document key, the run's rank, the file and the byte offset: 22 bytes, about
22 MB for 10^6 lines), sorted by key; `by_document` then reads each document's lines back from their
files and hands them over, nothing more at a time. The key is the first 8 bytes of sha256 of the
PDF's relative path, so documents come in the order of that hash; two PDFs that share a key are
told apart by their path. `hpcmarker export` and `retry --select` read runs this way.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO

import numpy as np

from hpc_marker.runstate.manifest import ManifestRecord

_FIELDS = {f.name for f in fields(ManifestRecord)}
OPEN_FILES = 64  # manifest files kept open while documents are read back


def document_hash(relpath: str) -> bytes:
    """sha256 of the PDF's relative path (UTF-8): what a document's key and export id come from."""
    return hashlib.sha256(relpath.encode("utf-8")).digest()


@dataclass
class ManifestIndex:
    """Every manifest line of some runs: its document key, run rank, file and byte offset."""

    files: list[Path]
    keys: np.ndarray
    ranks: np.ndarray
    file_ids: np.ndarray
    offsets: np.ndarray
    torn: int  # unreadable lines, skipped

    @classmethod
    def build(cls, manifest_folders: list[Path]) -> ManifestIndex:
        """Index the task manifests of each folder; a line's rank is its folder's position in the list."""
        files: list[Path] = []
        keys, ranks, file_ids, offsets = array("Q"), array("H"), array("I"), array("Q")
        torn = 0
        for rank, folder in enumerate(manifest_folders):
            for path in sorted(Path(folder).glob("task-*.jsonl")):
                files.append(path)
                offset = 0
                with path.open("rb") as fh:
                    for line in fh:
                        try:
                            pdf = json.loads(line)["pdf"]
                        except (ValueError, KeyError, TypeError):  # a torn last line
                            torn += bool(line.strip())
                        else:
                            keys.append(int.from_bytes(document_hash(pdf)[:8], "big"))
                            ranks.append(rank)
                            file_ids.append(len(files) - 1)
                            offsets.append(offset)
                        offset += len(line)
        return cls(
            files,
            np.frombuffer(keys, np.uint64),
            np.frombuffer(ranks, np.uint16),
            np.frombuffer(file_ids, np.uint32),
            np.frombuffer(offsets, np.uint64),
            torn,
        )

    def groups(self) -> Iterator[np.ndarray]:
        """The line numbers of each document key, in key order (lines in file order within one); each
        group a view, made when it is reached (np.split would make them all at once: 100 MB at 10^6)."""
        order = np.argsort(self.keys, kind="stable")
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(self.keys[order])) + 1, [len(order)]))
        for k in range(len(bounds) - 1 if len(order) else 0):
            yield order[bounds[k] : bounds[k + 1]]

    def by_document(self) -> Iterator[tuple[str, dict[int, list[ManifestRecord]]]]:
        """(PDF, {rank: every record of it in that run}) for each document, in key order."""
        reader = _LineReader(self.files)
        try:
            for lines in self.groups():
                by_pdf: dict[str, dict[int, list[ManifestRecord]]] = {}
                for line in lines:
                    record = reader.record(int(self.file_ids[line]), int(self.offsets[line]))
                    by_pdf.setdefault(record.pdf, {}).setdefault(int(self.ranks[line]), []).append(record)
                for pdf in sorted(by_pdf, key=document_hash):  # PDFs sharing a 64-bit key stay apart
                    yield pdf, by_pdf[pdf]
        finally:
            reader.close()


class _LineReader:
    """Reads manifest lines back by (file, offset), keeping at most OPEN_FILES files open."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.handles: OrderedDict[int, IO[bytes]] = OrderedDict()

    def record(self, file_id: int, offset: int) -> ManifestRecord:
        handle = self.handles.pop(file_id, None) or self.files[file_id].open("rb")
        self.handles[file_id] = handle
        while len(self.handles) > OPEN_FILES:
            self.handles.popitem(last=False)[1].close()
        handle.seek(offset)
        data = json.loads(handle.readline())
        return ManifestRecord(**{k: v for k, v in data.items() if k in _FIELDS})

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()
