"""Runs the streaming job's stages in one process, without Spark, for unit tests of their logic.

The real stage functions and ``StatefulProcessor`` classes run here; Spark's parts are replaced by the least
that keeps its semantics: state in dicts (``MapState``/``ValueState`` with the calls the operators make), the
shuffle as a group-by on the shard, and the watermark as Spark computes it (the newest event time of earlier
micro-batches minus the delay, ``withWatermark`` ignoring null event times). The Spark engine itself is
covered by the functional and end-to-end tests.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd

from frauddetect.stream.card import CardOperator
from frauddetect.stream.lake import lake_frames
from frauddetect.stream.parse import parse_label_records, parse_transaction_records
from frauddetect.stream.records import QUARANTINE, STREAM_COLUMNS
from frauddetect.stream.score import score_rows
from frauddetect.stream.terminal import TerminalOperator


class MapState:
    """The ``MapState`` calls the operators make, on a dict."""

    def __init__(self):
        self.data: dict[tuple, tuple] = {}
        self.calls = 0

    def getValue(self, key):
        self.calls += 1
        return self.data.get(tuple(key))

    def updateValue(self, key, value):
        self.calls += 1
        self.data[tuple(key)] = tuple(value)

    def removeKey(self, key):
        self.calls += 1
        self.data.pop(tuple(key), None)

    def iterator(self):
        self.calls += 1
        return iter(list(self.data.items()))


class ValueState:
    def __init__(self):
        self.value = None

    def get(self):
        return self.value

    def update(self, value):
        self.value = tuple(value)

    def clear(self):
        self.value = None


class Handle:
    """A ``StatefulProcessorHandle`` for one grouping key: its state variables by name."""

    def __init__(self):
        self.maps: dict[str, MapState] = {}
        self.values: dict[str, ValueState] = {}

    def getMapState(self, name, key_schema, value_schema, ttl_ms=None):
        return self.maps.setdefault(name, MapState())

    def getValueState(self, name, schema, ttl_ms=None):
        return self.values.setdefault(name, ValueState())


class Timers:
    def __init__(self, watermark_ms: int):
        self.watermark_ms = watermark_ms

    def getCurrentWatermarkInMs(self) -> int:
        return self.watermark_ms


def shard(value, shards: int) -> int:
    """A stable shard of an id (the job uses Spark's xxhash64; any stable hash keeps the semantics)."""
    return zlib.crc32(str(value).encode()) % shards


def kafka_records(values: list[bytes | None], topic: str, partition: int = 0, start_offset: int = 0,
                  timestamps_ms: list[int] | None = None, keys: list[bytes] | None = None) -> pd.DataFrame:
    """Rows with the Kafka source's columns."""
    n = len(values)
    stamps = timestamps_ms if timestamps_ms is not None else [1_800_000_000_000] * n
    return pd.DataFrame({
        "key": keys if keys is not None else [b"k"] * n,
        "value": values,
        "topic": topic,
        "partition": np.full(n, partition, dtype=np.int32),
        "offset": np.arange(start_offset, start_offset + n, dtype=np.int64),
        "timestamp": pd.to_datetime(np.asarray(stamps, dtype=np.int64), unit="ms", utc=True),
        "timestampType": np.zeros(n, dtype=np.int32),
    })


def transaction(tid, when, amount=10.0, customer="c1", terminal="t1", **extra) -> bytes:
    return json.dumps({"transaction_id": tid, "tx_datetime": when, "customer_id": customer, "terminal_id": terminal,
                       "tx_amount": amount, **extra}).encode()


def label(tid, fraud, labeled_at, terminal="t1", customer="c1", source="chargeback") -> bytes:
    return json.dumps({"transaction_id": tid, "tx_fraud": fraud, "labeled_at": labeled_at, "source": source,
                       "terminal_id": terminal, "customer_id": customer}).encode()


class AmountScorer:
    """A transparent stand-in model: the score rises with the amount (0.5 at 100)."""

    model_version = "test-1"

    def score(self, x):
        return 1 / (1 + np.exp(-(x[:, 0] - 100) / 10))


class LocalJob:
    """The job's stages on one process: :meth:`run` is one micro-batch.

    ``history``: an initial-state table (the columns of ``frauddetect.stream.bootstrap.HISTORY_SCHEMA``).
    """

    def __init__(self, allowed_lateness_s: int = 86_400, max_clock_skew_s: int = 300, card_shards: int = 4,
                 terminal_shards: int = 4, scorer=None, threshold: float = 0.5, history: pd.DataFrame | None = None):
        self.lateness_us = allowed_lateness_s * 1_000_000
        self.skew_us = max_clock_skew_s * 1_000_000
        self.card_shards, self.terminal_shards = card_shards, terminal_shards
        self.scorer = scorer or AmountScorer()
        self.threshold = threshold
        boot = 0
        if history is not None and len(history):
            boot = max(int(history["time_us"].max()) - self.lateness_us, 0)
        self.card = CardOperator(boot, self.lateness_us)
        self.terminal = TerminalOperator(boot)
        self.card_handles: dict[int, Handle] = {}
        self.terminal_handles: dict[int, Handle] = {}
        self.max_event_us: int | None = None
        self.batches = 0
        if history is not None and len(history):
            self._bootstrap(history)

    def _handle(self, handles: dict[int, Handle], processor, key: int) -> Handle:
        if key not in handles:
            handles[key] = Handle()
            processor.init(handles[key])
        return handles[key]

    def _bootstrap(self, history: pd.DataFrame) -> None:
        card = history.assign(card_shard=[shard(c, self.card_shards) for c in history["customer_id"]], seq=-1)
        for key, part in card.groupby("card_shard"):
            self.card.init(self._handle(self.card_handles, self.card, key))
            self.card.handleInitialState((key,), part.reset_index(drop=True), Timers(0))
        term = history.assign(terminal_shard=[shard(t, self.terminal_shards) for t in history["terminal_id"]])
        for key, part in term.groupby("terminal_shard"):
            self.terminal.init(self._handle(self.terminal_handles, self.terminal, key))
            self.terminal.handleInitialState((key,), part.reset_index(drop=True), Timers(0))

    def watermark_ms(self) -> int:
        """Spark's watermark for the next micro-batch (ms)."""
        if self.max_event_us is None:
            return 0
        return max((self.max_event_us - self.lateness_us) // 1000, 0)

    def run(self, transactions: pd.DataFrame | None = None, labels: pd.DataFrame | None = None) -> dict:
        """One micro-batch of Kafka records. Returns ``{"rows": scored rows, "lake": lake frames}``."""
        timers = Timers(self.watermark_ms())
        parsed = parse_transaction_records(transactions, self.skew_us) if transactions is not None else None
        carded = []
        if parsed is not None and len(parsed):
            parsed["card_shard"] = [shard(c, self.card_shards) if k != QUARANTINE else int(o) % self.card_shards
                                    for k, c, o in zip(parsed["kind"], parsed["customer_id"], parsed["kafka_offset"])]
            for key, part in parsed.groupby("card_shard"):
                self.card.init(self._handle(self.card_handles, self.card, key))
                carded.extend(self.card.handleInputRows((key,), iter([part.reset_index(drop=True)]), timers))
            events = parsed.loc[parsed["kind"] != QUARANTINE, "time_us"]
            if len(events):
                newest = int(events.max())
                self.max_event_us = newest if self.max_event_us is None else max(self.max_event_us, newest)
        parts = carded + ([parse_label_records(labels, self.skew_us)] if labels is not None else [])
        featured = []
        if parts:
            union = pd.concat(parts, ignore_index=True)[list(STREAM_COLUMNS)]
            union["terminal_shard"] = [shard(t, self.terminal_shards) if t is not None else 0
                                       for t in union["terminal_id"]]
            for key, part in union.groupby("terminal_shard"):
                self.terminal.init(self._handle(self.terminal_handles, self.terminal, key))
                featured.extend(self.terminal.handleInputRows((key,), iter([part.reset_index(drop=True)]), timers))
        self.batches += 1
        if not featured:
            return {"rows": pd.DataFrame(columns=list(STREAM_COLUMNS)), "lake": {}}
        rows = score_rows(pd.concat(featured, ignore_index=True), self.scorer, self.threshold, retries=0)
        return {"rows": rows, "lake": lake_frames(rows, 1_800_000_000_000_000)}

    def state_calls(self) -> int:
        """How many MapState calls the operators made so far (the cost of the state layout)."""
        return sum(m.calls for h in [*self.card_handles.values(), *self.terminal_handles.values()]
                   for m in h.maps.values())

    def held_rows(self) -> dict[str, int]:
        """Transactions held per operator (the ``rows`` stored with each value)."""
        out = {}
        for name, handles in (("card", self.card_handles), ("terminal", self.terminal_handles)):
            out[name] = sum(v[0] for h in handles.values() for m in h.maps.values() for v in m.data.values())
        return out


def partition_of(key: str, partitions: int) -> int:
    """A stable partition for a record key (the broker's murmur2 is not needed for the semantics)."""
    return zlib.crc32(key.encode()) % partitions


class PlannedTopics:
    """A replay plan's records as they lie in a broker's topic-partitions, read in micro-batches planned as
    Spark's Kafka source plans them: at each trigger every topic-partition's end is taken at one moment, the
    transactions' cap is spread over their partitions in proportion to lag (the real
    :func:`~frauddetect.stream.source_options.rate_limit`), and labels are read uncapped, planned after the
    transactions (the job's source order).

    ``events``: :attr:`frauddetect.replay.ReplayPlan.events` (produced in that order).
    """

    def __init__(self, events: pd.DataFrame, partitions: dict[str, int] | None = None):
        partitions = partitions or {"transactions": 4, "labels": 2}
        topic = np.where(events["kind"].to_numpy() == "transaction", "transactions", "labels")
        part = np.array([partition_of(k, partitions[t]) for k, t in zip(events["key"], topic)], dtype=np.int32)
        frame = pd.DataFrame({"topic": topic, "partition": part, "key": events["key"].str.encode("utf-8"),
                              "value": events["value"].str.encode("utf-8"),
                              "timestamp_ms": events["timestamp_ms"].to_numpy(np.int64)})
        frame["offset"] = frame.groupby(["topic", "partition"]).cumcount().astype(np.int64)
        frame["produced"] = np.arange(len(frame))
        self.records = frame
        self.by_partition = {tp: g.reset_index(drop=True) for tp, g in frame.groupby(["topic", "partition"])}
        self.next = {tp: 0 for tp in self.by_partition}

    def _ends(self, produced: int) -> dict[tuple[str, int], int]:
        return {tp: int(np.searchsorted(g["produced"].to_numpy(), produced)) for tp, g in self.by_partition.items()}

    def _read(self, topic: str, ends: dict[tuple[str, int], int]) -> pd.DataFrame | None:
        parts = []
        for tp, end in ends.items():
            if tp[0] == topic and end > self.next[tp]:
                parts.append(self.by_partition[tp].iloc[self.next[tp]:end])
                self.next[tp] = end
        if not parts:
            return None
        rows = pd.concat(parts, ignore_index=True)
        return pd.DataFrame({
            "key": rows["key"], "value": rows["value"], "topic": topic, "partition": rows["partition"],
            "offset": rows["offset"], "timestamp": pd.to_datetime(rows["timestamp_ms"], unit="ms", utc=True),
            "timestamp_type": np.ones(len(rows), dtype=np.int32)}).rename(columns={"timestamp_type": "timestampType"})

    def micro_batch(self, produced: int, cap: int | None):
        """The next micro-batch when the first ``produced`` events are in the broker: ``(transactions,
        labels)`` Kafka-record frames (None where empty)."""
        from frauddetect.stream.source_options import rate_limit

        ends = self._ends(produced)
        tx_ends = {tp: e for tp, e in ends.items() if tp[0] == "transactions"}
        if cap:
            tx_ends = rate_limit(cap, {tp: self.next[tp] for tp in tx_ends}, tx_ends)
        transactions = self._read("transactions", tx_ends)
        labels = self._read("labels", {tp: e for tp, e in ends.items() if tp[0] == "labels"})
        return transactions, labels

    def drained(self) -> bool:
        """Whether every record has been read."""
        return all(self.next[tp] == len(g) for tp, g in self.by_partition.items())

    def drained_up_to(self, produced: int) -> bool:
        """Whether every record of the first ``produced`` events has been read."""
        return all(self.next[tp] >= e for tp, e in self._ends(produced).items())


def history_frame(tx: pd.DataFrame, cut: pd.Timestamp, days: int = 38, label_delay_days: int = 7) -> pd.DataFrame:
    """An initial-state history (the columns of ``frauddetect.stream.bootstrap.HISTORY_SCHEMA``) from the
    transactions (canonical columns with ``tx_fraud``) of the ``days`` before ``cut``, with the labels known at
    ``cut`` (released ``label_delay_days`` after their transaction), as the demo's bootstrap file gives it."""
    from frauddetect.features import NO_LABEL, to_epoch_us

    before = tx[(tx["tx_datetime"] < cut) & (tx["tx_datetime"] >= cut - pd.Timedelta(days=days))]
    time_us = to_epoch_us(before["tx_datetime"])
    released = time_us + label_delay_days * 86_400_000_000
    known = released <= to_epoch_us(pd.Series([cut]))[0]
    return pd.DataFrame({
        "transaction_id": before["transaction_id"].astype(str).to_numpy(),
        "customer_id": before["customer_id"].astype(str).to_numpy(),
        "terminal_id": before["terminal_id"].astype(str).to_numpy(), "time_us": time_us,
        "tx_amount": before["tx_amount"].astype(float).to_numpy(),
        "tx_fraud": np.where(known, before["tx_fraud"], 0).astype(np.int8),
        "labeled_at_us": np.where(known, released, NO_LABEL).astype(np.int64),
        "label_source": np.where(known, "bootstrap", None),
    })
