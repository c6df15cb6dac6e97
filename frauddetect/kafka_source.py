"""A Spark streaming source over confluent-kafka with the columns of Spark's own Kafka source.

Spark's Kafka connector jar is not in the ``pyspark`` wheel and Maven is unreachable on the development
machines, so the local loop reads Kafka through this Python data source instead::

    from frauddetect.kafka_source import register
    register(spark)
    df = (spark.readStream.format("kafka_confluent")
          .option("kafka.bootstrap.servers", "127.0.0.1:9092")
          .option("subscribe", "transactions,labels")
          .option("startingOffsets", "earliest")
          .load())

On AWS Glue the job uses ``format("kafka")`` (Spark's built-in source, on Amazon MSK) with the same options.
Both produce the same columns with the same types, so nothing downstream of the source changes:

=================  ==========  =========================================================================
column             type        value
=================  ==========  =========================================================================
``key``            binary      record key (null when absent)
``value``          binary      record value (null for a tombstone)
``topic``          string      topic name
``partition``      int         partition id
``offset``         long        record offset
``timestamp``      timestamp   record timestamp (ms precision, UTC)
``timestampType``  int         0 = CreateTime, 1 = LogAppendTime, -1 = none (Java client ids)
=================  ==========  =========================================================================

Options (names as Spark's Kafka source has them; case-insensitive):

``kafka.bootstrap.servers`` (required)
    ``host:port[,host:port...]``.
``subscribe`` (required)
    Comma-separated topics. The order matters, see below. ``assign`` and ``subscribePattern`` are not
    supported (rejected, not ignored).
``startingOffsets`` (default ``latest``, as in Spark)
    ``earliest``, ``latest`` or Spark's JSON (``{"transactions": {"0": 42, "1": -2}}``; -2 = earliest,
    -1 = latest; partitions left out start at earliest). Only applies to a new query; a restarted query
    continues from its checkpoint. Partitions that appear while the query runs start at earliest.
``maxOffsetsPerTrigger`` (optional)
    At most this many records of the FIRST subscribed topic per micro-batch (see below).
``laterTopicsMaxOffsetsPerTrigger`` (optional; default 4 x ``maxOffsetsPerTrigger``)
    A looser cap on each later topic, a safety valve for backlogs (see below).
``failOnDataLoss`` (default ``true``)
    ``true``: fail when a planned offset is no longer in the broker (deleted by retention). ``false``:
    continue from the earliest available offset.
``kafkaConsumer.pollTimeoutMs`` (default 120000)
    How long one planning or read step may wait for records the broker has announced before failing.
``auth`` (default ``none``) and ``authRegion``
    ``msk-iam``: every consumer of the source speaks SASL/OAUTHBEARER over TLS with Amazon MSK IAM tokens
    signed for ``authRegion`` (required then); ``none``: PLAINTEXT. Spark hands options to other processes
    as strings, so the token callback cannot be an option: each process builds it from these two
    (:func:`frauddetect.kafka_io.auth_settings`). Spark's own source takes the Java client's settings
    instead (:func:`frauddetect.kafka_io.spark_source_auth_options` gives both).
``kafka.*``
    Passed to librdkafka without the prefix (other security settings, ``kafka.group.id``, ...). These are
    librdkafka property names, which mostly but not always equal the Java client's. As in Spark,
    ``kafka.auto.offset.reset``, ``kafka.enable.auto.commit``, ``kafka.key.deserializer``,
    ``kafka.value.deserializer`` and ``kafka.interceptor.classes`` are rejected. ``includeHeaders=true``
    is rejected (no ``headers`` column). Other options of Spark's Kafka source are ignored.

Offsets are Spark's JSON: ``{"topic": {"partition": next_offset_to_read}}``.

Topic ordering guarantee (which the pipeline relies on; Spark's own source does not give it):
    Each micro-batch reads the topics in the order given in ``subscribe``, each up to the end of what the
    broker holds at the moment that topic is read (the end is taken from a Fetch response issued after
    the previous topic was read). So if a producer has a record of topic B acknowledged before it produces
    a record of topic A, and the source is ``subscribe=A,B``, then whenever A's record is in micro-batch k,
    B's record is in micro-batch k or an earlier one. The replay producer uses this to make every label
    released before a transaction available no later than the transaction.

``maxOffsetsPerTrigger`` caps the first topic; later topics get a looser cap:
    a tight cap on a later topic could leave behind records that were acknowledged before a record of an
    earlier topic read in the same batch, which breaks the guarantee above. A producer that merges labels
    and transactions in event time puts about one label per transaction, so 4x the first topic's cap keeps
    the guarantee for it while a backlog cannot pull an unbounded number of labels into one micro-batch.
    A source whose later topics are denser than that needs ``laterTopicsMaxOffsetsPerTrigger`` raised.

Exactly once:
    The source is a :class:`pyspark.sql.datasource.SimpleDataSourceStreamReader`. Spark calls
    :meth:`KafkaSimpleStreamReader.read` on the driver to fetch a batch and plan its end offset from what
    was actually fetched: no ListOffsets request is involved, whose answer is wrong on the embedded Tansu
    broker after batched produces (see :mod:`frauddetect.kafka_io`). Spark writes the end offset to its
    checkpoint before running the batch; a restarted query re-runs an uncommitted batch through
    :meth:`KafkaSimpleStreamReader.readBetweenOffsets`, which returns exactly the same records in the same
    order. With an idempotent or transactional sink keyed on the batch id, that is exactly-once.

Limits:
    Records pass through the driver (one Python process), which is what SimpleDataSourceStreamReader is
    made for; it is far faster than the local loop needs (the planning step reads ~100k records/s into
    Arrow). Spark 4.1 does not support ``trigger(availableNow=True)`` for Python sources and falls back
    to ONE micro-batch: with ``maxOffsetsPerTrigger`` that batch is capped, and after a crash it is only
    the re-run of the uncommitted batch. Use a processing-time trigger to catch up. The Kafka consumers
    are not in a consumer group and commit nothing: Spark's checkpoint is the only record of progress
    (as with Spark's own source).
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pyspark.sql.datasource import DataSource, SimpleDataSourceStreamReader
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

__all__ = [
    "KAFKA_SCHEMA",
    "SOURCE_NAME",
    "KafkaConfluentDataSource",
    "KafkaSimpleStreamReader",
    "KafkaSourceOptions",
    "register",
]

#: Short name for ``spark.readStream.format(...)``.
SOURCE_NAME = "kafka_confluent"

#: The columns of Spark's Kafka source (``KafkaRecordToRowConverter.kafkaSchema``, without headers).
KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
    ]
)

_EARLIEST = -2  # Spark's JSON sentinels in startingOffsets
_LATEST = -1
#: Records per Arrow batch handed to Spark, and per consume() call.
_BATCH = 10_000
#: librdkafka timestamp type -> Java client's TimestampType id (NO_TIMESTAMP_TYPE=-1, CREATE_TIME=0,
#: LOG_APPEND_TIME=1), which is what Spark's source puts in ``timestampType``.
_TIMESTAMP_TYPE_IDS = {0: -1, 1: 0, 2: 1}
#: kafka.* options that Spark's Kafka source rejects because the source manages them itself.
_FORBIDDEN_KAFKA_OPTIONS = (
    "auto.offset.reset",
    "enable.auto.commit",
    "key.deserializer",
    "value.deserializer",
    "interceptor.classes",
)


def register(spark: Any) -> None:
    """Register :class:`KafkaConfluentDataSource` with a SparkSession under :data:`SOURCE_NAME`.

    Needed once per SparkSession before ``spark.readStream.format("kafka_confluent")``. The Python workers
    must run an interpreter that can import ``frauddetect``: set ``PYSPARK_PYTHON`` to it before the
    session starts, or workers fail with "Python worker failed to connect back".
    """
    spark.dataSource.register(KafkaConfluentDataSource)


# -- options --------------------------------------------------------------------------------------------


# Later topics (labels) get a looser cap than the first: a producer that merges labels and transactions in
# event time puts about one label per transaction, so 4x keeps every label a batch's transactions need while
# a backlog (a job restarted behind a producer far ahead) can no longer pull millions of labels into one
# micro-batch and exhaust the driver's heap (seen: 920k labels with 50k transactions, OutOfMemoryError).
LATER_TOPICS_CAP_FACTOR = 4


@dataclass(frozen=True)
class KafkaSourceOptions:
    """The source's options, parsed and checked (see the module doc for their meaning).

    ``starting_offsets`` is ``"earliest"``, ``"latest"`` or ``{topic: {partition: offset}}`` with Spark's
    -2/-1 sentinels; ``poll_timeout_s`` is in seconds; ``consumer_overrides`` are librdkafka settings;
    ``auth``/``auth_region`` select :func:`frauddetect.kafka_io.auth_settings` (plain strings, so the options
    pickle to the processes that open consumers).
    """

    bootstrap_servers: str
    topics: tuple[str, ...]
    starting_offsets: str | dict[str, dict[int, int]] = "latest"
    max_offsets_per_trigger: int | None = None
    later_topics_max_offsets_per_trigger: int | None = None
    fail_on_data_loss: bool = True
    poll_timeout_s: float = 120.0
    consumer_overrides: dict[str, str] = field(default_factory=dict)
    auth: str = "none"
    auth_region: str | None = None

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> "KafkaSourceOptions":
        """Parse Spark-style string options (keys case-insensitive).

        :raises ValueError: on a missing, malformed or unsupported option, naming it.
        """
        opts = {str(k).lower(): str(v) for k, v in options.items()}
        for unsupported in ("assign", "subscribepattern"):
            if unsupported in opts:
                raise ValueError(f"{SOURCE_NAME}: option '{unsupported}' is not supported, use 'subscribe'")
        if opts.get("includeheaders", "false").strip().lower() == "true":
            raise ValueError(f"{SOURCE_NAME}: includeHeaders=true is not supported (no 'headers' column)")

        bootstrap = opts.get("kafka.bootstrap.servers", "").strip()
        if not bootstrap:
            raise ValueError(f"{SOURCE_NAME}: option 'kafka.bootstrap.servers' is required")
        topics = tuple(dict.fromkeys(t.strip() for t in opts.get("subscribe", "").split(",") if t.strip()))
        if not topics:
            raise ValueError(f"{SOURCE_NAME}: option 'subscribe' (comma-separated topics) is required")

        overrides = {}
        for key, value in opts.items():
            if key.startswith("kafka.") and key != "kafka.bootstrap.servers":
                name = key[len("kafka.") :]
                if name in _FORBIDDEN_KAFKA_OPTIONS:
                    raise ValueError(f"{SOURCE_NAME}: option '{key}' is not supported (the source sets it)")
                overrides[name] = value

        auth = opts.get(kafka_io.SOURCE_AUTH_OPTION.lower(), "none").strip().lower()
        auth_region = opts.get(kafka_io.SOURCE_AUTH_REGION_OPTION.lower(), "").strip() or None
        try:
            kafka_io.auth_settings(auth, auth_region)
        except ValueError as exc:
            raise ValueError(f"{SOURCE_NAME}: options 'auth'/'authRegion': {exc}") from None

        cap = _parse_positive_int(opts, "maxOffsetsPerTrigger")
        return cls(
            bootstrap_servers=bootstrap,
            topics=topics,
            starting_offsets=_parse_starting_offsets(opts.get("startingoffsets", "latest"), topics),
            max_offsets_per_trigger=cap,
            later_topics_max_offsets_per_trigger=_parse_positive_int(opts, "laterTopicsMaxOffsetsPerTrigger")
            or (LATER_TOPICS_CAP_FACTOR * cap if cap else None),
            fail_on_data_loss=_parse_bool(opts.get("failondataloss", "true"), "failOnDataLoss"),
            poll_timeout_s=(_parse_positive_int(opts, "kafkaConsumer.pollTimeoutMs") or 120_000) / 1000.0,
            consumer_overrides=overrides,
            auth=auth,
            auth_region=auth_region,
        )

    def consumer_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings for the source's consumers (no group membership, nothing committed), with
        the security settings of ``auth`` built in this process (every consumer of the source is made
        from here: the driver's readers and probes and the executors' bounded readers)."""
        return kafka_io.consumer_config(
            self.bootstrap_servers,
            self.consumer_overrides.get("group.id"),
            **{
                # Spark's source fails on lost data unless failOnDataLoss=false; "error" makes librdkafka
                # report an out-of-range offset instead of silently jumping.
                "auto.offset.reset": "error" if self.fail_on_data_loss else "earliest",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                **kafka_io.auth_settings(self.auth, self.auth_region),
                **self.consumer_overrides,
                # The reader detects drained partitions by their EOF events.
                "enable.partition.eof": True,
                **extra,
            },
        )


