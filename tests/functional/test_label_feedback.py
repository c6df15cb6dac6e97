"""The real label feedback Lambda handler against a real Tansu broker and DynamoDB on a moto server.

Requests are recorded-shape API Gateway HTTP API (payload 2.0) events from ``tests/events/``; labels are
read back from the broker and parsed with the stream's own contract (``frauddetect.schemas.parse_labels``).
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from emf_metrics import emf_metric_totals

from frauddetect import kafka_io
from frauddetect.embedded import free_port
from frauddetect.msk_poller import LocalLambdaContext
from frauddetect.schemas import parse_labels

pytestmark = pytest.mark.functional

APP_MODULE = "lambdas.label_feedback.app"
VALID_EVENT = "apigw_http_verdict_event.json"
INVALID_EVENT = "apigw_http_verdict_invalid_event.json"
CARD_NUMBERS = ("4111 1111 1111 1111", "4111111111111111", "5500-0000-0000-0004")
# The valid event's terminal and customer ids: published in the label, never logged or echoed.
TERMINAL_ID, CUSTOMER_ID = "TERM-55810293", "CUST-90417733"


class FeedbackApp:
    """The imported handler module, its log output, and what landed on its labels topic."""

    def __init__(self, module: Any, log_stream: io.StringIO, capsys, bootstrap: str, topic: str) -> None:
        self.module = module
        self.bootstrap = bootstrap
        self.topic = topic
        self._log = log_stream
        self._capsys = capsys
        self._stdout: list[str] = []

    def call(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = self.module.handler(event, LocalLambdaContext("label-feedback", timeout_s=30))
        return response["statusCode"], json.loads(response["body"])

    def labels(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) on the labels topic, in order."""
        end = kafka_io.end_offsets_via_fetch(self.bootstrap, [self.topic])[self.topic].get(0, 0)
        consumer = Consumer(kafka_io.consumer_config(self.bootstrap))
        consumer.assign([TopicPartition(self.topic, 0, 0)])
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        try:
            while len(out) < end and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    out.append((msg.key(), msg.value()))
        finally:
            consumer.close()
        assert len(out) == end
        return out

    def log_text(self) -> str:
        return self._log.getvalue()

    def stdout(self) -> str:
        self._stdout.append(self._capsys.readouterr().out)
        return "".join(self._stdout)

    def metric_totals(self) -> dict[str, float]:
        return emf_metric_totals(self.stdout())


@pytest.fixture
def feedback_app(embedded_broker, unique_topic, local_aws, monkeypatch, capsys) -> Iterator[FeedbackApp]:
    """The handler module imported fresh (its clients are made at import, as in Lambda) against the
    session's Tansu broker, a topic of its own, and the idempotency table ``local_aws`` created."""
    topic = unique_topic("labels")
    kafka_io.ensure_topics(embedded_broker.bootstrap_servers, [topic])
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", embedded_broker.bootstrap_servers)
    monkeypatch.setenv("LABELS_TOPIC", topic)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "label-feedback")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "FraudDetect")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "label-feedback")
    monkeypatch.delitem(sys.modules, APP_MODULE, raising=False)
    module = importlib.import_module(APP_MODULE)
    handler = module.logger.registered_handler
    stream = io.StringIO()
    previous, handler.stream = handler.stream, stream  # see the alert_app fixture for why not setStream()
    try:
        yield FeedbackApp(module, stream, capsys, embedded_broker.bootstrap_servers, topic)
    finally:
        handler.stream = previous
        if module._producer is not None:
            module._producer.flush(5)
            module._producer = None
        sys.modules.pop(APP_MODULE, None)


