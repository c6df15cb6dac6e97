"""The ``kafka_confluent`` Spark source against the real embedded broker and a real local Spark.

Every test runs actual streaming queries (foreachBatch collecting rows on the driver). Records are
produced in batches on purpose: the embedded Tansu broker answers ListOffsets(latest) with the base offset
of the last record batch + 1, so a source that planned from ListOffsets would miss the tail.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from pyspark.errors import PySparkException
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from frauddetect import kafka_io
from frauddetect.kafka_source import register

pytestmark = pytest.mark.functional

#: Spark's Kafka source schema (KafkaRecordToRowConverter.kafkaSchema), written out independently.
SPARK_KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType(), True),
        StructField("value", BinaryType(), True),
        StructField("topic", StringType(), True),
        StructField("partition", IntegerType(), True),
        StructField("offset", LongType(), True),
        StructField("timestamp", TimestampType(), True),
        StructField("timestampType", IntegerType(), True),
    ]
)

#: Safety net so a broken source fails the test instead of hanging it; never an assertion on speed.
QUERY_TIMEOUT_S = 180


class Sink:
    """foreachBatch target: keeps ``(batch_id, [row dicts])`` in call order (runs on the driver)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[dict]]] = []
        self._lock = threading.Lock()

    def __call__(self, df, batch_id: int) -> None:
        rows = [r.asDict() for r in df.selectExpr("*", "unix_millis(timestamp) AS ts_ms").collect()]
        with self._lock:
            self.batches.append((batch_id, rows))

    def rows(self, topic: str | None = None) -> list[dict]:
        with self._lock:
            return [r for _, rows in self.batches for r in rows if topic is None or r["topic"] == topic]

    def wait_for(self, query, count_by_topic: dict[str, int]) -> None:
        """Block until the sink holds at least these many rows per topic (or the query failed)."""
        self.wait_until(
            query,
            lambda: all(Counter(r["topic"] for r in self.rows())[t] >= n for t, n in count_by_topic.items()),
            f"rows per topic {count_by_topic}",
        )

    def wait_until(self, query, condition, what: str) -> None:
        """Block until ``condition()`` holds; fail if the query dies or the safety timeout passes."""
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while not condition():
            if query.exception() is not None:
                raise AssertionError(f"query failed: {query.exception()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sink never got {what}; has {len(self.rows())} rows")
            query.awaitTermination(0.1)


@pytest.fixture(scope="module")
def kspark(spark):
    register(spark)
    return spark


def _reader(spark, bootstrap: str, topics: list[str], **options):
    reader = (
        spark.readStream.format("kafka_confluent")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", ",".join(topics))
        .option("startingOffsets", "earliest")
    )
    for key, value in options.items():
        reader = reader.option(key, str(value))
    return reader


def _start(spark, bootstrap, topics, checkpoint: Path, sink: Sink, trigger: dict, **options):
    return (
        _reader(spark, bootstrap, topics, **options)
        .load()
        .writeStream.foreachBatch(sink)
        .option("checkpointLocation", str(checkpoint))
        .trigger(**trigger)
        .start()
    )


def _run_available_now(spark, bootstrap, topics, checkpoint: Path, **options) -> Sink:
    sink = Sink()
    query = _start(spark, bootstrap, topics, checkpoint, sink, {"availableNow": True}, **options)
    assert query.awaitTermination(QUERY_TIMEOUT_S), "availableNow query did not finish"
    assert query.exception() is None
    return sink


def _produce_batched(bootstrap: str, topic: str, values: list[bytes], first_ts_ms: int, key=b"card-7") -> None:
    # linger.ms lets librdkafka pack the records into few record batches, the case Tansu's ListOffsets
    # gets wrong.
    producer = Producer(kafka_io.producer_config(bootstrap, **{"linger.ms": 50}))
    for i, value in enumerate(values):
        producer.produce(topic, key=key, value=value, timestamp=first_ts_ms + i)
    assert producer.flush(30) == 0


