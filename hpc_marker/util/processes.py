"""Process trees on Linux (/proc): is a process alive, its descendants, end a tree, die with the parent.

Used wherever hpcmarker ends processes it started: a local run's tasks, a cancelled local run, the
collector stopping a local service, servers started in their own process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after "(comm)": state, ppid, pgrp, ...; None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def process_runs(pid: int, marker: str) -> bool:
    """`pid` is alive and its command line holds `marker` (a pid reused by another program does not count)."""
    if not process_alive(pid):
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def _live_pids() -> list[str]:
    return [entry for entry in os.listdir("/proc") if entry.isdigit()]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in _live_pids():
        fields = _stat_fields(entry)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        tree.append(current)
        frontier.extend(children.get(current, []))
    return tree


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group `pgid`."""
    members = []
    for entry in _live_pids():
        fields = _stat_fields(entry)
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def processes_with_env(name: str, value: str, command_has: str = "") -> list[int]:
    """Live processes (readable: this user's) whose environment has `name=value` and whose command line
    contains `command_has`: how a daemon that detached itself is found again (e.g. an MPS control
    daemon by its pipe folder)."""
    wanted, found = f"{name}={value}".encode(), []
    for entry in _live_pids():
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if wanted in environ and command_has.encode() in command and process_alive(int(entry)):
            found.append(int(entry))
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def processes_with_arg(arg: str, also: str = "") -> list[int]:
    """Live processes (readable: this user's) with `arg` as one of their arguments and `also` somewhere in
    their command line: a run's processes found by what they run on (e.g. its jobs folder), whether or not
    anyone recorded their ids."""
    wanted, found = arg.encode(), []
    for entry in _live_pids():
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in argv and also.encode() in b" ".join(argv) and process_alive(int(entry)):
            found.append(int(entry))
    return found


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
