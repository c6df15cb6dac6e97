"""The streaming job's wiring: sources -> parse -> card operator -> terminal operator -> score -> sinks.

::

    transactions (capped) -> parse -> watermark -> card operator (by card shard) ---+
                                                                                   +-> terminal operator
    labels (not capped)   -> parse ------------------------------------------------+   (by terminal shard)
                                                                                        -> score -> sinks

Every stage runs on the executors; the driver plans the micro-batches and collects the sink tasks' counts.
Spark's checkpoint (``<checkpoint_uri>/spark``) holds the offsets and both operators' state (RocksDB, with
changelog checkpointing); the job's own files there are the sink markers and progress
(:mod:`frauddetect.stream.sinks`), the query's progress events (``query_progress.jsonl``), and, at shutdown,
``state_summary.json`` (rows held per operator, read back with Spark's State Data Source).

On AWS Glue the sources are Spark's own ``format("kafka")`` on MSK; locally, the Python data source
:mod:`frauddetect.stream.source` with the same columns and the same planning.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from frauddetect.config import LABELS_TOPIC, TRANSACTIONS_TOPIC
from frauddetect.stream.config import SPARK_STATE_CONF, STATE_STORE_PROVIDER, JobConfig, parse_args

log = logging.getLogger("frauddetect.stream")

QUERY_NAME = "frauddetect-score"
LOG4J2_PROPERTIES = Path(__file__).with_name("log4j2.properties")
OPERATOR_KEYS = {"card_shard": "card", "terminal_shard": "terminal"}
"""The stateful operators by their grouping key (how the State Data Source tells them apart)."""


def build_spark(app_name: str = "frauddetect-stream", master: str | None = "local[2]", shuffle_partitions: int = 2):
    """A SparkSession for the job (UTC, Arrow, RocksDB state store with changelog checkpointing). On Glue
    ``master=None``: Glue's launcher sets the master and the session exists already (its SQL settings are
    set here all the same)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        logging_conf = f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()}"
        builder = (builder.master(master)
                   .config("spark.ui.enabled", "false")
                   .config("spark.driver.memory", os.environ.get("FRAUDDETECT_SPARK_DRIVER_MEMORY", "1g"))
                   .config("spark.driver.extraJavaOptions", logging_conf)
                   .config("spark.executor.extraJavaOptions", logging_conf))
    spark = builder.getOrCreate()
    for key, value in {**SPARK_STATE_CONF, "spark.sql.session.timeZone": "UTC",
                       "spark.sql.shuffle.partitions": str(shuffle_partitions),
                       "spark.sql.streaming.stopGracefullyOnShutdown": "true",
                       "spark.sql.execution.arrow.pyspark.enabled": "true"}.items():
        spark.conf.set(key, value)
    return spark


def scorer_spec(config: JobConfig):
    """The executors' :class:`~frauddetect.stream.score.ScorerSpec` from the job settings: the threshold from
    ``threshold`` or the model metadata, the version from the metadata. Raises FileNotFoundError/ValueError
    when the model or its metadata is missing or invalid."""
    from frauddetect.model import load_metadata, _existing_versions
    from frauddetect.stream.score import ScorerSpec

    metadata = load_metadata(config.model_dir) if config.model_dir else {}
    if config.model_dir and not config.endpoint_name and not _existing_versions(Path(config.model_dir)):
        raise FileNotFoundError(f"{config.model_dir}: no <integer version>/saved_model.pb inside")
    threshold = config.threshold if config.threshold is not None else float(metadata["threshold"])
    return ScorerSpec(threshold=threshold, model_dir=config.model_dir, endpoint_name=config.endpoint_name,
                      endpoint_region=config.endpoint_region, endpoint_url=config.endpoint_url,
                      model_version=str(metadata["version"]) if "version" in metadata else None)


def is_restart(config: JobConfig) -> bool:
    """Whether Spark's checkpoint already has micro-batches (then the operators' state comes from it)."""
    import pyarrow.fs as pafs

    from frauddetect.stream.lake import filesystem

    fs, root = filesystem(config.checkpoint_uri)
    info = fs.get_file_info(pafs.FileSelector(f"{root}/spark/offsets", allow_not_found=True))
    return any(i.type == pafs.FileType.File for i in info)


