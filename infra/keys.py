"""Customer-managed KMS keys: one per concern, so a grant on one kind of data never opens another."""

from __future__ import annotations

from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.config import EnvironmentConfig


def environment_key(
    scope: Construct, construct_id: str, *, config: EnvironmentConfig, name: str, purpose: str
) -> kms.Key:
    """A rotated key with alias ``alias/frauddetect-<env>-<name>``, removed or retained with the environment's
    stateful resources; ``purpose`` goes into its description."""
    return kms.Key(
        scope,
        construct_id,
        alias=f"alias/{config.resource_prefix}-{name}",
        description=f"frauddetect {config.name}: {purpose}",
        enable_key_rotation=True,
        removal_policy=config.removal_policy,
    )
