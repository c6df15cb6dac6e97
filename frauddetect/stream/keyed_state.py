"""How the operators keep each card's and each terminal's history in Spark's state store.

Each grouping key of the card and terminal operators is a *state shard* (a hash bucket of card or terminal
ids): one Python call then handles all of a shard's rows of a micro-batch, vectorised. Inside a shard, state
is keyed by the card or terminal id (a ``MapState`` with user key ``(id, part)``), in two parts:

- ``part`` 0, the *base*: the id's rows as of its last merge;
- ``part`` 1, the *delta*: the rows that came since (for a terminal, also the label changes since).

A micro-batch writes only the delta of each id it touches (one ``updateValue``), so what it writes grows with
what it adds, not with the history. When the delta has grown to a quarter of the base (and at least
:data:`MIN_DELTA_ROWS` rows), or the base has not been written for :data:`BASE_REFRESH_MS` (so the state's
time to live never expires an active id), base and delta are merged into a new base, and rows the watermark
has left behind are dropped then. An id nobody touches any more expires with the time to live. A value is
``(rows, written_ms, data)``: its transaction row count, the processing time it was written, and its rows
packed by :class:`RowPack`.

Reading: one ``getValue`` per part for the ids a micro-batch touches; when it touches more than
:data:`BULK_READ_SHARE` of the shard's ids, one pass of the map iterator over the whole shard instead (a
Python state call is a round trip to the JVM, about 0.5 ms on the 2-core development machine, where the
iterator costs about a fifth of that per entry).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from frauddetect.stream.columns import Columns, concat, length, take

MAP_STATE_NAME = "history"
MAP_KEY_SCHEMA = "key string, part int"
MAP_VALUE_SCHEMA = "rows long, written_ms long, data binary"
BASE, DELTA = 0, 1
MIN_DELTA_ROWS = 8
BULK_READ_SHARE = 0.25
BASE_REFRESH_MS = 7 * 86_400_000
_SEPARATOR = "\x1f"  # ASCII unit separator: ids are 1..128 printable characters (frauddetect.schemas)


class RowPack:
    """Packs a few fixed columns of rows into bytes and back (a tuple of joined strings and numpy buffers,
    pickled: a few µs for an id's rows, where an Arrow IPC stream costs milliseconds to write).

    ``columns``: name -> numpy dtype, or ``object`` for strings (None is kept as None).
    """

    def __init__(self, columns: Mapping[str, object]):
        self.columns = dict(columns)

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def encode(self, rows: Mapping[str, np.ndarray]) -> bytes:
        """Bytes of the rows' columns (a mapping of equal-length arrays, or a frame; KeyError if one is
        missing)."""
        parts: list[object] = [len(rows[self.names[0]])]
        for name, dtype in self.columns.items():
            values = np.asarray(rows[name])
            if dtype is object:
                present = np.array([v is not None and v == v for v in values], dtype=bool)
                parts.append(_SEPARATOR.join(str(v) for v, ok in zip(values, present) if ok))
                parts.append(int(present.sum()))
                parts.append(None if present.all() else np.packbits(present).tobytes())
            else:
                parts.append(np.ascontiguousarray(values, dtype=dtype).tobytes())
        return pickle.dumps(tuple(parts), protocol=5)

    def decode(self, data: bytes) -> Columns:
        """The columns :meth:`encode` packed, as arrays of the declared dtypes (object arrays for strings)."""
        parts = pickle.loads(data)
        n = parts[0]
        out: Columns = {}
        i = 1
        for name, dtype in self.columns.items():
            if dtype is object:
                joined, n_present, mask = parts[i], parts[i + 1], parts[i + 2]
                i += 3
                if n_present == n:
                    column = np.array(joined.split(_SEPARATOR), dtype=object) if n else np.empty(0, dtype=object)
                else:
                    column = np.full(n, None, dtype=object)
                    if n_present:
                        present = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), count=n).astype(bool)
                        column[present] = joined.split(_SEPARATOR)
                out[name] = column
            else:
                out[name] = np.frombuffer(parts[i], dtype=dtype)
                i += 1
        return out

    def empty(self) -> Columns:
        """No rows, the pack's columns."""
        return {n: np.empty(0, dtype=d) for n, d in self.columns.items()}


