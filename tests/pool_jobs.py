"""Functions the worker-pool tests run in spawned workers (importable by name, hence a module)."""

from __future__ import annotations

import os
import time


def slow_init(seconds: float) -> None:
    time.sleep(seconds)


def failing_init() -> None:
    raise RuntimeError("no engine here: weights missing")


def sleep_then(seconds: float, value):
    time.sleep(seconds)
    return value, os.getpid()


def raise_value_error(text: str):
    raise ValueError(text)


def kill_self(signum: int):
    os.kill(os.getpid(), signum)
    time.sleep(5)


def allocate(megabytes: int):
    block = bytearray(megabytes * 2**20)
    return len(block)
