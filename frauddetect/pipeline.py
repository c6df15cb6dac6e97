"""One micro-batch of the streaming job, as pure logic: Kafka records in, scored rows, alerts, quarantine out.

Spark, Kafka and S3 stay outside (``frauddetect.streaming`` wires them); this module only needs the feature
state and a scorer, so the same code runs in the Glue job, the local job and the tests.

Event-time policy (``docs/architecture.md``): within a micro-batch, transactions are processed in event
order (time, then Kafka offset). A transaction older than the watermark (newest event time already
processed) minus ``allowed_lateness`` is quarantined as late: it can no longer be featured consistently.
A transaction within the allowed lateness is featured against the state as it is and scored. Labels apply
from their ``labeled_at`` on (see ``frauddetect.features``), whatever micro-batch they arrive in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from frauddetect.config import LABELS_TOPIC, TRANSACTIONS_TOPIC
from frauddetect.features import FEATURE_COLUMNS, FeatureState
from frauddetect.schemas import parse_labels, parse_transactions

log = logging.getLogger(__name__)

US = 1_000_000

SCORED_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    *FEATURE_COLUMNS,  # starts with tx_amount
    "score",
    "alert",
    "model_version",
    "scored_at",
    "produced_at",
    "kafka_partition",
    "kafka_offset",
    "event_date",
)
"""Columns of a scored transaction in the lake (``scored_transactions`` table)."""

QUARANTINE_COLUMNS: tuple[str, ...] = (
    "source_topic",
    "kafka_partition",
    "kafka_offset",
    "key",
    "value",
    "reason",
    "quarantined_at",
    "event_date",
)


class Scorer(Protocol):
    """What the pipeline needs from a model: raw features (n, 19) float32 -> scores (n,) in [0, 1]."""

    model_version: str

    def score(self, features: np.ndarray) -> np.ndarray: ...


@dataclass
class BatchCounts:
    """Per-micro-batch counts, summed into the run's progress."""

    transactions: int = 0
    scored: int = 0
    quarantined: int = 0
    labels: int = 0
    labels_applied: int = 0
    labels_quarantined: int = 0
    alerts: int = 0
    scoring_retries: int = 0
    """Failed scoring attempts that a retry then recovered (a batch whose retries all fail raises)."""

    def add(self, other: "BatchCounts") -> "BatchCounts":
        """Field-wise sum (returns a new object)."""
        return BatchCounts(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})


@dataclass
class BatchResult:
    """Outputs of one micro-batch: lake rows, alert payloads, quarantine rows and counts."""

    scored: pd.DataFrame
    alerts: list[dict]
    quarantine: pd.DataFrame
    labels: pd.DataFrame
    counts: BatchCounts = field(default_factory=BatchCounts)

    def lake_frames(self) -> dict[str, pd.DataFrame]:
        """What the job writes to each lake table, each frame with its ``event_date`` partition column; the
        ``alerts`` table holds the alert payloads as they are, by the date of ``tx_datetime``. Empty frames
        are not written. Column types follow the catalog (``dbt/models/staging/_sources.yml``)."""
        alerts = pd.DataFrame(self.alerts)
        if len(alerts):
            alerts["event_date"] = alerts["tx_datetime"].str.slice(0, 10)
        return {
            "scored_transactions": self.scored,
            "labels": self.labels,
            "quarantine": self.quarantine,
            "alerts": alerts,
        }


def _iso(us: np.ndarray | int) -> np.ndarray:
    return np.datetime_as_string(np.asarray(us, dtype="datetime64[us]"), unit="us", timezone="UTC")


def _decode(raw: bytes | None) -> str | None:
    return None if raw is None else bytes(raw).decode("utf-8", errors="replace")


def _now_us() -> int:
    return time.time_ns() // 1_000


