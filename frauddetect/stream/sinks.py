"""The micro-batch's sinks, run on the executors: lake files, ``fraud-alerts`` and ``quarantine``, exactly once.

``foreachBatch`` plans one Spark job per micro-batch (:class:`MicroBatchSink`): each task of the job holds one
partition of the scored rows (:func:`sink_task`), writes its lake files (:class:`~frauddetect.stream.lake.
LakeWriter`), produces its alerts and quarantine records, and returns one summary row of counts. The driver
only collects those summaries, then writes two small files of its own under the checkpoint:

- ``sinks/batch-<N>.json``: the end offsets of ``fraud-alerts`` and ``quarantine`` once every task of batch N
  had its records acknowledged (the marker);
- ``progress/batch-<N>.json``: the job's cumulative counts after batch N (what a supervisor or a test reads).

Exactly once on the topics, per micro-batch N (Spark replays an uncommitted N with the same offsets and
state after a crash, so every task computes the same records again):

1. with N's marker present, nothing is produced again (the lake files are rewritten, same names, same rows);
2. a task that may repeat an earlier attempt -- the first micro-batch after the job (re)started, or a task
   retry -- first reads the topics from the previous marker's offsets and leaves out the records that carry
   its own ``batch_id`` and ``part`` headers, i.e. those a crashed attempt already produced.

This assumes the job is the topics' only writer (the Glue job runs with at most one concurrent run). The
alert Lambda is idempotent on the transaction id, so even a repeated alert would reach SNS once.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from frauddetect import kafka_io
from frauddetect.config import ALERTS_TOPIC, LABELS_TOPIC, QUARANTINE_TOPIC, TRANSACTIONS_TOPIC
from frauddetect.stream.lake import LakeWriter, alert_payloads, filesystem, lake_frames, quarantine_message
from frauddetect.stream.records import LABEL, QUARANTINE, SCORED_COLUMNS, STATS, TRANSACTION

log = logging.getLogger(__name__)

SINK_TOPICS = (ALERTS_TOPIC, QUARANTINE_TOPIC)
BATCH_HEADER = "batch_id"
PART_HEADER = "part"
PROGRESS_COUNTS = (
    "transactions", "scored", "quarantined", "labels", "labels_applied", "labels_quarantined", "labels_waiting",
    "alerts", "scoring_retries", "state_bytes_written",
)
"""Cumulative counts in ``progress/batch-<N>.json`` (``labels_waiting`` is the current number, kept as the
sum of the terminal operator's per-batch changes)."""


@dataclass(frozen=True)
class SinkSettings:
    """What a sink task needs (plain values, shipped to the executors)."""

    lake_uri: str
    bootstrap_servers: str
    kafka_auth: str = "none"
    kafka_region: str | None = None

    def kafka_settings(self) -> dict[str, Any]:
        """The librdkafka security settings of the job's Kafka clients (built in each process)."""
        return kafka_io.auth_settings(self.kafka_auth, self.kafka_region)


_PRODUCERS: dict[SinkSettings, Any] = {}


def _producer(settings: SinkSettings):
    from confluent_kafka import Producer

    producer = _PRODUCERS.get(settings)
    if producer is None:
        producer = _PRODUCERS[settings] = Producer(kafka_io.producer_config(
            settings.bootstrap_servers, **{"enable.idempotence": True}, **settings.kafka_settings()))
    return producer


def already_published(settings: SinkSettings, since: dict, batch_id: int, part: int,
                      timeout_s: float = 60.0) -> dict[str, set[str]]:
    """Keys that batch ``batch_id``'s task ``part`` already has on the sink topics (a previous attempt's),
    read from the offsets in ``since`` ({topic: {partition: offset}}) to the topics' ends.
    Raises TimeoutError if the topics cannot be read back in ``timeout_s``."""
    from confluent_kafka import Consumer, TopicPartition

    overrides = settings.kafka_settings()
    ends = kafka_io.end_offsets_via_fetch(settings.bootstrap_servers, SINK_TOPICS, **overrides)
    found: dict[str, set[str]] = {t: set() for t in SINK_TOPICS}
    want = (str(batch_id).encode(), str(part).encode())
    consumer = Consumer(kafka_io.consumer_config(settings.bootstrap_servers, **overrides))
    try:
        for topic in SINK_TOPICS:
            todo = {p: (int(since.get(topic, {}).get(str(p), 0)), end) for p, end in ends[topic].items()}
            todo = {p: r for p, r in todo.items() if r[0] < r[1]}
            if not todo:
                continue
            consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in todo.items()])
            deadline = time.monotonic() + timeout_s
            while todo and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                headers = dict(msg.headers() or [])
                if (headers.get(BATCH_HEADER), headers.get(PART_HEADER)) == want:
                    found[topic].add(msg.key().decode())
                if msg.offset() + 1 >= todo.get(msg.partition(), (0, 0))[1]:
                    todo.pop(msg.partition(), None)
            if todo:
                raise TimeoutError(f"could not re-read {topic} to check batch {batch_id} for duplicates")
    finally:
        consumer.close()
    return found


