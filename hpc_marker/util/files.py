"""Files: atomic writes (a file appears whole under its final name, or not at all, and leaves no temp
file), and a second name for a file at the cost of one metadata operation."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path


def atomic_write(path: Path, data: str | bytes, *, mode: int | None = None, fsync: bool = False) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it into place.

    `mode` (e.g. 0o600) is set on the file itself, whatever the umask; `fsync` flushes it to the
    storage before the rename (for files other processes rely on). A failed write (a full disk)
    removes the temporary file, so it keeps no space."""
    path = Path(path)
    tmp = _temporary(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)  # the umask applies
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


NO_HARD_LINKS = (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK)  # a filesystem that will not link


def link_or_copy(source: Path, target: Path) -> None:
    """`target` shows `source`'s content: a hard link (one metadata operation, no data copied), replacing
    an older `target`; a copy where the filesystem has no hard links. FileNotFoundError when `source`
    does not exist."""
    target = Path(target)
    try:
        try:
            os.link(source, target)
        except FileExistsError:  # linked before (collected again): the new name replaces it
            tmp = _temporary(target)
            tmp.unlink(missing_ok=True)  # left by a process killed here before
            os.link(source, tmp)
            try:
                os.replace(tmp, target)
            finally:  # rename() of two links to one file does nothing and leaves `tmp`
                tmp.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        shutil.copyfile(source, target)


def _temporary(path: Path) -> Path:
    """A name beside `path` that no other process or thread uses, and listings skip (a leading dot)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
