"""Per-environment settings of the CDK app, in Python (typed, reviewed like code, no stringly context).

Pick one with ``-c env=dev|prod`` (``cdk.json`` defaults to ``dev``). Account and region are never stored
here: they come from ``CDK_DEFAULT_ACCOUNT`` / ``CDK_DEFAULT_REGION`` (set by the CDK CLI from the active
profile), so the same code deploys to any account.

Settings are grouped by concern (one frozen dataclass per construct); an environment is one
:class:`EnvironmentConfig`. To change a size or a retention for one environment, edit its entry in
:data:`ENVIRONMENTS`; to try a variant in code, ``dataclasses.replace`` it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from aws_cdk import Environment, RemovalPolicy
from aws_cdk import aws_logs as logs

from frauddetect.config import (
    ALERTS_TOPIC,
    LABELS_TOPIC,
    QUARANTINE_TOPIC,
    TRANSACTIONS_TOPIC,
)

PROJECT = "frauddetect"
STACK_NAME_PREFIX = "FraudDetect"
PLACEHOLDER_ALERT_THRESHOLD = 0.5
"""The job's threshold where none is set and the environment is not production (a synth warning says so)."""
ALERT_THRESHOLD_CONTEXT = "alert_threshold"
"""Context key overriding ``ModelSettings.alert_threshold``: ``cdk deploy -c alert_threshold=0.42``."""


@dataclass(frozen=True, kw_only=True)
class NetworkSettings:
    """The VPC: private subnets (with NAT egress) for MSK, the Glue job, the endpoint and the feedback Lambda."""

    cidr: str = "10.40.0.0/16"
    availability_zones: int = 2
    """2 or 3. A provisioned MSK cluster puts ``brokers_per_az`` brokers in each of these zones."""

    nat_gateways: int = 1
    """Egress for what has no VPC endpoint: PyPI for the Glue job's ``--additional-python-modules``, X-Ray, STS
    and Lambda for the MSK event poller. One per zone in prod, so a zone outage does not cut egress."""


class MskMode(str, Enum):
    """How the environment's Kafka runs."""

    PROVISIONED = "provisioned"
    """Brokers of ``broker_instance_type``; topics are CloudFormation resources (``AWS::MSK::Topic``)."""

    SERVERLESS = "serverless"
    """MSK Serverless. Its topics cannot be CloudFormation resources (the MSK topic API is for provisioned
    clusters only): create them with a Kafka admin client after deploying (README, "Infrastructure")."""


@dataclass(frozen=True, kw_only=True)
class KafkaTopics:
    """Topic names. The defaults are the names the streaming job and the Lambdas use (``frauddetect.config``);
    the job's names are code, so renaming a topic here alone breaks the job (a unit test keeps them equal)."""

    transactions: str = TRANSACTIONS_TOPIC
    labels: str = LABELS_TOPIC
    alerts: str = ALERTS_TOPIC
    quarantine: str = QUARANTINE_TOPIC

    def all(self) -> tuple[str, ...]:
        """Every topic, in a fixed order."""
        return (self.transactions, self.labels, self.alerts, self.quarantine)


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """Amazon MSK: always IAM access control and TLS (client-broker and in-cluster)."""

    mode: MskMode = MskMode.PROVISIONED
    kafka_version: str = "3.9.x"
    """Provisioned only. 3.9.x is KRaft-capable and >= 3.6.0, which the MSK topic API needs."""

    broker_instance_type: str = "kafka.t3.small"
    brokers_per_az: int = 1
    broker_volume_gb: int = 20
    topics: KafkaTopics = field(default_factory=KafkaTopics)
    partitions: int = 3
    """Partitions per topic."""

    replication_factor: int = 2
    """Provisioned only (Serverless always replicates 3 times). At most the broker count."""

    min_insync_replicas: int = 1
    """With ``acks=all`` (every producer here), a write needs this many replicas."""

    retention_hours: int = 7 * 24
    """Topic retention; 7 days = the alert idempotency TTL, so a replay from the start never re-alerts."""


