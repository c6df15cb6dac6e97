"""The streaming job's settings: one :class:`JobConfig`, parsed from and written to the job's arguments.

The same ``--name value`` arguments reach the job on AWS Glue (the CDK job definition builds them with
:meth:`JobConfig.to_argv`) and locally (the local stack does the same); :func:`parse_args` reads them back.
Every default lives in the :class:`JobConfig` field, nowhere else.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from frauddetect import kafka_io
from frauddetect.config import LABELS_TOPIC, TRANSACTIONS_TOPIC

STATE_STORE_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
SPARK_STATE_CONF = {
    "spark.sql.streaming.stateStore.providerClass": STATE_STORE_PROVIDER,
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    # The operators run in processing-time mode (frauddetect.stream.card), which makes Spark run a batch
    # without data after every batch; nothing here needs one (eviction happens when state is written).
    "spark.sql.streaming.noDataMicroBatches.enabled": "false",
}
"""Spark settings the job needs for its stateful operators (set by the job and by the CDK job definition)."""


class JobConfig(BaseModel):
    """Settings of one streaming job run (command-line arguments locally, Glue job arguments on AWS)."""

    model_config = {"extra": "forbid"}

    bootstrap_servers: str
    lake_uri: str = Field(description="local path or s3://bucket/prefix of the data lake")
    checkpoint_uri: str = Field(description="local path or s3:// prefix of the checkpoint (Spark's and the job's)")
    model_dir: str | None = Field(
        default=None,
        description="exported model (TF Serving layout): scored in-process, or with endpoint_name only read "
        "for its metadata (threshold, version)")
    threshold: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                    description="alert threshold in [0, 1]; default from the model metadata")
    endpoint_name: str | None = Field(
        default=None, description="score through this SageMaker endpoint (the Glue job's mode) instead of model_dir")
    endpoint_region: str | None = Field(default=None, description="the endpoint's AWS region (default: boto3's)")
    endpoint_url: str | None = Field(
        default=None, description="InvokeEndpoint address override: a local endpoint or a VPC interface endpoint")
    state_bootstrap: str | None = Field(
        default="lake",
        description="how a job without a checkpoint seeds the operators' state: 'lake' (the lake's recent "
        "scored transactions and labels; empty on a new deployment), a Parquet history file, or None")
    source_format: Literal["kafka_confluent", "kafka"] = Field(default="kafka_confluent",
                                                               description="'kafka' on Glue (MSK)")
    starting_offsets: str = Field(
        default="earliest",
        description="where a query without a checkpoint starts: 'earliest', 'latest' or Spark's JSON "
        '({"transactions": {"0": 42}, "labels": {"0": 7}}; -2 earliest, -1 latest). A job restarted without its '
        "checkpoint but with state_bootstrap 'lake' should start where the lake ends: with 'earliest' the "
        "records it already scored come again and are quarantined as duplicates")

    @field_validator("lake_uri", "checkpoint_uri", "model_dir", "state_bootstrap")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # executors run in other working directories (local-cluster, Glue): a relative path must not reach them
        if value is None or "://" in value or value == "lake":
            return value
        return str(Path(value).expanduser().resolve())

    @field_validator("starting_offsets")
    @classmethod
    def _offsets(cls, value: str) -> str:
        text = value.strip()
        if text in ("earliest", "latest"):
            return text
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("must be 'earliest', 'latest' or JSON like {\"transactions\": {\"0\": 42}}") from None
        if not isinstance(parsed, dict):
            raise ValueError("JSON must be an object of topics, like {\"transactions\": {\"0\": 42}}")
        unknown = set(parsed) - {TRANSACTIONS_TOPIC, LABELS_TOPIC}
        if unknown:
            raise ValueError(f"JSON names {sorted(unknown)}; the job reads {TRANSACTIONS_TOPIC} and {LABELS_TOPIC}")
        for topic, parts in parsed.items():
            if not isinstance(parts, dict) or not all(
                    str(p).isdigit() and type(o) is int and o >= -2 for p, o in parts.items()):
                raise ValueError(f"{topic}: must map partition numbers to offsets (-2 earliest, -1 latest), "
                                 f"like {{\"0\": 42}}")
        return text
    max_offsets_per_trigger: int | None = Field(
        default=50_000, gt=0,
        description="cap on the transactions of one micro-batch (labels are not capped, see docs/architecture.md)")
    trigger_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    allowed_lateness_seconds: int = Field(
        default=86_400, ge=0,
        description="watermark delay: a transaction older than the newest event time of earlier micro-batches "
        "minus this is late (quarantined); also how much longer than 37 days the state keeps")
    max_clock_skew_seconds: int = Field(
        default=300, ge=0,
        description="an event time further ahead of its Kafka record timestamp than this is quarantined")
    card_state_shards: int = Field(default=8, gt=0, description="grouping keys of the card operator")
    terminal_state_shards: int = Field(default=8, gt=0, description="grouping keys of the terminal operator")
    shuffle_partitions: int = Field(
        default=2, gt=0, description="Spark partitions of the stateful operators (fixed for a checkpoint)")
    kafka_auth: kafka_io.KafkaAuth = Field(
        default="none",
        description="Kafka authentication of every client of the job: 'none' (PLAINTEXT: embedded broker, "
        "compose Kafka) or 'msk-iam' (SASL/OAUTHBEARER over TLS with IAM tokens; the Glue job's)")
    kafka_region: str | None = Field(default=None, description="the MSK cluster's AWS region (for msk-iam)")
    kafka_options: dict[str, str] = Field(
        default_factory=dict, description="extra source options, applied after the job's own (kafka.* ...)")
    run_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                      description="stop after this long (None: until SIGTERM)")

    @model_validator(mode="after")
    def _consistent(self) -> "JobConfig":
        if not (self.model_dir or self.endpoint_name):
            raise ValueError("give --model-dir (in-process SavedModel) or --endpoint-name (SageMaker endpoint)")
        if (self.endpoint_region or self.endpoint_url) and not self.endpoint_name:
            raise ValueError("--endpoint-region/--endpoint-url need --endpoint-name")
        if self.endpoint_name and not self.model_dir and self.threshold is None:
            raise ValueError(
                "with --endpoint-name and no --model-dir there is no model metadata to take the alert threshold "
                "from: give --threshold, or --model-dir with the deployed model's metadata.json")
        if self.kafka_auth == "msk-iam" and not self.kafka_region:
            raise ValueError("--kafka-auth msk-iam needs --kafka-region (the cluster's AWS region)")
        return self

    @property
    def allowed_lateness_us(self) -> int:
        return self.allowed_lateness_seconds * 1_000_000

    @property
    def max_clock_skew_us(self) -> int:
        return self.max_clock_skew_seconds * 1_000_000

    def spark_checkpoint(self) -> str:
        """Spark's checkpoint location (``<checkpoint_uri>/spark``)."""
        return f"{self.checkpoint_uri.rstrip('/')}/spark"

    def kafka_client_settings(self) -> dict[str, Any]:
        """librdkafka security settings of the job's own Kafka clients (:func:`kafka_io.auth_settings`)."""
        return kafka_io.auth_settings(self.kafka_auth, self.kafka_region)

    def source_options(self, topic: str) -> dict[str, str]:
        """The Kafka source options of one of the job's two subscriptions: ``transactions`` capped by
        ``max_offsets_per_trigger``, ``labels`` not capped (so a label produced before a transaction is never
        planned into a later micro-batch than it); authentication for ``source_format``; then
        ``kafka_options``."""
        if topic not in (TRANSACTIONS_TOPIC, LABELS_TOPIC):
            raise ValueError(f"the job reads {TRANSACTIONS_TOPIC} and {LABELS_TOPIC}, not {topic}")
        options = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "subscribe": topic,
            "startingOffsets": self._starting_offsets(topic),
            "failOnDataLoss": "true",
        }
        if topic == TRANSACTIONS_TOPIC and self.max_offsets_per_trigger:
            options["maxOffsetsPerTrigger"] = str(self.max_offsets_per_trigger)
        if self.source_format == "kafka_confluent" and "://" not in self.checkpoint_uri:
            options["plannedOffsetsPath"] = f"{self.checkpoint_uri.rstrip('/')}/sources/{topic}.json"
        options.update(kafka_io.spark_source_auth_options(self.source_format, self.kafka_auth, self.kafka_region))
        options.update(self.kafka_options)
        return options

    def _starting_offsets(self, topic: str) -> str:
        """``starting_offsets`` for one subscription: Spark's JSON names both topics, each source gets its own
        (a topic left out starts at earliest, as in Spark)."""
        text = self.starting_offsets.strip()
        if not text.startswith("{"):
            return text
        return json.dumps({topic: json.loads(text)[topic]}) if topic in json.loads(text) else "earliest"

    def to_argv(self) -> list[str]:
        """The job's arguments (``--name value``), the inverse of :func:`parse_args`: only the settings that
        differ from the defaults, so a default changed here changes every job."""
        out: list[str] = []
        for name, field in JobConfig.model_fields.items():
            value = getattr(self, name)
            default = field.get_default(call_default_factory=True)
            if value == default and name not in _REQUIRED:
                continue
            flag = "--" + name.replace("_", "-")
            if name == "kafka_options":
                for k, v in value.items():
                    out += ["--kafka-option", f"{k}={v}"]
            else:
                out += [flag, "none" if value is None else str(value)]
        return out