def _parse_starting_offsets(raw: str, topics: tuple[str, ...]) -> str | dict[str, dict[int, int]]:
    text = raw.strip()
    if text.lower() in ("earliest", "latest"):
        return text.lower()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{SOURCE_NAME}: startingOffsets must be 'earliest', 'latest' or JSON like "
            f'{{"topic": {{"0": 42}}}}, got {raw!r}'
        ) from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"{SOURCE_NAME}: startingOffsets JSON must be an object, got {raw!r}")
    result: dict[str, dict[int, int]] = {}
    for topic, partitions in parsed.items():
        if topic not in topics:
            raise ValueError(f"{SOURCE_NAME}: startingOffsets names {topic!r}, which is not subscribed")
        if not isinstance(partitions, dict):
            raise ValueError(f"{SOURCE_NAME}: startingOffsets[{topic!r}] must be an object")
        result[topic] = {}
        for partition, offset in partitions.items():
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < _EARLIEST:
                raise ValueError(
                    f"{SOURCE_NAME}: startingOffsets[{topic!r}][{partition!r}] must be an int >= -2"
                )
            result[topic][int(partition)] = offset
    return result


def _parse_positive_int(opts: Mapping[str, str], name: str) -> int | None:
    key = name.lower()
    if key not in opts:
        return None
    try:
        value = int(opts[key])
    except ValueError:
        raise ValueError(f"{SOURCE_NAME}: {name} must be a positive integer, got {opts[key]!r}") from None
    if value <= 0:
        raise ValueError(f"{SOURCE_NAME}: {name} must be a positive integer, got {value}")
    return value


