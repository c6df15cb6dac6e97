"""The terminal operator: labels, the terminal windows with the label delay and the terminal sequence features,
keyed by a shard of terminal ids.

``transformWithStateInPandas`` grouped by ``terminal_shard`` over the union of the card operator's output and
the parsed labels. State is keyed by ``terminal_id`` inside the shard
(:class:`~frauddetect.stream.keyed_state.KeyedHistory`): each terminal's transactions of the last 37 days
(:data:`~frauddetect.features.TERMINAL_RETENTION_US`) before the watermark, each with its latest label; one
value per shard holds the labels whose transaction has not been seen yet and the newest watermark the shard
saw. Per micro-batch and shard, for the terminals the micro-batch touches:

1. the micro-batch's transactions join the history;
2. labels, the waiting ones first, then the micro-batch's in order of ``labeled_at`` (then arrival), are
   matched to a held transaction by (``terminal_id``, ``transaction_id``). A label identical to the
   transaction's current label is quarantined as a duplicate; otherwise it is written to the lake, and it
   replaces the current label unless that one has a later ``labeled_at``. A label whose transaction is not
   held waits, because its transaction may still come (a source that caps the transactions topic reads
   labels ahead of it); once the watermark has passed its ``labeled_at`` the transaction cannot come any
   more (it would be late) and the label is quarantined;
3. the micro-batch's transactions get the 10 terminal features (:func:`frauddetect.features.terminal_features`),
   which count a fraud for a transaction at time t only if its ``labeled_at`` <= t; rows the watermark has left
   37 days behind are dropped when the terminal is written, and a terminal nobody uses expires with the
   state's time to live.

The watermark comes in the rows: the card operator runs in processing-time mode, which passes no watermark
downstream, so it writes the one it used on every row, and each shard remembers the newest it saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle

from frauddetect.features import NO_LABEL, TERMINAL_FEATURE_COLUMNS, TERMINAL_RETENTION_US, terminal_features
from frauddetect.stream.card import SHARD_STATE_NAME, SHARD_STATE_SCHEMA, Stopwatch, stats_rows, write_histories
from frauddetect.stream.columns import (Columns, as_int, concat, from_frame, full, length, nulls, pair_index, take,
                                         to_frame)
from frauddetect.stream.keyed_state import MAP_KEY_SCHEMA, MAP_STATE_NAME, MAP_VALUE_SCHEMA, KeyedHistory, RowPack
from frauddetect.stream.records import LABEL, QUARANTINE, STATS, STREAM_COLUMNS, TRANSACTION

TERMINAL_ROWS = RowPack({"transaction_id": object, "time_us": np.int64, "tx_fraud": np.int8,
                         "labeled_at_us": np.int64, "label_source": object, "update": np.int8})
"""A terminal's state rows (the terminal is the state key): ``update`` 0, a held transaction with its label
(``labeled_at_us`` = NO_LABEL without one); ``update`` 1, a later label of the transaction with that id (in
a delta, applied in order; a merge folds them into the transactions)."""
TERMINAL_COLUMNS = ["terminal_id", "transaction_id", "time_us", "tx_fraud", "labeled_at_us", "label_source"]
TERMINAL_STATE_TTL_MS = (TERMINAL_RETENTION_US // 1000) + 86_400_000
"""A terminal untouched for this long (processing time: 37 days + 1) leaves the state."""

LABEL_FIELDS = ("transaction_id", "terminal_id", "customer_id", "tx_fraud", "labeled_at_us", "label_source",
                "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp_us")
WAITING_LABELS = RowPack({"transaction_id": object, "terminal_id": object, "customer_id": object,
                          "tx_fraud": np.int32, "labeled_at_us": np.int64, "label_source": object,
                          "kafka_topic": object, "kafka_partition": np.int32, "kafka_offset": np.int64,
                          "kafka_timestamp_us": np.int64})
"""Labels waiting for their transaction, in arrival order."""

UNKNOWN_TRANSACTION = ("label for an unknown transaction: no such transaction on this terminal in the last 37 days, "
                       "and the watermark has passed the label's labeled_at")
DUPLICATE_LABEL = "duplicate label: the transaction already has this label"


def label_json(labels: Columns) -> list[bytes]:
    """The contract's JSON of parsed labels (for quarantine rows made after parsing)."""
    stamps = np.datetime_as_string(as_int(labels["labeled_at_us"]).astype("datetime64[us]"), unit="us")
    return [
        json.dumps({"transaction_id": t, "tx_fraud": int(f), "labeled_at": f"{s}Z", "source": src,
                    "terminal_id": m, "customer_id": c}, separators=(",", ":")).encode()
        for t, f, s, src, m, c in zip(labels["transaction_id"], labels["tx_fraud"], stamps, labels["label_source"],
                                      labels["terminal_id"], labels["customer_id"])
    ]