_REQUIRED = {"bootstrap_servers", "lake_uri", "checkpoint_uri"}
_NONE_ALLOWED = {"state_bootstrap", "max_offsets_per_trigger"}
"""Settings whose default is a value, where the argument ``none`` means "none" (no bootstrap, no cap)."""


def parse_args(argv: list[str] | None = None) -> tuple[JobConfig, str | None]:
    """The job's arguments -> (:class:`JobConfig`, Spark master or None). Exits with a usage message (code 2)
    on a bad argument."""
    p = argparse.ArgumentParser(prog="streaming_job", description="frauddetect Spark streaming job")
    for name, field in JobConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "kafka_options":
            p.add_argument("--kafka-option", dest="kafka_options", action="append", default=[], metavar="KEY=VALUE",
                           help=field.description)
        elif name in _REQUIRED:
            p.add_argument(flag, required=True, help=field.description)
        else:
            p.add_argument(flag, help=field.description)
    p.add_argument("--master", help="Spark master (local runs; Glue sets its own)")
    args = vars(p.parse_args(argv))
    master = args.pop("master")
    values: dict[str, Any] = {}
    for name, raw in args.items():
        if name == "kafka_options":
            values[name] = dict(item.split("=", 1) for item in raw if "=" in item)
            if any("=" not in item for item in raw):
                p.error("--kafka-option takes KEY=VALUE")
        elif name in _NONE_ALLOWED and raw == "none":
            values[name] = None
        elif raw is not None:
            values[name] = raw
    try:
        return JobConfig(**values), master
    except ValidationError as exc:
        p.error("; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg'].removeprefix('Value error, ')}"
                          for e in exc.errors()))
    raise AssertionError("unreachable")
