"""The micro-batch sinks on Spark tasks (:mod:`frauddetect.stream.sinks`): every alert and quarantine record on
its topic once, across a crash in the middle of a micro-batch, and the lake files of a replay overwritten."""

import json
import time

import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition
from pyspark.sql import functions as F
from stream_harness import LocalJob, kafka_records, transaction

from frauddetect import kafka_io
from frauddetect.config import ALERTS_TOPIC, QUARANTINE_TOPIC
from frauddetect.embedded import EmbeddedBroker
from frauddetect.stream.lake import alert_payloads
from frauddetect.stream.records import SCORED_SCHEMA, TRANSACTION
from frauddetect.stream.sinks import BATCH_HEADER, PART_HEADER, MicroBatchSink, SinkSettings, publish

pytestmark = pytest.mark.functional


@pytest.fixture
def broker(tmp_path):
    # own broker: these tests own the fixed topic names
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        kafka_io.ensure_topics(b.bootstrap_servers, [ALERTS_TOPIC, QUARANTINE_TOPIC], partitions=2)
        yield b


def scored_batch(job: LocalJob, batch: int, n: int) -> pd.DataFrame:
    """Batch ``batch`` of the stream: ``n`` transactions on several cards (every other one alerts: amount 200
    against the model's 100) and one bad record, through the job's stages."""
    day = pd.Timestamp("2018-08-01", tz="UTC") + pd.Timedelta(hours=batch)
    stamps = [day + pd.Timedelta(seconds=i) for i in range(n)]
    values = [transaction(f"b{batch}-t{i}", w.strftime("%Y-%m-%dT%H:%M:%SZ"), 200.0 if i % 2 else 5.0,
                          customer=f"c{i % 7}", terminal=f"m{i % 5}") for i, w in enumerate(stamps)]
    records = kafka_records(values + [b"garbage"], "transactions", start_offset=100 * batch,
                            timestamps_ms=[int(w.value // 1_000_000) for w in stamps] * 1 + [int(day.value // 1_000_000)],
                            keys=[f"c{i % 7}".encode() for i in range(n)] + [b"x"])
    return job.run(records)["rows"]


def topic_records(bootstrap: str, topic: str) -> list[tuple[str, str, str]]:
    """(key, batch_id header, part header) of every record on ``topic``."""
    ends = kafka_io.end_offsets_via_fetch(bootstrap, [topic])[topic]
    consumer = Consumer(kafka_io.consumer_config(bootstrap))
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    out, deadline = [], time.monotonic() + 30
    while len(out) < sum(ends.values()) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            headers = dict(msg.headers())
            out.append((msg.key().decode(), headers[BATCH_HEADER].decode(), headers[PART_HEADER].decode()))
    consumer.close()
    return out


def test_a_replayed_micro_batch_after_a_crash_adds_only_what_is_missing(spark, broker, tmp_path):
    settings = SinkSettings(lake_uri=str(tmp_path / "lake"), bootstrap_servers=broker.bootstrap_servers)
    ckpt = str(tmp_path / "ckpt")
    job = LocalJob()
    batches = [spark.createDataFrame(scored_batch(job, b, 40), SCORED_SCHEMA).repartition(2) for b in range(4)]
    (tmp_path / "ckpt" / "spark").mkdir(parents=True)  # what Spark writes when the query starts
    (tmp_path / "ckpt" / "spark" / "metadata").write_text('{"id":"6f1c2a3b-0000-4000-8000-000000000000"}\n')
    first = MicroBatchSink(settings, ckpt)
    first(batches[0], 0)
    first(batches[1], 1)
    # batch 2 crashes after each task had half of its alerts acknowledged, before the driver wrote the marker
    tasks = batches[2].select(F.spark_partition_id().alias("part"), "*").toPandas()
    for part, rows in tasks.groupby("part"):
        alerted = rows[(rows["kind"] == TRANSACTION) & rows["alert"].fillna(False).astype(bool)]
        payloads = alert_payloads(alerted)[: len(alerted) // 2]
        publish(settings, 2, int(part), {ALERTS_TOPIC: [(a["transaction_id"], json.dumps(a)) for a in payloads]})

    restarted = MicroBatchSink(settings, ckpt)
    restarted(batches[1], 1)  # Spark re-runs the last batch whose commit it did not record: nothing new
    restarted(batches[2], 2)
    restarted(batches[3], 3)

    alerts = topic_records(broker.bootstrap_servers, ALERTS_TOPIC)
    keys = [k for k, _, _ in alerts]
    assert len(keys) == len(set(keys)) == 4 * 20
    assert {k for k, b, _ in alerts if b == "2"} == {f"b2-t{i}" for i in range(1, 40, 2)}
    quarantine = topic_records(broker.bootstrap_servers, QUARANTINE_TOPIC)
    assert sorted(k for k, _, _ in quarantine) == sorted(f"transactions:0:{100 * b + 40}" for b in range(4))
    for b in range(4):
        assert (tmp_path / "ckpt" / "sinks" / f"batch-{b:010d}.json").exists()
    progress = json.loads((tmp_path / "ckpt" / "progress" / "batch-0000000003.json").read_text())
    assert progress["counts"]["scored"] == 4 * 40 and progress["counts"]["alerts"] == 4 * 20
    assert progress["counts"]["quarantined"] == 4
    # the lake holds every transaction once: the replayed batches rewrote their own files
    lake = pd.read_parquet(tmp_path / "lake" / "scored_transactions")
    assert len(lake) == lake["transaction_id"].nunique() == 4 * 40
    assert all("-run-6f1c2a3b-" in f.name for f in (tmp_path / "lake").rglob("*.parquet"))