def first_match(terminals: np.ndarray, ids: np.ndarray, find_terminals: np.ndarray, find_ids: np.ndarray) -> np.ndarray:
    """For each (terminal, transaction id) to find, the position of its first occurrence among the held
    ones, -1 if none (the same id can be held twice when two cards used it at one terminal)."""
    held = pair_index(terminals, ids)
    wanted = pair_index(find_terminals, find_ids)
    if held.is_unique:
        return held.get_indexer(wanted)
    first = held[~held.duplicated(keep="first")]
    positions = np.flatnonzero(~held.duplicated(keep="first"))
    found = first.get_indexer(wanted)
    return np.where(found >= 0, positions[np.maximum(found, 0)], -1)


def materialize(rows: Columns, owners: np.ndarray) -> Columns:
    """A terminal history as its transactions with their current labels (:data:`TERMINAL_COLUMNS`): the
    label updates among ``rows`` (:data:`TERMINAL_ROWS`, ``owners`` the terminal of each) applied in order."""
    update = rows["update"].astype(bool)
    tx = {"terminal_id": owners[~update], **{c: rows[c][~update] for c in TERMINAL_COLUMNS[1:]}}
    if not update.any():
        return tx
    tx["tx_fraud"] = tx["tx_fraud"].astype(np.int8)
    tx["labeled_at_us"] = tx["labeled_at_us"].astype(np.int64)
    tx["label_source"] = tx["label_source"].astype(object)
    target = first_match(tx["terminal_id"], tx["transaction_id"], owners[update], rows["transaction_id"][update])
    for i, t in enumerate(target):  # in the order they were applied; the last one per transaction wins
        if t >= 0:
            tx["tx_fraud"][t] = rows["tx_fraud"][update][i]
            tx["labeled_at_us"][t] = rows["labeled_at_us"][update][i]
            tx["label_source"][t] = rows["label_source"][update][i]
    return tx


@dataclass
class TerminalStep:
    """What one micro-batch does to one terminal shard: ``output`` rows (STREAM_SCHEMA columns); ``held``,
    the touched terminals' transactions after it (:data:`TERMINAL_COLUMNS`: those held before, then the new
    ones, labels applied); the positions in ``held`` of the new transactions and of the held ones whose
    label changed; the labels still ``waiting``."""

    output: Columns
    held: Columns
    new: np.ndarray
    relabelled: np.ndarray
    waiting: Columns
    labels_received: int


