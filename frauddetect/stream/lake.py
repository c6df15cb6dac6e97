"""The data lake the job writes: four Parquet tables partitioned by ``event_date``, file names per micro-batch.

Tables (column types as declared in ``dbt/models/staging/_sources.yml``, which the Glue catalog and dbt read):

- ``scored_transactions``: every admitted transaction with its 19 features and score (:data:`SCORED_LAKE_COLUMNS`);
- ``alerts``: the alert payloads sent to ``fraud-alerts`` (:class:`frauddetect.alerts.AlertEvent` fields);
- ``labels``: the labels applied to a held transaction;
- ``quarantine``: every record that was not featurised, with its reason.

Each task of a micro-batch's sink writes its own files, named ``batch-<N>-run-<Q>-part-<P>-<i>.parquet``
(``Q``: the first 8 characters of the Spark query id, which lives in the checkpoint): the same micro-batch
replayed after a crash computes the same rows in the same partitions, so it overwrites them, and every row is
in the lake once; a job started without its checkpoint counts its micro-batches from 0 again under a new query
id, so it never overwrites the files of the run before it. Partitions are event dates, so a replay also writes the same directories:
the quarantine table's date is the record's Kafka timestamp (or the time it was quarantined, without one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from frauddetect.features import CARD_FEATURE_COLUMNS, FEATURE_COLUMNS, TERMINAL_FEATURE_COLUMNS, model_features
from frauddetect.stream.records import LABEL, QUARANTINE, TRANSACTION

LAKE_TABLES = ("scored_transactions", "alerts", "labels", "quarantine")

SCORED_LAKE_COLUMNS: tuple[str, ...] = (
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
QUARANTINE_LAKE_COLUMNS: tuple[str, ...] = (
    "source_topic", "kafka_partition", "kafka_offset", "key", "value", "reason", "quarantined_at", "event_date",
)
ALERT_FIELDS = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "score", "threshold",
                "model_version", "scored_at", "produced_at")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) of a local path or an ``s3://`` URI; a local root is created."""
    if "://" not in uri:
        Path(uri).mkdir(parents=True, exist_ok=True)
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    return pafs.FileSystem.from_uri(uri)


def _utc(us) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(us, dtype=np.int64), unit="us", utc=True))


def _iso(us) -> list[str]:
    return [f"{s}Z" for s in np.datetime_as_string(np.asarray(us, dtype="datetime64[us]"), unit="us")]


def _text(raw) -> str | None:
    return None if raw is None else bytes(raw).decode("utf-8", errors="replace")


def alert_payloads(tx: pd.DataFrame) -> list[dict]:
    """The :class:`~frauddetect.alerts.AlertEvent` JSON objects of scored rows (SCORED_SCHEMA columns)."""
    return [
        {"transaction_id": t, "tx_datetime": when, "customer_id": c, "terminal_id": m, "tx_amount": float(a),
         "score": float(s), "threshold": float(th), "model_version": str(v), "scored_at": at, "produced_at": prod}
        for t, when, c, m, a, s, th, v, at, prod in zip(
            tx["transaction_id"], _iso(tx["time_us"]), tx["customer_id"], tx["terminal_id"], tx["tx_amount"],
            tx["score"], tx["threshold"], tx["model_version"], _iso(tx["scored_at_us"].astype(np.int64)),
            _iso(tx["kafka_timestamp_us"].fillna(0).astype(np.int64)))
    ]


def quarantine_records(rows: pd.DataFrame, now_us: int) -> pd.DataFrame:
    """Quarantine rows (SCORED_SCHEMA columns) as the ``quarantine`` table's columns."""
    stamp = rows["kafka_timestamp_us"].fillna(-1).astype(np.int64).to_numpy()
    dated = np.where(stamp >= 0, stamp, now_us)
    frame = pd.DataFrame({
        "source_topic": rows["kafka_topic"].astype(object).to_numpy(),
        "kafka_partition": rows["kafka_partition"].astype(np.int32).to_numpy(),
        "kafka_offset": rows["kafka_offset"].astype(np.int64).to_numpy(),
        "key": [_text(k) for k in rows["raw_key"]],
        "value": [_text(v) for v in rows["raw_value"]],
        "reason": rows["reason"].astype(object).to_numpy(),
        "quarantined_at": _utc(np.full(len(rows), now_us)),
    })
    frame["event_date"] = _utc(dated).dt.strftime("%Y-%m-%d").to_numpy()
    return frame


