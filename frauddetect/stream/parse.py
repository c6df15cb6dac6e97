"""Parse and validate stage: Kafka records -> parsed transactions and labels, or quarantine rows with a reason.

Runs on the executors (``mapInPandas``), stateless, one Arrow batch at a time. Every record comes out as one
row, so nothing is lost: a valid event, or a ``quarantine`` row carrying its reason and raw key and value.
Validation is the contract's own (:mod:`frauddetect.schemas`, the pydantic models the Lambdas use too).

Future-dated events: a transaction whose ``tx_datetime`` (or a label whose ``labeled_at``) is more than
``max_clock_skew_us`` ahead of its Kafka record timestamp is quarantined here, before the watermark is taken,
so one record with a wrong clock can never move the watermark and make everybody else's transactions late.
A record without a Kafka timestamp (``timestampType`` -1) is not checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from frauddetect.schemas import parse_labels, parse_transactions
from frauddetect.stream.columns import Columns, concat, from_frame, full, to_frame
from frauddetect.stream.records import (
    LABEL,
    PARSED_TRANSACTION_SCHEMA,
    QUARANTINE,
    STREAM_COLUMNS,
    TRANSACTION,
)

NO_KAFKA_TIMESTAMP = -1
"""``timestampType`` of a record without a timestamp (Java client's NO_TIMESTAMP_TYPE)."""
PARSED_COLUMNS = tuple(PARSED_TRANSACTION_SCHEMA.fieldNames())


def kafka_times_us(records: pd.DataFrame) -> np.ndarray:
    """The records' Kafka timestamps as int64 µs, shape (n,); -1 where a record has none."""
    if len(records) == 0:
        return np.empty(0, dtype=np.int64)
    stamps = pd.to_datetime(records["timestamp"], utc=True)
    us = stamps.dt.as_unit("us").astype("int64").to_numpy(dtype=np.int64, na_value=-1)
    missing = stamps.isna().to_numpy() | (records["timestampType"].fillna(NO_KAFKA_TIMESTAMP).to_numpy()
                                          == NO_KAFKA_TIMESTAMP)
    return np.where(missing, -1, us)


def _iso(us: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(us), "us"), unit="s")) + "Z"


def future_reason(field: str, event_us: np.ndarray, kafka_us: np.ndarray, max_skew_us: int) -> list[str | None]:
    """Per row: why ``field`` is too far in the future, or None. Rows without a Kafka timestamp pass."""
    ahead = (kafka_us >= 0) & (event_us - kafka_us > max_skew_us)
    return [
        f"{field}: {_iso(e)} is {(e - k) / 1e6:,.0f} s ahead of the record's Kafka timestamp {_iso(k)} "
        f"(allowed clock skew {max_skew_us / 1e6:,.0f} s)" if bad else None
        for bad, e, k in zip(ahead, event_us, kafka_us)
    ]


def _kafka(raw: Columns, rows: np.ndarray, kafka_us: np.ndarray) -> Columns:
    return {
        "kafka_topic": raw["topic"][rows].astype(object),
        "kafka_partition": raw["partition"][rows].astype(np.int32),
        "kafka_offset": raw["offset"][rows].astype(np.int64),
        "kafka_timestamp_us": kafka_us[rows],
    }


def _quarantine(raw: Columns, rejected: list[tuple[int, str]], kafka_us: np.ndarray) -> Columns:
    rows = np.array([p for p, _ in rejected], dtype=np.int64)
    return {
        "kind": full(len(rows), QUARANTINE),
        **_kafka(raw, rows, kafka_us),
        "reason": np.array([r for _, r in rejected], dtype=object),
        "raw_key": raw["key"][rows],
        "raw_value": raw["value"][rows],
    }


def _split_future(valid: pd.DataFrame, field_us: str, field: str, kafka_us: np.ndarray, skew_us: int,
                  rejected: list[tuple[int, str]]) -> pd.DataFrame:
    pos = valid["pos"].to_numpy(dtype=np.int64)
    future = future_reason(field, valid[field_us].to_numpy(dtype=np.int64), kafka_us[pos], skew_us)
    ahead = np.array([r is not None for r in future], dtype=bool)
    rejected.extend((int(p), r) for p, r in zip(pos, future) if r is not None)
    return valid.loc[~ahead]


def parse_transaction_records(records: pd.DataFrame, max_clock_skew_us: int) -> pd.DataFrame:
    """One micro-batch slice of ``transactions`` records (Kafka source columns) -> rows of
    :data:`~frauddetect.stream.records.PARSED_TRANSACTION_SCHEMA`, one per record: the valid ones, then the
    quarantined ones."""
    raw = from_frame(records)
    kafka_us = kafka_times_us(records)
    valid, rejected = parse_transactions(list(raw["value"]))
    ok = _split_future(valid, "time_us", "tx_datetime", kafka_us, max_clock_skew_us, rejected)
    rows = ok["pos"].to_numpy(dtype=np.int64)
    time_us = ok["time_us"].to_numpy(dtype=np.int64)
    good = {
        "kind": full(len(ok), TRANSACTION),
        "transaction_id": ok["transaction_id"].to_numpy(dtype=object),
        "customer_id": ok["customer_id"].to_numpy(dtype=object),
        "terminal_id": ok["terminal_id"].to_numpy(dtype=object),
        "time_us": time_us,
        "tx_amount": ok["tx_amount"].to_numpy(dtype=np.float64),
        **_kafka(raw, rows, kafka_us),
        "event_time": time_us.astype("datetime64[us]"),
    }
    out = to_frame(concat([good, _quarantine(raw, rejected, kafka_us)], PARSED_COLUMNS), PARSED_COLUMNS)
    out["event_time"] = pd.to_datetime(out["event_time"]).dt.tz_localize("UTC")
    return out


def parse_label_records(records: pd.DataFrame, max_clock_skew_us: int) -> pd.DataFrame:
    """One micro-batch slice of ``labels`` records -> rows of :data:`~frauddetect.stream.records.STREAM_SCHEMA`
    (kind ``label`` or ``quarantine``), one per record."""
    raw = from_frame(records)
    kafka_us = kafka_times_us(records)
    valid, rejected = parse_labels(list(raw["value"]))
    ok = _split_future(valid, "labeled_at_us", "labeled_at", kafka_us, max_clock_skew_us, rejected)
    rows = ok["pos"].to_numpy(dtype=np.int64)
    good = {
        "kind": full(len(ok), LABEL),
        "transaction_id": ok["transaction_id"].to_numpy(dtype=object),
        "customer_id": ok["customer_id"].to_numpy(dtype=object),
        "terminal_id": ok["terminal_id"].to_numpy(dtype=object),
        "tx_fraud": ok["tx_fraud"].to_numpy(dtype=np.int32),
        "labeled_at_us": ok["labeled_at_us"].to_numpy(dtype=np.int64),
        "label_source": ok["source"].to_numpy(dtype=object),
        **_kafka(raw, rows, kafka_us),
    }
    return to_frame(concat([good, _quarantine(raw, rejected, kafka_us)], STREAM_COLUMNS), STREAM_COLUMNS)


def transaction_parser(max_clock_skew_us: int):
    """The ``mapInPandas`` function of the transactions branch (iterator of Kafka frames -> parsed frames)."""

    def parse(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for records in batches:
            yield parse_transaction_records(records, max_clock_skew_us)

    return parse


def label_parser(max_clock_skew_us: int):
    """The ``mapInPandas`` function of the labels branch."""

    def parse(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for records in batches:
            yield parse_label_records(records, max_clock_skew_us)

    return parse