def _ids(rows: list[dict]) -> list[tuple[str, int, int, bytes]]:
    return [(r["topic"], r["partition"], r["offset"], r["value"]) for r in rows]


def test_schema_is_sparks_kafka_source_schema(kspark, embedded_broker, unique_topic):
    topic = unique_topic("schema")
    df = _reader(kspark, embedded_broker.bootstrap_servers, [topic]).load()
    assert df.isStreaming
    assert df.schema == SPARK_KAFKA_SCHEMA


def test_batched_produce_is_read_completely(kspark, embedded_broker, unique_topic, tmp_path):
    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("batched")
    kafka_io.ensure_topics(bootstrap, [topic])
    values = [f"tx-{i}".encode() for i in range(104)]
    _produce_batched(bootstrap, topic, values, first_ts_ms=1_700_000_000_000)

    sink = _run_available_now(kspark, bootstrap, [topic], tmp_path / "ckpt")

    rows = sink.rows()
    assert [r["value"] for r in rows] == values
    assert [r["offset"] for r in rows] == list(range(104))
    assert {r["key"] for r in rows} == {b"card-7"}
    assert {(r["topic"], r["partition"], r["timestampType"]) for r in rows} == {(topic, 0, 0)}
    assert [r["ts_ms"] for r in rows] == [1_700_000_000_000 + i for i in range(104)]


def test_null_keys_and_several_partitions(kspark, embedded_broker, unique_topic, tmp_path):
    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("parts")
    kafka_io.ensure_topics(bootstrap, [topic], partitions=3)
    producer = Producer(kafka_io.producer_config(bootstrap, **{"linger.ms": 50}))
    for i in range(60):
        producer.produce(topic, value=f"{i}".encode(), partition=i % 3)
    assert producer.flush(30) == 0

    rows = _run_available_now(kspark, bootstrap, [topic], tmp_path / "ckpt").rows()

    assert sorted(int(r["value"]) for r in rows) == list(range(60))
    assert all(r["key"] is None for r in rows)
    # Ordered by partition, then offset, and each record is where it was produced.
    assert [(r["partition"], r["offset"]) for r in rows] == [(p, o) for p in range(3) for o in range(20)]
    assert all(int(r["value"]) % 3 == r["partition"] for r in rows)


def test_restart_reads_only_new_records_and_replays_uncommitted_batch_identically(
    kspark, embedded_broker, unique_topic, tmp_path
):
    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("restart")
    kafka_io.ensure_topics(bootstrap, [topic])
    checkpoint = tmp_path / "ckpt"
    _produce_batched(bootstrap, topic, [f"a{i}".encode() for i in range(104)], first_ts_ms=1_000)

    first = _run_available_now(kspark, bootstrap, [topic], checkpoint)
    assert [r["offset"] for r in first.rows()] == list(range(104))

    # Clean restart: only what was produced since.
    _produce_batched(bootstrap, topic, [f"b{i}".encode() for i in range(50)], first_ts_ms=2_000)
    second = _run_available_now(kspark, bootstrap, [topic], checkpoint)
    assert [r["value"] for r in second.rows()] == [f"b{i}".encode() for i in range(50)]
    assert [r["offset"] for r in second.rows()] == list(range(104, 154))
    last_id, last_rows = [b for b in second.batches if b[1]][-1]

    # Crash after the batch was planned (offset log written) but before it committed: Spark re-runs it
    # from its checkpointed offsets through readBetweenOffsets, which must give exactly the same records.
    (checkpoint / "commits" / str(last_id)).unlink()
    (checkpoint / "commits" / f".{last_id}.crc").unlink(missing_ok=True)
    _produce_batched(bootstrap, topic, [f"c{i}".encode() for i in range(30)], first_ts_ms=3_000)
    # Not availableNow: for a Python source Spark falls back to one batch, which would be the replay only.
    third = Sink()
    query = _start(kspark, bootstrap, [topic], checkpoint, third, {"processingTime": "0 seconds"})
    try:
        third.wait_until(query, lambda: sum(r["value"][:1] == b"c" for r in third.rows()) >= 30, "30 new rows")
    finally:
        query.stop()

    replayed = [rows for batch_id, rows in third.batches if batch_id == last_id]
    assert len(replayed) == 1
    assert _ids(replayed[0]) == _ids(last_rows)
    new_rows = [r for batch_id, rows in third.batches if batch_id > last_id for r in rows]
    assert [r["value"] for r in new_rows] == [f"c{i}".encode() for i in range(30)]
    assert [r["offset"] for r in new_rows] == list(range(154, 184))