def _parse_bool(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"{SOURCE_NAME}: {name} must be 'true' or 'false', got {raw!r}")
    return value == "true"


# -- the data source -------------------------------------------------------------------------------------


class KafkaConfluentDataSource(DataSource):
    """Spark Python data source ``kafka_confluent``: streaming reads only, schema :data:`KAFKA_SCHEMA`.

    Options are checked when the DataFrame is created (``load()``), so a typo fails early with a
    ``ValueError`` naming the option.
    """

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        self.parsed = KafkaSourceOptions.parse(options)

    @classmethod
    def name(cls) -> str:
        """:data:`SOURCE_NAME`."""
        return SOURCE_NAME

    def schema(self) -> StructType:
        """:data:`KAFKA_SCHEMA`."""
        return KAFKA_SCHEMA

    def simpleStreamReader(self, schema: StructType) -> "KafkaSimpleStreamReader":
        """The stream reader (driver side: planning; executor side: re-reading a batch after a restart).

        :raises ValueError: if a user-specified schema differs from :data:`KAFKA_SCHEMA`.
        """
        if schema != KAFKA_SCHEMA:
            raise ValueError(
                f"{SOURCE_NAME} has a fixed schema {KAFKA_SCHEMA.simpleString()}, got {schema.simpleString()}"
            )
        return KafkaSimpleStreamReader(self.parsed)


