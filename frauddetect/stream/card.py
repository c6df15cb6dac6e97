"""The card operator: admission (late events, duplicates) and the card windows, state keyed by card.

``transformWithStateInPandas`` grouped by ``card_shard`` (a hash bucket of ``customer_id``), state keyed by
``customer_id`` inside the shard (:class:`~frauddetect.stream.keyed_state.KeyedHistory`): each card's
transactions of the last 30 days (:data:`~frauddetect.features.CARD_RETENTION_US`) before the watermark. Per
micro-batch and shard, for the cards the micro-batch touches:

1. late: a transaction older than the watermark (Spark's, read from the operator's ``TimerValues``: the
   newest event time of earlier micro-batches minus the allowed lateness; at least the bootstrap's) is
   quarantined. The operator runs in processing-time mode on purpose: in event-time mode Spark drops rows
   behind the watermark before the operator sees them, silently;
2. duplicates: a ``transaction_id`` already held for the same card, or repeated within the micro-batch, is
   quarantined (the first one is kept);
3. the admitted transactions get the 6 card features (:func:`frauddetect.features.card_features`) over the
   card's history and join it; rows the watermark has left 30 days behind are dropped when the card is
   written, and a card nobody uses expires with the state's time to live.

Output rows (:data:`~frauddetect.stream.records.STREAM_SCHEMA`): the admitted transactions with their card
features and the watermark, every quarantine row (passed through from the parse stage or made here), and
``stats`` rows. Ties in time on a card are ordered by arrival (Kafka partition, offset): a card's records
are keyed by the card, so they are all on one partition.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle

from frauddetect.features import CARD_FEATURE_COLUMNS, CARD_RETENTION_US, card_features
from frauddetect.stream.columns import Columns, as_int, concat, from_frame, full, length, pair_index, take, to_frame
from frauddetect.stream.keyed_state import (
    MAP_KEY_SCHEMA,
    MAP_STATE_NAME,
    MAP_VALUE_SCHEMA,
    KeyedHistory,
    RowPack,
    group_positions,
)
from frauddetect.stream.records import QUARANTINE, STATS, STREAM_COLUMNS, TRANSACTION

CARD_ROWS = RowPack({"transaction_id": object, "time_us": np.int64, "tx_amount": np.float64, "seq": np.int64})
"""One held card transaction (the card is the state key): ``seq`` is its arrival order (Kafka partition and
offset; negative for rows from the bootstrap history, which came first)."""
CARD_COLUMNS = ["customer_id", *CARD_ROWS.names]
CARD_STATE_TTL_MS = (CARD_RETENTION_US // 1000) + 86_400_000
"""A card untouched for this long (processing time: 30 days + 1) leaves the state."""
SHARD_STATE_NAME = "shard"
SHARD_STATE_SCHEMA = "meta string"
"""Per shard: how many ids it holds (which tells a bulk read from per-id reads) and, for the terminal
operator, the newest watermark it saw and the labels waiting for their transaction."""
_PARTITION_SHIFT = 44  # offsets stay below 2**44 (17.6 trillion records per partition)
_KAFKA_FIELDS = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp_us")


def arrival_seq(partition: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """int64 arrival order of Kafka records: partition, then offset; shape as the inputs."""
    return (np.asarray(partition, dtype=np.int64) << _PARTITION_SHIFT) | np.asarray(offset, dtype=np.int64)


def iso_us(us: int) -> str:
    """µs since the epoch -> ``2018-08-01T12:00:00Z`` (seconds precision, for messages)."""
    return str(np.datetime_as_string(np.datetime64(int(us), "us"), unit="s")) + "Z"


def transaction_json(rows: Columns) -> list[bytes]:
    """The contract's JSON of parsed transactions (for quarantine rows made after parsing: only the contract's
    fields, so nothing a producer added beside them, such as a card number, is kept)."""
    stamps = np.datetime_as_string(as_int(rows["time_us"]).astype("datetime64[us]"), unit="us")
    return [
        json.dumps({"transaction_id": t, "tx_datetime": f"{s}Z", "customer_id": c, "terminal_id": m,
                    "tx_amount": float(a)}, separators=(",", ":")).encode()
        for t, s, c, m, a in zip(rows["transaction_id"], stamps, rows["customer_id"], rows["terminal_id"],
                                 rows["tx_amount"])
    ]


class Stopwatch:
    """Milliseconds between laps, by name (summed into the job's progress as ``stats`` rows)."""

    def __init__(self):
        self._last = time.perf_counter()
        self.laps: dict[str, int] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0) + round((now - self._last) * 1000)
        self._last = now


