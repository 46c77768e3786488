"""Limits on one work item: its wall-clock deadline and its worker's memory.

`--item-timeout` is `auto` (BASE + PER_PAGE x pages), a number of seconds per item, `N/page`
(N seconds per page plus BASE), `B+N/page`, or `off`. A worker's first item also gets the
engine's startup allowance (engines.engine_startup_seconds): the engine loads its models then.
`--worker-memory` caps each worker's address space (RLIMIT_AS), for CPU engines: CUDA reserves far
more address space than it uses, so GPU engines rely on the job's memory limit (`--mem`) and the
kernel's out-of-memory killer, which ends one worker, not the task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BASE_S = 300.0
PER_PAGE_S = 60.0

_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True)
class ItemTimeout:
    base_s: float | None = BASE_S  # None: no limit
    per_page_s: float = PER_PAGE_S

    def for_pages(self, pages: int) -> float | None:
        """Seconds one item of `pages` pages may take (None: no limit)."""
        if self.base_s is None:
            return None
        return self.base_s + self.per_page_s * max(pages, 1)

    def describe(self) -> str:
        if self.base_s is None:
            return "no limit"
        if not self.per_page_s:
            return f"{self.base_s:g} s per item"
        return f"{self.base_s:g} s + {self.per_page_s:g} s/page"


def parse_item_timeout(text: str) -> ItemTimeout:
    """`auto`, `off`, `SECONDS`, `SECONDS/page` or `BASE+SECONDS/page`; ValueError otherwise."""
    value = str(text).strip().lower()
    if value == "auto":
        return ItemTimeout()
    if value in ("off", "none", "0"):
        return ItemTimeout(base_s=None)
    number = r"(\d+(?:\.\d+)?)"
    match = re.fullmatch(rf"(?:{number}\s*\+\s*)?{number}\s*(/\s*page)?", value)
    if not match or float(match.group(2)) <= 0 or (match.group(1) and not match.group(3)):
        raise ValueError(f"{text!r}: use auto, off, SECONDS, SECONDS/page or BASE+SECONDS/page")
    seconds = float(match.group(2))
    if match.group(3):
        return ItemTimeout(base_s=float(match.group(1)) if match.group(1) else BASE_S, per_page_s=seconds)
    return ItemTimeout(base_s=seconds, per_page_s=0.0)


def parse_memory(text: str) -> int:
    """`8G`, `512M`, `1.5T` or plain bytes to bytes; ValueError with a one-line reason otherwise."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", str(text).strip().upper())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r}: use a size such as 4G or 512M")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def check_item_limits(item_timeout: str, worker_memory: str | None, engine: str) -> None:
    """Submit-time check of `--item-timeout` and `--worker-memory`; ValueError naming the option."""
    try:
        parse_item_timeout(item_timeout)
    except ValueError as exc:
        raise ValueError(f"--item-timeout {exc}") from None
    if worker_memory:
        try:
            parse_memory(worker_memory)
        except ValueError as exc:
            raise ValueError(f"--worker-memory {exc}") from None
        if engine == "marker":
            raise ValueError(
                "--worker-memory caps address space, which CUDA reserves far beyond its use: "
                "for marker, limit the job's memory with --mem instead"
            )


def cap_memory(limit_bytes: int | None) -> None:
    """Cap this process's address space (Linux RLIMIT_AS); allocations past it raise MemoryError."""
    if not limit_bytes:
        return
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, hard))
