"""Initial state for a job that starts without a checkpoint: the operators' state seeded from history.

The history is the lake's recent ``scored_transactions`` with their newest label (a redeployed job continues
where the lost checkpoint left off), or a Parquet file (the local demo's bootstrap). Both become Spark
DataFrames, read and grouped on the executors, that ``transformWithStateInPandas`` takes as ``initialState``:
:func:`card_initial_state` (grouped by card shard) and :func:`terminal_initial_state` (by terminal shard). The
driver only computes one number, the newest event time of the history (:func:`bootstrap_watermark_us`).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ByteType, DoubleType, IntegerType, LongType, StringType, StructField, StructType

from frauddetect.features import NO_LABEL, TERMINAL_RETENTION_US

HISTORY_SCHEMA = StructType(
    [
        StructField("transaction_id", StringType()),
        StructField("customer_id", StringType()),
        StructField("terminal_id", StringType()),
        StructField("time_us", LongType()),
        StructField("tx_amount", DoubleType()),
        StructField("tx_fraud", ByteType()),
        StructField("labeled_at_us", LongType()),
        StructField("label_source", StringType()),
    ]
)
"""The columns of a history (:func:`lake_history`, :func:`file_history`)."""


def shard(column: str, shards: int) -> Column:
    """The state shard of an id column: ``pmod(xxhash64(id), shards)`` as int (the same expression routes
    the stream's rows and the initial state)."""
    return F.pmod(F.xxhash64(F.col(column)), F.lit(shards)).cast(IntegerType())


def _micros(column: str) -> Column:
    return F.unix_micros(F.col(column).cast("timestamp"))


def lake_history(spark: SparkSession, lake_uri: str, look_back_us: int) -> DataFrame | None:
    """The lake's transactions of the ``look_back_us`` before its newest event date, each with its newest
    label (columns ``transaction_id``, ``customer_id``, ``terminal_id``, ``time_us``, ``tx_amount``,
    ``tx_fraud``, ``labeled_at_us``, ``label_source``); None for an empty or missing lake."""
    from frauddetect.stream.lake import filesystem
    import pyarrow.fs as pafs

    fs, root = filesystem(lake_uri)
    base = lake_uri.rstrip("/") if "://" in lake_uri else root
    if fs.get_file_info(f"{root}/scored_transactions").type == pafs.FileType.NotFound:
        return None
    scored = spark.read.parquet(f"{base}/scored_transactions")
    newest = scored.agg(F.max("event_date").alias("d")).first()["d"]
    if newest is None:
        return None
    first_day = F.date_sub(F.lit(newest).cast("date"), int(look_back_us // 86_400_000_000) + 1)
    history = (scored.where(F.col("event_date") >= first_day)
               .select("transaction_id", "customer_id", "terminal_id", _micros("tx_datetime").alias("time_us"),
                       "tx_amount"))
    if fs.get_file_info(f"{root}/labels").type == pafs.FileType.NotFound:
        return history.select("*", F.lit(0).cast(ByteType()).alias("tx_fraud"),
                              F.lit(NO_LABEL).cast(LongType()).alias("labeled_at_us"),
                              F.lit(None).cast(StringType()).alias("label_source"))
    labels = (spark.read.parquet(f"{base}/labels")
              .groupBy("transaction_id")
              .agg(F.max_by(F.struct("tx_fraud", "labeled_at", "source"), "labeled_at").alias("l"))
              .select("transaction_id", F.col("l.tx_fraud").cast(ByteType()).alias("tx_fraud"),
                      F.unix_micros(F.col("l.labeled_at")).alias("labeled_at_us"), F.col("l.source").alias("label_source")))
    return (history.join(labels, "transaction_id", "left")
            .select("transaction_id", "customer_id", "terminal_id", "time_us", "tx_amount",
                    F.coalesce("tx_fraud", F.lit(0).cast(ByteType())).alias("tx_fraud"),
                    F.coalesce("labeled_at_us", F.lit(NO_LABEL).cast(LongType())).alias("labeled_at_us"),
                    "label_source"))


def file_history(spark: SparkSession, path: str) -> DataFrame:
    """A Parquet history file (``transaction_id``, ``tx_datetime``, ``customer_id``, ``terminal_id``,
    ``tx_amount``, optional ``tx_fraud`` with ``labeled_at``: null = not known yet) in the columns of
    :func:`lake_history`."""
    frame = spark.read.parquet(path)
    has_labels = "labeled_at" in frame.columns and "tx_fraud" in frame.columns
    known = F.col("labeled_at").isNotNull() if has_labels else F.lit(False)
    return frame.select(
        F.col("transaction_id").cast(StringType()).alias("transaction_id"),
        F.col("customer_id").cast(StringType()).alias("customer_id"),
        F.col("terminal_id").cast(StringType()).alias("terminal_id"),
        _micros("tx_datetime").alias("time_us"),
        F.col("tx_amount").cast("double").alias("tx_amount"),
        F.when(known, F.col("tx_fraud")).otherwise(0).cast(ByteType()).alias("tx_fraud") if has_labels
        else F.lit(0).cast(ByteType()).alias("tx_fraud"),
        F.when(known, _micros("labeled_at")).otherwise(F.lit(NO_LABEL)).cast(LongType()).alias("labeled_at_us")
        if has_labels else F.lit(NO_LABEL).cast(LongType()).alias("labeled_at_us"),
        F.when(known, F.lit("bootstrap")).cast(StringType()).alias("label_source"),
    )


def history(spark: SparkSession, state_bootstrap: str | None, lake_uri: str, allowed_lateness_us: int) -> DataFrame | None:
    """The history of ``state_bootstrap`` (``'lake'``, a Parquet path, or None) or None."""
    if not state_bootstrap:
        return None
    if state_bootstrap == "lake":
        return lake_history(spark, lake_uri, TERMINAL_RETENTION_US + allowed_lateness_us)
    return file_history(spark, state_bootstrap)


def empty_history(spark: SparkSession) -> DataFrame:
    """A history without rows (a job restarted from its checkpoint, or one without a bootstrap)."""
    return spark.createDataFrame([], HISTORY_SCHEMA)


def bootstrap_watermark_us(hist: DataFrame | None, allowed_lateness_us: int) -> int:
    """The watermark the history implies: its newest event time minus the allowed lateness (0 without one)."""
    if hist is None:
        return 0
    newest = hist.agg(F.max("time_us").alias("t")).first()["t"]
    return 0 if newest is None else max(int(newest) - allowed_lateness_us, 0)


def card_initial_state(hist: DataFrame, shards: int):
    """The card operator's initial state: the history's card rows grouped by card shard."""
    return (hist.select(shard("customer_id", shards).alias("card_shard"), "customer_id", "transaction_id",
                        "time_us", F.col("tx_amount").cast("double").alias("tx_amount"),
                        F.lit(-1).cast(LongType()).alias("seq"))
            .groupBy("card_shard"))


def terminal_initial_state(hist: DataFrame, shards: int):
    """The terminal operator's initial state: the history's terminal rows grouped by terminal shard."""
    return (hist.select(shard("terminal_id", shards).alias("terminal_shard"), "terminal_id", "transaction_id",
                        "time_us", "tx_fraud", "labeled_at_us", "label_source")
            .groupBy("terminal_shard"))
