"""Scan: find the PDFs under a folder and count their pages.

Owns what counts as a PDF (`.pdf` in any case, symlinks followed once, loops and duplicate
targets detected) and the page count (pypdfium2). A PDF that cannot be opened is still
returned, with `error` set, so that it gets exactly one manifest line later.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.util.text import one_line

# Below this many files, a process pool costs more than it saves.
_POOL_THRESHOLD = 64


class ScanError(Exception):
    """The folder to scan is unusable (missing, not a folder, no PDFs)."""


@dataclass(frozen=True)
class ScannedPdf:
    """One PDF found by the scan. `relpath` is POSIX, relative to the scanned folder."""

    relpath: str
    path: Path
    bytes: int
    pages: int  # 0 when the PDF could not be read
    error: str | None = None
    status: str = "ok"  # the manifest status it will get when unreadable: "failed" or "encrypted"


def find_pdfs(root: Path) -> list[tuple[str, Path]]:
    """Return (relpath, path) for each distinct PDF under `root`, sorted by relpath.

    Directory symlinks are followed once (a loop back to a folder already visited is skipped);
    two names for the same file keep only the first by relpath.
    """
    root = Path(root)
    if not root.exists():
        raise ScanError(f"{root}: no such folder")
    if not root.is_dir():
        raise ScanError(f"{root}: not a folder")
    found: list[tuple[str, Path]] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=None):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(".pdf"):
                path = Path(dirpath) / name
                if path.is_file():
                    found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda pair: pair[0])
    seen_files: set[str] = set()
    distinct = []
    for relpath, path in found:
        real = os.path.realpath(path)
        if real not in seen_files:
            seen_files.add(real)
            distinct.append((relpath, path))
    return distinct


def count_pages(path: Path) -> tuple[int, str | None, str]:
    """Return (pages, None, "ok"), or (0, one-line reason, status) when the PDF cannot be read:
    status "encrypted" when it needs a user password (an owner password alone opens), else "failed"."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        if os.path.getsize(path) == 0:
            return 0, "empty file (0 bytes)", "failed"
        doc = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
            return 0, "encrypted: a password is required to open it", "encrypted"
        return 0, f"not a readable PDF ({one_line(exc)})", "failed"
    except OSError as exc:
        return 0, f"cannot read file ({exc.strerror})", "failed"
    try:
        pages = len(doc)
    finally:
        doc.close()
    if pages == 0:
        return 0, "PDF has no pages", "failed"
    return pages, None, "ok"


def _scan_one(pair: tuple[str, Path]) -> ScannedPdf:
    relpath, path = pair
    try:
        size = path.stat().st_size
    except OSError as exc:
        return ScannedPdf(relpath, path, 0, 0, f"cannot read file ({exc.strerror})", "failed")
    pages, error, status = count_pages(path)
    return ScannedPdf(relpath, path, size, pages, error, status)


def listed_pdfs(root: Path, relpaths: Iterable[str]) -> list[tuple[str, Path]]:
    """(relpath, path) for the PDFs named relative to `root`, sorted; one that is gone since is still
    listed (it gets a manifest line saying so)."""
    if not Path(root).is_dir():
        raise ScanError(f"{root}: no such folder")
    return [(relpath, Path(root) / relpath) for relpath in sorted(set(relpaths))]


def scan_pdfs(root: Path, workers: int | None = None, only: Iterable[str] | None = None) -> list[ScannedPdf]:
    """Find and page-count every PDF under `root` (or only those named in `only`, relative to it).
    Raises ScanError when there are none."""
    pairs = find_pdfs(root) if only is None else listed_pdfs(root, only)
    if not pairs:
        raise ScanError(f"{root}: no PDF files found (looked for *.pdf in any case, recursively)")
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    if workers <= 1 or len(pairs) < _POOL_THRESHOLD:
        return [_scan_one(pair) for pair in pairs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_scan_one, pairs, chunksize=16))