def scored_stream(spark, config: JobConfig, spec, restart: bool):
    """The streaming DataFrame of scored rows (:data:`~frauddetect.stream.records.SCORED_SCHEMA`)."""
    from pyspark.sql import functions as F

    from frauddetect.stream import bootstrap
    from frauddetect.stream.card import CardOperator
    from frauddetect.stream.parse import label_parser, transaction_parser
    from frauddetect.stream.records import PARSED_TRANSACTION_SCHEMA, QUARANTINE, SCORED_SCHEMA, STREAM_SCHEMA
    from frauddetect.stream.score import scoring_stage
    from frauddetect.stream.terminal import TerminalOperator

    if config.source_format == "kafka_confluent":
        from frauddetect.stream.source import register

        register(spark)
    hist = None if restart else bootstrap.history(spark, config.state_bootstrap, config.lake_uri,
                                                  config.allowed_lateness_us)
    boot_watermark = bootstrap.bootstrap_watermark_us(hist, config.allowed_lateness_us)
    if hist is None:
        hist = bootstrap.empty_history(spark)
    log.info("state bootstrap: %s (watermark %s µs)", "from the checkpoint" if restart else config.state_bootstrap,
             boot_watermark)

    def read(topic: str):
        return spark.readStream.format(config.source_format).options(**config.source_options(topic)).load()

    # a quarantined record's shard only spreads the passthrough rows over the tasks
    spread = F.pmod(F.xxhash64("kafka_topic", "kafka_partition", "kafka_offset"), F.lit(config.terminal_state_shards))
    transactions = (read(TRANSACTIONS_TOPIC)
                    .mapInPandas(transaction_parser(config.max_clock_skew_us), PARSED_TRANSACTION_SCHEMA)
                    .withWatermark("event_time", f"{config.allowed_lateness_seconds} seconds")
                    .withColumn("card_shard", F.when(F.col("kind") == QUARANTINE,
                                                     F.pmod(F.xxhash64("kafka_partition", "kafka_offset"),
                                                            F.lit(config.card_state_shards)))
                                .otherwise(bootstrap.shard("customer_id", config.card_state_shards)).cast("int")))
    carded = transactions.groupBy("card_shard").transformWithStateInPandas(
        CardOperator(boot_watermark, config.allowed_lateness_us), STREAM_SCHEMA, "append", "ProcessingTime",
        initialState=bootstrap.card_initial_state(hist, config.card_state_shards))

    def routed(df):
        return df.withColumn("terminal_shard", F.when(F.col("terminal_id").isNull(), spread)
                             .otherwise(bootstrap.shard("terminal_id", config.terminal_state_shards)).cast("int"))

    labels = read(LABELS_TOPIC).mapInPandas(label_parser(config.max_clock_skew_us), STREAM_SCHEMA)
    terminal_input = routed(carded).unionByName(routed(labels))
    featured = terminal_input.groupBy("terminal_shard").transformWithStateInPandas(
        TerminalOperator(boot_watermark), STREAM_SCHEMA, "append", "ProcessingTime",
        initialState=bootstrap.terminal_initial_state(hist, config.terminal_state_shards))
    return featured.mapInPandas(scoring_stage(spec), SCORED_SCHEMA)


class ProgressLog:
    """A ``StreamingQueryListener`` that appends every progress event of the job's query to a JSON-lines file
    (batch id, durations, input rows, state operators' rows, memory and RocksDB metrics)."""

    def __init__(self, path: Path):
        from pyspark.sql.streaming import StreamingQueryListener

        log_path = path

        class _Listener(StreamingQueryListener):
            def onQueryStarted(self, event):
                pass

            def onQueryProgress(self, event):
                with open(log_path, "a") as f:
                    f.write(event.progress.json.replace("\n", " ") + "\n")

            def onQueryIdle(self, event):
                pass

            def onQueryTerminated(self, event):
                pass

        path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = _Listener()