class KeyedHistory:
    """The histories of one shard's ids in the operator's ``MapState`` (module doc), read and written once
    per micro-batch.

    ``pack``: the rows' columns; ``count``: rows -> how many of them are transactions (what ``rows`` in
    the value counts; default all); ``now_ms``: processing time (tests pass their own).
    """

    def __init__(self, map_state, pack: RowPack, count=None, now_ms=None):
        self._map = map_state
        self.pack = pack
        self._count = count or (lambda rows: length(rows))
        self.now_ms = int(now_ms if now_ms is not None else time.time() * 1000)
        self.base: dict[str, tuple[int, int]] = {}
        self.delta: dict[str, int] = {}
        self.delta_rows: dict[str, Columns] = {}

    def read(self, keys: Iterable[str], shard_size: int | None = None) -> tuple[Columns, np.ndarray]:
        """The rows held for ``keys``, base then delta, and the id of each row (object array). With
        ``shard_size`` (the shard's id count) and more than :data:`BULK_READ_SHARE` of it wanted, the whole
        shard is read with the map iterator."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, int], tuple] = {}
        if shard_size and len(wanted) > BULK_READ_SHARE * shard_size:
            wanted_set = set(wanted)
            for (key, part), value in self._map.iterator():
                if key in wanted_set:
                    found[(key, part)] = value
        else:
            for key in wanted:
                for part in (BASE, DELTA):
                    value = self._map.getValue((key, part))
                    if value is not None:
                        found[(key, part)] = value
        parts: list[Columns] = []
        owners: list[np.ndarray] = []
        for key in wanted:
            base = found.get((key, BASE))
            if base is not None:
                self.base[key] = (int(base[0]), int(base[1]))
                rows = self.pack.decode(base[2])
                parts.append(rows)
                owners.append(np.full(length(rows), key, dtype=object))
            delta = found.get((key, DELTA))
            if delta is not None:
                rows = self.pack.decode(delta[2])
                self.delta[key] = length(rows)
                self.delta_rows[key] = rows
                parts.append(rows)
                owners.append(np.full(length(rows), key, dtype=object))
        if not parts:
            return self.pack.empty(), np.empty(0, dtype=object)
        return concat(parts, self.pack.names), np.concatenate(owners)

    def needs_merge(self, key: str, added: int) -> bool:
        """Whether writing ``added`` more rows for ``key`` should merge its delta into its base."""
        base_rows, written_ms = self.base.get(key, (0, 0))
        if key not in self.base:
            return True
        delta = self.delta.get(key, 0) + added
        return delta >= max(MIN_DELTA_ROWS, base_rows // 4) or self.now_ms - written_ms >= BASE_REFRESH_MS

    def write(self, key: str, added: Columns, merged: Columns | None) -> int:
        """Store ``key``'s new rows: appended to its delta, or, with ``merged`` (all its rows to keep, which
        the caller computes when :meth:`needs_merge` says so), as its new base, the delta removed. Returns
        the bytes written."""
        if merged is not None:
            if length(merged):
                data = self.pack.encode(merged)
                self._map.updateValue((key, BASE), (self._count(merged), self.now_ms, data))
            else:
                data = b""
                if key in self.base:
                    self._map.removeKey((key, BASE))
            if key in self.delta:
                self._map.removeKey((key, DELTA))
            return len(data) + len(key)
        rows = concat([self.delta_rows[key], added], self.pack.names) if key in self.delta_rows else added
        data = self.pack.encode(rows)
        self._map.updateValue((key, DELTA), (self._count(rows), self.now_ms, data))
        return len(data) + len(key)

    def frame(self, rows: Columns, owners: np.ndarray, key_column: str) -> pd.DataFrame:
        """Rows with their ids in ``key_column`` (for tests and debugging)."""
        return pd.DataFrame({key_column: owners, **rows})


def group_positions(keys: np.ndarray) -> dict[str, np.ndarray]:
    """Row positions of each distinct key, in first-seen order."""
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return {uniques[i]: order[bounds[i]:bounds[i + 1]] for i in range(len(uniques))}


def select(rows: Columns, positions: np.ndarray) -> Columns:
    """The rows at ``positions``."""
    return take(rows, positions)