@dataclass(frozen=True, kw_only=True)
class LakeSettings:
    """S3 buckets, Glue Data Catalog and Athena."""

    noncurrent_version_days: int
    """Days before a non-current (overwritten/deleted) object version is removed."""

    intelligent_tiering_days: int | None
    """Days after which lake objects move to S3 Intelligent-Tiering (``None``: stay in Standard)."""

    expiration_days: int | None
    """Days after which current lake objects expire (``None``: kept; dev keeps the lake small). At least
    the job's state look-back (``TERMINAL_RETENTION_US``, 37 days, plus the allowed lateness, 1 day, plus 1 day
    of partitions): a job started without a checkpoint (``--state-bootstrap lake``) rebuilds its operators'
    state from that much history."""

    access_log_days: int = 90
    athena_results_days: int = 30
    athena_bytes_scanned_cutoff: int = 100 * 1024**3
    """Per-query scan limit of the workgroup (Athena bills $5 per TB scanned)."""

    projection_start_date: str = "2018-01-01"
    """First ``event_date`` partition projection considers (the handbook data starts in 2018)."""


GLUE_WORKER_VCPUS = {"G.025X": 2, "G.1X": 4, "G.2X": 8, "G.4X": 16, "G.8X": 32}
"""vCPUs per Glue worker type (AWS Glue developer guide, "Worker type")."""