def test_latest_skips_records_already_in_a_batched_topic(kspark, embedded_broker, unique_topic, tmp_path):
    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("latest")
    kafka_io.ensure_topics(bootstrap, [topic])
    _produce_batched(bootstrap, topic, [f"old{i}".encode() for i in range(104)], first_ts_ms=1_000)

    sink = Sink()
    query = _start(
        kspark, bootstrap, [topic], tmp_path / "ckpt", sink, {"processingTime": "0 seconds"},
        startingOffsets="latest",
    )
    try:
        # The first batch resolves "latest" (no rows); produce only after it, or the new records could
        # count as already there.
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while not sink.batches:
            assert query.exception() is None and time.monotonic() < deadline
            query.awaitTermination(0.1)
        _produce_batched(bootstrap, topic, [f"new{i}".encode() for i in range(5)], first_ts_ms=5_000)
        sink.wait_for(query, {topic: 5})
        query.processAllAvailable()
    finally:
        query.stop()
    assert [r["value"] for r in sink.rows()] == [f"new{i}".encode() for i in range(5)]
    assert [r["offset"] for r in sink.rows()] == list(range(104, 109))


def test_later_topic_is_never_behind_the_first_topic(kspark, embedded_broker, unique_topic, tmp_path):
    """A record of topic B acknowledged before a record of A is produced is in the same or an earlier
    micro-batch than that A record (subscribe=A,B), while production and micro-batches interleave."""
    bootstrap = embedded_broker.bootstrap_servers
    first, later = unique_topic("tx"), unique_topic("labels")
    kafka_io.ensure_topics(bootstrap, [first, later])
    waves, rounds_per_wave = 12, 25
    total = waves * rounds_per_wave
    sink = Sink()
    query = _start(kspark, bootstrap, [first, later], tmp_path / "ckpt", sink, {"processingTime": "0 seconds"})
    producer = Producer(kafka_io.producer_config(bootstrap))
    try:
        for wave in range(waves):
            for i in range(wave * rounds_per_wave, (wave + 1) * rounds_per_wave):
                producer.produce(later, value=str(i).encode())
                assert producer.flush(30) == 0
                producer.produce(first, value=str(i).encode())
            assert producer.flush(30) == 0
            # Each wave is consumed before the next starts, so the rounds spread over many batches.
            sink.wait_for(query, {first: (wave + 1) * rounds_per_wave})
        sink.wait_for(query, {first: total, later: total})
    finally:
        query.stop()

    batch_of = {}
    for batch_id, rows in sink.batches:
        for r in rows:
            batch_of[(r["topic"], int(r["value"]))] = batch_id
    assert len(batch_of) == 2 * total
    assert len({batch_of[(first, i)] for i in range(total)}) >= waves
    late = [i for i in range(total) if batch_of[(later, i)] > batch_of[(first, i)]]
    assert late == []


