"""util/locks.FileLock: one holder at a time across processes; a waiter waits; a stale lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_marker.util.locks import FileLock, LockTimeout, read_holder

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
from hpc_marker.util.locks import FileLock
lock = FileLock(Path(sys.argv[1]), stale_s=float(sys.argv[3]), poll_s=0.05).acquire(timeout_s=60)
began = time.time()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
ended = time.time()
lock.release()
print(began, ended, flush=True)
"""


def holder(path: Path, hold_s: float, stale_s: float = 30.0) -> subprocess.Popen:
    """A process that takes the lock, holds it `hold_s` seconds, releases it and prints when it held it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(hold_s), str(stale_s)], stdout=subprocess.PIPE, text=True, env=env
    )


def held_span(process: subprocess.Popen) -> tuple[float, float]:
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    began, ended = map(float, out.split()[-2:])
    return began, ended


def test_two_processes_one_waits_for_the_other(tmp_path):
    path = tmp_path / "cache.lock"
    first = holder(path, 1.5)
    assert first.stdout.readline().strip() == "held"
    current = read_holder(path)
    assert current is not None and current.pid == first.pid  # the file names its holder
    second = holder(path, 0.1)
    first_span, second_span = held_span(first), held_span(second)
    assert second_span[0] >= first_span[1]  # the second held it only after the first released it
    assert not path.exists()  # released


def test_a_live_holder_is_not_taken_over_and_the_wait_is_bounded(tmp_path):
    path = tmp_path / "cache.lock"
    first = FileLock(path, stale_s=0.6, poll_s=0.05)
    assert first.try_acquire()
    try:
        time.sleep(1.0)  # past stale_s: only its renewals keep it fresh
        with pytest.raises(LockTimeout, match=r"cache\.lock held by .* pid \d+"):
            FileLock(path, stale_s=0.6, poll_s=0.05).acquire(timeout_s=0.5)
    finally:
        first.release()
    assert FileLock(path, stale_s=0.6).try_acquire()


def write_lock(path: Path, host: str, pid: int, age_s: float) -> None:
    since = time.time() - age_s
    path.write_text(json.dumps({"host": host, "pid": pid, "since": since, "token": "theirs"}))
    os.utime(path, (since, since))


def test_a_stale_lock_is_taken_over(tmp_path):
    path = tmp_path / "cache.lock"
    write_lock(path, "node-elsewhere", 4242, age_s=5.0)  # a holder on another node that stopped renewing
    lock = FileLock(path, stale_s=60.0)
    assert not lock.try_acquire()  # not stale yet
    write_lock(path, "node-elsewhere", 4242, age_s=120.0)
    assert lock.try_acquire()
    assert read_holder(path).token == lock.token
    lock.release()
    assert not path.exists()
    assert not list(tmp_path.iterdir())  # the stale holder's file is gone too


def test_a_killed_holder_on_this_node_is_taken_over_at_once(tmp_path):
    path = tmp_path / "cache.lock"
    first = holder(path, 60.0)
    assert first.stdout.readline().strip() == "held"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    started = time.monotonic()
    with FileLock(path, stale_s=300.0, poll_s=0.05).acquire(timeout_s=5) as lock:
        assert read_holder(path).token == lock.token
    assert time.monotonic() - started < 2  # the holder's pid is gone: no waiting for stale_s


def test_release_leaves_a_lock_that_is_no_longer_its_own(tmp_path):
    path = tmp_path / "cache.lock"
    lock = FileLock(path, stale_s=60.0)
    assert lock.try_acquire()
    path.unlink()
    write_lock(path, "node-elsewhere", 4242, age_s=0.0)  # someone took it over meanwhile
    lock.release()
    assert read_holder(path).token == "theirs"
