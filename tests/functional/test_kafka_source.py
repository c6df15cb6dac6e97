"""The ``kafka_confluent`` Spark source (:mod:`frauddetect.stream.source`) against the real embedded broker and
a real local Spark.

The Spark tests run actual streaming queries (foreachBatch collecting the rows of a test's few records on the
driver, which the job itself never does). Records are produced in batches on purpose: the embedded Tansu
broker answers ListOffsets(latest) with the base offset of the last record batch + 1, so a source that planned
from ListOffsets would miss the tail.
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
from frauddetect.stream.source import KafkaPartition, KafkaStreamReader, register
from frauddetect.stream.source_options import KafkaSourceOptions

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
    return _write(_reader(spark, bootstrap, topics, **options).load(), checkpoint, sink, trigger)


def _write(df, checkpoint: Path, sink: Sink, trigger: dict):
    return (
        df.writeStream.foreachBatch(sink)
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


def _direct_reader(bootstrap: str, topics: list[str], **options) -> KafkaStreamReader:
    return KafkaStreamReader(KafkaSourceOptions.parse(
        {"kafka.bootstrap.servers": bootstrap, "subscribe": ",".join(topics), **options}))


def _values(reader: KafkaStreamReader, start: dict, end: dict) -> list[bytes]:
    return [v for part in reader.partitions(start, end) for b in reader.read(part) for v in b.column("value").to_pylist()]


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


def test_each_kafka_partition_is_a_spark_partition_read_where_it_was_produced(kspark, embedded_broker, unique_topic,
                                                                            tmp_path):
    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("parts")
    kafka_io.ensure_topics(bootstrap, [topic], partitions=3)
    producer = Producer(kafka_io.producer_config(bootstrap, **{"linger.ms": 50}))
    for i in range(60):
        producer.produce(topic, value=f"{i}".encode(), partition=i % 3)
    assert producer.flush(30) == 0

    seen = []

    def sink(df, batch_id):
        seen.extend(df.selectExpr("spark_partition_id() AS task", "partition", "offset", "key", "value").collect())

    query = _write(_reader(kspark, bootstrap, [topic]).load(), tmp_path / "ckpt", sink, {"availableNow": True})
    assert query.awaitTermination(QUERY_TIMEOUT_S) and query.exception() is None
    assert sorted(int(r["value"]) for r in seen) == list(range(60))
    assert all(r["key"] is None for r in seen)
    assert all(int(r["value"]) % 3 == r["partition"] for r in seen)
    assert {r["task"]: r["partition"] for r in seen} == {0: 0, 1: 1, 2: 2}  # one task per Kafka partition
    for p in range(3):
        assert [r["offset"] for r in seen if r["partition"] == p] == list(range(20))


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

    # Crash after the batch was planned (offset log written) but before it committed: Spark re-runs it from its
    # checkpointed offsets, which must give exactly the same records.
    (checkpoint / "commits" / str(last_id)).unlink()
    (checkpoint / "commits" / f".{last_id}.crc").unlink(missing_ok=True)
    _produce_batched(bootstrap, topic, [f"c{i}".encode() for i in range(30)], first_ts_ms=3_000)
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
        # Spark runs no micro-batch until there is data: wait until the query planned once (resolving "latest")
        # before producing, or the new records could count as already there.
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while query.lastProgress is None:
            assert query.exception() is None and time.monotonic() < deadline
            query.awaitTermination(0.1)
        _produce_batched(bootstrap, topic, [f"new{i}".encode() for i in range(5)], first_ts_ms=5_000)
        sink.wait_for(query, {topic: 5})
        query.processAllAvailable()
    finally:
        query.stop()
    assert [r["value"] for r in sink.rows()] == [f"new{i}".encode() for i in range(5)]
    assert [r["offset"] for r in sink.rows()] == list(range(104, 109))


def test_the_cap_is_spread_over_partitions_in_proportion_to_their_lag(kspark, embedded_broker, unique_topic,
                                                                      tmp_path):
    """As Spark's Kafka source: 30 and 10 records behind, a cap of 8 reads 6 + 2, then 6 + 2, ..."""
    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("capped")
    kafka_io.ensure_topics(bootstrap, [topic], partitions=2)
    producer = Producer(kafka_io.producer_config(bootstrap, **{"linger.ms": 50}))
    for i in range(40):
        producer.produce(topic, value=f"{i}".encode(), partition=0 if i < 30 else 1)
    assert producer.flush(30) == 0

    sink = Sink()
    query = _start(kspark, bootstrap, [topic], tmp_path / "ckpt", sink, {"processingTime": "0 seconds"},
                   maxOffsetsPerTrigger=8, plannedOffsetsPath=tmp_path / "planned.json")
    try:
        sink.wait_for(query, {topic: 40})
    finally:
        query.stop()
    per_batch = [Counter(r["partition"] for r in rows) for _, rows in sink.batches if rows]
    assert [(c[0], c[1]) for c in per_batch] == [(6, 2), (6, 2), (6, 2), (6, 2), (6, 2)]


