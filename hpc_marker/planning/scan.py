"""Scan: find the PDFs under a folder and count their pages.

Owns what counts as a PDF (`.pdf` in any case, symlinks followed once, loops and duplicate
targets detected) and the page count (pypdfium2). A PDF that cannot be opened is still
returned, with `error` set, so that it gets exactly one manifest line later.

Made for a login node and 10^6 PDFs: the walk costs one directory read per folder (no stat per
name); each PDF is stat'ed once, and its page count is taken from the page-count cache
(scancache.py) when its path, size and mtime are unchanged. The rest are counted by at most
`workers` processes at a low priority (nice SCAN_NICENESS), with a progress bar and an ETA on
stderr when asked (`progress`). For `--force-ocr auto` (`sample_pages`), a few pages of each PDF have their
text layer checked too (textcheck.py), cached with the page count.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hpc_marker.planning.scancache import Counted, PageCountCache
from hpc_marker.planning.textcheck import TextSample, read_sample
from hpc_marker.util.text import one_line

# Below this many files to count, a process pool costs more than it saves.
_POOL_THRESHOLD = 64
# Page-counting processes run at this niceness: a login node's other users come first.
SCAN_NICENESS = 10


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
    mtime_ns: int = 0  # as stat'ed by the scan (0 when it could not be)
    text: TextSample | None = None  # its text layer's sample (--force-ocr auto: textcheck.py); None: not read


def _walk(root: Path) -> Iterator[tuple[str, str, str]]:
    """(relpath, path, real path) of each file named *.pdf under `root`, top-down, folders in name order.
    Directory symlinks are followed once: a folder already visited (a loop, a second name) is skipped."""
    seen_dirs: set[str] = set()
    stack = [(str(root), "")]
    while stack:
        folder, rel = stack.pop()
        real = os.path.realpath(folder)
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError:  # unreadable folder: skipped, as os.walk does
            continue
        subfolders = []
        for entry in listed:
            try:
                if entry.is_dir():
                    subfolders.append(entry.name)
                elif entry.name.lower().endswith(".pdf") and entry.is_file():
                    # only a symlink needs resolving; any other file's real path follows from its folder's
                    target = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real, entry.name)
                    yield f"{rel}{entry.name}", entry.path, target
            except OSError:  # vanished while listed
                continue
        for name in sorted(subfolders, reverse=True):
            stack.append((os.path.join(folder, name), f"{rel}{name}/"))


def _find(root: Path, found: Callable[[int], None] | None) -> list[tuple[str, str]]:
    """find_pdfs, with each path as a string (a Path costs more than the rest of a scan's work per PDF)."""
    root = Path(root)
    if not root.exists():
        raise ScanError(f"{root}: no such folder")
    if not root.is_dir():
        raise ScanError(f"{root}: not a folder")
    listed = []
    for listed_count, named in enumerate(_walk(root), 1):
        listed.append(named)
        if found and listed_count % 1000 == 0:
            found(listed_count)
    listed.sort(key=lambda named: named[0])
    seen_files: set[str] = set()
    distinct = []
    for relpath, path, real in listed:
        if real not in seen_files:
            seen_files.add(real)
            distinct.append((relpath, path))
    if found:
        found(len(distinct))
    return distinct


def find_pdfs(root: Path, found: Callable[[int], None] | None = None) -> list[tuple[str, Path]]:
    """Return (relpath, path) for each distinct PDF under `root`, sorted by relpath.

    Directory symlinks are followed once (a loop back to a folder already visited is skipped);
    two names for the same file keep only the first by relpath. `found` is told how many files
    have been found so far, now and then (progress).
    """
    return [(relpath, Path(path)) for relpath, path in _find(root, found)]


def count_pages(path: str | Path) -> tuple[int, str | None, str]:
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


def _lower_priority() -> None:
    os.nice(SCAN_NICENESS)


def _read(path: str, sample_pages: int = 0) -> tuple[int, str | None, str, TextSample | None]:
    """count_pages, and with `sample_pages` the text layer's sample of a readable PDF."""
    pages, error, status = count_pages(path)
    return pages, error, status, read_sample(path, sample_pages) if sample_pages and pages else None


def _count_all(
    paths: list[str], workers: int, advance: Callable[[], None], sample_pages: int = 0
) -> Iterator[tuple[int, str | None, str, TextSample | None]]:
    """_read of each path, in order: here, or in `workers` low-priority processes."""
    read = partial(_read, sample_pages=sample_pages)
    if workers <= 1 or len(paths) < _POOL_THRESHOLD:
        for path in paths:
            counted = read(path)
            advance()  # before the yield: the consumer may stop at the last one
            yield counted
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_lower_priority) as pool:
        for counted in pool.map(read, paths, chunksize=16):
            advance()
            yield counted


