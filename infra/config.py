"""Per-environment settings of the CDK app, in Python (typed, reviewed like code, no stringly context).

Pick one with ``-c env=dev|prod`` (``cdk.json`` defaults to ``dev``). Account and region are never stored
here: they come from ``CDK_DEFAULT_ACCOUNT`` / ``CDK_DEFAULT_REGION`` (set by the CDK CLI from the active
profile), so the same code deploys to any account.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from aws_cdk import Environment, RemovalPolicy
from aws_cdk import aws_logs as logs

PROJECT = "frauddetect"
STACK_NAME_PREFIX = "FraudDetect"


@dataclass(frozen=True, kw_only=True)
class EnvironmentConfig:
    """Everything that differs between environments. Frozen: constructs read it, never change it."""

    name: str
    """Short environment name; part of stack, alias and Glue database names (lowercase letters/digits)."""

    removal_policy: RemovalPolicy
    """For stateful resources (KMS keys, lake bucket, idempotency table, log groups)."""

    termination_protection: bool
    """CloudFormation stack termination protection."""

    lake_noncurrent_version_days: int
    """Days before a non-current (overwritten/deleted) lake object version is removed."""

    lake_intelligent_tiering_days: int | None
    """Days after which lake objects move to S3 Intelligent-Tiering (``None``: stay in Standard)."""

    lake_expiration_days: int | None
    """Days after which current lake objects expire (``None``: kept; dev keeps the lake small)."""

    log_retention: logs.RetentionDays
    """CloudWatch Logs retention of the Lambda log group."""

    alert_memory_mb: int = 256
    alert_timeout_seconds: int = 60
    alert_log_level: str = "INFO"
    idempotency_ttl_seconds: int = 7 * 24 * 3600
    """How long a transaction id stays deduplicated; 7 days = Kafka's default retention (see the handler)."""

    powertools_layer_version: int = 27
    """Version of the public Powertools for AWS Lambda (Python) v3 layer (docs.powertools.aws.dev)."""

    @property
    def stack_name(self) -> str:
        return f"{STACK_NAME_PREFIX}-{self.name}"

    @property
    def resource_prefix(self) -> str:
        """``frauddetect-<env>``: for names that must be readable (aliases, log groups)."""
        return f"{PROJECT}-{self.name}"

    @property
    def msk_cluster_name(self) -> str:
        """Name of the environment's MSK cluster (``frauddetect-<env>``); IAM policies on its topics use it."""
        return self.resource_prefix


ENVIRONMENTS: dict[str, EnvironmentConfig] = {
    "dev": EnvironmentConfig(
        name="dev",
        removal_policy=RemovalPolicy.DESTROY,
        termination_protection=False,
        lake_noncurrent_version_days=7,
        lake_intelligent_tiering_days=None,
        lake_expiration_days=30,
        log_retention=logs.RetentionDays.TWO_WEEKS,
        alert_log_level="DEBUG",
    ),
    "prod": EnvironmentConfig(
        name="prod",
        removal_policy=RemovalPolicy.RETAIN,
        termination_protection=True,
        lake_noncurrent_version_days=90,
        lake_intelligent_tiering_days=30,
        lake_expiration_days=None,
        log_retention=logs.RetentionDays.ONE_YEAR,
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
