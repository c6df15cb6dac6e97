"""Label feedback Lambda: an analyst's verdict on an alert in (API Gateway HTTP API), one ``labels`` record out.

``POST /verdicts`` with a JSON body (:class:`frauddetect.feedback.VerdictRequest`)::

    {"transaction_id": "1754031", "terminal_id": "4821", "customer_id": "1377",
     "verdict": "fraud", "analyst_id": "a.moreau",
     "note": "cardholder confirmed", "labeled_at": "2018-05-27T09:00:00Z"}

is validated, mapped to a :class:`~frauddetect.schemas.LabelEvent` (``fraud`` -> ``tx_fraud`` 1, ``genuine``
-> 0, ``source`` ``"analyst:<analyst_id>"``, ``terminal_id`` and ``customer_id`` as given;
:func:`frauddetect.feedback.label_record`) and produced to the Kafka topic ``labels`` keyed by transaction id.
The streaming job applies it from its ``labeled_at`` on, which changes the ``terminal_id_risk_*`` features of
later transactions on that terminal.

``terminal_id`` and ``customer_id`` (both required) are the alert's ``terminal_id`` and ``customer_id``: the
stream routes the label to its terminal's state and finds the transaction there. A label whose transaction
the stream never saw on that terminal is accepted here (202) and quarantined by the streaming job with reason
"label for an unknown transaction" once the watermark passes its ``labeled_at``. Both ids are sensitive: they
are published in the label (which needs them) but never logged and not echoed in any response.

Responses (JSON bodies):

- ``202`` ``{"status": "accepted", "key": "<transaction id>", "topic": "labels", "partition", "offset",
  "transaction_id", "analyst_id", "verdict", "tx_fraud", "labeled_at", "source", "published_at",
  "duplicate"}``: the broker acknowledged the label (``acks=all``). A repeated request (same transaction
  and analyst, same verdict) gets the first answer with ``"duplicate": true`` and publishes nothing.
- ``400`` ``{"status": "rejected", "message": "...", "errors": [{"field", "message"}]}``: malformed JSON,
  a schema violation (e.g. a missing ``terminal_id`` or ``customer_id``), unknown fields, or ``labeled_at`` in
  the future. Input values are never echoed.
- ``409``: this analyst already gave a *different* verdict on this transaction, or the same verdict naming
  another terminal or card (within the idempotency TTL), or the same request is being processed right now
  (retry later).
- ``415``: a content type other than JSON.
- ``503``: Kafka did not acknowledge the label, or the idempotency table failed. Nothing was published (a
  record not acknowledged in time is purged from the producer) and the idempotency record is released,
  so retrying the same request is safe and publishes once.

Idempotency: Powertools idempotency on DynamoDB, keyed by ``[transaction_id, analyst_id]`` of the body
(prefix ``label-feedback``), payload-validated on ``verdict``, ``terminal_id`` and ``customer_id``, with a
TTL. A retried request (client retry, API Gateway retry, double click) never publishes twice; the same
analyst resending with other ids (say, a corrected terminal id) is refused (409) rather than answered as a
duplicate, so a correction is never silently dropped.

Environment:
    KAFKA_BOOTSTRAP_SERVERS (required): ``host:port[,host:port]``.
    IDEMPOTENCY_TABLE (required): DynamoDB table, partition key ``id`` (S), TTL attribute ``expiration`` (the
        alert handler's table can be shared: the key prefixes differ).
    LABELS_TOPIC: topic to produce to (default ``labels``).
    KAFKA_DELIVERY_TIMEOUT_MS: librdkafka ``message.timeout.ms`` (default 10000); keep the function timeout
        above it plus a few seconds.
    KAFKA_AUTH: ``msk-iam`` (Amazon MSK IAM access control over TLS) or ``none`` (default, PLAINTEXT).
    IDEMPOTENCY_TTL_SECONDS: how long a (transaction, analyst) pair stays deduplicated (default 7 days).
    LABEL_MAX_FUTURE_SKEW_SECONDS: how far ``labeled_at`` may lie in the future (default 300).
    POWERTOOLS_SERVICE_NAME (default ``label-feedback``), POWERTOOLS_METRICS_NAMESPACE (default
    ``FraudDetect``), POWERTOOLS_LOG_LEVEL, POWERTOOLS_METRICS_DISABLED, POWERTOOLS_TRACE_DISABLED.

Kafka security (SASL/OAUTHBEARER for MSK IAM, TLS) is added in one place: :func:`kafka_overrides`.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from confluent_kafka import Producer

from frauddetect import kafka_io
from frauddetect.config import LABELS_TOPIC as DEFAULT_LABELS_TOPIC
from frauddetect.feedback import InvalidVerdict, LabelRecord, VerdictRequest, label_record

SERVICE = os.getenv("POWERTOOLS_SERVICE_NAME", "label-feedback")
KAFKA_BOOTSTRAP_SERVERS = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
IDEMPOTENCY_TABLE = os.environ["IDEMPOTENCY_TABLE"]
LABELS_TOPIC = os.getenv("LABELS_TOPIC", DEFAULT_LABELS_TOPIC)
KAFKA_DELIVERY_TIMEOUT_MS = int(os.getenv("KAFKA_DELIVERY_TIMEOUT_MS", "10000"))
IDEMPOTENCY_TTL_SECONDS = int(os.getenv("IDEMPOTENCY_TTL_SECONDS", str(7 * 24 * 3600)))
MAX_FUTURE_SKEW = timedelta(seconds=int(os.getenv("LABEL_MAX_FUTURE_SKEW_SECONDS", "300")))
AWS_MAX_ATTEMPTS = int(os.getenv("AWS_MAX_ATTEMPTS", "5"))
# Fixed, not Powertools' default "<function name>.<qualname>": a renamed function keeps its dedup records.
IDEMPOTENCY_KEY_PREFIX = "label-feedback"
# flush() waits this much longer than librdkafka's own delivery timeout, so the delivery report (not our
# deadline) decides; the purge in produce_confirmed is only the backstop.
_FLUSH_MARGIN_S = 5.0

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "FraudDetect"), service=SERVICE)
tracer = Tracer(service=SERVICE)
app = APIGatewayHttpResolver(enable_validation=True)

_AWS_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": AWS_MAX_ATTEMPTS}, connect_timeout=3, read_timeout=10
)
persistence_store = DynamoDBPersistenceLayer(table_name=IDEMPOTENCY_TABLE, boto_config=_AWS_CONFIG)


def _mark_duplicate(response: dict[str, Any], idempotent_data: DataRecord) -> dict[str, Any]:
    """Idempotency response hook: runs only when the stored answer of an earlier request is returned."""
    return {**response, "duplicate": True}


idempotency_config = IdempotencyConfig(
    event_key_jmespath="[transaction_id, analyst_id]",
    payload_validation_jmespath="[verdict, terminal_id, customer_id]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=IDEMPOTENCY_TTL_SECONDS,
    response_hook=_mark_duplicate,
)


# --------------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------------


def kafka_overrides() -> dict[str, Any]:
    """Extra librdkafka settings merged over :func:`producer_settings`' defaults: Kafka security.

    ``KAFKA_AUTH=msk-iam`` (what the CDK app sets): SASL/OAUTHBEARER over TLS with MSK IAM tokens signed
    for ``AWS_REGION`` (:func:`frauddetect.kafka_io.auth_settings`, as in the streaming job); the role needs
    ``kafka-cluster:Connect``, ``WriteDataIdempotently`` on the cluster and ``DescribeTopic``/``WriteData`` on
    the labels topic. Unset or ``none``: PLAINTEXT, which the embedded broker and a local cluster speak.
    """
    auth = os.getenv("KAFKA_AUTH", "none").lower()
    try:
        return kafka_io.auth_settings(auth, os.getenv("AWS_REGION"))
    except ValueError as exc:
        raise ValueError(f"KAFKA_AUTH={auth!r}: {exc}") from None


def producer_settings() -> dict[str, Any]:
    """librdkafka settings of the label producer: acks=all, idempotent, bounded delivery time, no linger."""
    return kafka_io.producer_config(
        KAFKA_BOOTSTRAP_SERVERS,
        **{
            "enable.idempotence": True,
            "linger.ms": 0,  # one record per request: nothing to batch, send at once
            "message.timeout.ms": KAFKA_DELIVERY_TIMEOUT_MS,
            "client.id": SERVICE,
            **kafka_overrides(),
        },
    )


_producer: Producer | None = None


def get_producer() -> Producer:
    """The function's producer, made on first use and kept for warm invocations (connections stay open)."""
    global _producer
    if _producer is None:
        _producer = Producer(producer_settings())
    return _producer


