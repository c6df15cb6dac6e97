"""AWS resources the system expects, created on a local AWS-API endpoint (moto server, LocalStack).

Every local stack (the embedded loop with ``moto``'s ``ThreadedMotoServer``, the compose stack with
LocalStack, functional tests) calls :func:`ensure_local_resources` once, so they all see the same names and
settings. In AWS the same resources come from the CDK stacks; this module is never pointed at AWS itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

__all__ = ["LocalResources", "ensure_local_resources"]

_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}[a-z0-9]$")
# moto and LocalStack accept any credentials; fixed dummy ones keep a developer's real keys out of local calls.
_LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class LocalResources:
    """Names and addresses of the resources :func:`ensure_local_resources` made sure exist.

    Attributes:
        endpoint_url: the AWS-API endpoint they live on.
        region: their region.
        alerts_topic_arn: SNS topic the alert Lambda publishes to (env ``ALERTS_TOPIC_ARN``).
        alerts_queue_url: SQS queue subscribed to that topic with raw message delivery OFF, so each
            message body is the SNS envelope (``Type``, ``MessageId``, ``Message``, ``Subject``,
            ``Timestamp``, ``MessageAttributes``); ``Timestamp`` is SNS's receive time, used for latency.
        alerts_queue_arn: ARN of that queue.
        alerts_dlq_url: SQS queue for alert records that failed after retries (the poller's
            dead-letter destination, like the event source mapping's on-failure destination).
        idempotency_table: DynamoDB table of the alert Lambda's idempotency records (env
            ``IDEMPOTENCY_TABLE``): partition key ``id`` (S), TTL on ``expiration``, on-demand.
        lake_bucket: S3 bucket of the data lake.
    """

    endpoint_url: str
    region: str
    alerts_topic_arn: str
    alerts_queue_url: str
    alerts_queue_arn: str
    alerts_dlq_url: str
    idempotency_table: str
    lake_bucket: str

    def lambda_environment(self) -> dict[str, str]:
        """Environment the alert Lambda needs to run against these resources."""
        return {
            "ALERTS_TOPIC_ARN": self.alerts_topic_arn,
            "IDEMPOTENCY_TABLE": self.idempotency_table,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }


def _client(service: str, endpoint_url: str, region: str):
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(retries={"mode": "standard", "total_max_attempts": 5}),
        **_LOCAL_CREDENTIALS,
    )


def _ensure_queue(sqs, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]  # idempotent for an unchanged queue
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _ensure_table(dynamodb, name: str) -> None:
    try:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
        )


def _ensure_bucket(s3, name: str, region: str) -> None:
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=name, **kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _find_subscription(sns, topic_arn: str, queue_arn: str) -> str | None:
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for subscription in page["Subscriptions"]:
            if subscription["Protocol"] == "sqs" and subscription["Endpoint"] == queue_arn:
                return subscription["SubscriptionArn"]
    return None


def _ensure_subscription(sns, topic_arn: str, queue_arn: str) -> str:
    # Subscribe is idempotent in AWS and LocalStack; looking first also keeps any emulator that is not
    # from adding a second subscription (which would deliver every alert twice to the queue).
    arn = _find_subscription(sns, topic_arn, queue_arn)
    if arn is None:
        arn = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True)[
            "SubscriptionArn"
        ]
    # Explicit, not the default: the latency measurement needs the SNS envelope and its Timestamp.
    sns.set_subscription_attributes(
        SubscriptionArn=arn, AttributeName="RawMessageDelivery", AttributeValue="false"
    )
    return arn


def ensure_local_resources(
    endpoint_url: str, *, region: str = "us-east-1", prefix: str = "frauddetect"
) -> LocalResources:
    """Create (or find) every AWS resource the system expects on a local AWS-API endpoint.

    Idempotent: calling it again with the same arguments changes nothing and returns equal
    :class:`LocalResources`. Names are derived from ``prefix``: topic ``<prefix>-fraud-alerts``, queues
    ``<prefix>-fraud-alerts-inbox`` and ``<prefix>-fraud-alerts-dlq``, table ``<prefix>-idempotency``,
    bucket ``<prefix>-lake``. Uses dummy credentials, so only local endpoints can answer.

    Args:
        endpoint_url: e.g. ``"http://127.0.0.1:5000"`` (moto server) or ``"http://localhost:4566"``.
        region: AWS region name for every resource.
        prefix: 2-42 characters of lowercase letters, digits and ``-`` (valid in bucket names).

    Raises:
        ValueError: invalid ``prefix``.
        botocore.exceptions.ClientError / EndpointConnectionError: the endpoint refused or is down.
    """
    if not _PREFIX.match(prefix):
        raise ValueError("prefix must be 2-42 characters of lowercase letters, digits and '-'")

    sns = _client("sns", endpoint_url, region)
    sqs = _client("sqs", endpoint_url, region)
    dynamodb = _client("dynamodb", endpoint_url, region)
    s3 = _client("s3", endpoint_url, region)

    topic_arn = sns.create_topic(Name=f"{prefix}-fraud-alerts")["TopicArn"]  # idempotent
    queue_url, queue_arn = _ensure_queue(sqs, f"{prefix}-fraud-alerts-inbox")
    dlq_url, _ = _ensure_queue(sqs, f"{prefix}-fraud-alerts-dlq")
    # Real SNS (and LocalStack with IAM enforcement) only delivers to a queue whose policy allows it.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowAlertsTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    _ensure_subscription(sns, topic_arn, queue_arn)

    table = f"{prefix}-idempotency"
    _ensure_table(dynamodb, table)
    bucket = f"{prefix}-lake"
    _ensure_bucket(s3, bucket, region)

    return LocalResources(
        endpoint_url=endpoint_url,
        region=region,
        alerts_topic_arn=topic_arn,
        alerts_queue_url=queue_url,
        alerts_queue_arn=queue_arn,
        alerts_dlq_url=dlq_url,
        idempotency_table=table,
        lake_bucket=bucket,
    )