def lake_frames(rows: pd.DataFrame, now_us: int) -> dict[str, pd.DataFrame]:
    """What one sink task writes to each table, from its scored rows (SCORED_SCHEMA columns); empty frames
    are left out. ``now_us``: processing time of the sink (``quarantined_at``)."""
    kind = rows["kind"].to_numpy(dtype=object)
    out: dict[str, pd.DataFrame] = {}
    tx = rows.loc[kind == TRANSACTION]
    if len(tx):
        scored = pd.DataFrame({
            "transaction_id": tx["transaction_id"].astype(object).to_numpy(),
            "tx_datetime": _utc(tx["time_us"]),
            "customer_id": tx["customer_id"].astype(object).to_numpy(),
            "terminal_id": tx["terminal_id"].astype(object).to_numpy(),
        })
        feats = model_features(tx["time_us"].to_numpy(dtype=np.int64), tx["tx_amount"].to_numpy(dtype=np.float64),
                               tx[list(CARD_FEATURE_COLUMNS)], tx[list(TERMINAL_FEATURE_COLUMNS)])
        for col in FEATURE_COLUMNS:
            scored[col] = feats[col].to_numpy()
        scored["score"] = tx["score"].astype(np.float64).to_numpy()
        scored["alert"] = tx["alert"].astype(bool).to_numpy()
        scored["model_version"] = tx["model_version"].astype(object).to_numpy()
        scored["scored_at"] = _utc(tx["scored_at_us"].astype(np.int64))
        scored["produced_at"] = _utc(tx["kafka_timestamp_us"].fillna(0).astype(np.int64))
        scored["kafka_partition"] = tx["kafka_partition"].astype(np.int32).to_numpy()
        scored["kafka_offset"] = tx["kafka_offset"].astype(np.int64).to_numpy()
        scored["event_date"] = scored["tx_datetime"].dt.strftime("%Y-%m-%d").to_numpy()
        out["scored_transactions"] = scored[list(SCORED_LAKE_COLUMNS)]
        alerted = tx.loc[tx["alert"].astype(bool).to_numpy()]
        if len(alerted):
            alerts = pd.DataFrame(alert_payloads(alerted), columns=list(ALERT_FIELDS))
            alerts["event_date"] = alerts["tx_datetime"].str.slice(0, 10)
            out["alerts"] = alerts
    labels = rows.loc[kind == LABEL]
    if len(labels):
        frame = pd.DataFrame({
            "transaction_id": labels["transaction_id"].astype(object).to_numpy(),
            "tx_fraud": labels["tx_fraud"].astype(np.int8).to_numpy(),
            "labeled_at": _utc(labels["labeled_at_us"].astype(np.int64)),
            "source": labels["label_source"].astype(object).to_numpy(),
        })
        frame["event_date"] = frame["labeled_at"].dt.strftime("%Y-%m-%d").to_numpy()
        out["labels"] = frame
    bad = rows.loc[kind == QUARANTINE]
    if len(bad):
        out["quarantine"] = quarantine_records(bad, now_us)
    return out


def quarantine_message(record: dict) -> str:
    """The ``quarantine`` topic's JSON value of one quarantine table row."""
    return json.dumps({**record, "quarantined_at": pd.Timestamp(record["quarantined_at"]).isoformat()}, default=str)


class LakeWriter:
    """Writes the lake tables under ``lake_uri`` (a local path or ``s3://bucket/prefix``)."""

    def __init__(self, lake_uri: str):
        self.fs, self.root = filesystem(lake_uri)

    def write(self, table: str, frame: pd.DataFrame, batch_id: int, part: int = 0, run: str = "") -> None:
        """Write ``frame`` (with its ``event_date`` column) as task ``part`` of micro-batch ``batch_id`` of the
        query ``run`` (module doc); files of the same run, batch and part are overwritten."""
        if frame.empty:
            return
        pads.write_dataset(
            pa.Table.from_pandas(frame, preserve_index=False),
            f"{self.root}/{table}",
            filesystem=self.fs,
            format="parquet",
            partitioning=pads.partitioning(pa.schema([("event_date", pa.string())]), flavor="hive"),
            basename_template=f"batch-{batch_id:010d}{f'-run-{run}' if run else ''}-part-{part:05d}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
