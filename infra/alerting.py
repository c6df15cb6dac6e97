"""Fraud alerting: SNS topic, DynamoDB idempotency table and the alert Lambda (``lambdas/alert_handler``).

Not here yet (a later issue, with MSK): the MSK event source mapping (``ReportBatchItemFailures``), its
on-failure destination (DLQ), subscriptions and alarms.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.python_function import PowertoolsFunction

ALERT_HANDLER = "lambdas.alert_handler.app.handler"


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

        self.function = PowertoolsFunction(
            self,
            "AlertHandler",
            config=config,
            code_root=code_root,
            handler=ALERT_HANDLER,
            description=f"frauddetect {config.name}: fraud-alerts records -> one SNS message per alert",
            memory_mb=config.alert_memory_mb,
            timeout_seconds=config.alert_timeout_seconds,
            environment={
                "ALERTS_TOPIC_ARN": self.topic.topic_arn,
                "IDEMPOTENCY_TABLE": self.table.table_name,
                "IDEMPOTENCY_TTL_SECONDS": str(config.idempotency_ttl_seconds),
                "POWERTOOLS_SERVICE_NAME": "fraud-alerts",
            },
        ).function

        # Both grants include the KMS permissions the encrypted topic and table need.
        self.topic.grant_publish(self.function)
        self.table.grant_read_write_data(self.function)

        CfnOutput(self, "AlertsTopicArn", value=self.topic.topic_arn)
        CfnOutput(self, "IdempotencyTableName", value=self.table.table_name)
        CfnOutput(self, "AlertHandlerName", value=self.function.function_name)