class KafkaSimpleStreamReader(SimpleDataSourceStreamReader):
    """Reads micro-batches for :class:`KafkaConfluentDataSource` (see the module doc for the guarantees).

    One long-lived consumer per subscribed topic (created on first use, kept across :meth:`read` calls, so
    librdkafka keeps prefetching and a batch does not pay a reconnect). The first topic's consumer only
    seeks when Spark asks for an offset it is not at (after a restart); later topics' consumers seek to
    their current position at every read, which discards prefetched data but guarantees that their end
    comes from a Fetch sent after the previous topic was read.

    :param options: parsed options.
    """

    def __init__(self, options: KafkaSourceOptions) -> None:
        self.options = options
        self._readers: dict[str, _TopicReader] = {}
        self._finalizer = weakref.finalize(self, _close_readers, self._readers)

    # Spark API -----------------------------------------------------------------------------------------

    def initialOffset(self) -> dict:
        """Offsets a new query starts from: ``{topic: {partition: offset or -2/-1}}``.

        Sentinels are kept (not resolved here): the first :meth:`read` resolves them and Spark checkpoints
        the result as that batch's end, so a restart re-reads the first batch identically.
        """
        start = self.options.starting_offsets
        offsets: dict[str, dict[str, int]] = {}
        for topic in self.options.topics:
            partitions = self._reader(topic).partitions(self.options.poll_timeout_s)
            if isinstance(start, str):
                default = _EARLIEST if start == "earliest" else _LATEST
                offsets[topic] = {str(p): default for p in partitions}
            else:
                given = start.get(topic, {})
                every = sorted(set(partitions) | set(given))
                offsets[topic] = {str(p): given.get(p, _EARLIEST) for p in every}
        return offsets

    def read(self, start: dict) -> tuple[Iterator[pa.RecordBatch], dict]:
        """Fetch what is available after ``start`` and return it with the offset right after it.

        Topics are read in ``subscribe`` order, the first one capped by ``maxOffsetsPerTrigger``, the later
        ones to their end (see the module doc). ``-2`` in ``start`` means the partition's earliest
        offset; ``-1`` its current end (nothing is returned for it; the end becomes its offset).

        :param start: ``{topic: {"partition": offset}}`` as returned by the previous call or
            :meth:`initialOffset`.
        :returns: ``(iterator of pyarrow.RecordBatch in KAFKA_SCHEMA, end offsets)``. Records are ordered by
            topic (``subscribe`` order), partition, offset.
        :raises TimeoutError: if announced records do not arrive within ``kafkaConsumer.pollTimeoutMs``.
        :raises KafkaException: on a broker error, or offsets lost with ``failOnDataLoss=true``.
        """
        deadline = time.monotonic() + self.options.poll_timeout_s
        end: dict[str, dict[str, int]] = {}
        chunks: list[tuple[str, int, list[Message]]] = []
        for index, topic in enumerate(self.options.topics):
            reader = self._reader(topic)
            given = {int(p): int(o) for p, o in start.get(topic, {}).items()}
            partitions = sorted(set(given) | set(reader.partitions(_remaining(deadline))))
            starts = {p: given.get(p, _EARLIEST) for p in partitions}
            ends = dict(starts)
            latest = [p for p, o in starts.items() if o == _LATEST]
            if latest:
                ends.update(reader.fetch_ends(latest, _remaining(deadline)))
            to_read = reader.resolve_earliest(
                {p: o for p, o in starts.items() if o != _LATEST}, _remaining(deadline)
            )
            records, read_ends = reader.drain(
                to_read,
                cap=self.options.max_offsets_per_trigger if index == 0
                else self.options.later_topics_max_offsets_per_trigger,
                fresh=index > 0,
                deadline=deadline,
            )
            ends.update(read_ends)
            end[topic] = {str(p): ends[p] for p in partitions}
            chunks.extend((topic, p, records[p]) for p in sorted(records) if records[p])
        # A list iterator, not a generator: Spark's wrapper copies the iterator when it serves the batch.
        return iter(_to_record_batches(chunks)), end

    def readBetweenOffsets(self, start: dict, end: dict) -> Iterator[pa.RecordBatch]:
        """Re-read the records of a planned batch: exactly those :meth:`read` returned for ``(start, end)``.

        Called by Spark in a fresh process when a restarted query re-runs a batch that was planned but not
        committed. Uses its own short-lived consumer.

        :param start: the batch's start offsets (may hold -2/-1 sentinels for the first batch).
        :param end: the batch's end offsets as returned by :meth:`read`.
        :returns: iterator of pyarrow.RecordBatch in KAFKA_SCHEMA, same order as :meth:`read`.
        :raises TimeoutError: if records below ``end`` cannot be fetched within
            ``kafkaConsumer.pollTimeoutMs`` (e.g. deleted by retention).
        """
        deadline = time.monotonic() + self.options.poll_timeout_s
        chunks: list[tuple[str, int, list[Message]]] = []
        with _BoundedReader(self.options) as bounded:
            for topic in self.options.topics:
                given = {int(p): int(o) for p, o in start.get(topic, {}).items()}
                ranges = {}
                for p, stop in end.get(topic, {}).items():
                    first = given.get(int(p), _EARLIEST)
                    # -1: read() resolved "latest" to the end and returned nothing for this partition.
                    if first != _LATEST:
                        ranges[int(p)] = (first, int(stop))
                records = bounded.read(topic, ranges, deadline)
                chunks.extend((topic, p, records[p]) for p in sorted(records) if records[p])
        return iter(_to_record_batches(chunks))

    def commit(self, end: dict) -> None:
        """Nothing to do: progress lives in Spark's checkpoint, no consumer group offsets are committed."""

    def stop(self) -> None:
        """Close the consumers. Spark's wrapper for simple readers does not call this; the consumers are
        also closed when the reader is garbage-collected or the process exits."""
        self._finalizer()

    # internals -----------------------------------------------------------------------------------------

    def _reader(self, topic: str) -> "_TopicReader":
        reader = self._readers.get(topic)
        if reader is None:
            reader = self._readers[topic] = _TopicReader(topic, self.options)
        return reader


