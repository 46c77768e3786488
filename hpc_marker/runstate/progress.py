"""Progress: what each task is doing and what it has finished, in two small files per task.

  progress/task-<i>.json  the task's heartbeat, rewritten every few seconds: its state (working,
                          waiting, exited), its cursor in its own share, the pages it has not
                          claimed yet, the batches it holds, the items in flight. Thieves read
                          these to choose a victim; `status` to say what every task is doing.
  progress/grown.txt      the tasks `hpcmarker grow` added to the run, one index a line: thieves read their
                          heartbeats too (they have no share, but may hold batches of others').
  progress/task-<i>.log   one short line per committed item (item, status, pages, share, times, flags, the
                          seconds its worker waited on the LLM service; logs from before that column read as 0),
                          appended on a descriptor the task keeps open. `status`, `resume` and
                          `retry` read these (a few tens of bytes per item) instead of the JSON
                          manifests, so they stay fast at 10^6 items.

A heartbeat older than the lease means its task is gone (killed, node lost).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from hpc_marker.planning.bisect import BISECTED
from hpc_marker.runstate.manifest import latest_frame
from hpc_marker.util.files import atomic_write

if TYPE_CHECKING:  # pandas and pyarrow load only where logs are read (never in a task)
    import pandas as pd

WORKING, WAITING, EXITED = "working", "waiting", "exited"
LOG_COLUMNS = ("item_id", "status", "pages", "share", "started", "finished", "flags", "llm_s")
DEGRADED = "d"  # flags: the item's LLM refinement was degraded
FAILED_OVER = "f"  # flags: some of the item's LLM requests moved to another replica
REOPENED = "reopened"  # a status line `retry` writes: the item is open again (pending), not finished
REOPEN_LOG = "task-reopened.log"  # where `retry` writes those lines
GROWN_FILE = "grown.txt"  # the tasks `hpcmarker grow` added, one index a line


@dataclass
class Heartbeat:
    task: int
    owner: str
    state: str = WORKING  # WORKING, WAITING or EXITED
    cursor: int = 0  # the next batch of its own share it will try to claim
    remaining_pages: int = 0  # pages of its own share from the cursor on (not yet claimed by it)
    held: list[str] = field(default_factory=list)  # "group/name" of the leases it holds
    released: list[str] = field(default_factory=list)  # leases it gave back unfinished (stopped, draining)
    inflight: list[str] = field(default_factory=list)  # item ids being converted
    committed: int = 0  # items it committed since it started
    updated: float = 0.0

    def fresh(self, lease_s: float, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - self.updated < lease_s


def heartbeat_path(folder: Path, task: int) -> Path:
    return Path(folder) / f"task-{task}.json"


def write_heartbeat(folder: Path, beat: Heartbeat) -> None:
    beat.updated = time.time()
    atomic_write(heartbeat_path(folder, beat.task), json.dumps(asdict(beat), separators=(",", ":")))


def read_grown(folder: Path) -> list[int]:
    """The tasks `hpcmarker grow` added to the run (none: [])."""
    try:
        return [int(line) for line in (Path(folder) / GROWN_FILE).read_text().split()]
    except (OSError, ValueError):
        return []


def add_grown(folder: Path, tasks: list[int]) -> None:
    """Record tasks `hpcmarker grow` adds (before they start, so that every task may read their heartbeats)."""
    atomic_write(Path(folder) / GROWN_FILE, "".join(f"{task}\n" for task in dict.fromkeys(read_grown(folder) + tasks)))


def heartbeat_tasks(folder: Path) -> list[int]:
    """The tasks that have a heartbeat in `folder` (one listing)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = (
        n.removeprefix("task-").removesuffix(".json") for n in names if n.startswith("task-") and n.endswith(".json")
    )
    return [int(task) for task in found if task.isdigit()]


def read_heartbeats(
    folder: Path, tasks: list[int] | None = None, skip: set[int] | frozenset[int] = frozenset()
) -> dict[int, Heartbeat]:
    """The last heartbeat of these tasks (default: every task's, one listing), but those in `skip`; tasks that
    never started have none."""
    names = [heartbeat_path(folder, task).name for task in (heartbeat_tasks(folder) if tasks is None else tasks)]
    if skip:
        skipped = {heartbeat_path(folder, task).name for task in skip}
        names = [n for n in names if n not in skipped]
    beats = {}
    for name in names:
        try:
            beat = Heartbeat(**json.loads((Path(folder) / name).read_text()))
        except FileNotFoundError:
            continue  # never started
        except (OSError, ValueError, TypeError):
            continue  # being replaced right now, or torn by a crash: the next read sees it
        beats[beat.task] = beat
    return beats