def stats_rows(stats: dict[str, int]) -> Columns:
    """``stats`` rows (one per non-zero count) as a column batch of STREAM_SCHEMA columns."""
    items = [(k, int(v)) for k, v in stats.items() if v]
    return {"kind": full(len(items), STATS), "stat": np.array([k for k, _ in items], dtype=object),
            "stat_value": np.array([v for _, v in items], dtype=np.int64)}


@dataclass
class CardStep:
    """What one micro-batch does to one card shard: ``output`` rows (STREAM_SCHEMA columns) and the
    ``admitted`` transactions to add to their cards (:data:`CARD_COLUMNS`)."""

    output: Columns
    admitted: Columns


def card_step(held: Columns, batch: Columns, watermark_us: int, allowed_lateness_us: int) -> CardStep:
    """Admit, deduplicate and featurise one micro-batch of one card shard (pure).

    ``held``: the touched cards' rows (:data:`CARD_COLUMNS`); ``batch``: the shard's parsed rows
    (:data:`~frauddetect.stream.records.PARSED_TRANSACTION_SCHEMA` columns); ``watermark_us``: transactions
    older than this are late. Returns a :class:`CardStep`.
    """
    kind = batch["kind"]
    passthrough = take(batch, kind == QUARANTINE)
    tx = take(batch, kind == TRANSACTION)
    tx["time_us"] = as_int(tx["time_us"])
    tx["seq"] = arrival_seq(as_int(tx["kafka_partition"]), as_int(tx["kafka_offset"]))
    order = np.lexsort((tx["seq"], tx["customer_id"].astype(str)))
    tx = take(tx, order)

    held_keys = pair_index(held["customer_id"], held["transaction_id"])
    keys = pair_index(tx["customer_id"], tx["transaction_id"])
    duplicate = keys.isin(held_keys) | keys.duplicated(keep="first")
    late = ~duplicate & (tx["time_us"] < watermark_us)
    rejected = duplicate | late
    admitted = take(tx, ~rejected)

    rows = concat([held, admitted], CARD_COLUMNS)
    query = np.zeros(length(rows), dtype=bool)
    query[length(held):] = True
    feats = card_features(rows["customer_id"], rows["time_us"].astype(np.int64), rows["tx_amount"].astype(np.float64),
                          rows["seq"].astype(np.int64), query)
    out_tx = {name: admitted[name] for name in ("kind", "transaction_id", "customer_id", "terminal_id", "time_us",
                                                "tx_amount", *_KAFKA_FIELDS)}
    out_tx["watermark_us"] = full(length(admitted), watermark_us, np.int64)
    out_tx.update({c: feats[c].to_numpy() for c in CARD_FEATURE_COLUMNS})

    bad = take(tx, rejected)
    reasons = np.where(duplicate[rejected], "duplicate transaction_id",
                       f"late event: older than the watermark {iso_us(watermark_us)} (the newest event time of "
                       f"earlier micro-batches minus the allowed lateness of {allowed_lateness_us / 1e6:,.0f} s)")
    out_bad = {"kind": full(length(bad), QUARANTINE), **{c: bad[c] for c in _KAFKA_FIELDS},
               "reason": reasons.astype(object),
               "raw_key": np.array([c.encode() for c in bad["customer_id"]], dtype=object),
               "raw_value": np.array(transaction_json(bad), dtype=object),
               "watermark_us": full(length(bad), watermark_us, np.int64)}
    out_pass = {**{c: passthrough[c] for c in ("kind", *_KAFKA_FIELDS, "reason", "raw_key", "raw_value")},
                "watermark_us": full(length(passthrough), watermark_us, np.int64)}
    return CardStep(output=concat([out_tx, out_bad, out_pass], STREAM_COLUMNS),
                    admitted={c: admitted[c] for c in CARD_COLUMNS})


