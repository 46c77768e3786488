"""The scan's progress bar (rich, on stderr): PDFs found, PDFs checked against the page-count cache, and
page counts read, each with its rate and the last two with an ETA. Disabled, every method does nothing,
so the scan calls them unconditionally; the command line decides when to show it (a terminal, or asked).
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

UPDATE_EVERY_S = 0.1  # at 10^6 PDFs, one update per PDF would cost more than the bar is worth


class ScanProgress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._pending = 0
        self._last = 0.0

    def __enter__(self) -> ScanProgress:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
            self._task = self._progress.add_task("finding PDFs", total=None, note="")  # the walk: no total yet
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._flush()
            self._progress.stop()

    def found(self, count: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=count)

    def checking(self, total: int) -> None:
        """The PDFs are found: now each is stat'ed and looked up in the page-count cache."""
        self._next("checking dates", total, "")

    def checked(self) -> None:
        self._advance()

    def counting(self, total: int, cached: int) -> None:
        self._next("counting pages", total, f"({cached:,} cached)" if cached else "")

    def counted(self) -> None:
        self._advance()

    def _next(self, description: str, total: int, note: str) -> None:
        if self._progress is None:
            return
        self._flush()
        current = self._progress.tasks[-1]  # the step before this one is done: show it full
        done = current.completed if current.total is None else current.total
        self._progress.update(self._task, total=done, completed=done)
        self._task = self._progress.add_task(description, total=total, note=note)

    def _advance(self) -> None:
        if self._progress is None:
            return
        self._pending += 1
        if time.monotonic() - self._last >= UPDATE_EVERY_S:
            self._flush()

    def _flush(self) -> None:
        if self._progress is not None and self._pending:
            self._progress.advance(self._task, self._pending)
        self._pending, self._last = 0, time.monotonic()