def _close_readers(readers: dict[str, "_TopicReader"]) -> None:
    for reader in readers.values():
        reader.close()
    readers.clear()


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _raise_for(err: KafkaError, topic: str, partition: int) -> None:
    """Raise for a consumer error event unless it is transient.

    librdkafka reports connection trouble (``_TRANSPORT``, ``_ALL_BROKERS_DOWN``, ...) as local errors
    (negative codes) and keeps retrying by itself; failing the query on each would turn a broker restart
    into a crash. If it never recovers, the read's deadline raises TimeoutError.
    """
    if err.code() == KafkaError._AUTO_OFFSET_RESET:
        raise KafkaException(
            KafkaError(
                err.code(),
                f"{topic} [{partition}]: offset no longer available (data loss; set failOnDataLoss=false to "
                f"continue from the earliest offset): {err.str()}",
            )
        )
    if err.fatal():
        raise KafkaException(err)
    if err.retriable() or err.code() < 0:
        return
    raise KafkaException(err)


class _TopicReader:
    """A long-lived consumer assigned to every partition of one topic, driven by :meth:`drain`."""

    def __init__(self, topic: str, options: KafkaSourceOptions) -> None:
        self.topic = topic
        self.options = options
        self.consumer = Consumer(options.consumer_config())
        self.assigned: set[int] = set()
        # Next offset the consumer will hand out per partition, as far as this reader knows. A partition
        # whose value differs from the requested start is sought; None forces a seek.
        self.position: dict[int, int | None] = {}

    def partitions(self, timeout: float) -> list[int]:
        return kafka_io.topic_partitions(self.consumer, self.topic, timeout)

    def resolve_earliest(self, starts: dict[int, int], timeout: float) -> dict[int, int]:
        """Replace -2 by the partition's low watermark (ListOffsets(earliest) is right on Tansu too).

        Resolving it here, instead of assigning librdkafka's logical OFFSET_BEGINNING, also avoids the
        ~0.5 s offset-query timer librdkafka runs for logical offsets on a fresh assignment.
        """
        resolved = {}
        for p, offset in starts.items():
            if offset == _EARLIEST:
                tp = TopicPartition(self.topic, p)
                offset = self.consumer.get_watermark_offsets(tp, timeout=timeout)[0]
            resolved[p] = offset
        return resolved

    def fetch_ends(self, partitions: list[int], timeout: float) -> dict[int, int]:
        """Current end of ``partitions`` from a Fetch response (a throw-away consumer; see kafka_io)."""
        probe = Consumer(self.options.consumer_config())
        try:
            marks = kafka_io.fetch_high_watermarks(probe, [(self.topic, p) for p in partitions], timeout)
        finally:
            probe.close()
        return {p: marks[(self.topic, p)] for p in partitions}

    def drain(
        self, starts: dict[int, int], cap: int | None, fresh: bool, deadline: float
    ) -> tuple[dict[int, list[Message]], dict[int, int]]:
        """Consume from ``starts`` up to each partition's end, at most ``cap`` records in all.

        A partition's end is the high watermark known when it is first served in this call: from the
        consumer's last Fetch response when no seek is needed and ``fresh`` is false, else from the first
        Fetch response after the seek. Records that arrive past it while other partitions are still being
        drained are kept too (the end offset then moves past them), so nothing is ever thrown away and no
        seek is needed on the next call.

        :returns: ``(records per partition in offset order, end offset per partition)``.
        """
        position = self.position
        new = [p for p in starts if p not in self.assigned]
        if new:
            self.consumer.incremental_assign([TopicPartition(self.topic, p, starts[p]) for p in new])
            self.assigned.update(new)
        waiting_first: set[int] = set(new)
        targets: dict[int, int] = {}
        for p, offset in starts.items():
            if p in waiting_first:
                continue
            if fresh or position.get(p) != offset:
                self.consumer.seek(TopicPartition(self.topic, p, offset))
                waiting_first.add(p)
                continue
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            if high == kafka_io.OFFSET_INVALID:
                waiting_first.add(p)
            elif high > offset:
                targets[p] = high
        for p, offset in starts.items():
            position[p] = offset
        pending = waiting_first | set(targets)
        records: dict[int, list[Message]] = {p: [] for p in starts}
        remaining = cap
        while pending and (remaining is None or remaining > 0):
            want = _BATCH if remaining is None else min(remaining, _BATCH)
            # consume(timeout=0) returns what is queued without waiting for a full batch; poll() then
            # sleeps only until the next record or event arrives.
            batch = self.consumer.consume(want, timeout=0)
            if not batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{SOURCE_NAME}: {self.topic} partitions {sorted(pending)} did not reach their end "
                        f"within {self.options.poll_timeout_s} s (positions {dict(position)}, ends {targets})"
                    )
                msg = self.consumer.poll(min(left, 0.2))
                if msg is None:
                    self._check_beyond_end(waiting_first)
                    continue
                batch = [msg]
            for msg in batch:
                p = msg.partition()
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        _raise_for(err, self.topic, p)
                        continue
                    offset = msg.offset()
                    if p not in records or offset < position[p]:
                        continue
                    position[p] = offset
                else:
                    offset = msg.offset()
                    if p not in records or offset < position[p]:
                        # Not part of this call (should not happen after seek's version barrier): skip
                        # rather than duplicate, and make the next call seek.
                        if p not in records:
                            position[p] = None
                        continue
                    records[p].append(msg)
                    position[p] = offset + 1
                    if remaining is not None:
                        remaining -= 1
                if p in waiting_first:
                    # librdkafka stores a Fetch response's high watermark before handing out its records
                    # or EOF, so this is at least the end as of a Fetch sent after the seek/assign.
                    waiting_first.discard(p)
                    _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
                    targets[p] = max(high, position[p])
                if p in targets and position[p] >= targets[p]:
                    pending.discard(p)
        return records, {p: position[p] for p in starts}

    def _check_beyond_end(self, waiting_first: set[int]) -> None:
        """Handle partitions asked to start past their end: the broker lost records (typically an
        embedded broker restarted under a kept checkpoint). Tansu answers such a Fetch with no records
        and no error, so without this check the read would wait for its whole timeout.

        A high watermark below a position we reached by consuming cannot be stale (it only grows), so a
        lower one is real. ``failOnDataLoss=true`` raises; ``false`` restarts the partition at its
        earliest offset.
        """
        for p in list(waiting_first):
            tp = TopicPartition(self.topic, p)
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            start = self.position[p]
            if high == kafka_io.OFFSET_INVALID or start is None or high >= start:
                continue
            if self.options.fail_on_data_loss:
                raise KafkaException(
                    KafkaError(
                        KafkaError.OFFSET_OUT_OF_RANGE,
                        f"{SOURCE_NAME}: {self.topic} [{p}] should be read from offset {start} but ends at "
                        f"{high}: records were lost (a restarted embedded broker keeps no data). Start the "
                        "query with a new checkpoint, or set failOnDataLoss=false to continue from the "
                        "earliest offset.",
                    )
                )
            low = self.consumer.get_watermark_offsets(tp, timeout=10.0)[0]
            self.consumer.seek(TopicPartition(self.topic, p, low))
            self.position[p] = low

    def close(self) -> None:
        self.consumer.close()


