"""The streaming job's Kafka sinks: each alert and quarantine record on its topic once, across a crash."""

import json
import time

import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition

from frauddetect import kafka_io
from frauddetect.config import ALERTS_TOPIC, QUARANTINE_TOPIC
from frauddetect.embedded import EmbeddedBroker
from frauddetect.pipeline import BatchResult
from frauddetect.streaming import KafkaSinks

pytestmark = pytest.mark.functional


@pytest.fixture
def broker(tmp_path):
    # own broker: these tests own the fixed topic names
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        kafka_io.ensure_topics(b.bootstrap_servers, [ALERTS_TOPIC, QUARANTINE_TOPIC])
        yield b


def result(batch: int, n_alerts: int) -> BatchResult:
    alerts = [{"transaction_id": f"b{batch}-t{i}", "score": 0.9} for i in range(n_alerts)]
    quarantine = pd.DataFrame([{
        "source_topic": "transactions", "kafka_partition": 0, "kafka_offset": 100 + batch, "key": "k",
        "value": "garbage", "reason": "Invalid JSON", "quarantined_at": pd.Timestamp("2026-01-01", tz="UTC"),
        "event_date": "2026-01-01"}])
    return BatchResult(scored=pd.DataFrame(), alerts=alerts, quarantine=quarantine, labels=pd.DataFrame())


def topic_records(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    end = kafka_io.end_offsets_via_fetch(bootstrap, [topic])[topic].get(0, 0)
    consumer = Consumer(kafka_io.consumer_config(bootstrap))
    consumer.assign([TopicPartition(topic, 0, 0)])
    out, deadline = [], time.monotonic() + 30
    while len(out) < end and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            out.append((msg.key().decode(), dict(msg.headers())["batch_id"].decode()))
    consumer.close()
    return out


def test_a_replayed_batch_after_a_crash_adds_only_what_is_missing(broker, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    first = KafkaSinks(broker.bootstrap_servers, ckpt)
    first.publish(0, result(0, 3))
    first.publish(1, result(1, 2))
    # crash in batch 2 after two of its four alerts were acknowledged, before the marker was written
    partial = result(2, 4)
    for alert in partial.alerts[:2]:
        first.producer.produce(ALERTS_TOPIC, key=alert["transaction_id"], value=json.dumps(alert),
                               headers=[("batch_id", b"2")])
    first.producer.flush()

    restarted = KafkaSinks(broker.bootstrap_servers, ckpt)
    restarted.publish(1, result(1, 2))  # Spark may re-run a batch whose marker exists: nothing happens
    restarted.publish(2, partial)
    restarted.publish(3, result(3, 1))

    alerts = topic_records(broker.bootstrap_servers, ALERTS_TOPIC)
    keys = [k for k, _ in alerts]
    assert len(keys) == len(set(keys)) == 3 + 2 + 4 + 1
    assert {k for k, b in alerts if b == "2"} == {f"b2-t{i}" for i in range(4)}
    quarantine = topic_records(broker.bootstrap_servers, QUARANTINE_TOPIC)
    assert [k for k, _ in quarantine] == [f"transactions:0:{100 + b}" for b in (0, 1, 2, 3)]
    assert (tmp_path / "ckpt" / "sinks" / "batch-0000000003.json").exists()
