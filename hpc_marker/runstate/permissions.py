"""Who may read what a run writes: the run folder is always the user's alone; outputs follow --permissions."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# --permissions: who may read the Markdown a run writes (the run folder itself is always private)
PERMISSIONS = {"private": 0o077, "group": 0o027, "world": 0o022}


PRIVATE = PERMISSIONS["private"]


def private_files(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator: everything `function` creates (run folder files, job logs) is the user's alone."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with file_mode_mask(PRIVATE):
            return function(*args, **kwargs)

    return wrapper


@contextmanager
def file_mode_mask(mask: int) -> Iterator[None]:
    """Create files and folders under umask `mask` inside the block (restored afterwards)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)
