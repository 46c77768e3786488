"""Light columns: the few columns of every manifest record that the collector adds up over the whole run (per
task, busy time, the report's timeline), kept as numpy arrays of small types a block of records at a time, and
put together once as the frame `summary.add_up` and the report take (issue 24).

At 10^6 records they are ~36 MB: the strings (status, host, GPU) as one-byte codes into the values seen so far,
the degraded reason as a flag. As Arrow dictionary columns they were 46 MB through the whole pass, and their
conversion to a frame at the end held both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

LIGHT = ["task", "status", "pages", "seconds", "started", "finished", "host", "gpu", "degraded"]
CODED = ("status", "host", "gpu")  # strings: categories in the frame, in the order the strings sort
WHOLE = {"task": np.int32, "pages": np.int32}  # integers: float64 with NaN in the frame where one is missing
STATES = ["ok", "degraded", "failed"]  # the report's `state` of a record


class LightColumns:
    """The LIGHT columns of records added a block at a time (`add`, an Arrow table of manifest records), read
    back once as a frame (`frame`)."""

    def __init__(self) -> None:
        self._columns: dict[str, np.ndarray] = {}  # each column's values so far, in an array with room to grow
        self._length = 0
        self._missing: dict[str, list[np.ndarray]] = {name: [] for name in WHOLE}  # where a value is null
        self._seen: dict[str, dict[str, int]] = {name: {} for name in CODED}  # value -> code, first seen first

    def add(self, table: pa.Table) -> None:
        for chunk in table.select(LIGHT).to_batches():
            for name, column in zip(LIGHT, chunk.columns, strict=True):
                if name in CODED:
                    values = self._codes(name, column)
                elif name == "degraded":  # the report's `state` needs only whether there is a reason
                    values = pc.fill_null(pc.not_equal(column, ""), False).to_numpy(zero_copy_only=False)
                elif name in WHOLE:
                    values = pc.fill_null(column, 0).to_numpy().astype(WHOLE[name])
                    if column.null_count:
                        self._missing[name].append(self._length + np.flatnonzero(column.is_null().to_numpy(False)))
                else:
                    values = column.to_numpy(zero_copy_only=False)  # null: NaN
                self._put(name, values)
            self._length += chunk.num_rows

    def _put(self, name: str, values: np.ndarray) -> None:
        """Write `values` after the column's first `_length`, growing its array by a quarter where it is full (a
        list of blocks would hold them twice when put together, and scatter them among freed memory)."""
        end = self._length + len(values)
        column = self._columns.get(name)
        if column is None or len(column) < end or column.dtype != np.promote_types(column.dtype, values.dtype):
            kind = values.dtype if column is None else np.promote_types(values.dtype, column.dtype)
            grown = np.empty(max(end, self._length * 5 // 4, 4096), kind)
            grown[: self._length] = column[: self._length] if column is not None else []
            self._columns[name] = column = grown
        column[self._length : end] = values

    def _codes(self, name: str, column: pa.Array) -> np.ndarray:
        """Each string's code (-1: null), in the smallest integer type the codes so far fit."""
        encoded = pc.dictionary_encode(column)
        seen = self._seen[name]
        codes = np.array([seen.setdefault(v, len(seen)) for v in encoded.dictionary.to_pylist()] + [-1])
        codes = codes.astype(np.min_scalar_type(-max(len(seen), 1)))
        return codes[pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy()]

    def __len__(self) -> int:
        return self._length

    def frame(self) -> pd.DataFrame:
        """Every record's LIGHT columns, in the order they were added, with the report's `state` (ok, degraded:
        ok but its LLM refinement partial, failed: any other status) instead of the degraded reason. Once."""
        columns: dict = {}
        for name in LIGHT:
            values = self._columns.pop(name, np.array([]))
            values.resize(self._length, refcheck=False)  # in place: the room to grow given back
            if name in CODED:
                columns[name] = _categories(values, self._seen[name])
            elif name in WHOLE and self._missing[name]:
                values = values.astype(float)
                values[np.concatenate(self._missing[name])] = np.nan
                columns[name] = values
            else:
                columns[name] = values
        degraded, status = columns.pop("degraded"), columns["status"]
        failed = status.codes != status.categories.get_indexer(["ok"])[0]  # null or not ok; all, where none is ok
        columns["state"] = pd.Categorical.from_codes(np.where(failed, 2, np.where(degraded, 1, 0)), STATES)
        return pd.DataFrame(columns, copy=False)


def _categories(codes: np.ndarray, seen: dict[str, int]) -> pd.Categorical:
    """The codes (first seen first, -1: null) as a categorical whose categories are in the order they sort."""
    ordered = sorted(seen)
    recode = np.full(len(seen) + 1, -1, dtype=np.min_scalar_type(-max(len(seen), 1)))
    recode[[seen[value] for value in ordered]] = np.arange(len(ordered))
    return pd.Categorical.from_codes(recode[codes], ordered)
