"""Frame helpers that stay fast at 10^6 rows (pandas and Arrow are imported when first used)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def isin(column: pd.Series | pd.Index, values: Iterable) -> np.ndarray:
    """`column.isin(values)` for strings, as a boolean array computed by Arrow. pandas' own isin on its
    Arrow-backed strings makes a Python object of each value: about 10 s for 10^6 item ids."""
    import pyarrow.compute as pc

    found = pc.is_in(_strings(column), value_set=_strings(values))
    return found.to_numpy(zero_copy_only=False).astype(bool)


def positions(column: pd.Series | pd.Index, values: Iterable) -> np.ndarray:
    """Where each string of `column` first is in `values`, -1 where it is not (Arrow's index_in; pandas' map by
    a frame's index makes a Python object of each value)."""
    import pyarrow.compute as pc

    found = pc.index_in(_strings(column), value_set=_strings(values))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(int)


def all_distinct(column: pd.Series | pd.Index) -> bool:
    """No string occurs twice in `column` (Arrow's hash count; several times faster than pandas' duplicated)."""
    import pyarrow.compute as pc

    return pc.count_distinct(_strings(column)).as_py() == len(column)


def last_per_key(frame: pd.DataFrame, key: str, order: str) -> pd.DataFrame:
    """The last row of each `key` in `order` (ascending, stable), the frame sorted by `order`. Rows with
    distinct keys (every run without retries) skip pandas' drop_duplicates, its slow part at 10^6 rows."""
    ordered = frame.sort_values(order, kind="stable")
    return ordered if all_distinct(ordered[key]) else ordered.drop_duplicates(key, keep="last")


def distinct_rows(frame: pd.DataFrame, columns: list[str], chunk: int = 2**16) -> pd.DataFrame:
    """`frame[columns].drop_duplicates()` (the same rows, index and order: each chunk's first occurrences, then
    the first of those), a chunk of rows at a time: at 10^6 rows the whole frame's copy and hash codes were the
    collector's peak, when the distinct rows are a few hundred."""
    if len(frame) <= chunk:
        return frame[columns].drop_duplicates()
    import pandas as pd

    firsts = [frame.iloc[lo : lo + chunk][columns].drop_duplicates() for lo in range(0, len(frame), chunk)]
    return pd.concat(firsts).drop_duplicates()


def _strings(values: Iterable):
    import pandas as pd
    import pyarrow as pa

    array = pa.array(values if isinstance(values, (pd.Series, pd.Index)) else list(values), from_pandas=True)
    return array.cast(pa.large_string()) if len(array) else pa.array([], type=pa.large_string())


IDLE_GAP_S = 60.0  # a stretch this long with no item in flight is idle (between a run's submissions), not work


def busy_seconds(started, finished, idle_gap_s: float = IDLE_GAP_S) -> float:
    """How long work was in flight: the length of the union of the intervals [started, finished], a gap of
    at most `idle_gap_s` between them counted as work (claiming the next item, waiting for a lease), a
    longer one not (the idle time between a run and its retry). Any order; 0.0 for none. Vectorized."""
    import numpy as np

    starts, ends = np.asarray(started, dtype=float), np.asarray(finished, dtype=float)
    if not len(starts):
        return 0.0
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)  # the latest end so far
    first = np.flatnonzero(np.concatenate([[True], starts[1:] - reach[:-1] > idle_gap_s]))  # each stretch's
    return float((np.maximum.reduceat(ends, first) - starts[first]).sum())


def working_seconds(
    first: float | None, last: float | None, busy: float | None, now: float, running: list[float] | None
) -> float | None:
    """How long a run has worked, from its items' first start, last finish and busy time (`busy_seconds`;
    None: last - first), and while it runs (`running`: when its running tasks started) the stretch since
    its last item, or since its tasks started where that was after an idle gap (a retry's). Pure."""
    if first is None:
        return None
    last = last or first
    busy = busy if busy is not None else last - first
    if running is None:
        return busy
    since = min(running) if running and min(running) > last + IDLE_GAP_S else last
    return busy + max(0.0, now - since)
