"""Replay producer: a table of transactions (handbook raw schema) -> topics ``transactions`` and ``labels``.

Each transaction in ``[start, end]`` is published at its event time; each label (the row's ``TX_FRAUD``) is
released ``label_delay`` after its transaction (transactions from ``start - label_delay`` on, so that the
labels the stream needs on its first day arrive too), and both streams are merged in event-time order.

Ordering: events are produced in chunks of event time; in each chunk the labels go first and are flushed
(acknowledged by the broker) before the chunk's transactions are produced, so every label released at or
before a transaction's time is produced before it -- the rule under which the stream's features equal the
offline ones (``docs/architecture.md``). Every record's Kafka timestamp is its event time (the
transaction's time, the label's release), as a producer at the card network stamps it; the stream judges
future-dated events against it. Labels carry the transaction's ``terminal_id`` and ``customer_id`` (the
label contract's routing fields).

Values are passed through as they are in the input (a non-numeric amount stays a string, a missing field is
left out), so bad records reach the stream's validation and are quarantined there, not here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from confluent_kafka import Producer

from frauddetect.config import LABELS_TOPIC, TRANSACTIONS_TOPIC
from frauddetect.data import parse_raw_times
from frauddetect.features import LABEL_DELAY_DAYS

LABEL_SOURCE = "replayed_ground_truth"


@dataclass
class ReplayPlan:
    """The merged event stream, in the order it is produced.

    ``events``: one row per event with ``kind`` ('label' | 'transaction'), ``event_time`` (UTC), ``key``
    (str), ``value`` (JSON str), ``timestamp_ms`` (the record's Kafka timestamp, int64 ms) and
    ``transaction_id`` (the id the event is about, as in the input).
    """

    events: pd.DataFrame
    n_transactions: int
    n_labels: int


def _json_value(v):
    """A raw cell as JSON: numbers stay numbers when they parse, the rest is passed through as given."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, pd.Timestamp):
        return v.tz_localize("UTC").isoformat().replace("+00:00", "Z") if v.tzinfo is None else v.isoformat()
    return v


def _transaction_json(row: dict) -> str:
    fields = {
        "transaction_id": row.get("TRANSACTION_ID"),
        "tx_datetime": row.get("TX_DATETIME"),
        "customer_id": row.get("CUSTOMER_ID"),
        "terminal_id": row.get("TERMINAL_ID"),
        "tx_amount": row.get("TX_AMOUNT"),
    }
    out = {}
    for name, v in fields.items():
        v = _json_value(v)
        if v is None or v == "":
            continue  # a missing field stays missing: the stream quarantines the record
        if name in ("transaction_id", "customer_id", "terminal_id"):
            v = str(v)
        elif name == "tx_amount" and isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass  # non-numeric amount passed on for the stream to reject
        elif name == "tx_datetime" and isinstance(v, str):
            try:
                ts = pd.Timestamp(v)
                v = (ts.tz_localize("UTC") if ts.tzinfo is None else ts).isoformat().replace("+00:00", "Z")
            except ValueError:
                pass  # unparseable time passed on as is
        out[name] = v
    return json.dumps(out, separators=(",", ":"))


def plan_replay(
    raw: pd.DataFrame,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    label_delay_days: int = LABEL_DELAY_DAYS,
) -> ReplayPlan:
    """Build the merged, event-time-ordered stream for the window ``[start, end]`` (end day inclusive).

    ``raw``: handbook raw schema; ``TX_FRAUD`` is needed for labels (rows without it get no label).
    Rows whose time does not parse are always published (for the stream to quarantine), at their position
    in the input: the previous row's time, clipped into the window.
    """
    start_ts = pd.Timestamp(start, tz="UTC")
    end_ts = pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    delay = pd.Timedelta(days=label_delay_days)
    times = parse_raw_times(raw["TX_DATETIME"])
    bad_time = times.isna()
    # A row whose time does not parse cannot be placed in event time: it keeps its place in the input
    # (the previous row's time, clipped into the window) and is always replayed, so the stream quarantines
    # it rather than it vanishing here.
    order_time = times.ffill().fillna(start_ts)
    order_time = order_time.where(~bad_time, order_time.clip(start_ts, end_ts - pd.Timedelta(microseconds=1)))
    in_window = ((times >= start_ts) & (times < end_ts)) | bad_time
    tx = raw[in_window.to_numpy()]
    tx_time = order_time[in_window.to_numpy()]
    tx_events = pd.DataFrame(
        {
            "kind": "transaction",
            "event_time": tx_time.to_numpy(),
            "rank": 1,
            "pos": np.arange(len(tx)),
            "key": tx["CUSTOMER_ID"].astype(str).to_numpy(),
            "value": [_transaction_json(r) for r in tx.to_dict("records")],
            "transaction_id": tx["TRANSACTION_ID"].astype(str).to_numpy(),
        }
    )
    label_events = pd.DataFrame(columns=["kind", "event_time", "rank", "pos", "key", "value", "transaction_id"])
    if "TX_FRAUD" in raw.columns:
        fraud = pd.to_numeric(raw["TX_FRAUD"], errors="coerce")
        release = times + delay
        ok = times.notna() & fraud.isin([0, 1]) & (times >= start_ts - delay) & (release < end_ts)
        lab = raw[ok.to_numpy()]
        rel = release[ok.to_numpy()]
        iso = rel.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_numpy()
        ids = lab["TRANSACTION_ID"].astype(str).to_numpy()
        terminals = lab["TERMINAL_ID"].astype(str).to_numpy()
        customers = lab["CUSTOMER_ID"].astype(str).to_numpy()
        flags = fraud[ok.to_numpy()].astype(int).to_numpy()
        label_events = pd.DataFrame(
            {
                "kind": "label",
                "event_time": rel.to_numpy(),
                "rank": 0,  # a label released at t is known to a transaction at t
                "pos": np.arange(len(lab)),
                "key": ids,
                "value": [
                    json.dumps({"transaction_id": i, "tx_fraud": int(f), "labeled_at": t, "source": LABEL_SOURCE,
                                "terminal_id": m, "customer_id": c}, separators=(",", ":"))
                    for i, f, t, m, c in zip(ids, flags, iso, terminals, customers)
                ],
                "transaction_id": ids,
            }
        )
    events = pd.concat([label_events, tx_events], ignore_index=True)
    events = events.sort_values(["event_time", "rank", "pos"], kind="stable").reset_index(drop=True)
    events["timestamp_ms"] = pd.to_datetime(events["event_time"], utc=True).dt.as_unit("ms").astype("int64")
    return ReplayPlan(events=events[["kind", "event_time", "key", "value", "timestamp_ms", "transaction_id"]],
                      n_transactions=len(tx_events), n_labels=len(label_events))


@dataclass
class ReplayStats:
    """What the producer did: counts, wall-clock bounds (seconds since epoch) and, per transaction record in
    the order produced, its key and the wall-clock time it was handed to the producer (for latency: the
    records' Kafka timestamps are event times)."""

    transactions: int
    labels: int
    first_produced_at: float
    last_produced_at: float
    produced_at: np.ndarray | None = None


def produce_replay(
    plan: ReplayPlan,
    producer: Producer,
    *,
    rate: float | None = None,
    chunk_transactions: int = 2_000,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Publish ``plan`` in event-time chunks (labels first and flushed, then transactions).

    ``rate``: transactions per second (None = as fast as possible); with a rate, chunks shrink to a tenth
    of a second of traffic so pacing stays smooth. ``on_progress(n)`` is called with the number of
    transactions produced since the last call. Raises RuntimeError if the broker rejects a record.
    """
    errors: list[str] = []

    def delivery(err, msg):
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    if rate:
        chunk_transactions = max(1, min(chunk_transactions, int(rate / 10)))
    kinds = plan.events["kind"].to_numpy()
    keys = plan.events["key"].to_numpy()
    values = plan.events["value"].to_numpy()
    stamps = plan.events["timestamp_ms"].to_numpy(dtype=np.int64)
    produced_at = np.zeros(int((kinds == "transaction").sum()), dtype=np.float64)
    is_tx = kinds == "transaction"
    # chunk boundaries: every `chunk_transactions` transactions
    tx_index = np.cumsum(is_tx) - is_tx
    chunk_of = tx_index // chunk_transactions
    bounds = np.flatnonzero(np.diff(chunk_of)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(kinds)]))
    first = last = None
    sent_tx = 0
    t0 = time.monotonic()
    for s, e in zip(starts, ends):
        sel = np.arange(s, e)
        labels = sel[~is_tx[s:e]]
        for i in labels:
            producer.produce(LABELS_TOPIC, key=keys[i], value=values[i], timestamp=int(stamps[i]),
                             on_delivery=delivery)
        if len(labels):
            producer.flush()
        for i in sel[is_tx[s:e]]:
            if rate:
                wait = t0 + sent_tx / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            while True:
                try:
                    producer.produce(TRANSACTIONS_TOPIC, key=keys[i], value=values[i], timestamp=int(stamps[i]),
                                     on_delivery=delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.05)
            now = time.time()
            produced_at[sent_tx] = now
            first = first or now
            last = now
            sent_tx += 1
        producer.poll(0)
        if on_progress:
            on_progress(int(is_tx[s:e].sum()))
        if errors:
            raise RuntimeError(f"broker rejected {len(errors)} record(s), first: {errors[0]}")
    producer.flush()
    if errors:
        raise RuntimeError(f"broker rejected {len(errors)} record(s), first: {errors[0]}")
    return ReplayStats(
        transactions=sent_tx,
        labels=int((~is_tx).sum()),
        first_produced_at=first or time.time(),
        last_produced_at=last or time.time(),
        produced_at=produced_at,
    )
