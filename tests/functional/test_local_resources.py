"""ensure_local_resources against a moto server: what it creates, and that calling it again changes nothing."""

from __future__ import annotations

import json

import boto3
import pytest
import requests

from frauddetect.resources import ensure_local_resources

pytestmark = pytest.mark.functional


def _clients(endpoint: str):
    kwargs = {"endpoint_url": endpoint, "region_name": "us-east-1",
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return (boto3.client("sns", **kwargs), boto3.client("sqs", **kwargs),
            boto3.client("dynamodb", **kwargs), boto3.client("s3", **kwargs))


def test_resources_exist_as_configured_and_second_call_is_a_no_op(moto_endpoint):
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()

    first = ensure_local_resources(moto_endpoint, prefix="fdres")
    second = ensure_local_resources(moto_endpoint, prefix="fdres")

    assert first == second
    sns, sqs, dynamodb, s3 = _clients(moto_endpoint)
    [subscription] = sns.list_subscriptions_by_topic(TopicArn=first.alerts_topic_arn)["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("sqs", first.alerts_queue_arn)
    attributes = sns.get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"])["Attributes"]
    assert attributes["RawMessageDelivery"] == "false"
    table = dynamodb.describe_table(TableName=first.idempotency_table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    ttl = dynamodb.describe_time_to_live(TableName=first.idempotency_table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expiration")
    assert first.lake_bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert sqs.get_queue_url(QueueName="fdres-fraud-alerts-dlq")["QueueUrl"] == first.alerts_dlq_url

    sns.publish(TopicArn=first.alerts_topic_arn, Message="hello", Subject="s")
    [message] = sqs.receive_message(QueueUrl=first.alerts_queue_url, MaxNumberOfMessages=10)["Messages"]
    envelope = json.loads(message["Body"])  # one delivery despite two calls, wrapped in the SNS envelope
    assert (envelope["Type"], envelope["Message"]) == ("Notification", "hello")
    assert envelope["Timestamp"].endswith("Z")


@pytest.mark.parametrize("prefix", ["", "Upper", "-lead", "has_underscore", "x" * 43])
def test_invalid_prefix_is_refused(prefix):
    with pytest.raises(ValueError):
        ensure_local_resources("http://127.0.0.1:1", prefix=prefix)
