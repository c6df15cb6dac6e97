"""A Spark streaming source over confluent-kafka with the columns of Spark's own Kafka source, read on the
executors and planned the way Spark's Kafka source plans.

Spark's Kafka connector jar is not in the ``pyspark`` wheel and Maven is unreachable on the development
machines, so the local job reads Kafka through this Python data source; on AWS Glue the job uses
``format("kafka")`` on Amazon MSK with the same options and columns
(:data:`~frauddetect.stream.records.KAFKA_SCHEMA`), so nothing downstream of the source differs::

    register(spark)
    df = (spark.readStream.format("kafka_confluent")
          .option("kafka.bootstrap.servers", "127.0.0.1:9092").option("subscribe", "transactions")
          .option("maxOffsetsPerTrigger", "50000").load())

Planning (driver, :meth:`KafkaStreamReader.latestOffset`): the ends of all subscribed topic-partitions are
taken at one moment, from one round of Fetch responses (the embedded Tansu broker answers ListOffsets(latest)
wrongly, see :mod:`frauddetect.kafka_io`), then ``maxOffsetsPerTrigger`` is spread over them in proportion
to their lag (:func:`~frauddetect.stream.source_options.rate_limit`) -- what Spark's own source does.

Reading (executors, :meth:`KafkaStreamReader.read`): one Spark partition per Kafka topic-partition of the
micro-batch, reading exactly ``[start, end)``, so a replayed micro-batch reads the same records. Consumers are
kept per Python worker and reused across micro-batches. They join no consumer group and commit nothing:
Spark's checkpoint is the only record of progress (as with Spark's own source). Options:
:mod:`frauddetect.stream.source_options`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.types import StructType

from frauddetect import kafka_io
from frauddetect.stream.records import KAFKA_SCHEMA
from frauddetect.stream.source_options import EARLIEST, LATEST, SOURCE_NAME, KafkaSourceOptions, rate_limit

__all__ = ["KafkaConfluentDataSource", "KafkaPartition", "KafkaStreamReader", "SOURCE_NAME", "register"]

_BATCH = 10_000  # records per Arrow batch handed to Spark, and per consume() call
#: librdkafka timestamp type -> Java client's TimestampType id, what Spark's source puts in ``timestampType``.
_TIMESTAMP_TYPE_IDS = {0: -1, 1: 0, 2: 1}


def register(spark) -> None:
    """Register :class:`KafkaConfluentDataSource` with a SparkSession as :data:`SOURCE_NAME`. The Python
    workers must run an interpreter that imports ``frauddetect`` (set ``PYSPARK_PYTHON``)."""
    spark.dataSource.register(KafkaConfluentDataSource)


class KafkaConfluentDataSource(DataSource):
    """Spark Python data source ``kafka_confluent``: streaming reads only, schema :data:`KAFKA_SCHEMA`.
    Options are checked when the DataFrame is created, so a typo fails with a ValueError naming it."""

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        self.parsed = KafkaSourceOptions.parse(options)

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> StructType:
        return KAFKA_SCHEMA

    def streamReader(self, schema: StructType) -> "KafkaStreamReader":
        """Raises ValueError if a user-specified schema differs from :data:`KAFKA_SCHEMA`."""
        if schema != KAFKA_SCHEMA:
            raise ValueError(f"{SOURCE_NAME} has a fixed schema {KAFKA_SCHEMA.simpleString()}, got {schema.simpleString()}")
        return KafkaStreamReader(self.parsed)


@dataclass(frozen=True)
class KafkaPartition(InputPartition):
    """One topic-partition's share of a micro-batch: records with ``start <= offset < end``."""

    topic: str
    partition: int
    start: int
    end: int


def _to_json(offsets: dict[tuple[str, int], int], topics: tuple[str, ...]) -> dict:
    out: dict[str, dict[str, int]] = {t: {} for t in topics}
    for (topic, partition), offset in sorted(offsets.items()):
        out.setdefault(topic, {})[str(partition)] = int(offset)
    return out


def _from_json(offsets: dict) -> dict[tuple[str, int], int]:
    return {(topic, int(p)): int(o) for topic, parts in offsets.items() for p, o in parts.items()}