class LabelNotPublished(RuntimeError):
    """Kafka did not acknowledge the label; nothing was published (safe to retry)."""


# --------------------------------------------------------------------------------------------------
# Publishing, at most once per (transaction, analyst)
# --------------------------------------------------------------------------------------------------


@tracer.capture_method(capture_response=False)
def _produce(record: LabelRecord) -> tuple[int, int]:
    """Produce one label and wait for the broker's acknowledgement; ``(partition, offset)``."""
    try:
        return kafka_io.produce_confirmed(
            get_producer(), record.topic, key=record.key, value=record.value,
            headers=[("content-type", b"application/json"), ("producer", SERVICE.encode())],
            timeout=KAFKA_DELIVERY_TIMEOUT_MS / 1000 + _FLUSH_MARGIN_S,
        )
    except kafka_io.DeliveryFailed as exc:
        raise LabelNotPublished(str(exc)) from exc


@idempotent_function(
    data_keyword_argument="verdict",
    persistence_store=persistence_store,
    config=idempotency_config,
    key_prefix=IDEMPOTENCY_KEY_PREFIX,
)
def publish_label(*, verdict: VerdictRequest, record: LabelRecord) -> dict[str, Any]:
    """Produce ``record`` (built from ``verdict``) to Kafka and wait for the acknowledgement.

    Returns the 202 body (without ``status``/``duplicate``). A repeated ``verdict`` for the same
    transaction and analyst gets the first call's result plus ``"duplicate": True`` without producing.

    Raises:
        LabelNotPublished: no acknowledgement (the idempotency record is released: a retry publishes).
        IdempotencyValidationError: the same analyst gave a different verdict on this transaction, or named
            another terminal or card.
        IdempotencyAlreadyInProgressError: the same request is being processed concurrently.
    """
    started = time.perf_counter()
    partition, offset = _produce(record)
    metrics.add_metric(name="PublishLatencyMs", unit=MetricUnit.Milliseconds,
                       value=(time.perf_counter() - started) * 1000)
    label = record.label
    return {
        "key": record.key.decode("utf-8"),
        "topic": record.topic,
        "partition": partition,
        "offset": offset,
        "transaction_id": label.transaction_id,
        "analyst_id": verdict.analyst_id,
        "verdict": verdict.verdict,
        "tx_fraud": label.tx_fraud,
        "labeled_at": label.labeled_at.isoformat().replace("+00:00", "Z"),
        "source": label.source,
        "published_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    }


# --------------------------------------------------------------------------------------------------
# HTTP API
# --------------------------------------------------------------------------------------------------


def _json(status: HTTPStatus, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status.value, content_type=content_types.APPLICATION_JSON, body=body,
                    headers=headers)


def _rejected(message: str, errors: list[dict[str, str]],
              status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> Response:
    metrics.add_metric(name="InvalidVerdicts", unit=MetricUnit.Count, value=1)
    logger.warning("verdict rejected", extra={"reason": message, "errors": errors, "status_code": status.value})
    return _json(status, {"status": "rejected", "message": message, "errors": errors})


@app.post("/verdicts")
def post_verdict(verdict: VerdictRequest):  # no return annotation: it would become a response schema
    """Validate (Powertools + pydantic), map to a label, publish once, answer 202."""
    # The signed caller (IAM auth) next to the analyst id the body claims: an audit trail of who sent it.
    caller = app.current_event.request_context.authorizer.iam.user_arn or None
    logger.append_keys(transaction_id=verdict.transaction_id, analyst_id=verdict.analyst_id,
                       verdict=verdict.verdict, caller_arn=caller)
    try:
        record = label_record(
            verdict, received_at=datetime.now(timezone.utc), max_future_skew=MAX_FUTURE_SKEW, topic=LABELS_TOPIC
        )
    except InvalidVerdict as exc:
        field, _, message = str(exc).partition(": ")
        return _rejected("invalid verdict request", [{"field": field, "message": message}])

    result = publish_label(verdict=verdict, record=record)
    duplicate = bool(result.get("duplicate"))
    context = {"labeled_at": result["labeled_at"], "kafka_partition": result["partition"],
               "kafka_offset": result["offset"], "note_chars": len(verdict.note or "")}
    if duplicate:
        metrics.add_metric(name="DuplicateVerdicts", unit=MetricUnit.Count, value=1)
        logger.info("duplicate verdict: label already published", extra=context)
    else:
        metrics.add_metric(name="LabelsPublished", unit=MetricUnit.Count, value=1)
        logger.info("label published", extra=context)
    return _json(HTTPStatus.ACCEPTED, {"status": "accepted", **result, "duplicate": duplicate})


@app.exception_handler(RequestValidationError)
def _invalid_request(exc: RequestValidationError) -> Response:
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        if error.get("type") == "json_invalid":
            errors.append({"field": "body", "message": "body is not valid JSON"})
        else:
            # pydantic's "msg" names the rule ("Input should be 'fraud' or 'genuine'"), never the input.
            errors.append({"field": ".".join(location) or "body", "message": str(error.get("msg", "invalid"))})
    return _rejected("invalid verdict request", errors)


@app.exception_handler(RequestUnsupportedContentType)
def _unsupported_content_type(exc: RequestUnsupportedContentType) -> Response:
    return _rejected("unsupported content type", [{"field": "content-type", "message": "must be application/json"}],
                     HTTPStatus.UNSUPPORTED_MEDIA_TYPE)


@app.exception_handler(IdempotencyValidationError)
def _conflicting_verdict(exc: IdempotencyValidationError) -> Response:
    metrics.add_metric(name="VerdictConflicts", unit=MetricUnit.Count, value=1)
    logger.warning("verdict conflicts with this analyst's earlier verdict on the transaction")
    return _json(HTTPStatus.CONFLICT, {
        "status": "conflict",
        "message": "this analyst already gave a different verdict on this transaction, or named another "
                   "terminal or card; the first verdict stands (ask another analyst to review, or retry "
                   "after the TTL)",
    })


@app.exception_handler(IdempotencyAlreadyInProgressError)
def _in_progress(exc: IdempotencyAlreadyInProgressError) -> Response:
    logger.info("the same verdict is being processed by another request")
    return _json(HTTPStatus.CONFLICT, {"status": "in_progress",
                                       "message": "the same verdict is being processed; retry shortly"},
                 headers={"Retry-After": "2"})


@app.exception_handler([LabelNotPublished, IdempotencyPersistenceLayerError])
def _unavailable(exc: Exception) -> Response:
    metrics.add_metric(name="LabelPublishFailures", unit=MetricUnit.Count, value=1)
    logger.exception("label not published")
    return _json(HTTPStatus.SERVICE_UNAVAILABLE, {
        "status": "not_published",
        "message": "the label could not be published; nothing was recorded, retry the same request",
    }, headers={"Retry-After": "5"})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for an API Gateway HTTP API (payload format 2.0) event."""
    idempotency_config.register_lambda_context(context)
    return app.resolve(event, context)
