"""Fraud alerting: SNS topic, DynamoDB idempotency table and the alert Lambda (``lambdas/alert_handler``).

Not here yet (a later issue, with MSK): the MSK event source mapping (``ReportBatchItemFailures``), its
on-failure destination (DLQ), subscriptions and alarms.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Duration, IgnoreMode, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.config import EnvironmentConfig

ALERT_HANDLER = "lambdas.alert_handler.app.handler"
ALERT_RUNTIME = lambda_.Runtime.PYTHON_3_13  # = Glue 6.0's Python; the layer name below must match it
POWERTOOLS_LAYER_ACCOUNT = "017000801446"  # AWS-owned publisher of the public Powertools layers
POWERTOOLS_LAYER_NAME = "AWSLambdaPowertoolsPythonV3-python313-arm64"

# The function's code is the repository root filtered down to the two packages the handler imports
# (dockerignore syntax: ignore everything, then re-include). An allowlist keeps runs/, demo-*/, .venv/,
# tests/, data and secrets out of the asset whatever appears in the repository later.
ALERT_ASSET_EXCLUDES = [
    "*",
    "!frauddetect/",
    "!lambdas/",
    "**/__pycache__",
    "**/*.pyc",
]


class Alerting(Construct):
    """KMS-encrypted SNS topic and idempotency table, and the arm64 alert Lambda wired to both.

    Attributes:
        key: the customer-managed key encrypting the topic and the table.
        topic: the alerts topic (``ALERTS_TOPIC_ARN``).
        table: the idempotency table (``IDEMPOTENCY_TABLE``): partition key ``id`` (S), TTL ``expiration``.
        function: the alert handler.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        code_root: Path,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        # Its own key, not the lake's: reading the lake does not grant reading alert payloads.
        self.key = kms.Key(
            self,
            "AlertsKey",
            alias=f"alias/{config.resource_prefix}-alerts",
            description=f"frauddetect {config.name}: alerts topic and idempotency table encryption",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )

        self.topic = sns.Topic(
            self,
            "AlertsTopic",
            display_name=f"frauddetect {config.name} fraud alerts",
            master_key=self.key,
            enforce_ssl=True,
        )

        # The schema Powertools' DynamoDBPersistenceLayer expects by default.
        self.table = dynamodb.Table(
            self,
            "IdempotencyTable",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            time_to_live_attribute="expiration",
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=config.termination_protection,
            removal_policy=config.removal_policy,
        )

        log_group = logs.LogGroup(
            self,
            "AlertHandlerLogs",
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )

        # Docker bundling is not available where this is built, so the asset holds only our code. Its
        # third-party dependencies (aws-lambda-powertools with tracer/validation extras, pydantic v2 for
        # frauddetect.alerts, aws-xray-sdk) come from the public Powertools layer; boto3 from the runtime.
        powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            f"arn:{stack.partition}:lambda:{stack.region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
            f"{POWERTOOLS_LAYER_NAME}:{config.powertools_layer_version}",
        )

        self.function = lambda_.Function(
            self,
            "AlertHandler",
            description=f"frauddetect {config.name}: fraud-alerts records -> one SNS message per alert",
            runtime=ALERT_RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=ALERT_HANDLER,
            code=lambda_.Code.from_asset(
                str(code_root), ignore_mode=IgnoreMode.DOCKER, exclude=ALERT_ASSET_EXCLUDES
            ),
            layers=[powertools],
            memory_size=config.alert_memory_mb,
            timeout=Duration.seconds(config.alert_timeout_seconds),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            environment={
                "ALERTS_TOPIC_ARN": self.topic.topic_arn,
                "IDEMPOTENCY_TABLE": self.table.table_name,
                "IDEMPOTENCY_TTL_SECONDS": str(config.idempotency_ttl_seconds),
                "POWERTOOLS_SERVICE_NAME": "fraud-alerts",
                "POWERTOOLS_METRICS_NAMESPACE": "FraudDetect",
                "POWERTOOLS_LOG_LEVEL": config.alert_log_level,
            },
        )

        # Both grants include the KMS permissions the encrypted topic and table need.
        self.topic.grant_publish(self.function)
        self.table.grant_read_write_data(self.function)

        CfnOutput(self, "AlertsTopicArn", value=self.topic.topic_arn)
        CfnOutput(self, "IdempotencyTableName", value=self.table.table_name)
        CfnOutput(self, "AlertHandlerName", value=self.function.function_name)
