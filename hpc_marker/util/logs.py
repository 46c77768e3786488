"""Diagnostics: the one place that configures stdlib `logging` for hpcmarker.

Every module logs through its own `logger = logging.getLogger(__name__)`; nothing passes a function
for printing. What a command shows its user (tables, `next:` lines, a run's summary, JSON) is not a
diagnostic: the CLI writes it with click/rich, as before.

- `configure(verbosity)`: the CLI (the `hpcmarker` group's `-v/-q`): the `hpc_marker` loggers write to
  stderr, INFO as the bare message, other levels as `hpcmarker: warning: message`; verbosity 0 shows
  INFO, 1 or more DEBUG, -1 or less WARNING only.
- `configure(verbosity, job="task 3")`: a job (task, LLM service, collector): to stdout, the job's log,
  each line with its time and level: `2026-12-06 08:10:00 INFO task 3: message`.
- `JobEntry(run, role)`: what an executor runs for a job: configures the job's logging, then calls `run`
  (picklable: the executors pickle it into the job's call, util/jobrun.py).

Only the `hpc_marker` logger gets the handler (other libraries keep Python's default: warnings to stderr);
calling `configure` again replaces the handler it installed, so one process may configure many times
(the tests' CliRunner does).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

ROOT = "hpc_marker"
JOB_DATEFMT = "%Y-%m-%d %H:%M:%S"


def level(verbosity: int) -> int:
    """The level `-v` (1 or more: DEBUG), nothing (0: INFO) or `-q` (-1 or less: WARNING) asks for."""
    return logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING


class _Std(logging.StreamHandler):
    """A handler on sys.stdout or sys.stderr as they are when a line is written (not when it was made): a
    test's capture, or click's CliRunner, swaps them."""

    def __init__(self, name: str) -> None:
        logging.Handler.__init__(self)
        self._name = name

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.setStream; the stream is always the current one
        pass


class _CliFormatter(logging.Formatter):
    """INFO: the message as it is (what a command is doing: `fetching X from URL`); any other level:
    `hpcmarker: warning: message`, `hpcmarker: debug: message`."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"hpcmarker: {record.levelname.lower()}: {text}"


def configure(verbosity: int = 0, *, job: str | None = None) -> logging.Handler:
    """Send the hpc_marker loggers' records at `level(verbosity)` and above to stderr (the CLI) or, for a
    `job` ("task 3", "llm 0", "collect"), to stdout with a timestamp, level and the job's name. The handler."""
    root = logging.getLogger(ROOT)
    for old in [h for h in root.handlers if isinstance(h, _Std)]:
        root.removeHandler(old)
    handler = _Std("stdout" if job else "stderr")
    if job:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {job}: %(message)s", JOB_DATEFMT))
    else:
        handler.setFormatter(_CliFormatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level(verbosity))
    return handler


@dataclass(frozen=True)
class JobEntry:
    """A job's callable with its logging: `JobEntry(run_task, "task")("RUN", 3)` logs as `task 3`."""

    run: Callable[..., Any]
    role: str  # task, llm, collect

    def __call__(self, run_dir: str, *index: int) -> Any:
        configure(0, job=" ".join([self.role, *map(str, index)]))
        return self.run(run_dir, *index)