def test_a_label_acknowledged_before_a_transaction_is_never_in_a_later_micro_batch(kspark, embedded_broker,
                                                                                 unique_topic, tmp_path):
    """The job's planning rule with its two sources (transactions, then labels, unioned as the job unions
    them): Spark plans the sources in that order, each takes its partitions' ends at one moment, so a label
    acknowledged before a transaction is produced is read in the same or an earlier micro-batch, while
    production and micro-batches interleave."""
    bootstrap = embedded_broker.bootstrap_servers
    tx_topic, label_topic = unique_topic("tx"), unique_topic("labels")
    kafka_io.ensure_topics(bootstrap, [tx_topic], partitions=3)
    kafka_io.ensure_topics(bootstrap, [label_topic], partitions=2)
    waves, rounds_per_wave = 10, 25
    total = waves * rounds_per_wave
    sink = Sink()
    both = _reader(kspark, bootstrap, [tx_topic]).load().unionByName(_reader(kspark, bootstrap, [label_topic]).load())
    query = _write(both, tmp_path / "ckpt", sink, {"processingTime": "0 seconds"})
    producer = Producer(kafka_io.producer_config(bootstrap))
    try:
        for wave in range(waves):
            for i in range(wave * rounds_per_wave, (wave + 1) * rounds_per_wave):
                producer.produce(label_topic, value=str(i).encode(), partition=i % 2)
                assert producer.flush(30) == 0
                producer.produce(tx_topic, value=str(i).encode(), partition=i % 3)
            assert producer.flush(30) == 0
            sink.wait_for(query, {tx_topic: (wave + 1) * rounds_per_wave})
        sink.wait_for(query, {tx_topic: total, label_topic: total})
    finally:
        query.stop()

    batch_of = {(r["topic"], int(r["value"])): batch_id for batch_id, rows in sink.batches for r in rows}
    assert len(batch_of) == 2 * total
    assert len({batch_of[(tx_topic, i)] for i in range(total)}) >= waves
    assert [i for i in range(total) if batch_of[(label_topic, i)] > batch_of[(tx_topic, i)]] == []


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


def test_planning_takes_every_partitions_end_from_the_broker_at_one_moment(embedded_broker, unique_topic):
    """The ends come from the broker's high watermarks (not a consumer's cache) in one round: what was produced
    before latestOffset() is in the plan, whatever the partition."""
    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("ends")
    kafka_io.ensure_topics(bootstrap, [topic], partitions=3)
    reader = _direct_reader(bootstrap, [topic], startingOffsets="earliest")
    producer = Producer(kafka_io.producer_config(bootstrap, **{"linger.ms": 20}))
    start = reader.initialOffset()
    produced = 0
    for round_ in range(5):
        for i in range(7 * (round_ + 1)):
            producer.produce(topic, value=f"{round_}-{i}".encode(), partition=(i + round_) % 3)
        assert producer.flush(30) == 0
        produced += 7 * (round_ + 1)
        end = reader.latestOffset()
        assert sum(end[topic].values()) == produced
        assert len(_values(reader, start, end)) == 7 * (round_ + 1)
        start = end
    reader.stop()