def write_histories(history: KeyedHistory, added: Columns, added_keys: np.ndarray, current: Columns,
                    current_keys: np.ndarray, keep) -> tuple[int, int]:
    """Store each id's ``added`` rows: appended to its delta, or, when
    :meth:`~frauddetect.stream.keyed_state.KeyedHistory.needs_merge` says so, its ``current`` rows (all of its
    rows after this micro-batch) that ``keep`` (rows -> bool mask) keeps, as its new base. Returns
    (bytes written, ids created)."""
    written = created = 0
    current_at = group_positions(current_keys)
    for key, positions in group_positions(added_keys).items():
        merged = None
        if history.needs_merge(key, len(positions)):
            mine = take(current, current_at.get(key, np.empty(0, dtype=np.int64)))
            merged = take(mine, keep(mine))
            created += key not in history.base
        written += history.write(key, take(added, positions), merged)
    return written, created


class CardOperator(StatefulProcessor):
    """The card operator's ``StatefulProcessor`` (processing-time mode; see the module doc).

    ``bootstrap_watermark_us``: the lowest watermark (the newest bootstrap event minus the allowed lateness;
    0 without a bootstrap); ``allowed_lateness_us``: the watermark delay (for messages).
    """

    def __init__(self, bootstrap_watermark_us: int, allowed_lateness_us: int):
        self.bootstrap_watermark_us = int(bootstrap_watermark_us)
        self.allowed_lateness_us = int(allowed_lateness_us)

    def init(self, handle: StatefulProcessorHandle) -> None:
        self._map = handle.getMapState(MAP_STATE_NAME, MAP_KEY_SCHEMA, MAP_VALUE_SCHEMA, CARD_STATE_TTL_MS)
        self._shard = handle.getValueState(SHARD_STATE_NAME, SHARD_STATE_SCHEMA)

    def _watermark_us(self, timer_values) -> int:
        return max(int(timer_values.getCurrentWatermarkInMs()) * 1000, self.bootstrap_watermark_us, 0)

    def _store(self, history: KeyedHistory, added: Columns, held: Columns, held_keys: np.ndarray,
               meta: dict, watermark_us: int) -> int:
        cutoff = watermark_us - CARD_RETENTION_US
        added_rows = {c: added[c] for c in CARD_ROWS.names}
        current = concat([held, added_rows], CARD_ROWS.names)
        written, created = write_histories(history, added_rows, added["customer_id"], current,
                                           np.concatenate([held_keys, added["customer_id"]]),
                                           lambda rows: rows["time_us"].astype(np.int64) > cutoff)
        if created:
            self._shard.update((json.dumps({**meta, "ids": int(meta.get("ids", 0)) + created}),))
        return written

    def handleInputRows(self, key, rows, timerValues) -> Iterator[pd.DataFrame]:
        clock = Stopwatch()
        batch = from_frame(pd.concat(list(rows), ignore_index=True))
        watermark = self._watermark_us(timerValues)
        stored = self._shard.get()
        meta = json.loads(stored[0]) if stored else {}
        cards = pd.unique(batch["customer_id"][batch["kind"] == TRANSACTION])
        history = KeyedHistory(self._map, CARD_ROWS)
        clock.lap("card_input_ms")
        held_rows, owners = history.read(cards, meta.get("ids"))
        clock.lap("card_read_ms")
        step = card_step({"customer_id": owners, **held_rows}, batch, watermark, self.allowed_lateness_us)
        clock.lap("card_compute_ms")
        written = self._store(history, step.admitted, held_rows, owners, meta, watermark)
        clock.lap("card_write_ms")
        stats = stats_rows({"card_state_bytes_written": written, "card_keys_read": len(cards), **clock.laps})
        yield to_frame(concat([step.output, stats], STREAM_COLUMNS), STREAM_COLUMNS)

    def handleInitialState(self, key, initialState, timerValues) -> None:
        stored = self._shard.get()
        meta = json.loads(stored[0]) if stored else {}
        rows = from_frame(initialState, CARD_COLUMNS)
        history = KeyedHistory(self._map, CARD_ROWS)
        held_rows, owners = history.read(pd.unique(rows["customer_id"]), meta.get("ids"))
        self._store(history, rows, held_rows, owners, meta, self.bootstrap_watermark_us)

    def close(self) -> None:
        pass
