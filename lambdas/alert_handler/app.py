"""Fraud-alert Lambda: Amazon MSK ``fraud-alerts`` records in, exactly one SNS notification per alert out.

Invoked by the MSK event source mapping (``eventSource: "aws:kafka"``) or, locally, by
:class:`frauddetect.msk_poller.MskPoller` with the same event. Parsing and message building live in
:mod:`frauddetect.alerts` (pure); this module wires Powertools and AWS around them.

Partial failures: Powertools ``BatchProcessor(EventType.Kafka)`` with ``process_partial_response``. It is
the standard Powertools answer for MSK since 3.x and returns the shape the Kafka event source mapping reads
when ``FunctionResponseTypes=["ReportBatchItemFailures"]`` is set:
``{"batchItemFailures": [{"itemIdentifier": {"partition": "<topic>-<partition>", "offset": <int>}}]}``.
The ``utilities.kafka`` consumer (``@kafka_consumer``) only deserialises records and has no per-record
failure reporting, so it does not fit. A bad record therefore never fails the invocation: it is counted
(``AlertFailures``), logged with its reason, and reported, so the mapping retries only from it and then
sends it to the on-failure destination. ``raise_on_entire_batch_failure=False`` keeps that true when every
record of a batch is bad (otherwise Powertools raises and the whole batch fails as a function error).

Exactly once: the idempotency utility (DynamoDB, keyed by transaction id, TTL) wraps the SNS publish, so a
record the mapping redelivers (after a retry, a rebalance, or a failed neighbour) is answered from the
table and never published twice.

Environment:
    ALERTS_TOPIC_ARN (required): SNS topic to publish to.
    IDEMPOTENCY_TABLE (required): DynamoDB table, partition key ``id`` (S), TTL attribute ``expiration``.
    IDEMPOTENCY_TTL_SECONDS: how long a transaction id stays deduplicated (default 604800 = 7 days).
    ALERT_HIGH_SEVERITY_SCORE: score from which severity is ``high`` (default 0.9).
    AWS_MAX_ATTEMPTS: total attempts per SNS/DynamoDB call incl. the first (botocore's own variable name;
        default 5 here), with botocore "standard" retries.
    POWERTOOLS_SERVICE_NAME (default ``fraud-alerts``), POWERTOOLS_METRICS_NAMESPACE (default
    ``FraudDetect``), POWERTOOLS_LOG_LEVEL, POWERTOOLS_METRICS_DISABLED, POWERTOOLS_TRACE_DISABLED.
    AWS_ENDPOINT_URL / AWS_REGION etc. are honoured by boto3 itself (the local stack points them at moto).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEventRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from frauddetect.alerts import (
    DEFAULT_HIGH_SEVERITY_SCORE,
    AlertEvent,
    InvalidAlertRecord,
    build_notification,
    latency_ms,
    mask_identifier,
    parse_msk_record,
)

SERVICE = os.getenv("POWERTOOLS_SERVICE_NAME", "fraud-alerts")
ALERTS_TOPIC_ARN = os.environ["ALERTS_TOPIC_ARN"]
IDEMPOTENCY_TABLE = os.environ["IDEMPOTENCY_TABLE"]
# 7 days = Kafka's default retention: replaying the topic from the start never re-alerts.
IDEMPOTENCY_TTL_SECONDS = int(os.getenv("IDEMPOTENCY_TTL_SECONDS", str(7 * 24 * 3600)))
HIGH_SEVERITY_SCORE = float(os.getenv("ALERT_HIGH_SEVERITY_SCORE", str(DEFAULT_HIGH_SEVERITY_SCORE)))
AWS_MAX_ATTEMPTS = int(os.getenv("AWS_MAX_ATTEMPTS", "5"))
# A fixed prefix instead of Powertools' default "<function name>.<qualname>": CDK may rename the function on
# replacement, and the local poller runs it under another name; the dedup key must survive both.
IDEMPOTENCY_KEY_PREFIX = "fraud-alert"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "FraudDetect"), service=SERVICE)
tracer = Tracer(service=SERVICE)

# "standard" mode retries 5xx and throttling with exponential backoff and jitter. SNS throttles with HTTP 429
# "Throttled", an error Publish does not model, so it is caught by the 429 rule (a functional test checks it).
_AWS_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": AWS_MAX_ATTEMPTS},
    connect_timeout=3,
    read_timeout=10,
)
sns = boto3.client("sns", config=_AWS_CONFIG)
persistence_store = DynamoDBPersistenceLayer(table_name=IDEMPOTENCY_TABLE, boto_config=_AWS_CONFIG)


def _mark_duplicate(response: dict[str, Any], idempotent_data: DataRecord) -> dict[str, Any]:
    """Idempotency response hook: runs only when the stored result of an earlier publish is returned."""
    return {**response, "duplicate": True}


idempotency_config = IdempotencyConfig(
    event_key_jmespath="transaction_id",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=IDEMPOTENCY_TTL_SECONDS,
    response_hook=_mark_duplicate,
)
processor = BatchProcessor(event_type=EventType.Kafka, raise_on_entire_batch_failure=False)


@idempotent_function(
    data_keyword_argument="alert",
    persistence_store=persistence_store,
    config=idempotency_config,
    key_prefix=IDEMPOTENCY_KEY_PREFIX,
)
def publish_alert(*, alert: AlertEvent) -> dict[str, Any]:
    """Publish one alert to SNS, at most once per ``transaction_id`` within the idempotency TTL.

    Returns ``{"transaction_id", "message_id", "severity", "published_at"}`` (``published_at`` ISO-8601
    UTC, taken when SNS acknowledged); a redelivered alert gets the first call's result plus
    ``"duplicate": True`` without publishing.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: SNS or DynamoDB failed after retries (the
            idempotency record is released, so a redelivery publishes).
        IdempotencyAlreadyInProgressError: another invocation is publishing the same alert right now.
    """
    notification = build_notification(alert, high_at=HIGH_SEVERITY_SCORE)
    response = sns.publish(**notification.publish_kwargs(ALERTS_TOPIC_ARN))
    return {
        "transaction_id": alert.transaction_id,
        "message_id": response["MessageId"],
        "severity": notification.message_attributes["severity"]["StringValue"],
        "published_at": datetime.now(timezone.utc).isoformat(),
    }


def _record_location(record: KafkaEventRecord) -> dict[str, Any]:
    return {"kafka_topic": record.topic, "kafka_partition": record.partition, "kafka_offset": record.offset}


@tracer.capture_method(capture_response=False)
def handle_record(record: KafkaEventRecord) -> dict[str, Any]:
    """Process one MSK record: parse, publish once, count. Any exception marks only this record failed."""
    logger.set_correlation_id(None)  # never carry the previous record's transaction id
    location = _record_location(record)
    try:
        alert = parse_msk_record(record.raw_event)
    except InvalidAlertRecord as exc:
        metrics.add_metric(name="AlertFailures", unit=MetricUnit.Count, value=1)
        logger.warning("invalid alert record", extra={**location, "reason": exc.reason, "reason_code": exc.code})
        raise

    logger.set_correlation_id(alert.transaction_id)
    try:
        result = publish_alert(alert=alert)
    except Exception:
        metrics.add_metric(name="AlertFailures", unit=MetricUnit.Count, value=1)
        logger.exception("alert publish failed", extra=location)
        raise

    context = {
        **location,
        "customer_id_masked": mask_identifier(alert.customer_id),
        "terminal_id_masked": mask_identifier(alert.terminal_id),
        "severity": result["severity"],
        "score": alert.score,
        "message_id": result["message_id"],
    }
    if result.get("duplicate"):
        metrics.add_metric(name="DuplicatesSkipped", unit=MetricUnit.Count, value=1)
        logger.info("duplicate alert skipped: already published", extra=context)
    else:
        published_at = datetime.fromisoformat(result["published_at"])
        latency = latency_ms(alert.produced_at, published_at)
        metrics.add_metric(name="AlertsSent", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="PublishLatencyMs", unit=MetricUnit.Milliseconds, value=latency)
        logger.info("fraud alert published", extra={**context, "publish_latency_ms": round(latency, 3)})
    return result


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for an MSK event; returns the partial batch response (see module docstring)."""
    idempotency_config.register_lambda_context(context)
    response = process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
    logger.set_correlation_id(None)
    logger.info(
        "batch processed",
        extra={
            "records": len(processor.success_messages) + len(processor.fail_messages),
            "failed": len(response["batchItemFailures"]),
        },
    )
    return response