@dataclass(frozen=True, kw_only=True)
class StreamingJobSettings:
    """The Glue 6.0 streaming job (``glue_jobs/streaming_job.py``)."""

    worker_type: str = "G.025X"
    """G.025X (0.25 DPU, 2 vCPU, 4 GB: streaming jobs only) or G.1X (1 DPU, 4 vCPU, 16 GB) and up."""

    number_of_workers: int = 2
    """Including the driver: ``number_of_workers - 1`` executors run every stage of the job (source reads,
    both stateful operators, scoring, sinks); the driver only plans micro-batches (docs/architecture.md,
    "Scaling")."""

    max_retries: int = 0

    # The job's own settings (frauddetect.stream.config.JobConfig). None: the job's default, which lives
    # there only; a value here becomes a job argument.
    max_offsets_per_trigger: int | None = None
    trigger_seconds: float | None = None
    allowed_lateness_seconds: int | None = None
    max_clock_skew_seconds: int | None = None
    state_shards: int | None = None
    """Grouping keys of each stateful operator; None: four per executor core (:meth:`job_settings`)."""

    shuffle_partitions: int | None = None
    """Spark partitions of the stateful operators; None: one per executor core. Fixed for the life of a
    checkpoint: changing it needs a new checkpoint (the job then seeds its state from the lake)."""

    additional_python_modules: tuple[str, ...] = (
        "confluent-kafka>=2.13",
        "pydantic>=2.7",
        "aws-msk-iam-sasl-signer-python>=1.0",
    )
    """Installed from PyPI when a run starts (through the NAT gateway): what ``frauddetect`` needs beyond
    what Glue 6.0 ships (pandas, pyarrow, numpy, boto3). confluent-kafka 2.13 is the first that fetches
    MSK IAM tokens on a background thread; before it, the sinks' and the source's first metadata requests
    time out waiting for a token (``frauddetect.kafka_io.auth_settings``)."""

    batch_lag_alarm_seconds: int = 60
    """Alarm when a micro-batch takes longer than this for 3 minutes running."""

    def executor_cores(self) -> int:
        """vCPUs of the executors (every worker but the driver). Raises ValueError on an unknown worker type
        or fewer than 2 workers."""
        if self.worker_type not in GLUE_WORKER_VCPUS:
            raise ValueError(f"worker_type {self.worker_type!r}: not one of {sorted(GLUE_WORKER_VCPUS)}")
        if self.number_of_workers < 2:
            raise ValueError("number_of_workers must be at least 2 (the driver and one executor)")
        return (self.number_of_workers - 1) * GLUE_WORKER_VCPUS[self.worker_type]

    def job_settings(self) -> dict[str, int | float]:
        """The job settings this environment sets (JobConfig field -> value); the others keep the job's
        defaults. Shuffle partitions and state shards follow the executors' cores unless set."""
        cores = self.executor_cores()
        out: dict[str, int | float] = {
            "shuffle_partitions": self.shuffle_partitions or cores,
            "card_state_shards": self.state_shards or 4 * cores,
            "terminal_state_shards": self.state_shards or 4 * cores,
        }
        for name in ("max_offsets_per_trigger", "trigger_seconds", "allowed_lateness_seconds", "max_clock_skew_seconds"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """The SageMaker endpoint serving the TF SavedModel (``model.tar.gz``)."""

    instance_type: str = "ml.m5.large"
    initial_instance_count: int = 1
    min_instances: int = 1
    max_instances: int = 2
    invocations_per_instance: int = 1_000
    """Target of the autoscaling policy, per instance and minute (each invocation carries up to 4,096 rows)."""

    tf_serving_version: str = "2.20"
    """TensorFlow Serving image version. Training uses TF 2.21; 2.20 is the newest SageMaker serving image the
    SDK knows, and TF Serving loads SavedModels of a newer minor version as long as they use no new ops."""

    model_data_key: str = "models/fraud/model.tar.gz"
    """Key of the model artifact in the artifacts bucket (``frauddetect train`` writes ``model.tar.gz``)."""

    alert_threshold: float | None = None
    """The job's alert threshold (``--threshold``): the deployed model's ``metadata.json`` ``threshold``
    (written by ``frauddetect train``); the Glue job scores through the endpoint and cannot read it from the
    tarball. Set it here or per synth with ``-c alert_threshold=<value>`` (the context wins). Unset, a
    production environment refuses to synthesize; others use :data:`PLACEHOLDER_ALERT_THRESHOLD` with a
    synth warning (:meth:`EnvironmentConfig.alert_threshold`)."""

    data_capture_percent: int = 100
    latency_alarm_ms: int = 500
    """ModelLatency p99 above this for 3 of 5 minutes alarms."""


@dataclass(frozen=True, kw_only=True)
class AlertingSettings:
    """The alert Lambda, its MSK event source and SNS subscriptions; the label feedback Lambda."""

    memory_mb: int = 256
    timeout_seconds: int = 60
    log_level: str = "INFO"
    reserved_concurrency: int = 5
    """Caps concurrent SNS publishes; it also keeps a runaway stream from starving the account's Lambdas.
    New accounts with a concurrency quota of 10 cannot reserve any: lower the quota first or set it there."""

    batch_size: int = 100
    max_batching_window_seconds: int = 1
    retry_attempts: int = 3
    """Retries of a failing record before it goes to the on-failure destination (the DLQ)."""

    min_pollers: int = 1
    max_pollers: int = 2
    """Provisioned event pollers (Kafka event sources need provisioned mode for partial batch responses and
    retry limits)."""

    idempotency_ttl_seconds: int = 7 * 24 * 3600
    """How long a transaction id stays deduplicated; 7 days = the topics' retention (see the handler)."""

    email_subscribers: tuple[str, ...] = ()
    """Addresses subscribed to the alerts topic (each must confirm the subscription e-mail)."""

    sms_subscribers: tuple[str, ...] = ()
    """E.164 phone numbers subscribed to the alerts topic (needs SNS SMS sandbox exit in production)."""

    feedback_memory_mb: int = 256
    feedback_throttle_rps: int = 20
    """Rate limit of the feedback API's stage (steady requests per second; burst twice that)."""


@dataclass(frozen=True, kw_only=True)
class MonitoringSettings:
    """Alarms, the dashboard and the ops topic."""

    ops_email_subscribers: tuple[str, ...] = ()
    alert_anomaly_band_std_devs: float = 3.0
    """Width of the expected band of published alerts; outside it (either side) the anomaly alarm fires."""


@dataclass(frozen=True, kw_only=True)
class EnvironmentConfig:
    """Everything that differs between environments. Frozen: constructs read it, never change it."""

    name: str
    """Short environment name; part of stack, alias and Glue database names (lowercase letters/digits)."""

    removal_policy: RemovalPolicy
    """For stateful resources (KMS keys, buckets, tables, log groups)."""

    termination_protection: bool
    """CloudFormation stack termination protection (and DynamoDB deletion protection)."""

    production: bool
    """Refuse placeholders: synthesis fails unless ``model.alert_threshold`` is set."""

    log_retention: logs.RetentionDays
    """CloudWatch Logs retention of every log group the app creates."""

    network: NetworkSettings
    lake: LakeSettings
    kafka: KafkaSettings
    streaming: StreamingJobSettings
    model: ModelSettings
    alerting: AlertingSettings
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)

    powertools_layer_version: int = 27
    """Version of the public Powertools for AWS Lambda (Python) v3 layer (docs.powertools.aws.dev)."""

    def alert_threshold(self) -> float:
        """The streaming job's ``--threshold``: ``model.alert_threshold``, else the placeholder outside
        production.

        Raises:
            ValueError: unset in a production environment (the message says where the value comes from).
        """
        if self.model.alert_threshold is not None:
            return self.model.alert_threshold
        if self.production:
            raise ValueError(
                f"{self.name}: ModelSettings.alert_threshold is not set. Use the `threshold` from the deployed "
                "model's metadata.json (written by `frauddetect train` next to model.tar.gz): set it in "
                f"infra/config.py (ENVIRONMENTS[{self.name!r}].model) or pass -c {ALERT_THRESHOLD_CONTEXT}=<value>."
            )
        return PLACEHOLDER_ALERT_THRESHOLD

    def with_context(self, context: Callable[[str], Any]) -> EnvironmentConfig:
        """These settings with the CDK context's overrides (``context`` is ``app.node.try_get_context``):
        ``alert_threshold``, a probability. Checks the threshold at once (before any stack is built).

        Raises:
            ValueError: the context value is not a number in [0, 1], or production has no threshold.
        """
        config = self
        value = context(ALERT_THRESHOLD_CONTEXT)
        if value is not None:
            try:
                threshold = float(value)
            except (TypeError, ValueError):
                threshold = float("nan")
            if isinstance(value, bool) or not 0.0 <= threshold <= 1.0:
                raise ValueError(f"-c {ALERT_THRESHOLD_CONTEXT}={value!r}: expected a probability in [0, 1]")
            config = replace(self, model=replace(self.model, alert_threshold=threshold))
        config.alert_threshold()
        return config

    def stack_name(self, part: str) -> str:
        """``FraudDetect-<env>-<part>``: the CloudFormation name of one of the environment's stacks."""
        return f"{STACK_NAME_PREFIX}-{self.name}-{part}"

    @property
    def resource_prefix(self) -> str:
        """``frauddetect-<env>``: for names that must be readable (aliases, log groups, the endpoint)."""
        return f"{PROJECT}-{self.name}"

    @property
    def msk_cluster_name(self) -> str:
        """Name of the environment's MSK cluster (``frauddetect-<env>``); its topic and group ARNs carry it."""
        return self.resource_prefix

    @property
    def endpoint_name(self) -> str:
        """Name of the SageMaker endpoint (fixed, so the Glue role's ``InvokeEndpoint`` names it)."""
        return self.resource_prefix

    @property
    def database_name(self) -> str:
        """Glue/Athena database (lowercase letters, digits and underscores only)."""
        return f"{PROJECT}_{self.name}"


