"""The page-count cache: what the scan learnt about each PDF of a folder, kept in the user's cache folder.

Scanning the same folder again (resume, a second engine, new PDFs added) re-reads only the PDFs whose
path, size or modification time changed. One compact file per scanned folder
($XDG_CACHE_HOME/hpcmarker/scan/<hash of the folder>.json.gz, else ~/.cache/hpcmarker/...), loaded whole
and rewritten atomically (util/files.atomic_write): no database, nothing on the shared filesystem. The
file is columnar gzipped JSON (any file name survives, as ASCII escapes), private to the user (0600: file
names can say a lot). A file written by another pypdfium2 version, for another folder, or unreadable is
ignored, as if empty. A PDF that failed for a reason of this machine's (`cannot read file`: permissions,
I/O) is not remembered. The column `text` (added for `--force-ocr auto`: each PDF's text-layer sample,
[sampled, empty, garbled] or null, planning/textcheck.py) is optional: a file without it (written before it was
added) loads with no samples, and code that predates it ignores it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

from hpc_marker.planning.textcheck import TextSample
from hpc_marker.util.files import atomic_write

FORMAT = 1
COLUMNS = ("relpath", "size", "mtime_ns", "pages", "error", "status")
OPTIONAL = ("text",)  # columns a file may lack: null for every PDF then
UNCACHED_ERROR = "cannot read file"  # a reason of this machine's, not of the PDF: asked again next time


class Counted(NamedTuple):
    """One PDF as the scan saw it: the key (relpath, size, mtime_ns) and what its page count gave."""

    relpath: str
    size: int
    mtime_ns: int
    pages: int
    error: str | None
    status: str
    text: TextSample | None = None  # the text-layer sample (--force-ocr auto), when one was read


def cache_home() -> Path:
    """$XDG_CACHE_HOME/hpcmarker, else ~/.cache/hpcmarker."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hpcmarker"


def cache_file(root: Path, home: Path | None = None) -> Path:
    """The cache file of the scanned folder `root` (resolved)."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return (home or cache_home()) / "scan" / f"{digest}.json.gz"


def _counter() -> str:
    """What counts the pages; a cache written by another version of it is not trusted."""
    try:
        return f"pypdfium2 {version('pypdfium2')}"
    except PackageNotFoundError:
        return "pypdfium2 unknown"


@dataclass
class PageCountCache:
    """relpath -> (size, mtime_ns, pages, error, status, text), for one scanned folder."""

    path: Path
    root: str
    entries: dict[str, tuple] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, home: Path | None = None) -> PageCountCache:
        """The folder's cache; empty when there is none or it cannot be used."""
        path, resolved = cache_file(root, home), str(Path(root).resolve())
        cache = cls(path=path, root=resolved)
        try:
            data = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, ValueError, EOFError, zlib.error):  # none yet, unreadable, cut short: start afresh
            return cache
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or data.get("root") != resolved
            or data.get("counter") != _counter()
        ):
            return cache
        columns = [data.get(name) for name in COLUMNS]
        columns += [data.get(name, [None] * len(columns[0] or ())) for name in OPTIONAL]
        if not all(isinstance(column, list) and len(column) == len(columns[0]) for column in columns):
            return cache
        relpaths, *values = columns
        cache.entries = dict(zip(relpaths, zip(*values, strict=False), strict=False))
        return cache

    def get(self, relpath: str, size: int, mtime_ns: int) -> tuple[int, str | None, str] | None:
        """(pages, error, status) when this PDF is known with this very size and mtime; else None."""
        entry = self.entries.get(relpath)
        if entry is None or entry[0] != size or entry[1] != mtime_ns:
            return None
        return entry[2], entry[3], entry[4]

    def text_sample(self, relpath: str) -> TextSample | None:
        """The text-layer sample of a PDF `get` found, if one was read (--force-ocr auto)."""
        text = self.entries[relpath][5]
        return TextSample(*text) if isinstance(text, list | tuple) else None

    def save(self, found: list[Counted]) -> None:
        """Replace the folder's cache by what this scan found (PDFs gone from the folder drop out).
        An OSError (a full or read-only home) is the caller's: the scan itself is not affected."""
        kept = [c for c in found if not (c.error or "").startswith(UNCACHED_ERROR)]
        data = {"format": FORMAT, "root": self.root, "counter": _counter()}
        data |= (
            dict(zip(COLUMNS + OPTIONAL, (list(column) for column in zip(*kept, strict=False)), strict=False))
            if kept
            else {name: [] for name in COLUMNS + OPTIONAL}
        )
        payload = gzip.compress(json.dumps(data, separators=(",", ":")).encode("ascii"), compresslevel=1, mtime=0)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.path, payload, mode=0o600)
        self.entries = {c.relpath: tuple(c[1:]) for c in kept}
