"""The records that flow between the stages of the streaming job, as Spark schemas and column names.

One wide row shape, :data:`STREAM_SCHEMA`, carries every kind of record from the card operator on (its
``kind`` says which fields are set; the others are null, which Arrow stores as a bitmap):

- ``transaction``: a valid, admitted transaction; the card operator fills the 6 card features, the terminal
  operator the 10 terminal features, the scoring stage :data:`SCORE_FIELDS`;
- ``label``: a fraud label; after the terminal operator only labels applied to a transaction it holds;
- ``quarantine``: a record that will not be featurised, with its ``reason`` and its raw key and value;
- ``stats``: a per-shard count from an operator (``stat``, ``stat_value``), summed into the job's progress.

The Kafka source rows (:data:`KAFKA_SCHEMA`, Spark's own Kafka source columns) become parsed rows
(:data:`PARSED_TRANSACTION_SCHEMA`, :data:`STREAM_SCHEMA` for labels) in ``frauddetect.stream.parse``.
Times are int64 microseconds since the Unix epoch (UTC) throughout; ``event_time`` (a Spark timestamp) exists
only to carry the watermark.
"""

from __future__ import annotations

from pyspark.sql.types import (
    BinaryType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from frauddetect.features import CARD_FEATURE_COLUMNS, TERMINAL_FEATURE_COLUMNS

TRANSACTION = "transaction"
LABEL = "label"
QUARANTINE = "quarantine"
STATS = "stats"
KINDS = (TRANSACTION, LABEL, QUARANTINE, STATS)

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
"""The columns of Spark's Kafka source (``KafkaRecordToRowConverter.kafkaSchema``, without headers); the local
source (:mod:`frauddetect.stream.source`) emits exactly these."""

_KAFKA_FIELDS = [
    StructField("kafka_topic", StringType()),
    StructField("kafka_partition", IntegerType()),
    StructField("kafka_offset", LongType()),
    StructField("kafka_timestamp_us", LongType()),
]
_QUARANTINE_FIELDS = [
    StructField("reason", StringType()),
    StructField("raw_key", BinaryType()),
    StructField("raw_value", BinaryType()),
]

_ROW_FIELDS = [
    StructField("kind", StringType()),
    StructField("transaction_id", StringType()),
    StructField("customer_id", StringType()),
    StructField("terminal_id", StringType()),
    StructField("time_us", LongType()),
    StructField("tx_amount", DoubleType()),
]

PARSED_TRANSACTION_SCHEMA = StructType(
    [
        *_ROW_FIELDS,
        *_KAFKA_FIELDS,
        *_QUARANTINE_FIELDS,
        StructField("event_time", TimestampType()),
    ]
)
"""What the parse stage makes of a ``transactions`` record; ``event_time`` is the watermark column (null for
quarantined records, so that no bad record moves the watermark)."""

STREAM_SCHEMA = StructType(
    [
        *_ROW_FIELDS,
        StructField("tx_fraud", IntegerType()),
        StructField("labeled_at_us", LongType()),
        StructField("label_source", StringType()),
        *_KAFKA_FIELDS,
        *_QUARANTINE_FIELDS,
        StructField("watermark_us", LongType()),
        StructField("terminal_shard", IntegerType()),
        StructField("stat", StringType()),
        StructField("stat_value", LongType()),
        *(StructField(c, DoubleType()) for c in CARD_FEATURE_COLUMNS),
        *(StructField(c, DoubleType()) for c in TERMINAL_FEATURE_COLUMNS),
    ]
)
"""Rows between the operators; ``watermark_us`` is the card operator's watermark for the micro-batch, which
the terminal operator needs (a processing-time operator passes no watermark downstream)."""

SCORE_FIELDS = [
    StructField("score", DoubleType()),
    StructField("alert", BooleanType()),
    StructField("threshold", DoubleType()),
    StructField("model_version", StringType()),
    StructField("scored_at_us", LongType()),
]
SCORED_SCHEMA = StructType([*STREAM_SCHEMA.fields, *SCORE_FIELDS])
"""The scoring stage's output: :data:`STREAM_SCHEMA` plus the score of every transaction row."""

STREAM_COLUMNS: tuple[str, ...] = tuple(STREAM_SCHEMA.fieldNames())
SCORED_COLUMNS: tuple[str, ...] = tuple(SCORED_SCHEMA.fieldNames())

SINK_SUMMARY_SCHEMA = StructType(
    [
        StructField("partition", IntegerType()),
        StructField("transactions", LongType()),
        StructField("scored", LongType()),
        StructField("quarantined", LongType()),
        StructField("labels_applied", LongType()),
        StructField("labels_quarantined", LongType()),
        StructField("alerts", LongType()),
        StructField("alerts_published", LongType()),
        StructField("quarantine_published", LongType()),
        StructField("scoring_retries", LongType()),
        StructField("max_scored_at_us", LongType()),
        StructField("reasons", StringType()),
        StructField("stats", StringType()),
    ]
)
"""One row per partition of a micro-batch's sink job: counts for the job's progress (no records)."""