def _sampled_enough(pages: int, text: TextSample | None, sample_pages: int) -> bool:
    """Whether a cached readable PDF's sample holds the pages a sample of `sample_pages` would read."""
    return text is not None and text.sampled >= min(sample_pages, pages)


def listed_pdfs(root: Path, relpaths: Iterable[str]) -> list[tuple[str, str]]:
    """(relpath, path) for the PDFs named relative to `root`, sorted; one that is gone since is still
    listed (it gets a manifest line saying so)."""
    if not Path(root).is_dir():
        raise ScanError(f"{root}: no such folder")
    return [(relpath, str(Path(root) / relpath)) for relpath in sorted(set(relpaths))]


def scan_pdfs(
    root: Path,
    workers: int | None = None,
    *,
    cache: bool | Path = False,
    progress: bool = False,
    only: Iterable[str] | None = None,
    sample_pages: int = 0,
) -> list[ScannedPdf]:
    """Find and page-count every PDF under `root` (or only those named in `only`, relative to it).
    Raises ScanError when there are none. `sample_pages`: also check the text layer of this many pages of each
    (`--force-ocr auto`); a PDF cached without such a sample is read again.

    `workers`: processes counting pages at a low priority, at most one per core (None or 1: this process).
    `cache`: use the page-count cache (True: in the user's cache folder; a Path: in that folder), so that
    only PDFs whose path, size or mtime changed are read. `progress`: a progress bar with an ETA on stderr."""
    from hpc_marker.planning.scanprogress import ScanProgress  # rich: only where a scan runs, not in every task

    with ScanProgress(enabled=progress) as shown:
        pairs = _find(root, found=shown.found) if only is None else listed_pdfs(root, only)
        if not pairs:
            raise ScanError(f"{root}: no PDF files found (looked for *.pdf in any case, recursively)")
        known = PageCountCache.load(root, None if cache is True else cache) if cache else None
        shown.checking(len(pairs))
        scanned: list[ScannedPdf | None] = [None] * len(pairs)
        todo: list[tuple[int, int, int]] = []  # (position, size, mtime_ns) of each PDF to count
        hits = 0
        for position, (relpath, path) in enumerate(pairs):
            try:
                stat = os.stat(path)
            except OSError as exc:
                scanned[position] = ScannedPdf(
                    relpath, Path(path), 0, 0, f"cannot read file ({exc.strerror})", "failed"
                )
                continue
            hit = known.get(relpath, stat.st_size, stat.st_mtime_ns) if known else None
            text = known.text_sample(relpath) if known and hit else None
            if hit is not None and sample_pages and hit[1] is None and not _sampled_enough(hit[0], text, sample_pages):
                hit = None  # counted before --force-ocr auto asked for its text layer: read again
            if hit is None:
                todo.append((position, stat.st_size, stat.st_mtime_ns))
            else:
                scanned[position] = ScannedPdf(relpath, Path(path), stat.st_size, *hit, stat.st_mtime_ns, text)
                hits += 1
            shown.checked()
        shown.counting(len(todo), cached=hits)
        processes = min(workers or 1, os.cpu_count() or 1)
        counts = _count_all([pairs[position][1] for position, _, _ in todo], processes, shown.counted, sample_pages)
        for (position, size, mtime_ns), (pages, error, status, text) in zip(todo, counts, strict=True):
            relpath, path = pairs[position]
            scanned[position] = ScannedPdf(relpath, Path(path), size, pages, error, status, mtime_ns, text)
    result = [pdf for pdf in scanned if pdf is not None]
    if known is not None and (todo or hits != len(known.entries)):  # else the cache holds just these already
        # a full or read-only cache folder: the next scan reads the PDFs again, nothing worse
        with contextlib.suppress(OSError):
            known.save([Counted(p.relpath, p.bytes, p.mtime_ns, p.pages, p.error, p.status, p.text) for p in result])
    return result
