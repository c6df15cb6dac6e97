"""Fraud alerting: the alert Lambda (``lambdas/alert_handler``) fed by an MSK event source on ``fraud-alerts``,
its DynamoDB idempotency table, the SNS topic with its subscriptions, and the on-failure DLQ.

Delivery: the event source reads the topic in provisioned mode (needed for partial batch responses and a
retry limit), the handler reports failed records (``ReportBatchItemFailures``), the source retries them
``retry_attempts`` times and then sends their metadata to the DLQ; the idempotency table makes redeliveries
publish nothing.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.kafka import KafkaCluster
from infra.keys import environment_key
from infra.policies import network_interface_statement
from infra.python_function import PowertoolsFunction

ALERT_HANDLER = "lambdas.alert_handler.app.handler"


class Alerting(Construct):
    """KMS-encrypted SNS topic, idempotency table and DLQ, and the arm64 alert Lambda wired to all three.

    Attributes:
        key: the customer-managed key encrypting the topic, the table and the DLQ.
        topic: the alerts topic (``ALERTS_TOPIC_ARN``), with the configured e-mail and SMS subscriptions.
        table: the idempotency table (``IDEMPOTENCY_TABLE``): partition key ``id`` (S), TTL ``expiration``.
        dead_letter_queue: the event source's on-failure destination.
        function: the alert handler.
        consumer_group: the event source's Kafka consumer group.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        code_root: Path,
        kafka: KafkaCluster,
    ) -> None:
        super().__init__(scope, construct_id)
        settings = config.alerting

        # Its own key, not the lake's: reading the lake does not grant reading alert payloads.
        self.key = environment_key(
            self,
            "AlertsKey",
            config=config,
            name="alerts",
            purpose="alerts topic, idempotency table and DLQ encryption",
        )

        self.topic = sns.Topic(
            self,
            "AlertsTopic",
            display_name=f"frauddetect {config.name} fraud alerts",
            master_key=self.key,
            enforce_ssl=True,
        )
        for address in settings.email_subscribers:
            self.topic.add_subscription(subscriptions.EmailSubscription(address))
        for number in settings.sms_subscribers:
            self.topic.add_subscription(subscriptions.SmsSubscription(number))

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

        self.dead_letter_queue = sqs.Queue(
            self,
            "AlertsDlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            removal_policy=config.removal_policy,
        )

        self.function = PowertoolsFunction(
            self,
            "AlertHandler",
            config=config,
            code_root=code_root,
            handler=ALERT_HANDLER,
            description=f"frauddetect {config.name}: fraud-alerts records -> one SNS message per alert",
            memory_mb=settings.memory_mb,
            timeout_seconds=settings.timeout_seconds,
            reserved_concurrency=settings.reserved_concurrency,
            environment={
                "ALERTS_TOPIC_ARN": self.topic.topic_arn,
                "IDEMPOTENCY_TABLE": self.table.table_name,
                "IDEMPOTENCY_TTL_SECONDS": str(settings.idempotency_ttl_seconds),
                "POWERTOOLS_SERVICE_NAME": "fraud-alerts",
            },
        ).function

        # Both grants include the KMS permissions the encrypted topic and table need.
        self.topic.grant_publish(self.function)
        self.table.grant_read_write_data(self.function)

        self.consumer_group = f"{config.resource_prefix}-alert-handler"
        self._subscribe(config=config, kafka=kafka)

        CfnOutput(self, "AlertsTopicArn", value=self.topic.topic_arn)
        CfnOutput(self, "IdempotencyTableName", value=self.table.table_name)
        CfnOutput(self, "AlertHandlerName", value=self.function.function_name)
        CfnOutput(self, "AlertsDlqUrl", value=self.dead_letter_queue.queue_url)

    def _subscribe(self, *, config: EnvironmentConfig, kafka: KafkaCluster) -> None:
        """The MSK event source on the alerts topic, with permissions written out instead of the
        ``AWSLambdaMSKExecutionRole`` managed policy (which allows every cluster in the account)."""
        settings = config.alerting
        self.function.add_event_source_mapping(
            "FraudAlertsSource",
            event_source_arn=kafka.cluster_arn,
            kafka_topic=kafka.topics.alerts,
            kafka_consumer_group_id=self.consumer_group,
            # Nothing produced before the mapping existed is skipped; the idempotency table absorbs repeats.
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=settings.batch_size,
            max_batching_window=Duration.seconds(settings.max_batching_window_seconds),
            report_batch_item_failures=True,
            retry_attempts=settings.retry_attempts,
            on_failure=event_sources.SqsDlq(self.dead_letter_queue),  # grants SendMessage and the key
            provisioned_poller_config=lambda_.ProvisionedPollerConfig(
                minimum_pollers=settings.min_pollers, maximum_pollers=settings.max_pollers
            ),
        )
        kafka.access.grant(self.function, read=[kafka.topics.alerts], groups=[self.consumer_group])
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "kafka:DescribeClusterV2",
                    "kafka:GetBootstrapBrokers",
                    "kafka-cluster:DescribeClusterDynamicConfiguration",
                ],
                resources=[kafka.cluster_arn],
            )
        )
        self.function.add_to_role_policy(network_interface_statement())  # the event poller's, in the cluster's subnets