class _BoundedReader:
    """A short-lived consumer that reads exact offset ranges (for readBetweenOffsets)."""

    def __init__(self, options: KafkaSourceOptions) -> None:
        self.options = options
        self.consumer = Consumer(options.consumer_config())

    def __enter__(self) -> "_BoundedReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.close()

    def read(
        self, topic: str, ranges: dict[int, tuple[int, int]], deadline: float
    ) -> dict[int, list[Message]]:
        """Records with ``first <= offset < stop`` per partition; ``first`` may be -2 (earliest)."""
        starts = {}
        for p, (first, stop) in ranges.items():
            if first == _EARLIEST or (first > stop and not self.options.fail_on_data_loss):
                # The second case mirrors _TopicReader._check_beyond_end: read() restarted the
                # partition at its earliest offset after records were lost.
                tp = TopicPartition(topic, p)
                first = self.consumer.get_watermark_offsets(tp, timeout=_remaining(deadline))[0]
            if first < stop:
                starts[p] = (first, stop)
        records: dict[int, list[Message]] = {p: [] for p in starts}
        if not starts:
            return records
        self.consumer.assign([TopicPartition(topic, p, first) for p, (first, _) in starts.items()])
        position = {p: first for p, (first, _) in starts.items()}
        pending = set(starts)
        while pending:
            batch = self.consumer.consume(_BATCH, timeout=0)
            if not batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{SOURCE_NAME}: could not re-read {topic} partitions {sorted(pending)} up to "
                        f"{ {p: starts[p][1] for p in pending} } within {self.options.poll_timeout_s} s "
                        f"(reached {position}); were records deleted?"
                    )
                msg = self.consumer.poll(min(left, 0.2))
                if msg is None:
                    continue
                batch = [msg]
            for msg in batch:
                p = msg.partition()
                if p not in pending or msg.topic() != topic:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        position[p] = max(position[p], msg.offset())
                    else:
                        _raise_for(err, topic, p)
                else:
                    offset = msg.offset()
                    if offset < position[p]:
                        continue
                    if offset < starts[p][1]:
                        records[p].append(msg)
                    position[p] = offset + 1
                if position[p] >= starts[p][1]:
                    pending.discard(p)
        self.consumer.unassign()
        return records


