"""Column batches: the stages' working format, a dict of equal-length numpy arrays.

The stages get and return pandas frames (what ``mapInPandas`` and ``transformWithStateInPandas`` exchange),
but build their output from numpy arrays and make one frame at the end: a micro-batch's shard holds tens of
rows, where the fixed cost of each pandas operation on a 36-column frame is what the time would go to.
Strings are numpy object arrays (pandas 3 would keep them Arrow-backed, and PySpark 4.1's Arrow writer for
grouped-map output cannot take the chunked arrays they turn into).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

Columns = dict[str, np.ndarray]


def from_frame(frame: pd.DataFrame, names: Iterable[str] | None = None) -> Columns:
    """The frame's columns (all, or ``names``) as numpy arrays: strings and nullable values as object
    arrays with None for nulls, other columns in their numpy dtype."""
    out: Columns = {}
    for name in (frame.columns if names is None else names):
        series = frame[name]
        dtype = series.dtype
        if isinstance(dtype, np.dtype) and dtype != object:
            out[name] = series.to_numpy()
        else:
            out[name] = series.to_numpy(dtype=object, na_value=None)
    return out


def length(cols: Columns) -> int:
    """The number of rows (0 for no columns)."""
    return len(next(iter(cols.values()))) if cols else 0


def take(cols: Columns, rows: np.ndarray) -> Columns:
    """The rows selected by a boolean mask or an index array."""
    return {name: values[rows] for name, values in cols.items()}


def nulls(n: int) -> np.ndarray:
    """n nulls (an object array of None)."""
    return np.full(n, None, dtype=object)


def full(n: int, value, dtype=object) -> np.ndarray:
    """n copies of ``value``."""
    return np.full(n, value, dtype=dtype)


def concat(parts: Sequence[Columns], names: Sequence[str]) -> Columns:
    """The parts one after the other, with exactly ``names``; a part without a column contributes nulls.
    A column whose parts disagree in dtype becomes an object array."""
    sizes = [length(p) for p in parts]
    out: Columns = {}
    for name in names:
        pieces = [p[name] if name in p else nulls(n) for p, n in zip(parts, sizes)]
        pieces = [p for p, n in zip(pieces, sizes) if n]
        if not pieces:
            out[name] = nulls(0)
        elif len({p.dtype for p in pieces}) == 1:
            out[name] = np.concatenate(pieces)
        else:
            out[name] = np.concatenate([p.astype(object) for p in pieces])
    return out


def to_frame(cols: Columns, names: Sequence[str]) -> pd.DataFrame:
    """A frame with exactly ``names`` in order (missing columns null)."""
    n = length(cols)
    return pd.DataFrame({name: cols[name] if name in cols else nulls(n) for name in names}, copy=False)


def as_int(values: np.ndarray, dtype=np.int64) -> np.ndarray:
    """Integer values of a column without nulls read from Spark (an int column that had nulls in its Arrow
    batch arrives as float or object)."""
    if values.dtype == object:
        return np.array([int(v) for v in values], dtype=dtype)
    return values.astype(dtype)


def pair_index(first: np.ndarray, second: np.ndarray) -> pd.MultiIndex:
    """An index of (first, second) pairs, e.g. (card, transaction id), for membership and lookup. Pairs,
    not joined strings: no separator can be trusted to survive numpy (a ``"\\x00"`` scalar becomes an empty
    ``np.str_``, so ``"6" + "34307"`` and ``"63" + "4307"`` would collide)."""
    return pd.MultiIndex.from_arrays([np.asarray(first, dtype=object), np.asarray(second, dtype=object)])
