#!/bin/bash
# LocalStack init hook (ready stage): creates exactly the AWS resources that
# frauddetect.resources.ensure_local_resources creates, with the same names (derived from PREFIX as there)
# and settings. `frauddetect demo --stack compose` still calls ensure_local_resources, which finds them.
# tests/unit/test_compose.py runs this script against a moto server and compares the result with what
# ensure_local_resources makes: change both together.
set -euo pipefail

PREFIX="${FRAUDDETECT_RESOURCE_PREFIX:-frauddetect}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
if [ "$AWS_DEFAULT_REGION" != "us-east-1" ]; then
  echo "this hook creates the bucket without a LocationConstraint: region us-east-1 only" >&2
  exit 1
fi

# SNS topic the alert Lambda publishes to.
topic_arn=$(awslocal sns create-topic --name "${PREFIX}-fraud-alerts" --query TopicArn --output text)

# Proof-of-delivery queue (subscribed to the topic) and the poller's dead-letter queue.
inbox_url=$(awslocal sqs create-queue --queue-name "${PREFIX}-fraud-alerts-inbox" --query QueueUrl --output text)
awslocal sqs create-queue --queue-name "${PREFIX}-fraud-alerts-dlq" > /dev/null
inbox_arn=$(awslocal sqs get-queue-attributes --queue-url "$inbox_url" --attribute-names QueueArn \
  --query Attributes.QueueArn --output text)

# Only the topic may send to the inbox (as real SNS requires).
policy='{"Version":"2012-10-17","Statement":[{"Sid":"AllowAlertsTopic","Effect":"Allow",'
policy+='"Principal":{"Service":"sns.amazonaws.com"},"Action":"sqs:SendMessage","Resource":"'"$inbox_arn"'",'
policy+='"Condition":{"ArnEquals":{"aws:SourceArn":"'"$topic_arn"'"}}}]}'
awslocal sqs set-queue-attributes --queue-url "$inbox_url" --attributes "{\"Policy\":\"${policy//\"/\\\"}\"}"

# Subscription with raw message delivery OFF: each queue message is the SNS envelope (its Timestamp is the
# demo's latency end point).
subscription_arn=$(awslocal sns subscribe --topic-arn "$topic_arn" --protocol sqs \
  --notification-endpoint "$inbox_arn" --return-subscription-arn --query SubscriptionArn --output text)
awslocal sns set-subscription-attributes --subscription-arn "$subscription_arn" \
  --attribute-name RawMessageDelivery --attribute-value false

# Idempotency table of the alert Lambda (Powertools): key `id`, TTL on `expiration`, on demand.
table="${PREFIX}-idempotency"
if ! awslocal dynamodb describe-table --table-name "$table" > /dev/null 2>&1; then
  awslocal dynamodb create-table --table-name "$table" \
    --attribute-definitions '[{"AttributeName":"id","AttributeType":"S"}]' \
    --key-schema '[{"AttributeName":"id","KeyType":"HASH"}]' \
    --billing-mode PAY_PER_REQUEST > /dev/null
fi
ttl=$(awslocal dynamodb describe-time-to-live --table-name "$table" \
  --query TimeToLiveDescription.TimeToLiveStatus --output text)
if [ "$ttl" != ENABLED ] && [ "$ttl" != ENABLING ]; then
  awslocal dynamodb update-time-to-live --table-name "$table" \
    --time-to-live-specification '{"Enabled":true,"AttributeName":"expiration"}' > /dev/null
fi

# Data-lake bucket.
if ! awslocal s3api head-bucket --bucket "${PREFIX}-lake" > /dev/null 2>&1; then
  awslocal s3api create-bucket --bucket "${PREFIX}-lake" > /dev/null
fi

echo "frauddetect resources ready: topic ${PREFIX}-fraud-alerts, queues ${PREFIX}-fraud-alerts-inbox and" \
  "${PREFIX}-fraud-alerts-dlq, table ${table}, bucket ${PREFIX}-lake"