def state_summary(spark, config: JobConfig) -> dict:
    """Rows held by each operator, read from the checkpoint with Spark's State Data Source (the row count
    stored with each card's and terminal's rows): ``{"card_rows", "card_keys", "terminal_rows",
    "terminal_keys", "provider"}``."""
    from pyspark.sql import functions as F

    from frauddetect.stream.keyed_state import MAP_STATE_NAME

    spark.streams.active  # the State Data Source needs the session's state store coordinator to exist
    out: dict[str, Any] = {"provider": spark.conf.get("spark.sql.streaming.stateStore.providerClass")}
    for operator_id in range(len(OPERATOR_KEYS)):
        frame = (spark.read.format("statestore").option("path", config.spark_checkpoint())
                 .option("operatorId", operator_id).option("stateVarName", MAP_STATE_NAME).load())
        name = OPERATOR_KEYS[frame.schema["key"].dataType.fieldNames()[0]]
        row = frame.agg(F.sum("user_map_value.value.rows").alias("rows"), F.count(F.lit(1)).alias("keys")).first()
        out[f"{name}_rows"] = int(row["rows"] or 0)
        out[f"{name}_keys"] = int(row["keys"] or 0)
    return out


def run_job(spark, config: JobConfig, spec) -> dict:
    """Start the query and block until SIGTERM/SIGINT, ``run_seconds`` or a failure; returns the state
    summary after stopping. Raises RuntimeError when the query failed."""
    from frauddetect.stream.sinks import MicroBatchSink, SinkSettings

    if "://" not in config.checkpoint_uri:
        Path(config.checkpoint_uri).mkdir(parents=True, exist_ok=True)
    restart = is_restart(config)
    stream = scored_stream(spark, config, spec, restart)
    sink = MicroBatchSink(SinkSettings(config.lake_uri, config.bootstrap_servers, config.kafka_auth,
                                       config.kafka_region), config.checkpoint_uri)
    local = "://" not in config.checkpoint_uri
    if local:
        spark.streams.addListener(ProgressLog(Path(config.checkpoint_uri) / "query_progress.jsonl").listener)
    query = (stream.writeStream.foreachBatch(sink).option("checkpointLocation", config.spark_checkpoint())
             .trigger(processingTime=f"{config.trigger_seconds} seconds").queryName(QUERY_NAME).start())
    if local:  # tells a local supervisor (the demo) that the query runs
        (Path(config.checkpoint_uri) / "ready.json").write_text(
            json.dumps({"query_id": str(query.id), "started_at": time.time(), "restart": restart}))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + config.run_seconds if config.run_seconds else None
    try:
        while query.isActive and not stop.is_set():
            if deadline and time.monotonic() > deadline:
                break
            stop.wait(0.5)
        if query.exception() is not None:
            raise RuntimeError(f"streaming query failed: {query.exception()}")
    finally:
        stop_between_batches(query)
    summary = state_summary(spark, config)
    if local:
        (Path(config.checkpoint_uri) / "state_summary.json").write_text(json.dumps(summary))
    log.info("state at shutdown: %s", summary)
    return summary


def stop_between_batches(query, timeout_s: float = 120.0) -> None:
    """Stop the query once no micro-batch runs (within ``timeout_s``; then regardless): stopping inside one
    interrupts its tasks, which Spark then reports at length, and the batch is replayed at the next start."""
    deadline = time.monotonic() + timeout_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.1)
    if query.isActive:
        query.stop()


def check_endpoint(spec) -> None:
    """Fail fast when the endpoint does not answer (one row of zeros; no TensorFlow on the driver)."""
    import numpy as np

    from frauddetect.features import FEATURE_COLUMNS

    spec.build().score(np.zeros((1, len(FEATURE_COLUMNS)), dtype=np.float32))


def main(argv: list[str] | None = None, master: str | None = "local[2]",
         on_session: Callable[[Any], object] | None = None) -> int:
    """Entry point of the job: check the model, start Spark, run until stopped.

    :param master: Spark master when the arguments name none (``--master``); None on Glue.
    :param on_session: called with the SparkSession before the query starts (the Glue entry point creates
        its GlueContext there).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    config, given_master = parse_args(argv)
    spec = scorer_spec(config)
    if spec.endpoint_name:
        check_endpoint(spec)
    where = f"endpoint {config.endpoint_name}" if config.endpoint_name else f"SavedModel {config.model_dir}"
    log.info("model %s (%s), alert threshold %.4f, state store %s", spec.model_version, where, spec.threshold,
             STATE_STORE_PROVIDER)
    spark = build_spark(master=given_master or master, shuffle_partitions=config.shuffle_partitions)
    spark.sparkContext.setLogLevel("WARN")
    if on_session is not None:
        on_session(spark)
    run_job(spark, config, spec)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