class CommitLog:
    """The task's append-only log of committed items; one write per line, on an open descriptor."""

    def __init__(self, folder: Path, task: int) -> None:
        self.path = Path(folder) / f"task-{task}.log"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(
        self,
        item_id: str,
        status: str,
        pages: int,
        share: int,
        started: float,
        finished: float,
        flags: str = "",
        llm_s: float = 0.0,
    ) -> None:
        line = f"{item_id}\t{status}\t{pages}\t{share}\t{started:.3f}\t{finished:.3f}\t{flags}\t{llm_s:.3f}\n"
        os.write(self._fd, line.encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _log_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("item_id", pa.string()),
            ("status", pa.string()),
            ("pages", pa.int64()),
            ("share", pa.int64()),
            ("started", pa.float64()),
            ("finished", pa.float64()),
            ("flags", pa.string()),
            ("llm_s", pa.float64()),
        ]
    )


def _read_log(data: bytes, schema):
    """One commit log's lines as an Arrow table (a torn last line skipped). Lines from before the llm_s column
    (one field fewer) are read with the schema they were written with, their llm_s 0."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def read(width: int, skipped: list[int]):
        def skip(row) -> str:
            skipped.append(row.actual_columns)
            return "skip"

        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=schema.names[:width]),
            parse_options=pacsv.ParseOptions(delimiter="\t", invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in schema}, strings_can_be_null=False
            ),
        )
        return table if width == len(schema) else table.append_column(schema.field(width), pa.array([0.0] * len(table)))

    full, older = len(schema), len(schema) - 1
    first = data.split(b"\n", 1)[0]
    widths = (older, full) if first.count(b"\t") + 1 == older else (full, older)
    skipped: list[int] = []
    tables = [read(widths[0], skipped)]
    if widths[1] in skipped:  # a log written by both (an older run's task resumed): its other lines too
        tables.append(read(widths[1], []))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


_kept: dict[Path, BinaryIO] | None = None  # while `logs_kept_open` is active: the commit logs opened so far


@contextmanager
def logs_kept_open(kept: dict[Path, BinaryIO]) -> Iterator[None]:
    """While active, each commit log read is opened once and kept in `kept` (by path), and read again through
    that open file: a process that reads the logs again and again (a waiting `submit`'s progress line, the
    collector's passes) pays one metadata operation per log, not one per read. The logs are append-only, so the
    open file sees every line. The caller closes the files (`close_logs`) when it no longer reads them."""
    global _kept
    outer, _kept = _kept, kept
    try:
        yield
    finally:
        _kept = outer


def close_logs(kept: dict[Path, BinaryIO]) -> None:
    for fh in kept.values():
        fh.close()
    kept.clear()


@contextmanager
def _log_file(path: Path) -> Iterator[BinaryIO]:
    """Commit log `path` open for reading from its start: kept open where `logs_kept_open` is active."""
    if _kept is None:
        with open(path, "rb") as fh:
            yield fh
        return
    fh = _kept.get(path)
    if fh is None:
        fh = _kept[path] = open(path, "rb")  # noqa: SIM115 (kept open on purpose: closed by close_logs)
    fh.seek(0)
    yield fh


def _read_logs(folder: Path):
    """(file name, Arrow table) of each non-empty commit log in `folder`, a torn last line skipped."""
    schema = _log_schema()
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith("task-") and n.endswith(".log"))
    except FileNotFoundError:
        names = []
    for name in names:
        with _log_file(Path(folder) / name) as fh:  # one open per log (or none: kept open)
            data = fh.read()
        if data:
            yield name, _read_log(data, schema)


def read_commits(folder: Path) -> pd.DataFrame:
    """Every commit line of every task (columns LOG_COLUMNS), in no particular order; a torn last
    line is skipped. Arrow's CSV reader: under a second for 10^6 lines."""
    import pyarrow as pa

    tables = [table for _, table in _read_logs(folder)]
    table = pa.concat_tables(tables) if tables else _log_schema().empty_table()
    return table.to_pandas()


def commits_by_task(folder: Path, columns: list[str] | None = None) -> dict[int, pd.DataFrame]:
    """Each task's own commit lines (what it converted, whatever share an item was of), by task index; only
    `columns` of them where given (the collector's accounting: not the item ids of 10^6 lines)."""
    found = {}
    for name, table in _read_logs(folder):
        index = name.removeprefix("task-").removesuffix(".log")
        if index.isdigit():
            found[int(index)] = (table.select(columns) if columns else table).to_pandas()
    return found


def failed_commits(folder: Path) -> tuple[pd.DataFrame, bool]:
    """Every commit line (item_id, status, finished) of the items that failed at least once (what
    `failures_per_item` and the collector's retry outlook look at), and whether any line of any item reopened
    it. The logs are read a block at a time, their other lines held as three Arrow columns, not as frames; each
    log is opened once, by Python (no stat by path: Arrow's file of a path stats it first)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    schema, kept = _log_schema(), ["item_id", "status", "finished"]
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith("task-") and n.endswith(".log"))
    except FileNotFoundError:
        names = []

    def read(fh: BinaryIO, width: int, skipped: list[int]) -> list:
        def skip(row) -> str:
            skipped.append(row.actual_columns)
            return "skip"

        fh.seek(0)
        with pacsv.open_csv(
            fh,
            read_options=pacsv.ReadOptions(column_names=schema.names[:width], block_size=8 * 2**20),
            parse_options=pacsv.ParseOptions(delimiter="\t", invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in schema}, strings_can_be_null=False, include_columns=kept
            ),
        ) as reader:
            return [pa.Table.from_batches([batch]) for batch in reader]

    tables = [schema.empty_table().select(kept)]
    full, older = len(schema), len(schema) - 1  # lines from before the llm_s column: one field fewer (_read_log)
    for name in names:
        with _log_file(Path(folder) / name) as fh:  # one open per log (Arrow's own stats the path first)
            if not os.fstat(fh.fileno()).st_size:  # a task that committed nothing (Arrow: "Empty CSV file")
                continue
            skipped: list[int] = []
            tables += read(fh, full, skipped)
            if older in skipped:  # an older log, or one written by both
                tables += read(fh, older, [])
    lines = pa.concat_tables(tables)
    failed = pc.invert(pc.is_in(lines["status"], value_set=pa.array(["ok", REOPENED, BISECTED])))
    ids = pc.unique(pc.filter(lines["item_id"], failed))
    reopened = pc.any(pc.equal(lines["status"], REOPENED)).as_py() or False
    return lines.filter(pc.is_in(lines["item_id"], value_set=ids)).to_pandas(), reopened


def latest_commits(commits: pd.DataFrame, reopened: bool | None = None) -> pd.DataFrame:
    """The last commit of each item (manifest.latest_frame), indexed by item_id; `reopened`: whether any item
    was reopened, where `commits` are not every line (default: whether one of theirs says so). Pure."""
    if reopened is None:
        reopened = not commits.empty and bool((commits["status"] == REOPENED).any())
    if commits.empty or not reopened:
        return commits.set_index("item_id")  # each item is committed once until a retry reopens it
    return latest_frame(commits).set_index("item_id")


def failures_per_item(commits: pd.DataFrame) -> pd.Series:
    """How many times each item failed (any final status but ok; a bisected item did not: its halves
    took its pages over, and a page that fails is counted as its own sub-item), by item_id. Pure."""
    return commits.loc[~commits["status"].isin(["ok", REOPENED, BISECTED]), "item_id"].value_counts()


def append_reopened(folder: Path, rows: list[tuple[str, int, int]]) -> None:
    """Say in the commit logs that these (item_id, pages, share) are open again (retry)."""
    now = time.time()
    with open(Path(folder) / REOPEN_LOG, "a", encoding="utf-8") as fh:
        fh.writelines(
            f"{item}\t{REOPENED}\t{pages}\t{share}\t{now:.3f}\t{now:.3f}\t\t0\n" for item, pages, share in rows
        )