ENVIRONMENTS: dict[str, EnvironmentConfig] = {
    "dev": EnvironmentConfig(
        name="dev",
        removal_policy=RemovalPolicy.DESTROY,
        termination_protection=False,
        production=False,
        log_retention=logs.RetentionDays.TWO_WEEKS,
        network=NetworkSettings(cidr="10.40.0.0/16", availability_zones=2, nat_gateways=1),
        lake=LakeSettings(
            noncurrent_version_days=7,
            intelligent_tiering_days=None,
            # Not below ~40: a job (re)started with --state-bootstrap lake reads the last 37 days (+1) of
            # scored transactions to rebuild its feature state; shorter, its first features are wrong.
            expiration_days=60,
            access_log_days=30,
            athena_results_days=7,
            athena_bytes_scanned_cutoff=10 * 1024**3,
        ),
        # Provisioned, not Serverless: two kafka.t3.small brokers cost ~1/8 of a Serverless cluster's hourly
        # charge, and only provisioned clusters can have their topics in the template.
        kafka=KafkaSettings(
            mode=MskMode.PROVISIONED,
            broker_instance_type="kafka.t3.small",
            brokers_per_az=1,
            broker_volume_gb=20,
            partitions=3,
            replication_factor=2,
            min_insync_replicas=1,
        ),
        streaming=StreamingJobSettings(worker_type="G.025X", number_of_workers=2, max_retries=0, trigger_seconds=5.0),
        model=ModelSettings(
            instance_type="ml.m5.large",
            initial_instance_count=1,
            min_instances=1,
            max_instances=2,
            data_capture_percent=100,
        ),
        alerting=AlertingSettings(log_level="DEBUG", reserved_concurrency=2, min_pollers=1, max_pollers=1),
    ),
    "prod": EnvironmentConfig(
        name="prod",
        removal_policy=RemovalPolicy.RETAIN,
        termination_protection=True,
        production=True,
        log_retention=logs.RetentionDays.ONE_YEAR,
        network=NetworkSettings(cidr="10.41.0.0/16", availability_zones=3, nat_gateways=3),
        lake=LakeSettings(
            noncurrent_version_days=90,
            intelligent_tiering_days=30,
            expiration_days=None,
            access_log_days=365,
            athena_results_days=30,
        ),
        kafka=KafkaSettings(
            mode=MskMode.PROVISIONED,
            broker_instance_type="kafka.m7g.large",
            brokers_per_az=1,
            broker_volume_gb=500,
            partitions=12,
            replication_factor=3,
            min_insync_replicas=2,
        ),
        streaming=StreamingJobSettings(
            worker_type="G.1X", number_of_workers=3, max_retries=3, max_offsets_per_trigger=200_000,
            trigger_seconds=1.0,
        ),
        model=ModelSettings(
            instance_type="ml.c5.xlarge",
            initial_instance_count=2,
            min_instances=2,
            max_instances=6,
            data_capture_percent=20,
        ),
        alerting=AlertingSettings(reserved_concurrency=20, min_pollers=1, max_pollers=4),
    ),
}

DEFAULT_ENVIRONMENT = "dev"


def get_config(name: str | None) -> EnvironmentConfig:
    """The settings for ``name`` (``None`` or empty: :data:`DEFAULT_ENVIRONMENT`).

    Raises:
        ValueError: ``name`` is not a known environment (the message lists the known ones).
    """
    key = name or DEFAULT_ENVIRONMENT
    try:
        return ENVIRONMENTS[key]
    except KeyError:
        raise ValueError(f"unknown environment {key!r}; expected one of {sorted(ENVIRONMENTS)}") from None


def aws_environment() -> Environment:
    """Target account/region from ``CDK_DEFAULT_ACCOUNT``/``CDK_DEFAULT_REGION``.

    Unset (no credentials, unit tests): an environment-agnostic stack, where account and region are
    CloudFormation pseudo parameters resolved at deploy time.
    """
    return Environment(
        account=os.environ.get("CDK_DEFAULT_ACCOUNT") or None,
        region=os.environ.get("CDK_DEFAULT_REGION") or None,
    )