class KafkaStreamReader(DataSourceStreamReader):
    """Plans micro-batches on the driver and reads their partitions on the executors (module doc)."""

    def __init__(self, options: KafkaSourceOptions) -> None:
        self.options = options
        self._start: dict[tuple[str, int], int] | None = None
        self._start_of_query: dict[tuple[str, int], int] | None = None

    # planning (driver) -------------------------------------------------------------------------------
    def _probe(self) -> Consumer:
        return Consumer(self.options.consumer_config())

    def _current_ends(self, probe: Consumer) -> dict[tuple[str, int], int]:
        timeout = self.options.poll_timeout_s
        wanted = [(t, p) for t in self.options.topics for p in kafka_io.topic_partitions(probe, t, timeout)]
        return kafka_io.fetch_high_watermarks(probe, wanted, timeout)

    def _earliest(self, probe: Consumer, partitions) -> dict[tuple[str, int], int]:
        return {tp: probe.get_watermark_offsets(TopicPartition(*tp), timeout=self.options.poll_timeout_s)[0]
                for tp in partitions}

    def _resolve_starting(self, probe: Consumer, ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        start = self.options.starting_offsets
        given = {} if isinstance(start, str) else {(t, p): o for t, parts in start.items() for p, o in parts.items()}
        default = LATEST if start == "latest" else EARLIEST
        wanted = {tp: given.get(tp, default) for tp in ends}
        earliest = self._earliest(probe, [tp for tp, o in wanted.items() if o == EARLIEST])
        return {tp: ends[tp] if o == LATEST else earliest[tp] if o == EARLIEST else o for tp, o in wanted.items()}

    def initialOffset(self) -> dict:
        """Where a new query starts: ``startingOffsets`` resolved to offsets (the same ones the first
        :meth:`latestOffset` capped from, if it came first)."""
        if self._start is not None and self._start_of_query is not None:
            return _to_json(self._start_of_query, self.options.topics)
        probe = self._probe()
        if self._start is not None:
            # latestOffset() came first without a known start (no plannedOffsetsPath) and planned up to the
            # ends it saw; the query cannot start after them
            try:
                resolved = self._resolve_starting(probe, self._current_ends(probe))
            finally:
                probe.close()
            self._start_of_query = {tp: min(o, self._start.get(tp, o)) for tp, o in resolved.items()}
            return _to_json(self._start_of_query, self.options.topics)
        try:
            resolved = self._resolve_starting(probe, self._current_ends(probe))
        finally:
            probe.close()
        self._start = self._start_of_query = resolved
        return _to_json(resolved, self.options.topics)

    def _known_start(self, probe: Consumer, ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int] | None:
        """Where the next micro-batch starts: what this reader planned or read last, else the planned-offsets
        file; for a new query (the file configured but not written yet) the resolved ``startingOffsets``.
        Spark calls latestOffset() before initialOffset() on a new query."""
        if self._start is None and self.options.planned_offsets_path:
            path = Path(self.options.planned_offsets_path)
            if path.exists():
                self._start = _from_json(json.loads(path.read_text()))
            else:
                self._start = self._resolve_starting(probe, ends)
        return self._start

    def latestOffset(self) -> dict:
        """The next micro-batch's end: every topic-partition's end now, capped by ``maxOffsetsPerTrigger``
        spread in proportion to lag. New partitions start at their earliest offset. Without a known start
        (a restart without ``plannedOffsetsPath``) the micro-batch is not capped."""
        probe = self._probe()
        try:
            ends = self._current_ends(probe)
            start = self._known_start(probe, ends)
            if self._start_of_query is None and start is not None:
                self._start_of_query = dict(start)
            if start is not None:
                start = {**self._earliest(probe, [tp for tp in ends if tp not in start]), **start}
        finally:
            probe.close()
        if start is None:
            planned = ends
        else:
            if self.options.max_offsets_per_trigger:
                ends = rate_limit(self.options.max_offsets_per_trigger, start, ends)
            planned = {tp: max(e, start[tp]) for tp, e in ends.items()}
        self._start = planned
        if self.options.planned_offsets_path:
            path = Path(self.options.planned_offsets_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(_to_json(planned, self.options.topics)))
            tmp.replace(path)
        return _to_json(planned, self.options.topics)

    def partitions(self, start: dict, end: dict) -> list[KafkaPartition]:
        """One :class:`KafkaPartition` per topic-partition with records between ``start`` and ``end``."""
        first, last = _from_json(start), _from_json(end)
        self._start = dict(last)
        return [KafkaPartition(t, p, first.get((t, p), EARLIEST), e) for (t, p), e in sorted(last.items())
                if first.get((t, p), EARLIEST) < e]

    def commit(self, end: dict) -> None:
        """Nothing to commit to Kafka: progress lives in Spark's checkpoint."""

    def stop(self) -> None:
        """Close this process's cached consumer for these options (Spark calls it when the query stops)."""
        consumer = _CONSUMERS.pop(self.options.client_key(), None)
        if consumer is not None:
            consumer.close()

    # reading (executors) -----------------------------------------------------------------------------
    def read(self, partition: KafkaPartition) -> Iterator[pa.RecordBatch]:
        """The records of ``partition`` in offset order, as Arrow batches of :data:`KAFKA_SCHEMA`.
        Raises TimeoutError if they cannot be fetched within ``kafkaConsumer.pollTimeoutMs``, KafkaException
        on a broker error or lost offsets (``failOnDataLoss=true``)."""
        messages = _read_range(self.options, partition)
        for lo in range(0, len(messages), _BATCH):
            yield _record_batch(partition.topic, partition.partition, messages[lo:lo + _BATCH])


_CONSUMERS: dict[tuple, Consumer] = {}


def _consumer(options: KafkaSourceOptions) -> Consumer:
    key = options.client_key()
    consumer = _CONSUMERS.get(key)
    if consumer is None:
        consumer = _CONSUMERS[key] = Consumer(options.consumer_config())
    return consumer


def _raise_for(err: KafkaError, topic: str, partition: int) -> None:
    """Raise for a consumer error event unless it is transient (librdkafka retries connection trouble itself;
    if it never recovers, the read's deadline raises)."""
    if err.code() == KafkaError._AUTO_OFFSET_RESET:
        raise KafkaException(KafkaError(err.code(), f"{topic} [{partition}]: offset no longer available (data loss; "
                                                    f"set failOnDataLoss=false to continue): {err.str()}"))
    if err.fatal() or not (err.retriable() or err.code() < 0):
        raise KafkaException(err)


def _read_range(options: KafkaSourceOptions, part: KafkaPartition) -> list[Message]:
    consumer = _consumer(options)
    deadline = time.monotonic() + options.poll_timeout_s
    tp = TopicPartition(part.topic, part.partition)
    first = part.start
    if first == EARLIEST or (first < 0):
        first = consumer.get_watermark_offsets(tp, timeout=options.poll_timeout_s)[0]
    low, _ = consumer.get_watermark_offsets(tp, cached=False, timeout=options.poll_timeout_s)
    if first < low:
        if options.fail_on_data_loss:
            raise KafkaException(KafkaError(KafkaError.OFFSET_OUT_OF_RANGE,
                                            f"{SOURCE_NAME}: {part.topic} [{part.partition}] should be read from offset "
                                            f"{first} but starts at {low}: records were lost (retention, or a restarted "
                                            "embedded broker). Set failOnDataLoss=false to continue from the earliest."))
        first = low
    out: list[Message] = []
    if first >= part.end:
        return out
    consumer.assign([TopicPartition(part.topic, part.partition, first)])
    position = first
    while position < part.end:
        batch = consumer.consume(min(_BATCH, part.end - position), timeout=0)
        if not batch:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{SOURCE_NAME}: could not read {part.topic} [{part.partition}] up to offset "
                                   f"{part.end} within {options.poll_timeout_s} s (reached {position})")
            msg = consumer.poll(min(left, 0.2))
            if msg is None:
                continue
            batch = [msg]
        for msg in batch:
            if msg.topic() != part.topic or msg.partition() != part.partition:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    _raise_for(err, part.topic, part.partition)
                elif position <= msg.offset() < part.end:  # the partition ends before the planned end
                    if options.fail_on_data_loss:
                        raise KafkaException(KafkaError(
                            KafkaError.OFFSET_OUT_OF_RANGE,
                            f"{SOURCE_NAME}: {part.topic} [{part.partition}] ends at {msg.offset()}, before the "
                            f"planned offset {part.end}: records were lost (a restarted embedded broker keeps "
                            "none). Start with a new checkpoint, or set failOnDataLoss=false."))
                    position = part.end
                continue
            offset = msg.offset()
            if offset < position:
                continue
            if offset < part.end:
                out.append(msg)
            position = offset + 1
    consumer.unassign()
    return out