def publish(settings: SinkSettings, batch_id: int, part: int, records: dict[str, list[tuple[str, str]]],
            skip: dict[str, set[str]] | None = None, timeout_s: float = 60.0) -> dict[str, int]:
    """Produce ``records`` ({topic: [(key, value)]}) with this batch's headers and wait for every
    acknowledgement; keys in ``skip`` are left out. Returns how many were produced per topic.
    Raises RuntimeError if the broker does not acknowledge them all (the task, then the batch, fails)."""
    producer = _producer(settings)
    errors: list[str] = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(str(err))

    headers = [(BATCH_HEADER, str(batch_id).encode()), (PART_HEADER, str(part).encode())]
    sent: dict[str, int] = {}
    for topic, items in records.items():
        done = (skip or {}).get(topic, set())
        sent[topic] = 0
        for key, value in items:
            if key in done:
                continue
            while True:
                try:
                    producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain, then go on
                    producer.poll(0.1)
            sent[topic] += 1
    remaining = producer.flush(timeout_s)
    if remaining or errors:
        raise RuntimeError(f"batch {batch_id} part {part}: {remaining} records unacknowledged, errors {errors[:3]}")
    return sent


@dataclass(frozen=True)
class TaskPlan:
    """The driver's instructions for the tasks of one micro-batch's sink job."""

    batch_id: int
    settings: SinkSettings
    publish: bool
    """False when the batch's marker exists (its records are on the topics already)."""
    check_previous: bool
    """True for the first micro-batch after a (re)start, which may repeat a crashed attempt."""
    since: dict = field(default_factory=dict)
    """The previous marker's offsets, where a check starts reading."""
    run: str = ""
    """The query's short id, in the lake file names (:mod:`frauddetect.stream.lake`)."""


def summarise(rows: pd.DataFrame, part: int, sent: dict[str, int]) -> dict:
    """One partition's counts (a row of :data:`~frauddetect.stream.records.SINK_SUMMARY_SCHEMA`)."""
    kind = rows["kind"].to_numpy(dtype=object)
    topic = rows["kafka_topic"].to_numpy(dtype=object)
    tx = kind == TRANSACTION
    bad = kind == QUARANTINE
    stats = Counter()
    for name, value in zip(rows.loc[kind == STATS, "stat"], rows.loc[kind == STATS, "stat_value"]):
        stats[str(name)] += int(value)
    scored_at = rows.loc[tx, "scored_at_us"].dropna()
    return {
        "partition": part,
        "transactions": int(tx.sum() + (bad & (topic == TRANSACTIONS_TOPIC)).sum()),
        "scored": int(tx.sum()),
        "quarantined": int((bad & (topic == TRANSACTIONS_TOPIC)).sum()),
        "labels_applied": int((kind == LABEL).sum()),
        "labels_quarantined": int((bad & (topic == LABELS_TOPIC)).sum()),
        "alerts": int(rows.loc[tx, "alert"].astype(bool).sum()),
        "alerts_published": int(sent.get(ALERTS_TOPIC, 0)),
        "quarantine_published": int(sent.get(QUARANTINE_TOPIC, 0)),
        "scoring_retries": int(stats.pop("scoring_retries", 0)),
        "max_scored_at_us": int(scored_at.max()) if len(scored_at) else None,
        "reasons": json.dumps(Counter(rows.loc[bad, "reason"].astype(str))),
        "stats": json.dumps(stats),
    }


