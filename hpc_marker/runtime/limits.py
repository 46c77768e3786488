"""Limits on one work item: its wall-clock deadline and its worker's memory.

`--item-timeout` is `auto` (BASE + PER_PAGE x pages), a number of seconds per item, `N/page`
(N seconds per page plus BASE), `B+N/page`, or `off`. A worker's first item also gets the
engine's startup allowance (engines.engine_startup_seconds): the engine loads its models then.
`--worker-memory` caps each worker's address space (RLIMIT_AS), for CPU engines: CUDA reserves far more
address space than it uses, so GPU engines rely on the job's memory limit (`--mem`) and the kernel's
out-of-memory killer, which ends one worker, not the task. The values' parsers are config/types.py's
(the command line's types check them with the same code).
"""

from __future__ import annotations

from hpc_marker.config.types import ItemTimeout, parse_item_timeout, parse_memory

__all__ = ["ItemTimeout", "cap_memory", "check_item_limits", "parse_item_timeout", "parse_memory"]


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