_ARROW_SCHEMA: pa.Schema | None = None


def _arrow_schema() -> pa.Schema:
    # Spark's own mapping (timestamp -> timestamp[us, tz=UTC], ...), so the batches need no conversion.
    global _ARROW_SCHEMA
    if _ARROW_SCHEMA is None:
        from pyspark.sql.pandas.types import to_arrow_schema

        _ARROW_SCHEMA = to_arrow_schema(KAFKA_SCHEMA)
    return _ARROW_SCHEMA


def _record_batch(topic: str, partition: int, messages: list[Message]) -> pa.RecordBatch:
    schema = _arrow_schema()
    stamps = [m.timestamp() for m in messages]
    n = len(messages)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([m.key() for m in messages], pa.binary()),
            pa.array([m.value() for m in messages], pa.binary()),
            pa.array([topic] * n, pa.string()),
            pa.array([partition] * n, pa.int32()),
            pa.array([m.offset() for m in messages], pa.int64()),
            # Kafka timestamps are ms since the epoch (-1 when absent, as in the Java client)
            pa.array([ms * 1000 for _, ms in stamps], pa.int64()).cast(schema.field("timestamp").type),
            pa.array([_TIMESTAMP_TYPE_IDS.get(kind, -1) for kind, _ in stamps], pa.int32()),
        ],
        schema=schema,
    )