def _quarantine_labels(labels: Columns, reason: str, watermark_us: int) -> Columns:
    n = length(labels)
    return {"kind": full(n, QUARANTINE),
            **{c: labels[c] for c in ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp_us")},
            "reason": full(n, reason), "raw_key": np.array([t.encode() for t in labels["transaction_id"]], dtype=object),
            "raw_value": np.array(label_json(labels), dtype=object), "watermark_us": full(n, watermark_us, np.int64)}


def terminal_step(held: Columns, waiting: Columns, batch: Columns, watermark_us: int) -> TerminalStep:
    """Labels and terminal features for one micro-batch of one terminal shard (pure).

    ``held``: the touched terminals' rows (:data:`TERMINAL_COLUMNS`); ``waiting``: labels waiting for their
    transaction (:data:`LABEL_FIELDS`); ``batch``: the shard's rows of
    :data:`~frauddetect.stream.records.STREAM_SCHEMA` (transactions with card features, labels, quarantine,
    stats); ``watermark_us``: the watermark in force. Returns a :class:`TerminalStep`.
    """
    kind = batch["kind"]
    tx = take(batch, kind == TRANSACTION)
    new_labels = {c: batch[c][kind == LABEL] for c in LABEL_FIELDS}
    passthrough = take(batch, (kind == QUARANTINE) | (kind == STATS))
    n_tx = length(tx)
    new_rows = {"terminal_id": tx["terminal_id"], "transaction_id": tx["transaction_id"],
                "time_us": as_int(tx["time_us"]), "tx_fraud": np.zeros(n_tx, dtype=np.int8),
                "labeled_at_us": full(n_tx, NO_LABEL, np.int64), "label_source": nulls(n_tx)}
    n_held = length(held)
    rows = concat([held, new_rows], TERMINAL_COLUMNS)

    # labels: the waiting ones arrived first; new ones in arrival order; all in order of labeled_at
    arrival = np.lexsort((as_int(new_labels["kafka_offset"]), as_int(new_labels["kafka_partition"])))
    labels = concat([waiting, take(new_labels, arrival)], LABEL_FIELDS)
    lab_at = as_int(labels["labeled_at_us"])
    order = np.lexsort((np.arange(len(lab_at)), lab_at))
    labels = take(labels, order)
    lab_at = lab_at[order]
    target = first_match(rows["terminal_id"], rows["transaction_id"], labels["terminal_id"], labels["transaction_id"])
    found = target >= 0

    fraud = rows["tx_fraud"].astype(np.int8)
    labeled_at = rows["labeled_at_us"].astype(np.int64)
    source = rows["label_source"].astype(object)
    duplicate = np.zeros(len(target), dtype=bool)
    changed: set[int] = set()
    lab_fraud = as_int(labels["tx_fraud"])
    lab_source = labels["label_source"]
    for i in np.flatnonzero(found):  # few labels per shard and batch; in labeled_at order
        t = target[i]
        if fraud[t] == lab_fraud[i] and labeled_at[t] == lab_at[i] and source[t] == lab_source[i]:
            duplicate[i] = True
        elif labeled_at[t] == NO_LABEL or lab_at[i] >= labeled_at[t]:
            fraud[t], labeled_at[t], source[t] = lab_fraud[i], lab_at[i], lab_source[i]
            changed.add(int(t))
    rows.update(tx_fraud=fraud, labeled_at_us=labeled_at, label_source=source)

    unknown = ~found
    expired = unknown & (lab_at < watermark_us)
    still = take(labels, unknown & ~expired)
    still = take(still, np.lexsort((as_int(still["kafka_offset"]), as_int(still["kafka_partition"]))))
    applied = take(labels, found & ~duplicate)

    query = np.zeros(length(rows), dtype=bool)
    query[n_held:] = True
    feats = terminal_features(rows["terminal_id"], rows["transaction_id"], rows["time_us"].astype(np.int64),
                              fraud, labeled_at, query)
    scored = dict(tx)
    scored.update({c: feats[c].to_numpy() for c in TERMINAL_FEATURE_COLUMNS})
    out_labels = {"kind": full(length(applied), LABEL), **applied,
                  "watermark_us": full(length(applied), watermark_us, np.int64)}
    output = concat([scored, out_labels,
                     _quarantine_labels(take(labels, duplicate), DUPLICATE_LABEL, watermark_us),
                     _quarantine_labels(take(labels, expired), UNKNOWN_TRANSACTION, watermark_us),
                     passthrough], STREAM_COLUMNS)
    relabelled = np.array(sorted(t for t in changed if t < n_held), dtype=np.int64)
    return TerminalStep(output=output, held=rows, new=np.arange(n_held, length(rows)), relabelled=relabelled,
                        waiting=still, labels_received=length(new_labels))


class TerminalOperator(StatefulProcessor):
    """The terminal operator's ``StatefulProcessor`` (processing-time mode; see the module doc).

    ``bootstrap_watermark_us``: the lowest watermark (as for the card operator).
    """

    def __init__(self, bootstrap_watermark_us: int):
        self.bootstrap_watermark_us = int(bootstrap_watermark_us)

    def init(self, handle: StatefulProcessorHandle) -> None:
        self._map = handle.getMapState(MAP_STATE_NAME, MAP_KEY_SCHEMA, MAP_VALUE_SCHEMA, TERMINAL_STATE_TTL_MS)
        self._shard = handle.getValueState(SHARD_STATE_NAME, SHARD_STATE_SCHEMA)
        self._waiting = handle.getValueState("waiting", "labels binary")

    def _store(self, history: KeyedHistory, held: Columns, new: np.ndarray, relabelled: np.ndarray,
               watermark_us: int) -> tuple[int, int]:
        names = TERMINAL_ROWS.names
        added = concat([{**take(held, new), "update": np.zeros(len(new), dtype=np.int8)},
                        {**take(held, relabelled), "update": np.ones(len(relabelled), dtype=np.int8)}],
                       ["terminal_id", *names])
        current = {**{c: held[c] for c in names if c != "update"}, "update": np.zeros(length(held), dtype=np.int8)}
        cutoff = watermark_us - TERMINAL_RETENTION_US
        return write_histories(history, {c: added[c] for c in names}, added["terminal_id"], current,
                               held["terminal_id"], lambda rows: rows["time_us"].astype(np.int64) > cutoff)

    def handleInputRows(self, key, rows, timerValues) -> Iterator[pd.DataFrame]:
        clock = Stopwatch()
        batch = from_frame(pd.concat(list(rows), ignore_index=True))
        stored = self._shard.get()
        meta = json.loads(stored[0]) if stored else {}
        stored_waiting = self._waiting.get()
        waiting = WAITING_LABELS.decode(stored_waiting[0]) if stored_waiting else WAITING_LABELS.empty()
        carried = [int(w) for w in batch["watermark_us"] if w is not None and w == w]
        watermark = max(max(carried, default=0), int(meta.get("watermark_us", 0)), self.bootstrap_watermark_us)
        kind = batch["kind"]
        terminals = pd.unique(batch["terminal_id"][(kind == TRANSACTION) | (kind == LABEL)])
        history = KeyedHistory(self._map, TERMINAL_ROWS, count=lambda r: int((r["update"] == 0).sum()))
        clock.lap("terminal_input_ms")
        held_rows, owners = history.read(terminals, meta.get("ids"))
        clock.lap("terminal_read_ms")
        step = terminal_step(materialize(held_rows, owners), waiting, batch, watermark)
        clock.lap("terminal_compute_ms")
        written, created = self._store(history, step.held, step.new, step.relabelled, watermark)
        new_meta = {**meta, "watermark_us": watermark, "ids": int(meta.get("ids", 0)) + created}
        if new_meta != meta:
            self._shard.update((json.dumps(new_meta),))
        n_waiting, n_before = length(step.waiting), length(waiting)
        if n_waiting:
            data = WAITING_LABELS.encode(step.waiting)
            self._waiting.update((data,))
            written += len(data)
        elif n_before:
            self._waiting.clear()
        clock.lap("terminal_write_ms")
        stats = stats_rows({"labels_received": step.labels_received, "labels_waiting_delta": n_waiting - n_before,
                            "terminal_state_bytes_written": written, "terminal_keys_read": len(terminals),
                            **clock.laps})
        yield to_frame(concat([step.output, stats], STREAM_COLUMNS), STREAM_COLUMNS)

    def handleInitialState(self, key, initialState, timerValues) -> None:
        stored = self._shard.get()
        meta = json.loads(stored[0]) if stored else {}
        rows = from_frame(initialState, TERMINAL_COLUMNS)
        history = KeyedHistory(self._map, TERMINAL_ROWS, count=lambda r: int((r["update"] == 0).sum()))
        held_rows, owners = history.read(pd.unique(rows["terminal_id"]), meta.get("ids"))
        held = concat([materialize(held_rows, owners), rows], TERMINAL_COLUMNS)
        n_old = len(owners) - int(held_rows["update"].astype(bool).sum()) if len(owners) else 0
        _, created = self._store(history, held, np.arange(n_old, length(held)), np.empty(0, dtype=np.int64),
                                 self.bootstrap_watermark_us)
        if created:
            self._shard.update((json.dumps({**meta, "ids": int(meta.get("ids", 0)) + created}),))

    def close(self) -> None:
        pass
