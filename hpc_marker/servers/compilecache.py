"""One compile at a time into a vLLM cache folder that many tasks share.

vLLM compiles its model with torch.compile (and Triton) on its first start and keeps the result in its cache
folder (`VLLM_CACHE_ROOT`, else `$XDG_CACHE_HOME/vllm`, else `~/.cache/vllm`), usually on the shared home
filesystem. Hundreds of tasks that start together would all compile into the same folder at once, and
concurrent writers can leave a corrupted cache there. So a server's first start with a given configuration is
done under a lock file in that folder (util/locks.FileLock: its holder's host, pid and time; renewed while held;
taken over once stale), and once that server answers, a marker named by the configuration's key
(`.hpcmarker-compiled-<key>`) says the cache is filled: later starts with the same key take no lock (they only
read the cache), and tasks that were waiting for the lock go on as soon as the marker appears.

    with first_compile(compile_cache_dir(env), compile_key(argv, gpu), timeout_s=900) as compiled:
        server.wait_until_healthy(900)
        compiled()  # the cache is filled: others start without the lock
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from hpc_marker.util.locks import FileLock, LockTimeout, read_holder

logger = logging.getLogger(__name__)
LOCK_NAME = ".hpcmarker-compile.lock"
MARKER_PREFIX = ".hpcmarker-compiled-"
STALE_S = 120.0  # a holder renews the lock every STALE_S / 4; one that stopped renewing this long is gone
POLL_S = 1.0
PER_START = ("--port", "--host", "--api-key")  # flags whose values differ between starts of the same server


def compile_cache_dir(environ: Mapping[str, str]) -> Path:
    """vLLM's cache folder for this environment (vllm/envs.py: VLLM_CACHE_ROOT, else XDG_CACHE_HOME/vllm). Pure."""
    if environ.get("VLLM_CACHE_ROOT"):
        return Path(environ["VLLM_CACHE_ROOT"]).expanduser()
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(xdg).expanduser() / "vllm"


def compile_key(argv: list[str], gpu: str) -> str:
    """What a compile depends on: the server's argv (without the values that change every start) and the GPU
    it runs on, as 16 hex digits. Pure."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in PER_START:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in PER_START)):
            kept.append(arg)
    return hashlib.sha256("\0".join([*kept, gpu]).encode()).hexdigest()[:16]


@contextmanager
def first_compile(
    cache_dir: Path, key: str, *, timeout_s: float, stale_s: float = STALE_S, poll_s: float = POLL_S
) -> Iterator[Callable[[], None]]:
    """Around a server's start until it answers: holds the cache folder's lock unless the cache is filled for
    `key` (or gets filled while waiting); the callable it gives marks the cache filled. LockTimeout when the lock
    stays held by a live holder for `timeout_s`. A cache folder that cannot be written: no lock (a warning)."""
    marker = cache_dir / f"{MARKER_PREFIX}{key}"
    if marker.exists():
        yield _nothing
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("compile cache %s: cannot create it (%s); starting without its lock", cache_dir, exc.strerror)
        yield _nothing
        return
    lock = FileLock(cache_dir / LOCK_NAME, stale_s=stale_s, poll_s=poll_s)
    if not _wait_for(lock, marker, timeout_s):
        logger.info("compile cache %s: filled for this server (%s); starting without its lock", cache_dir, key)
        yield _nothing
        return
    logger.info("compile cache %s: holding its lock for this first start (%s)", cache_dir, key)
    try:
        yield lambda: _mark(marker)
    finally:
        lock.release()


def _wait_for(lock: FileLock, marker: Path, timeout_s: float) -> bool:
    """Until this process holds the lock (True) or the marker exists (False, the lock not held)."""
    deadline, told = time.monotonic() + timeout_s, False
    while True:
        if marker.exists():
            return False
        if lock.try_acquire():
            if marker.exists():  # filled by the holder before us
                lock.release()
                return False
            return True
        if time.monotonic() >= deadline:
            holder = read_holder(lock.path)
            who = f" by {holder.describe()}" if holder else ""
            raise LockTimeout(f"compile cache lock {lock.path} still held{who} after {timeout_s:g} s of waiting")
        if not told:
            logger.info("compile cache %s: another task compiles into it; waiting for it", lock.path.parent)
            told = True
        time.sleep(lock.poll_s)


def _mark(marker: Path) -> None:
    try:
        marker.write_text(f"{time.time():.0f}\n", encoding="utf-8")
    except OSError as exc:
        logger.warning("compile cache: cannot write %s (%s)", marker, exc.strerror)


def _nothing() -> None:
    return None