_ARROW_SCHEMA: pa.Schema | None = None


def _arrow_schema() -> pa.Schema:
    # Spark's own mapping (timestamp -> timestamp[us, tz=UTC], ...), so the batches need no conversion.
    global _ARROW_SCHEMA
    if _ARROW_SCHEMA is None:
        from pyspark.sql.pandas.types import to_arrow_schema

        _ARROW_SCHEMA = to_arrow_schema(KAFKA_SCHEMA)
    return _ARROW_SCHEMA


def _to_record_batches(chunks: list[tuple[str, int, list[Message]]]) -> list[pa.RecordBatch]:
    """Messages -> Arrow record batches of at most ``_BATCH`` rows in KAFKA_SCHEMA, in the given order."""
    schema = _arrow_schema()
    timestamp_type = schema.field("timestamp").type
    batches = []
    for topic, partition, messages in chunks:
        for lo in range(0, len(messages), _BATCH):
            part = messages[lo : lo + _BATCH]
            stamps = [m.timestamp() for m in part]
            n = len(part)
            batches.append(
                pa.RecordBatch.from_arrays(
                    [
                        pa.array([m.key() for m in part], pa.binary()),
                        pa.array([m.value() for m in part], pa.binary()),
                        pa.array([topic] * n, pa.string()),
                        pa.array([partition] * n, pa.int32()),
                        pa.array([m.offset() for m in part], pa.int64()),
                        # Kafka timestamps are ms since the epoch (-1 when absent, as in the Java client).
                        pa.array([ms * 1000 for _, ms in stamps], pa.int64()).cast(timestamp_type),
                        pa.array([_TIMESTAMP_TYPE_IDS.get(kind, -1) for kind, _ in stamps], pa.int32()),
                    ],
                    schema=schema,
                )
            )
    return batches
