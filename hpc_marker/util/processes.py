"""Process trees (psutil): is a process alive, its descendants, end a tree, die with the parent (Linux).

Used wherever hpcmarker ends processes it started: a local run's tasks, a cancelled local run, the
collector stopping a local service, servers started in their own process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterator

import psutil

PR_SET_PDEATHSIG = 1


def process_alive(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


def process_runs(pid: int, marker: str) -> bool:
    """`pid` is alive and its command line holds `marker` (a pid reused by another program does not count)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and marker in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _live(*attrs: str) -> Iterator[psutil.Process]:
    """Every process not a zombie, with `attrs` read into `.info` (None where they cannot be read)."""
    for process in psutil.process_iter(["status", *attrs]):
        if process.info["status"] not in (None, psutil.STATUS_ZOMBIE):
            yield process


def process_environ(pid: int) -> dict[str, str]:
    """`pid`'s environment as it started ({} where it is gone or not readable: another user's)."""
    try:
        return psutil.Process(pid).environ()
    except psutil.Error:
        return {}


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group `pgid`."""
    members = []
    for process in _live():
        with contextlib.suppress(OSError):
            if os.getpgid(process.pid) == pgid:
                members.append(process.pid)
    return members


def processes_with_env(name: str, value: str, command_has: str = "") -> list[int]:
    """Live processes (readable: this user's) whose environment has `name=value` and whose command line
    contains `command_has`: how a daemon that detached itself is found again (e.g. an MPS control
    daemon by its pipe folder)."""
    return [
        process.pid
        for process in _live("environ", "cmdline")
        if (process.info["environ"] or {}).get(name) == value and command_has in " ".join(process.info["cmdline"] or [])
    ]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def processes_with_arg(arg: str, also: str = "") -> list[int]:
    """Live processes (readable: this user's) with `arg` as one of their arguments and `also` somewhere in
    their command line: a run's processes found by what they run on (e.g. its jobs folder), whether or not
    anyone recorded their ids."""
    return [
        process.pid
        for process in _live("cmdline")
        if arg in (process.info["cmdline"] or []) and also in " ".join(process.info["cmdline"] or [])
    ]


TERM_RESEND_S = 0.5  # a process that ignored SIGTERM a moment ago (still installing its handler) gets it again


def terminate_trees(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM each of `pids` and its descendants, again every TERM_RESEND_S (a process still starting may
    ignore it for a moment, then handle it), then SIGKILL whatever is left after `grace_s`.
    Returns the processes that had to be killed."""
    trees = list(dict.fromkeys(p for pid in pids for p in process_tree(pid)))
    deadline = time.monotonic() + grace_s
    while True:
        alive = [p for p in trees if process_alive(p)]
        if not alive or time.monotonic() >= deadline:
            break
        _signal(alive, signal.SIGTERM)
        trees += [p for pid in alive for p in process_tree(pid) if p not in trees]  # children started meanwhile
        wait_until = min(deadline, time.monotonic() + TERM_RESEND_S)
        while time.monotonic() < wait_until and any(process_alive(p) for p in trees):
            time.sleep(0.05)
    _signal(alive, signal.SIGKILL)
    return alive


def terminate_tree(pid: int, grace_s: float = 5.0) -> list[int]:
    """SIGTERM `pid` and its descendants, then SIGKILL whatever is left after `grace_s`.
    Returns the processes that had to be killed."""
    return terminate_trees([pid], grace_s)


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for subprocess: the child gets `sig` when its parent dies, even by SIGKILL.

    libc is looked up now, in the parent: the forked child only calls prctl (no dlopen after fork)."""
    prctl = _prctl()

    def hook() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig)

    return hook


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: have the kernel send `sig` to this process when its parent dies, even by SIGKILL."""
    parent_death_signal(sig)()
