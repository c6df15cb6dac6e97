"""One way to deploy this repository's Python Lambdas: arm64, the public Powertools layer, own log group."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Duration, IgnoreMode, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.policies import network_interface_statement

RUNTIME = lambda_.Runtime.PYTHON_3_13  # = Glue 6.0's Python; the layer name below must match it
POWERTOOLS_LAYER_ACCOUNT = "017000801446"  # AWS-owned publisher of the public Powertools layers
POWERTOOLS_LAYER_NAME = "AWSLambdaPowertoolsPythonV3-python313-arm64"

# The functions' code is the repository root filtered down to the two packages the handlers import
# (dockerignore syntax: ignore everything, then re-include). An allowlist keeps runs/, demo-*/, .venv/,
# tests/, data and secrets out of the asset whatever appears in the repository later.
ASSET_EXCLUDES = [
    "*",
    "!frauddetect/",
    "!lambdas/",
    "**/__pycache__",
    "**/*.pyc",
]


class PowertoolsFunction(Construct):
    """An arm64 Lambda running ``handler`` from this repository's code, with the Powertools layer, X-Ray
    tracing and a log group with the environment's retention.

    Docker bundling is not available where this is built, so the asset holds only our code; third-party
    dependencies (aws-lambda-powertools with its extras, pydantic v2, aws-xray-sdk) come from the public
    Powertools layer and boto3 from the runtime. ``environment`` is added to the Powertools settings
    (metrics namespace ``FraudDetect``, the environment's log level). ``layers`` come after Powertools;
    ``vpc`` places the function in its private subnets with ``security_groups``. The function is
    ``.function``.

    The role is written out rather than CDK's default (which attaches the AWSLambdaBasicExecutionRole and
    AWSLambdaVPCAccessExecutionRole managed policies): it may write to its own log group only.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        code_root: Path,
        handler: str,
        description: str,
        environment: dict[str, str],
        memory_mb: int,
        timeout_seconds: int,
        reserved_concurrency: int | None = None,
        layers: Sequence[lambda_.ILayerVersion] = (),
        vpc: ec2.IVpc | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        log_group = logs.LogGroup(self, "Logs", retention=config.log_retention, removal_policy=config.removal_policy)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=description)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            )
        )
        if vpc is not None:
            role.add_to_policy(
                network_interface_statement("ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses")
            )
        powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            f"arn:{stack.partition}:lambda:{stack.region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
            f"{POWERTOOLS_LAYER_NAME}:{config.powertools_layer_version}",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            role=role,
            # Same files for every function: one asset hash, uploaded once.
            code=lambda_.Code.from_asset(str(code_root), ignore_mode=IgnoreMode.DOCKER, exclude=ASSET_EXCLUDES),
            layers=[powertools, *layers],
            memory_size=memory_mb,
            reserved_concurrent_executions=reserved_concurrency,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS) if vpc else None,
            security_groups=list(security_groups) or None,
            timeout=Duration.seconds(timeout_seconds),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            environment={
                "POWERTOOLS_METRICS_NAMESPACE": "FraudDetect",
                "POWERTOOLS_LOG_LEVEL": config.alerting.log_level,
                **environment,
            },
        )
