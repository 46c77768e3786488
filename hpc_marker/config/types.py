"""Option values: how each is parsed and bounded, once, for the command line, the config files and library callers.

Click types: a command line flag, an HPCMARKER_* variable and a config value all pass through the option's type
(config/options.py names it), and `options.check_values` runs library callers' values through the same types. A
value a type refuses raises `BadValue`, whose message starts with the value (`0: must be at least 1`): the command
line prints it after the option's name (cli/group.py), one line, exit code 2. The parsers of item timeouts and byte
sizes live here too (runtime/limits.py applies them in the tasks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import click

from hpc_marker.slurm.parse import parse_memory_spec, parse_time_limit

BASE_S = 300.0  # --item-timeout auto: BASE_S + PER_PAGE_S x pages
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


JITTER_PER_TASK_S = 0.05  # --start-jitter auto: this much per task of the run, at most JITTER_MAX_S
JITTER_MAX_S = 60.0


def parse_start_jitter(value: Any, tasks: int) -> float:
    """Seconds of --start-jitter for a run of `tasks` tasks: `auto` (JITTER_PER_TASK_S per task, at most
    JITTER_MAX_S), else a number of seconds (0: none); ValueError otherwise. Pure."""
    text = str(value).strip().lower()
    if text == "auto":
        return min(JITTER_MAX_S, JITTER_PER_TASK_S * max(tasks, 0))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{value!r}: use auto or a number of seconds (0: none)")
    return seconds


def parse_workers_per_gpu(value: Any) -> int:
    """`auto` -> 0 (each task chooses, runtime/sizing.py), else a count of at least 1; ValueError otherwise."""
    text = str(value).strip().lower()
    if text == "auto":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{value!r}: use auto or a number of at least 1")
    return int(text)


class BadValue(click.BadParameter):
    """A value one of these types refused; its message starts with the value."""


class _Checked(click.ParamType):
    """A type whose refusals are `BadValue`s."""

    def fail(self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None) -> NoReturn:
        raise BadValue(message, ctx=ctx, param=param)


class Number(_Checked):
    """A whole number (or with `kind=float`, any number) of at least `least`, or (`positive`) more than 0;
    `beyond` says why a value out of bounds is refused, where the plain rule says too little."""

    def __init__(self, kind: type = int, least: float | None = None, positive: bool = False, beyond: str = "") -> None:
        self.kind, self.least, self.positive = kind, least, positive
        self.name = "integer" if kind is int else "float"
        self.beyond = beyond or (f"must be at least {least}" if least is not None else "must be positive")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except ValueError:
                self.fail(f"{value!r}: not a {'whole number' if self.kind is int else 'number'}", param, ctx)
        if (self.least is not None and number < self.least) or (self.positive and not number > 0):
            self.fail(f"{f'{number:g}' if isinstance(number, float) else number}: {self.beyond}", param, ctx)
        return number


class _Text(_Checked):
    """A string checked by `parse` (ValueError "VALUE: why"), kept as given."""

    def parse(self, text: str) -> object:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        try:
            self.parse(text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return text


class MemorySize(_Text):
    """Memory as sbatch --mem takes it: 32G, 500M, 1T (a plain number is megabytes)."""

    name = "size"

    def parse(self, text: str) -> object:
        if parse_memory_spec(text) is None:
            raise ValueError(f"{text!r}: not a memory size (e.g. 32G, 500M, 1T; a plain number is megabytes)")
        return text


class TimeLimit(_Text):
    """A Slurm time limit: minutes, HH:MM:SS or D-HH:MM:SS."""

    name = "time"

    def parse(self, text: str) -> object:
        if parse_time_limit(text) is None:
            raise ValueError(f"{text!r}: use minutes, HH:MM:SS or D-HH:MM:SS")
        return text


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds of a duration: 12h, 90m, 2d, 3600 (seconds), or a Slurm time (HH:MM:SS, D-HH:MM:SS)."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found:
        seconds = float(found.group(1)) * _DURATION_UNITS[found.group(2)]
    elif ":" in text and (minutes := parse_time_limit(text)) is not None:
        seconds = minutes * 60.0
    else:
        raise ValueError(f"{text!r}: use 12h, 90m, 2d, seconds, or HH:MM:SS")
    if seconds <= 0:
        raise ValueError(f"{text!r}: must be longer than 0")
    return seconds


class Duration(_Text):
    """A duration (parse_duration): --deadline."""

    name = "duration"

    def parse(self, text: str) -> object:
        return parse_duration(text)


class ItemTimeoutType(_Text):
    """--item-timeout: auto, off, SECONDS, SECONDS/page or BASE+SECONDS/page."""

    name = "item_timeout"

    def parse(self, text: str) -> object:
        return parse_item_timeout(text)


class StartJitter(_Text):
    """--start-jitter: auto or seconds (0: none)."""

    name = "start_jitter"

    def parse(self, text: str) -> object:
        return parse_start_jitter(text, 1)


class ByteSize(_Text):
    """A size in bytes with an optional K/M/G/T (--worker-memory)."""

    name = "size"

    def parse(self, text: str) -> object:
        return parse_memory(text)


class WorkersPerGpu(_Checked):
    """auto (0: each task chooses, runtime/sizing.py) or a count of at least 1."""

    name = "workers"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_workers_per_gpu(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class OcrMode(_Checked):
    """--force-ocr's value: `all` (the bare flag: every page), `auto` (each document as its text layer says,
    planning/textcheck.py) or `none`; a config file's or variable's boolean (true: all, false: none) still reads."""

    name = "ocr"
    CHOICES = ("auto", "all", "none")
    _BOOLEANS: ClassVar[dict[str, str]] = {
        "true": "all",
        "1": "all",
        "yes": "all",
        "on": "all",
        "false": "none",
        "0": "none",
        "no": "none",
    }

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        mode = self._BOOLEANS.get(text, text)
        if mode not in self.CHOICES:
            self.fail(f"{value!r}: use auto or all (or the flag alone: all)", param, ctx)
        return mode

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[auto|all]"


COUNT = Number(int, least=1)
PAGES = Number(int, least=0, beyond="must be 0 (never split) or a number of pages")  # --split-pages
SECONDS = Number(float, positive=True)
PRICE = Number(float, least=0.0, beyond="must be 0 or more (a price per GPU-hour)")
DURATION = Duration()
LEASE = Number(float, positive=True, beyond="must be positive (a claim not renewed for this long is taken over)")
MEMORY = MemorySize()
TIME = TimeLimit()
ITEM_TIMEOUT = ItemTimeoutType()
BYTES = ByteSize()
START_JITTER = StartJitter()
WORKERS = WorkersPerGpu()
OCR = OcrMode()
