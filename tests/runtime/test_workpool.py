"""The worker pool ends only the worker that is stuck or dying, and reports which item it was on."""

from __future__ import annotations

import os
import signal
import time

import pytest
from pool_jobs import allocate, failing_init, kill_self, raise_value_error, sleep_then, slow_init

from hpc_marker.runtime.limits import cap_memory, parse_item_timeout, parse_memory
from hpc_marker.runtime.workpool import DIED, ERROR, OK, TIMEOUT, WorkerPool


def drain(pool: WorkerPool, count: int, limit_s: float = 60) -> dict:
    outcomes, end = {}, time.monotonic() + limit_s
    while len(outcomes) < count and time.monotonic() < end:
        for outcome in pool.wait(timeout=1):
            outcomes[outcome.key] = outcome
    return outcomes


def test_a_timeout_ends_only_that_worker_and_the_others_finish():
    pool = WorkerPool(3)
    try:
        pool.submit("stuck", sleep_then, (60, "never"), timeout_s=1.5)
        pool.submit("a", sleep_then, (2.5, "A"), timeout_s=30)
        pool.submit("b", sleep_then, (0.2, "B"), timeout_s=30)
        first_pids = set(pool.pids())
        outcomes = drain(pool, 3)
        assert outcomes["stuck"].kind == TIMEOUT and 1.4 <= outcomes["stuck"].seconds < 3
        assert outcomes["a"].kind == OK and outcomes["a"].result[0] == "A"  # not lost with the stuck one
        assert outcomes["b"].kind == OK
        survivors = {outcomes["a"].result[1], outcomes["b"].result[1]}
        assert survivors <= first_pids and len(survivors) == 2  # the other workers were never restarted
        assert pool.replaced == 1 and pool.idle() == 3
        pool.submit("again", sleep_then, (0, "C"), timeout_s=30)  # a fresh worker takes the free slot
        assert drain(pool, 1)["again"].result[0] == "C"
    finally:
        pool.close()


def test_a_dead_worker_is_reported_with_its_item_and_replaced():
    pool = WorkerPool(2)
    try:
        pool.submit("victim", kill_self, (signal.SIGKILL,))
        pool.submit("bystander", sleep_then, (1.0, "ok"))
        outcomes = drain(pool, 2)
        assert outcomes["victim"].kind == DIED and outcomes["victim"].exitcode == -signal.SIGKILL
        assert "SIGKILL" in outcomes["victim"].died_reason() and "out-of-memory" in outcomes["victim"].died_reason()
        assert outcomes["bystander"].kind == OK
        pool.submit("next", sleep_then, (0, 1))
        assert drain(pool, 1)["next"].kind == OK
    finally:
        pool.close()


def test_errors_come_back_as_exceptions_and_the_worker_stays():
    pool = WorkerPool(1)
    try:
        pool.submit("x", raise_value_error, ("bad page",))
        outcome = drain(pool, 1)["x"]
        assert outcome.kind == ERROR and isinstance(outcome.error, ValueError) and "bad page" in str(outcome.error)
        assert pool.replaced == 0
    finally:
        pool.close()


def test_the_item_clock_starts_after_the_initializer():
    """Loading the engine is bounded by the startup allowance, not charged to the first item."""
    pool = WorkerPool(1, initializer=slow_init, initargs=(2.0,), startup_allowance_s=30)
    try:
        pool.submit("first", sleep_then, (0.5, "done"), timeout_s=1.5)  # 2 s init + 0.5 s > 1.5 s
        first = drain(pool, 1)["first"]
        assert first.kind == OK and 0.5 <= first.seconds < 2.0, first  # its own time, not the 2 s load's
    finally:
        pool.close()
    pool = WorkerPool(1, initializer=slow_init, initargs=(30.0,), startup_allowance_s=1.0)
    try:
        pool.submit("first", sleep_then, (0, "done"), timeout_s=1.0)
        assert drain(pool, 1)["first"].kind == TIMEOUT  # a hung initializer is bounded too
    finally:
        pool.close()


def test_an_initializer_failure_is_every_call_s_reason():
    pool = WorkerPool(1, initializer=failing_init)
    try:
        pool.submit("a", sleep_then, (0, 1))
        outcome = drain(pool, 1)["a"]
        assert outcome.kind == ERROR and "weights missing" in str(outcome.error)
    finally:
        pool.close()


def test_memory_error_under_a_cap_fails_the_item_and_recycles_the_worker():
    pool = WorkerPool(1, initializer=cap_memory, initargs=(parse_memory("1G"),))
    try:
        pool.submit("hog", allocate, (4096,))
        outcome = drain(pool, 1)["hog"]
        assert outcome.kind == ERROR and isinstance(outcome.error, MemoryError)
        assert pool.replaced == 1  # its heap may be damaged: a fresh worker takes the next item
        pool.submit("small", allocate, (10,))
        assert drain(pool, 1)["small"].result == 10 * 2**20
    finally:
        pool.close()


def test_close_ends_busy_workers():
    pool = WorkerPool(2)
    pool.submit("long", sleep_then, (60, 0))
    pids = pool.pids()
    started = time.monotonic()
    pool.close(grace_s=2)
    assert time.monotonic() - started < 10
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(
    "text, pages, seconds",
    [("auto", 10, 900.0), ("90", 10, 90.0), ("5/page", 2, 310.0), ("2+0.5/page", 4, 4.0), ("off", 10, None)],
)
def test_item_timeout_forms(text, pages, seconds):
    assert parse_item_timeout(text).for_pages(pages) == seconds


@pytest.mark.parametrize("text", ["", "x", "-1", "2+3", "0/page", "1h"])
def test_item_timeout_rejects_nonsense(text):
    with pytest.raises(ValueError, match="use auto, off"):
        parse_item_timeout(text)


def test_memory_sizes():
    assert parse_memory("8G") == 8 * 2**30 and parse_memory("512m") == 512 * 2**20 and parse_memory("1.5K") == 1536
    with pytest.raises(ValueError, match="4G or 512M"):
        parse_memory("lots")
