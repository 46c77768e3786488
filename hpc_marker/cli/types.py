"""Click types of hpcmarker's options: each value checked once, the same way by submit, plan, resume and retry.

Numbers read their bounds by option name from submission/request.py (LEAST, POSITIVE), the table the
request's own checks use too. A value a type refuses raises `BadValue`, whose message starts with the value
(`0: must be at least 1`): group.py prints it after the option's name, one line, exit code 2.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click

from hpc_marker.runtime.limits import parse_item_timeout, parse_memory
from hpc_marker.submission.request import (
    LaunchError,
    bound_problem,
    memory_problem,
    parse_workers_per_gpu,
    time_problem,
)


class BadValue(click.BadParameter):
    """A value one of these types refused; its message starts with the value."""


class _Checked(click.ParamType):
    """A type whose refusals are `BadValue`s."""

    def fail(self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None) -> NoReturn:
        raise BadValue(message, ctx=ctx, param=param)


def _option(param: click.Parameter | None) -> str:
    """The option's name as the bounds table spells it (`cpus-per-task`)."""
    return (param.name or "").replace("_", "-") if param is not None else ""


class Number(_Checked):
    """A whole number (or with `kind=float`, any number) within its option's bounds."""

    def __init__(self, kind: type = int) -> None:
        self.kind = kind
        self.name = "integer" if kind is int else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except ValueError:
                self.fail(f"{value!r}: not a {'whole number' if self.kind is int else 'number'}", param, ctx)
        problem = bound_problem(_option(param), number)
        if problem:
            self.fail(problem, param, ctx)
        return number


class _Text(_Checked):
    """A string checked by `problem` (None: fine), kept as given."""

    def problem(self, text: str) -> str | None:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        problem = self.problem(text)
        if problem:
            self.fail(problem, param, ctx)
        return text


class MemorySize(_Text):
    """Memory as sbatch --mem takes it: 32G, 500M, 1T (a plain number is megabytes)."""

    name = "size"

    def problem(self, text: str) -> str | None:
        return memory_problem(text)


class TimeLimit(_Text):
    """A Slurm time limit: minutes, HH:MM:SS or D-HH:MM:SS."""

    name = "time"

    def problem(self, text: str) -> str | None:
        return time_problem(text)


class ItemTimeout(_Text):
    """--item-timeout: auto, off, SECONDS, SECONDS/page or BASE+SECONDS/page."""

    name = "item_timeout"

    def problem(self, text: str) -> str | None:
        try:
            parse_item_timeout(text)
        except ValueError as exc:
            return str(exc)
        return None


class ByteSize(_Text):
    """A size in bytes with an optional K/M/G/T (--worker-memory)."""

    name = "size"

    def problem(self, text: str) -> str | None:
        try:
            parse_memory(text)
        except ValueError as exc:
            return str(exc)
        return None


class WorkersPerGpu(_Checked):
    """auto (0: each task chooses, runtime/sizing.py) or a count of at least 1."""

    name = "workers"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_workers_per_gpu(value)
        except LaunchError:
            self.fail(f"{value!r}: use auto or a number of at least 1", param, ctx)


COUNT = Number(int)
SECONDS = Number(float)
MEMORY = MemorySize()
TIME = TimeLimit()
ITEM_TIMEOUT = ItemTimeout()
BYTES = ByteSize()
WORKERS = WorkersPerGpu()