def with_body(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``event`` with its JSON body updated by ``fields`` (a value of ``...`` removes the field)."""
    body = json.loads(event["body"])
    body.update(fields)
    event["body"] = json.dumps({k: v for k, v in body.items() if v is not ...})
    return event


def test_same_verdict_three_times_publishes_one_label(feedback_app, load_event):
    answers = [feedback_app.call(load_event(VALID_EVENT)) for _ in range(3)]

    assert [status for status, _ in answers] == [202, 202, 202]
    first = answers[0][1]
    assert first["status"] == "accepted" and first["duplicate"] is False
    assert first["key"] == "1754031" and first["topic"] == feedback_app.topic
    assert (first["verdict"], first["tx_fraud"], first["source"]) == ("fraud", 1, "analyst:a.moreau")
    assert first["labeled_at"] == "2018-04-02T09:30:00Z"
    for _, retry in answers[1:]:
        assert retry["duplicate"] is True
        assert {k: v for k, v in retry.items() if k != "duplicate"} == {
            k: v for k, v in first.items() if k != "duplicate"}

    records = feedback_app.labels()
    assert len(records) == 1
    key, value = records[0]
    assert key == b"1754031"
    valid, rejected = parse_labels([value])
    assert rejected == []
    assert (valid.loc[0, "transaction_id"], valid.loc[0, "tx_fraud"], valid.loc[0, "source"]) == (
        "1754031", 1, "analyst:a.moreau")
    assert (valid.loc[0, "terminal_id"], valid.loc[0, "customer_id"]) == (TERMINAL_ID, CUSTOMER_ID)
    document = json.loads(value)
    assert document["note"] == "Cardholder confirmed by phone: card ****1111 was stolen on 2018-03-30."
    assert first["offset"] == 0 and first["partition"] == 0

    totals = feedback_app.metric_totals()
    assert totals["LabelsPublished"] == 1
    assert totals["DuplicateVerdicts"] == 2
    logs = feedback_app.log_text()
    published = next(json.loads(line) for line in logs.splitlines() if '"label published"' in line)
    assert published["correlation_id"] == "HxV3qjN2DoEEMsA="  # the API Gateway request id
    assert published["caller_arn"] == "arn:aws:sts::123456789012:assumed-role/FraudAnalyst/a.moreau"
    assert (published["transaction_id"], published["analyst_id"]) == ("1754031", "a.moreau")
    # Neither the note nor the terminal/customer ids reach the logs or the answers.
    for secret in (*CARD_NUMBERS, "Cardholder confirmed", TERMINAL_ID, CUSTOMER_ID):
        assert secret not in logs and secret not in feedback_app.stdout()
    for secret in (TERMINAL_ID, CUSTOMER_ID):
        assert all(secret not in json.dumps(answer) for _, answer in answers)


def test_base64_encoded_body_is_accepted(feedback_app, load_event):
    event = load_event(VALID_EVENT)
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    status, answer = feedback_app.call(event)
    assert status == 202 and answer["key"] == "1754031"
    assert len(feedback_app.labels()) == 1


def test_invalid_requests_get_400_and_publish_nothing(feedback_app, load_event):
    status, answer = feedback_app.call(load_event(INVALID_EVENT))
    assert status == 400
    assert answer["status"] == "rejected" and answer["message"] == "invalid verdict request"
    # terminal_id is missing (the body misspells it "terminal", an unknown field); customer_id is fine.
    assert {e["field"] for e in answer["errors"]} == {
        "verdict", "analyst_id", "labeled_at", "terminal_id", "terminal"}

    cases = {
        "not json": {"body": "{\"transaction_id\": \"1754031\", "},
        "array": {"body": "[]"},
        "empty": {"body": ""},
        "future": with_body(load_event(VALID_EVENT), labeled_at="2999-01-01T00:00:00Z"),
        "number id": with_body(load_event(VALID_EVENT), transaction_id=1754031),
        "no verdict": with_body(load_event(VALID_EVENT), verdict=...),
        "no customer id": with_body(load_event(VALID_EVENT), customer_id=...),
        "empty terminal id": with_body(load_event(VALID_EVENT), terminal_id=""),
    }
    for name, override in cases.items():
        event = override if "requestContext" in override else {**load_event(VALID_EVENT), **override}
        status, answer = feedback_app.call(event)
        assert status == 400, (name, answer)
        assert answer["errors"] and all(e["message"] for e in answer["errors"]), name
    plain = load_event(VALID_EVENT)
    plain["headers"]["content-type"] = "text/plain"
    status, answer = feedback_app.call(plain)
    assert status == 415 and answer["message"] == "unsupported content type"

    assert feedback_app.labels() == []
    assert feedback_app.metric_totals()["InvalidVerdicts"] == 2 + len(cases)
    # Nothing the client sent is echoed into logs or responses, valid-looking or not.
    for secret in (TERMINAL_ID, CUSTOMER_ID, "5500-0000-0000-0004", "probably_fraud"):
        assert secret not in feedback_app.log_text()


def test_a_verdict_without_terminal_id_gets_400_naming_the_field_and_publishes_nothing(feedback_app, load_event):
    status, answer = feedback_app.call(with_body(load_event(VALID_EVENT), terminal_id=...))

    assert status == 400
    assert answer == {"status": "rejected", "message": "invalid verdict request",
                      "errors": [{"field": "terminal_id", "message": "Field required"}]}
    assert feedback_app.labels() == []
    assert feedback_app.metric_totals()["InvalidVerdicts"] == 1
    for secret in (CUSTOMER_ID, "1754031", "a.moreau", "Cardholder confirmed", *CARD_NUMBERS):
        assert secret not in json.dumps(answer)
    for secret in (CUSTOMER_ID, "Cardholder confirmed", *CARD_NUMBERS):
        assert secret not in feedback_app.log_text() and secret not in feedback_app.stdout()


def test_a_different_verdict_by_the_same_analyst_conflicts_another_analyst_publishes(feedback_app, load_event):
    assert feedback_app.call(load_event(VALID_EVENT))[0] == 202

    status, answer = feedback_app.call(with_body(load_event(VALID_EVENT), verdict="genuine"))
    assert status == 409 and answer["status"] == "conflict"
    # the same verdict naming another terminal is a correction, not a duplicate: refused, never dropped silently
    status, answer = feedback_app.call(with_body(load_event(VALID_EVENT), terminal_id="TERM-00000001"))
    assert status == 409 and answer["status"] == "conflict"

    status, answer = feedback_app.call(with_body(load_event(VALID_EVENT), verdict="genuine", analyst_id="j.okafor"))
    assert status == 202 and answer["duplicate"] is False and answer["source"] == "analyst:j.okafor"

    values = [json.loads(v) for _, v in feedback_app.labels()]
    assert [(v["tx_fraud"], v["source"]) for v in values] == [(1, "analyst:a.moreau"), (0, "analyst:j.okafor")]


def test_unacknowledged_label_gets_503_publishes_nothing_and_a_retry_publishes_once(
    feedback_app, load_event, monkeypatch
):
    module = feedback_app.module
    # A producer whose broker never answers: librdkafka gives up on the record after 1.5 s.
    monkeypatch.setattr(module, "KAFKA_DELIVERY_TIMEOUT_MS", 1500)
    dead = Producer({**module.producer_settings(), "bootstrap.servers": f"127.0.0.1:{free_port()}",
                     "message.timeout.ms": 1500})
    monkeypatch.setattr(module, "_producer", dead)

    started = time.monotonic()
    status, answer = feedback_app.call(load_event(VALID_EVENT))
    assert status == 503, answer
    assert answer["status"] == "not_published"
    # librdkafka failed the record itself (delivery report), so it is not retried behind the client's back.
    assert time.monotonic() - started < 1.5 + module._FLUSH_MARGIN_S
    assert feedback_app.labels() == []

    # The idempotency record was released: the client's retry publishes, once.
    monkeypatch.setattr(module, "_producer", None)
    del dead  # stops its reconnect attempts
    answers = [feedback_app.call(load_event(VALID_EVENT)) for _ in range(2)]
    assert [(s, a["duplicate"]) for s, a in answers] == [(202, False), (202, True)]
    assert len(feedback_app.labels()) == 1
    totals = feedback_app.metric_totals()
    assert (totals["LabelPublishFailures"], totals["LabelsPublished"]) == (1, 1)