def test_max_offsets_per_trigger_caps_the_first_topic_only(kspark, embedded_broker, unique_topic, tmp_path):
    bootstrap = embedded_broker.bootstrap_servers
    first, later = unique_topic("capped"), unique_topic("uncapped")
    kafka_io.ensure_topics(bootstrap, [first, later])
    _produce_batched(bootstrap, first, [f"a{i}".encode() for i in range(30)], first_ts_ms=1_000)
    _produce_batched(bootstrap, later, [f"b{i}".encode() for i in range(30)], first_ts_ms=1_000)

    sink = Sink()
    query = _start(
        kspark, bootstrap, [first, later], tmp_path / "ckpt", sink, {"processingTime": "0 seconds"},
        maxOffsetsPerTrigger=10,
    )
    try:
        sink.wait_for(query, {first: 30, later: 30})
    finally:
        query.stop()

    per_batch = [Counter(r["topic"] for r in rows) for _, rows in sink.batches if rows]
    assert [c[first] for c in per_batch] == [10, 10, 10]
    assert [c[later] for c in per_batch] == [30, 0, 0]
    assert [r["value"] for r in sink.rows(first)] == [f"a{i}".encode() for i in range(30)]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("assign", '{"t": [0]}', "assign"),
        ("maxOffsetsPerTrigger", "0", "maxOffsetsPerTrigger"),
        ("kafka.auto.offset.reset", "latest", "kafka.auto.offset.reset"),
    ],
)
def test_bad_options_fail_at_load(kspark, embedded_broker, option, value, message):
    reader = _reader(kspark, embedded_broker.bootstrap_servers, ["t"]).option(option, value)
    with pytest.raises(PySparkException, match=message):
        reader.load()


def test_missing_bootstrap_servers_fails_at_load(kspark):
    with pytest.raises(PySparkException, match="kafka.bootstrap.servers"):
        kspark.readStream.format("kafka_confluent").option("subscribe", "t").load()



def test_reader_takes_the_later_topics_end_from_a_fetch_sent_after_the_first_topic_was_read(
    embedded_broker, unique_topic
):
    """The ordering guarantee at the reader level, in the situation where a shortcut would break it.

    The later topic gets a backlog first, which its consumer prefetches until its (tiny) queue is full
    and it stops fetching: its last Fetch response, and so its cached high watermark, predates the round's
    record. A reader that planned the later topic from that cached value would return the first topic's
    record without the later one's. The pauses only give the consumers' background fetches time to
    happen; the assertion does not depend on them.
    """
    from frauddetect.kafka_source import KafkaSimpleStreamReader, KafkaSourceOptions

    bootstrap = embedded_broker.bootstrap_servers
    first, later = unique_topic("tx"), unique_topic("labels")
    kafka_io.ensure_topics(bootstrap, [first, later])
    reader = KafkaSimpleStreamReader(
        KafkaSourceOptions.parse(
            {
                "kafka.bootstrap.servers": bootstrap,
                "subscribe": f"{first},{later}",
                "startingOffsets": "earliest",
                "kafka.queued.max.messages.kbytes": "1",
            }
        )
    )
    producer = Producer(kafka_io.producer_config(bootstrap))
    rounds, backlog = 5, 300
    try:
        offsets = reader.initialOffset()
        _, offsets = reader.read(offsets)
        for i in range(rounds):
            for j in range(backlog):
                producer.produce(later, value=f"backlog-{i}-{j}".encode())
            assert producer.flush(30) == 0
            time.sleep(0.2)
            producer.produce(later, value=str(i).encode())
            assert producer.flush(30) == 0
            producer.produce(first, value=str(i).encode())
            assert producer.flush(30) == 0
            time.sleep(0.2)
            seen_later = False
            for _ in range(50):
                batches, offsets = reader.read(offsets)
                values = {
                    (topic, value)
                    for batch in batches
                    for topic, value in zip(batch.column("topic").to_pylist(), batch.column("value").to_pylist())
                }
                seen_later = seen_later or (later, str(i).encode()) in values
                if (first, str(i).encode()) in values:
                    assert seen_later, f"round {i}: first topic's record read before the later topic's"
                    break
            else:
                raise AssertionError(f"round {i}: first topic's record never read")
        assert offsets == {first: {"0": rounds}, later: {"0": rounds * (backlog + 1)}}
    finally:
        reader.stop()