def sink_task(plan: TaskPlan):
    """The ``mapInPandas`` function of a micro-batch's sink job: all of a partition's scored rows -> lake
    files and Kafka records -> one summary row."""

    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        context = TaskContext.get()
        part = context.partitionId()
        upstream = time.perf_counter()
        frames = [b for b in batches if len(b)]
        upstream = time.perf_counter() - upstream
        upstream_end = time.perf_counter()
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SCORED_COLUMNS))
        tables = lake_frames(rows, time.time_ns() // 1_000)
        writer = LakeWriter(plan.settings.lake_uri)
        for table, frame in tables.items():
            writer.write(table, frame, plan.batch_id, part, plan.run)
        sent: dict[str, int] = {}
        if plan.publish:
            kind = rows["kind"].to_numpy(dtype=object)
            alerted = rows.loc[(kind == TRANSACTION) & rows["alert"].fillna(False).astype(bool).to_numpy()]
            records = {
                ALERTS_TOPIC: [(a["transaction_id"], json.dumps(a)) for a in alert_payloads(alerted)],
                QUARANTINE_TOPIC: [(f"{r['source_topic']}:{r['kafka_partition']}:{r['kafka_offset']}",
                                    quarantine_message(r)) for r in tables.get("quarantine", pd.DataFrame()).to_dict("records")],
            }
            skip = None
            if plan.check_previous or context.attemptNumber() > 0:
                skip = already_published(plan.settings, plan.since, plan.batch_id, part)
            sent = publish(plan.settings, plan.batch_id, part, records, skip)
        summary = summarise(rows, part, sent)
        stats = json.loads(summary["stats"])
        stats["sink_upstream_ms"] = round(upstream * 1000)  # the whole pipeline before the sink, in this task
        stats["sink_ms"] = round((time.perf_counter() - upstream_end) * 1000)
        summary["stats"] = json.dumps(stats)
        yield pd.DataFrame([summary])

    return run


def _write_json(fs: pafs.FileSystem, path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(data, sort_keys=True).encode())
    fs.move(tmp, path)


def _read_json(fs: pafs.FileSystem, path: str) -> dict | None:
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


class JobLedger:
    """The driver's small files next to Spark's checkpoint: sink markers and cumulative progress."""

    def __init__(self, checkpoint_uri: str, keep: int = 20):
        self.fs, root = filesystem(checkpoint_uri)
        self._metadata = f"{root}/spark/metadata"
        self._run: str | None = None
        self.sinks = f"{root}/sinks"
        self.progress_dir = f"{root}/progress"
        for d in (self.sinks, self.progress_dir):
            self.fs.create_dir(d, recursive=True)
        self.keep = keep

    def query_run(self) -> str:
        """The first 8 characters of the Spark query id in ``<checkpoint>/spark/metadata`` (written when the
        query starts; the same for every restart from this checkpoint). Raises RuntimeError without it."""
        if self._run is None:
            with self.fs.open_input_stream(self._metadata) as f:
                first = f.read().decode().splitlines()[0]
            query_id = json.loads(first).get("id", "")
            if not query_id:
                raise RuntimeError(f"{self._metadata}: no query id")
            self._run = query_id.replace("-", "")[:8]
        return self._run

    def _marker(self, batch_id: int) -> str:
        return f"{self.sinks}/batch-{batch_id:010d}.json"

    def _progress(self, batch_id: int) -> str:
        return f"{self.progress_dir}/batch-{batch_id:010d}.json"

    def _ids(self, folder: str) -> list[int]:
        return sorted(int(Path(i.path).stem.split("-")[1]) for i in self.fs.get_file_info(pafs.FileSelector(folder))
                      if i.path.endswith(".json"))

    def published(self, batch_id: int) -> bool:
        """Whether batch ``batch_id``'s records are all on the sink topics (its marker exists)."""
        return self.fs.get_file_info(self._marker(batch_id)).type != pafs.FileType.NotFound

    def offsets_before(self, batch_id: int) -> dict:
        """The sink topics' offsets in the newest marker before ``batch_id`` ({} if none)."""
        earlier = [i for i in self._ids(self.sinks) if i < batch_id]
        return (_read_json(self.fs, self._marker(earlier[-1])) or {}) if earlier else {}

    def mark_published(self, batch_id: int, offsets: dict) -> None:
        """Write batch ``batch_id``'s marker; keep the newest :attr:`keep`."""
        _write_json(self.fs, self._marker(batch_id), offsets)
        for old in self._ids(self.sinks)[: -self.keep]:
            self.fs.delete_file(self._marker(old))

    def progress_before(self, batch_id: int) -> dict:
        """The newest progress written for a batch before ``batch_id`` ({} if none)."""
        earlier = [i for i in self._ids(self.progress_dir) if i < batch_id]
        return (_read_json(self.fs, self._progress(earlier[-1])) or {}) if earlier else {}

    def write_progress(self, batch_id: int, progress: dict) -> None:
        """Write batch ``batch_id``'s progress (the file a supervisor polls); keep the newest :attr:`keep`."""
        _write_json(self.fs, self._progress(batch_id), progress)
        for old in self._ids(self.progress_dir)[: -self.keep]:
            self.fs.delete_file(self._progress(old))


def merge_progress(previous: dict, summaries: list[dict], batch_id: int, batch_seconds: float) -> dict:
    """Cumulative progress after a batch: ``previous``'s counts plus the batch's task summaries."""
    counts = {k: int(previous.get("counts", {}).get(k, 0)) for k in PROGRESS_COUNTS}
    reasons = Counter(previous.get("quarantine_reasons", {}))
    batch = Counter()
    timing = Counter()
    last_scored = previous.get("last_scored_at_us")
    for s in summaries:
        for k in ("transactions", "scored", "quarantined", "labels_applied", "labels_quarantined", "alerts",
                  "scoring_retries"):
            batch[k] += int(s[k] or 0)
        reasons.update(json.loads(s["reasons"] or "{}"))
        stats = json.loads(s["stats"] or "{}")
        batch["labels"] += int(stats.get("labels_received", 0))
        batch["labels_waiting"] += int(stats.get("labels_waiting_delta", 0))
        batch["state_bytes_written"] += int(stats.get("card_state_bytes_written", 0)) + int(
            stats.get("terminal_state_bytes_written", 0))
        for name, value in stats.items():
            if name.endswith("_ms") or name.endswith("_read"):
                timing[name] += int(value)
        if s["max_scored_at_us"] is not None and not (isinstance(s["max_scored_at_us"], float)
                                                      and np.isnan(s["max_scored_at_us"])):
            last_scored = max(int(s["max_scored_at_us"]), int(last_scored or 0))
    for k, v in batch.items():
        counts[k] += v
    return {
        "batch_id": batch_id,
        "counts": counts,
        "batch": dict(batch),
        "batch_seconds": round(batch_seconds, 3),
        "timing": dict(timing),
        "quarantine_reasons": dict(reasons),
        "last_scored_at_us": last_scored,
        "updated_at": time.time(),
    }


class MicroBatchSink:
    """The ``foreachBatch`` callback: runs the sink job of a micro-batch and writes the driver's files."""

    def __init__(self, settings: SinkSettings, checkpoint_uri: str):
        self.settings = settings
        self.ledger = JobLedger(checkpoint_uri)
        self.started = False

    def __call__(self, df, batch_id: int) -> None:
        from frauddetect.stream.records import SINK_SUMMARY_SCHEMA

        batch_id = int(batch_id)
        t0 = time.perf_counter()
        published = self.ledger.published(batch_id)
        if published:
            log.info("batch %s: already published before a restart, not repeated", batch_id)
        plan = TaskPlan(batch_id=batch_id, settings=self.settings, publish=not published,
                        check_previous=not self.started, since=self.ledger.offsets_before(batch_id),
                        run=self.ledger.query_run())
        summaries = [r.asDict() for r in df.mapInPandas(sink_task(plan), SINK_SUMMARY_SCHEMA).collect()]
        # a batch that was published before the restart proves nothing about the next one's earlier attempts
        self.started = self.started or not published
        if not published:
            ends = kafka_io.end_offsets_via_fetch(self.settings.bootstrap_servers, SINK_TOPICS,
                                                  **self.settings.kafka_settings())
            self.ledger.mark_published(batch_id, {t: {str(p): o for p, o in parts.items()} for t, parts in ends.items()})
        progress = merge_progress(self.ledger.progress_before(batch_id), summaries, batch_id, time.perf_counter() - t0)
        self.ledger.write_progress(batch_id, progress)
        b = progress["batch"]
        log.info("batch %s: %s transactions, %s scored, %s quarantined, %s labels, %s alerts, %.3f s", batch_id,
                 b.get("transactions", 0), b.get("scored", 0), b.get("quarantined", 0), b.get("labels", 0),
                 b.get("alerts", 0), time.perf_counter() - t0)