@dataclass
class MicroBatchProcessor:
    """Turns the Kafka records of one micro-batch into scored transactions, alerts and quarantine.

    ``state`` is mutated (transactions added, labels applied, old rows evicted). ``threshold``: alert when
    score >= threshold. ``allowed_lateness_us``: see the module's event-time policy. ``score_retries``: a
    scorer failure is retried, then raised so the micro-batch fails and is replayed from the checkpoint —
    a failure to score is never taken as "not fraud".
    """

    state: FeatureState
    scorer: Scorer
    threshold: float
    allowed_lateness_us: int = 3_600 * US
    score_retries: int = 3
    clock_us: Callable[[], int] = _now_us

    def process(self, records: pd.DataFrame) -> BatchResult:
        """Process one micro-batch.

        ``records``: the columns of Spark's Kafka source (``key``, ``value`` bytes, ``topic``, ``partition``,
        ``offset``, ``timestamp``), any order. Returns a :class:`BatchResult`; raises only if scoring keeps
        failing.
        """
        counts = BatchCounts()
        quarantine: list[dict] = []
        now = self.clock_us()
        records = records.sort_values(["topic", "partition", "offset"], kind="stable").reset_index(drop=True)
        produced_us = _kafka_times_us(records["timestamp"])

        def reject(idx: np.ndarray | list[int], reasons, topic_rows: pd.DataFrame) -> None:
            for i, reason in zip(idx, reasons if isinstance(reasons, list) else [reasons] * len(idx)):
                row = topic_rows.iloc[int(i)]
                quarantine.append(
                    {
                        "source_topic": row["topic"],
                        "kafka_partition": int(row["partition"]),
                        "kafka_offset": int(row["offset"]),
                        "key": _decode(row["key"]),
                        "value": _decode(row["value"]),
                        "reason": reason,
                        "quarantined_at": now,
                    }
                )

        other = records[~records["topic"].isin([TRANSACTIONS_TOPIC, LABELS_TOPIC])]
        reject(list(range(len(other))), "unexpected topic", other)

        # --- transactions: validate, drop duplicates and late events, add to state
        tx_rows = records[records["topic"] == TRANSACTIONS_TOPIC].reset_index(drop=True)
        tx_produced = produced_us[(records["topic"] == TRANSACTIONS_TOPIC).to_numpy()]
        counts.transactions = len(tx_rows)
        valid, bad = parse_transactions(tx_rows["value"].tolist())
        reject([p for p, _ in bad], [r for _, r in bad], tx_rows)
        valid = valid.sort_values(["time_us", "pos"], kind="stable").reset_index(drop=True)

        dup = valid["transaction_id"].isin(self.state.known_transaction_ids()) | valid.duplicated(
            "transaction_id", keep="first"
        )
        reject(valid.loc[dup, "pos"].tolist(), "duplicate transaction_id", tx_rows)
        valid = valid[~dup]
        if self.state.watermark_us > np.iinfo(np.int64).min:
            late = valid["time_us"] < self.state.watermark_us - self.allowed_lateness_us
            reject(
                valid.loc[late, "pos"].tolist(),
                f"late event: more than {self.allowed_lateness_us / US:.0f} s older than the watermark",
                tx_rows,
            )
            valid = valid[~late]
        valid = valid.reset_index(drop=True)
        seqs = self.state.add_transactions(valid)

        # --- labels: apply to held transactions (their labeled_at decides from when they count)
        lab_rows = records[records["topic"] == LABELS_TOPIC].reset_index(drop=True)
        counts.labels = len(lab_rows)
        labels, bad_labels = parse_labels(lab_rows["value"].tolist())
        reject([p for p, _ in bad_labels], [r for _, r in bad_labels], lab_rows)
        found = self.state.apply_labels(labels)
        unknown = labels.loc[~found.to_numpy(dtype=bool), "pos"].tolist() if len(labels) else []
        reject(unknown, "label for an unknown transaction (never seen, or older than the state window)", lab_rows)
        counts.labels_applied = int(found.sum()) if len(labels) else 0
        counts.labels_quarantined = len(bad_labels) + len(unknown)

        # --- features and scores
        feats = self.state.features_for(seqs)
        scores = self._score(feats.to_numpy(dtype=np.float32), counts) if len(valid) else np.empty(0, np.float32)
        scored_at = self.clock_us()
        scored = pd.DataFrame(
            {
                "transaction_id": valid["transaction_id"].astype(str),
                "tx_datetime": pd.to_datetime(valid["time_us"].to_numpy(), unit="us", utc=True),
                "customer_id": valid["customer_id"].astype(str),
                "terminal_id": valid["terminal_id"].astype(str),
            }
        )
        for col in FEATURE_COLUMNS:
            scored[col] = feats[col].to_numpy()
        scored["score"] = scores.astype(np.float64)
        scored["alert"] = scored["score"] >= self.threshold
        scored["model_version"] = str(self.scorer.model_version)
        scored["scored_at"] = pd.Timestamp(scored_at, unit="us", tz="UTC")
        pos = valid["pos"].to_numpy()
        scored["produced_at"] = pd.to_datetime(tx_produced[pos], unit="us", utc=True)
        scored["kafka_partition"] = tx_rows["partition"].to_numpy()[pos].astype(np.int32)
        scored["kafka_offset"] = tx_rows["offset"].to_numpy()[pos].astype(np.int64)
        scored["event_date"] = scored["tx_datetime"].dt.strftime("%Y-%m-%d")

        is_alert = scored["alert"].to_numpy()
        alerts = self._alerts(
            scored[is_alert], valid["time_us"].to_numpy()[is_alert], tx_produced[pos][is_alert], scored_at
        )
        self.state.evict()

        q = pd.DataFrame(quarantine, columns=[c for c in QUARANTINE_COLUMNS if c != "event_date"])
        q["kafka_partition"] = q["kafka_partition"].astype(np.int32)  # `int` in the catalog, as in scored
        q["kafka_offset"] = q["kafka_offset"].astype(np.int64)
        q["quarantined_at"] = pd.to_datetime(q["quarantined_at"].astype(np.int64), unit="us", utc=True)
        q["event_date"] = q["quarantined_at"].dt.strftime("%Y-%m-%d")
        counts.scored = len(scored)
        counts.quarantined = int((q["source_topic"] == TRANSACTIONS_TOPIC).sum())
        counts.alerts = len(alerts)
        applied = labels[found.to_numpy(dtype=bool)] if len(labels) else labels
        lake_labels = pd.DataFrame(
            {
                "transaction_id": applied["transaction_id"].astype(str),
                "tx_fraud": applied["tx_fraud"].astype(np.int8),
                "labeled_at": pd.to_datetime(applied["labeled_at_us"].to_numpy(dtype=np.int64), unit="us", utc=True),
                "source": applied["source"].astype(str),
            }
        )
        lake_labels["event_date"] = lake_labels["labeled_at"].dt.strftime("%Y-%m-%d")
        return BatchResult(
            scored=scored[list(SCORED_COLUMNS)], alerts=alerts, quarantine=q, labels=lake_labels, counts=counts
        )

    def _score(self, x: np.ndarray, counts: BatchCounts) -> np.ndarray:
        for attempt in range(self.score_retries + 1):
            try:
                scores = np.asarray(self.scorer.score(x), dtype=np.float32).reshape(-1)
                if scores.shape != (len(x),) or not np.isfinite(scores).all():
                    raise ValueError(f"scorer returned shape {scores.shape} or non-finite scores for {len(x)} rows")
                return scores
            except Exception as exc:  # noqa: BLE001 - any scorer failure is retried, then re-raised
                log.warning("scoring %d rows failed (attempt %d of %d): %s", len(x), attempt + 1,
                            self.score_retries + 1, exc)
                if attempt == self.score_retries:
                    raise
                counts.scoring_retries += 1
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    def _alerts(self, rows: pd.DataFrame, time_us: np.ndarray, produced_us: np.ndarray, scored_at_us: int) -> list[dict]:
        """Alert payloads (contract of ``frauddetect.alerts.AlertEvent``) for the rows over the threshold."""
        scored_at = _iso(scored_at_us).item()
        tx_iso = _iso(time_us)
        prod_iso = _iso(produced_us)
        return [
            {
                "transaction_id": r.transaction_id,
                "tx_datetime": str(tx_iso[i]),
                "customer_id": r.customer_id,
                "terminal_id": r.terminal_id,
                "tx_amount": float(r.tx_amount),
                "score": float(r.score),
                "threshold": float(self.threshold),
                "model_version": r.model_version,
                "scored_at": str(scored_at),
                "produced_at": str(prod_iso[i]),
            }
            for i, r in enumerate(rows.itertuples(index=False))
        ]


def _kafka_times_us(ts: pd.Series) -> np.ndarray:
    """Kafka record timestamps (datetime-like, naive = UTC) -> int64 µs; 0 where missing."""
    if len(ts) == 0:
        return np.empty(0, np.int64)
    s = pd.to_datetime(ts, utc=True).fillna(pd.Timestamp(0, tz="UTC"))
    return s.dt.as_unit("us").astype("int64").to_numpy(dtype=np.int64)