def test_a_restarted_reader_caps_from_the_offsets_it_planned_last(embedded_broker, unique_topic, tmp_path):
    """Spark's Python API gives latestOffset() no start offset; the planned-offsets file carries it across a
    restart, so the first micro-batch after one is capped too."""
    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("replan")
    kafka_io.ensure_topics(bootstrap, [topic])
    _produce_batched(bootstrap, topic, [f"r{i}".encode() for i in range(50)], first_ts_ms=1_000)
    options = {"startingOffsets": "earliest", "maxOffsetsPerTrigger": "20",
               "plannedOffsetsPath": str(tmp_path / "planned.json")}
    first = _direct_reader(bootstrap, [topic], **options)
    assert first.latestOffset() == {topic: {"0": 20}}  # Spark asks for the end before the start on a new query
    assert first.initialOffset() == {topic: {"0": 0}}
    assert first.latestOffset() == {topic: {"0": 40}}
    again = _direct_reader(bootstrap, [topic], **options)
    assert again.latestOffset() == {topic: {"0": 50}}
    without_file = _direct_reader(bootstrap, [topic], startingOffsets="earliest", maxOffsetsPerTrigger="20")
    assert without_file.latestOffset() == {topic: {"0": 50}}  # documented: a query's first micro-batch is uncapped
    for reader in (first, again, without_file):
        reader.stop()


@pytest.mark.parametrize("fail_on_data_loss", ["true", "false"])
def test_offsets_past_the_end_are_data_loss(embedded_broker, unique_topic, fail_on_data_loss):
    """A checkpoint that outlived the embedded broker's in-memory data asks for offsets past the end."""
    from confluent_kafka import KafkaException

    bootstrap = embedded_broker.bootstrap_servers
    topic = unique_topic("lost")
    kafka_io.ensure_topics(bootstrap, [topic])
    _produce_batched(bootstrap, topic, [b"r0", b"r1"], first_ts_ms=1_000)
    reader = _direct_reader(bootstrap, [topic], failOnDataLoss=fail_on_data_loss)
    planned = KafkaPartition(topic, 0, 0, 5000)
    if fail_on_data_loss == "true":
        with pytest.raises(KafkaException, match="ends at 2, before the planned offset 5000: records were lost"):
            list(reader.read(planned))
    else:
        assert [v for b in reader.read(planned) for v in b.column("value").to_pylist()] == [b"r0", b"r1"]
    reader.stop()


def test_starting_offsets_json_starts_at_the_given_offsets(embedded_broker, unique_topic):
    bootstrap = embedded_broker.bootstrap_servers
    first, later = unique_topic("json-a"), unique_topic("json-b")
    kafka_io.ensure_topics(bootstrap, [first, later])
    _produce_batched(bootstrap, first, [f"a{i}".encode() for i in range(104)], first_ts_ms=1_000)
    _produce_batched(bootstrap, later, [f"b{i}".encode() for i in range(3)], first_ts_ms=1_000)
    reader = _direct_reader(bootstrap, [first, later],
                            startingOffsets=f'{{"{first}": {{"0": 100}}, "{later}": {{"0": -1}}}}')
    start = reader.initialOffset()
    assert start == {first: {"0": 100}, later: {"0": 3}}  # "latest" is the end after the batched produce
    _produce_batched(bootstrap, later, [b"b3"], first_ts_ms=2_000)
    end = reader.latestOffset()
    assert end == {first: {"0": 104}, later: {"0": 4}}
    assert _values(reader, start, end) == [b"a100", b"a101", b"a102", b"a103", b"b3"]
    reader.stop()
