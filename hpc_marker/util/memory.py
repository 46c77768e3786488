"""memory: allocators that hand freed memory back to the system, for processes that hold a run's records a part at a
time (the collector at 10^6 items: docs/scale.md).

- `arrow_pool_environment`, `ask_arrow_pool`: Arrow's C++ default pool is chosen from ARROW_DEFAULT_MEMORY_POOL
  once, when pyarrow is imported. Its default, mimalloc, keeps what it frees (a 1 GB region that stays 15-20 MB
  resident in the collector), and `pyarrow.set_memory_pool` reaches only the allocations made through Python, not
  those Arrow's C++ code makes with its own default. So the collector's job (its JobCall's environment, set by the
  job runner before the call loads) and `hpcmarker collect` (cli/outputs.py) ask for jemalloc before anything
  imports pyarrow, unless the environment names a pool already. Nothing else does: the tasks (which a local
  `submit` starts with its own environment) keep Arrow's default, as they hold no records.
- `returning_allocators`: the same for the Python side (pyarrow's pool, where the environment came too late) and
  glibc's mmap threshold fixed at MMAP_THRESHOLD_BYTES: glibc raises it to the largest block freed so far (up to
  32 MB), after which a column of 10^6 records (1-8 MB) comes from its heap and stays resident once freed.
- `give_back`: what the allocators keep of freed memory, handed back (Arrow's pool's, glibc's arenas').
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import MutableMapping

logger = logging.getLogger(__name__)

ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
ARROW_POOL = "jemalloc"  # gives freed memory back to the system after its decay (1 s)
MMAP_THRESHOLD_BYTES = 4 * 2**20  # blocks from this size up are mapped on their own, and unmapped when freed
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def arrow_pool_environment() -> dict[str, str]:
    """The environment that asks for Arrow's jemalloc pool, for a process about to import pyarrow (the collector's
    job: JobCall.environ)."""
    return {ARROW_POOL_ENV: ARROW_POOL}


def ask_arrow_pool(environ: MutableMapping[str, str] | None = None) -> None:
    """Ask for Arrow's jemalloc pool in this process and its children (before pyarrow is imported, to count), unless
    the environment names a pool already."""
    target = os.environ if environ is None else environ
    for key, value in arrow_pool_environment().items():
        target.setdefault(key, value)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, where this Python runs on it (mallopt and malloc_trim are glibc's); None elsewhere (musl, macOS)."""
    try:
        process = ctypes.CDLL(None)  # the symbols the process has loaded, the C library's among them
    except OSError:
        return None
    return process if hasattr(process, "malloc_trim") and hasattr(process, "mallopt") else None


def returning_allocators() -> None:
    """Arrow's allocations made through Python from its jemalloc pool (where this pyarrow has one), and glibc's
    mmap threshold fixed (module docstring). jemalloc's decay stays at 1 s: at 0 (every free given back at once)
    the collector peaked ~45 MB lower at 10^6 items but took 7-10 s more CPU (docs/scale.md)."""
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc
        logger.debug("no jemalloc pool in this pyarrow: Arrow's default pool")
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        # a fixed mmap threshold also stops glibc raising its trim threshold with it (to twice the mmap threshold):
        # set as glibc would, so that the heap is not shrunk and grown again at every free (give_back trims it)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES)


def give_back() -> None:
    """Hand what the allocators keep of freed memory back to the system: Arrow's pool's and glibc's (numpy's and
    pandas' arrays below the mmap threshold). Between the collector's phases, so that what one freed is not still
    resident while the next works."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
