"""A lock file on a shared filesystem: one holder at a time across nodes, taken over when its holder is gone.

The lock is a file created with O_CREAT|O_EXCL (atomic on POSIX filesystems, Lustre, GPFS and NFS v3 and later),
holding its holder's host, pid, start time and a token. The holder renews its mtime every `stale_s / 4` from a
daemon thread; a lock whose mtime is older than `stale_s`, or whose holder is a process of this host that no longer
exists, is stale. A waiter takes a stale lock over by renaming it to a name of its own (of several takers one rename
succeeds), checking that what it renamed is still the stale holder's (else putting it back), and creating its own.
`release` (and leaving the `with` block) removes the file if it is still this holder's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hpc_marker.util.processes import process_alive

logger = logging.getLogger(__name__)


class LockTimeout(Exception):
    """The lock stayed held by a live holder for longer than the wait allowed; the message names the holder."""


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    since: float  # when it took the lock
    token: str
    renewed: float  # the lock file's mtime

    def describe(self, now: float | None = None) -> str:
        age = (now if now is not None else time.time()) - self.since
        return f"{self.host} pid {self.pid} for {age:.0f} s"

    def stale(self, stale_s: float, now: float | None = None) -> bool:
        """Not renewed for `stale_s`, or a process of this host that is gone."""
        if (now if now is not None else time.time()) - self.renewed > stale_s:
            return True
        return self.host == socket.gethostname() and not process_alive(self.pid)


def read_holder(path: Path) -> LockHolder | None:
    """Who holds the lock file `path` (None: free); a file being written or unreadable reads as a holder of
    unknown host renewed at its mtime, so it goes stale like any other."""
    try:
        renewed = os.stat(path).st_mtime
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = json.loads(text)
        return LockHolder(str(data["host"]), int(data["pid"]), float(data["since"]), str(data["token"]), renewed)
    except (ValueError, KeyError, TypeError):
        return LockHolder("?", 0, renewed, "", renewed)


class FileLock:
    """`with FileLock(path, stale_s=60).acquire(timeout_s=600):` — or `try_acquire()` / `release()`."""

    def __init__(self, path: Path, *, stale_s: float, poll_s: float = 1.0) -> None:
        self.path = Path(path)
        self.stale_s = stale_s
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self._inode: int | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._inode is not None

    def try_acquire(self) -> bool:
        """Take the lock now if it is free or stale; True when this holder has it."""
        if self.held:
            return True
        for _ in range(2):
            if self._create():
                self._start_renewing()
                return True
            current = read_holder(self.path)
            if current is not None and not current.stale(self.stale_s):
                return False
            if current is not None:
                self._take_over(current)
        return False

    def acquire(self, timeout_s: float | None = None) -> FileLock:
        """Wait until this holder has the lock (LockTimeout after `timeout_s`); returns itself, for `with`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        told = False
        while not self.try_acquire():
            current = read_holder(self.path)
            if deadline is not None and time.monotonic() >= deadline:
                who = current.describe() if current else "another process"
                raise LockTimeout(f"lock {self.path} held by {who}; waited {timeout_s:g} s")
            if not told and current is not None:
                logger.info("waiting for the lock %s (held by %s)", self.path, current.describe())
                told = True
            time.sleep(self.poll_s)
        return self

    def release(self) -> None:
        """Give the lock back (the file goes if it is still this holder's)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self.held and self._still_mine():
            self.path.unlink(missing_ok=True)
        self._inode, self._renewer = None, None

    def __enter__(self) -> FileLock:
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self) -> bool:
        content = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(), "token": self.token}
        )
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, content.encode("utf-8"))
            os.fsync(fd)
            self._inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        return True

    def _take_over(self, stale: LockHolder) -> None:
        """Rename the stale holder's file away; if what was renamed is not that holder's (a newer holder came
        meanwhile), put it back where no one else has created one since."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        taken = read_holder(aside)
        if taken is not None and taken.token != stale.token and not taken.stale(self.stale_s):
            with contextlib.suppress(FileExistsError):  # someone created the lock since: that one holds it
                os.link(aside, self.path)
        else:
            logger.warning("took over the stale lock %s (held by %s)", self.path, stale.describe())
        aside.unlink(missing_ok=True)

    def _still_mine(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self._inode and read_holder(self.path).token == self.token
        except (FileNotFoundError, AttributeError):
            return False

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name=f"lock {self.path.name}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.stale_s / 4):
            if not self._still_mine():
                logger.warning("lost the lock %s (taken over: this holder did not renew it in time)", self.path)
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return