@pytest.mark.parametrize("fail_on_data_loss", ["true", "false"])
def test_offsets_past_the_end_are_data_loss(embedded_broker, unique_topic, fail_on_data_loss):
    """A checkpoint that outlived the embedded broker's in-memory data asks for offsets past the end."""
    from confluent_kafka import KafkaException

    from frauddetect.kafka_source import KafkaSimpleStreamReader, KafkaSourceOptions

    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("lost")
    kafka_io.ensure_topics(bootstrap, [topic])
    _produce_batched(bootstrap, topic, [b"r0", b"r1"], first_ts_ms=1_000)
    reader = KafkaSimpleStreamReader(
        KafkaSourceOptions.parse(
            {"kafka.bootstrap.servers": bootstrap, "subscribe": topic, "failOnDataLoss": fail_on_data_loss}
        )
    )
    start = {topic: {"0": 5000}}
    try:
        if fail_on_data_loss == "true":
            with pytest.raises(KafkaException, match="offset 5000 but ends at 2: records were lost"):
                reader.read(start)
        else:
            batches, end = reader.read(start)
            assert end == {topic: {"0": 2}}
            assert [v for b in batches for v in b.column("value").to_pylist()] == [b"r0", b"r1"]
            replay = reader.readBetweenOffsets(start, end)
            assert [v for b in replay for v in b.column("value").to_pylist()] == [b"r0", b"r1"]
    finally:
        reader.stop()


def test_starting_offsets_json_starts_at_the_given_offsets(embedded_broker, unique_topic):
    from frauddetect.kafka_source import KafkaSimpleStreamReader, KafkaSourceOptions

    bootstrap = embedded_broker.bootstrap_servers
    first, later = unique_topic("json-a"), unique_topic("json-b")
    kafka_io.ensure_topics(bootstrap, [first, later])
    _produce_batched(bootstrap, first, [f"a{i}".encode() for i in range(104)], first_ts_ms=1_000)
    _produce_batched(bootstrap, later, [f"b{i}".encode() for i in range(3)], first_ts_ms=1_000)
    reader = KafkaSimpleStreamReader(
        KafkaSourceOptions.parse(
            {
                "kafka.bootstrap.servers": bootstrap,
                "subscribe": f"{first},{later}",
                "startingOffsets": f'{{"{first}": {{"0": 100}}, "{later}": {{"0": -1}}}}',
            }
        )
    )
    try:
        start = reader.initialOffset()
        assert start == {first: {"0": 100}, later: {"0": -1}}
        batches, end = reader.read(start)
        assert [v for b in batches for v in b.column("value").to_pylist()] == [b"a100", b"a101", b"a102", b"a103"]
        assert end == {first: {"0": 104}, later: {"0": 3}}  # "latest" is the end after the batched produce
    finally:
        reader.stop()


def test_later_topics_get_a_looser_cap_against_backlogs(kspark, embedded_broker, unique_topic, tmp_path):
    bootstrap = embedded_broker.bootstrap_servers
    first, later = unique_topic("capped"), unique_topic("backlog")
    kafka_io.ensure_topics(bootstrap, [first, later])
    _produce_batched(bootstrap, first, [f"a{i}".encode() for i in range(20)], first_ts_ms=1_000)
    _produce_batched(bootstrap, later, [f"b{i}".encode() for i in range(100)], first_ts_ms=1_000)

    sink = Sink()
    query = _start(
        kspark, bootstrap, [first, later], tmp_path / "ckpt", sink, {"processingTime": "0 seconds"},
        maxOffsetsPerTrigger=10,
    )
    try:
        sink.wait_for(query, {first: 20, later: 100})
    finally:
        query.stop()

    per_batch = [Counter(r["topic"] for r in rows) for _, rows in sink.batches if rows]
    assert [c[later] for c in per_batch] == [40, 40, 20]  # 4 x maxOffsetsPerTrigger
    assert [r["value"] for r in sink.rows(later)] == [f"b{i}".encode() for i in range(100)]
