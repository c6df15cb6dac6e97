"""The real alert Lambda handler against a moto server: exactly-once SNS, partial batch failures, privacy."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.awsrequest import AWSResponse

pytestmark = pytest.mark.functional

GOOD_EVENT = "msk_alerts_event.json"
MIXED_EVENT = "msk_alerts_mixed_bad_records_event.json"

# (partition key, offset) -> reason code of every bad record in MIXED_EVENT.
BAD_RECORDS = {
    ("fraud-alerts-0", 101): "missing_key",
    ("fraud-alerts-0", 102): "null_value",  # value field absent
    ("fraud-alerts-0", 103): "not_json",
    ("fraud-alerts-0", 104): "schema_violation",  # non-UTC timestamp
    ("fraud-alerts-1", 200): "schema_violation",  # NaN score
    ("fraud-alerts-1", 201): "null_value",  # value: null
    ("fraud-alerts-1", 202): "schema_violation",  # score below threshold
    ("fraud-alerts-1", 204): "key_mismatch",
    ("fraud-alerts-1", 205): "not_utf8",
}


def _alerts_in(event: dict) -> dict[str, dict]:
    """transaction id -> decoded alert JSON, for the records of an event that are valid alerts."""
    alerts = {}
    for key, records in event["records"].items():
        for record in records:
            if (key, record["offset"]) not in BAD_RECORDS:
                alert = json.loads(base64.b64decode(record["value"]))
                alerts[alert["transaction_id"]] = alert
    return alerts


def _sensitive_ids(event: dict) -> set[str]:
    """Every customer and terminal id present in an event's record values, valid or not."""
    ids = set()
    for records in event["records"].values():
        for record in records:
            try:
                document = json.loads(base64.b64decode(record.get("value") or ""))
            except ValueError:
                continue
            if isinstance(document, dict):
                ids.update(str(document[name]) for name in ("customer_id", "terminal_id") if name in document)
    return ids


def _failed_ids(response: dict) -> set[tuple[str, int]]:
    return {(f["itemIdentifier"]["partition"], f["itemIdentifier"]["offset"]) for f in response["batchItemFailures"]}


def test_event_delivered_three_times_publishes_each_alert_exactly_once(alert_app, load_event, alerts_inbox):
    event = load_event(GOOD_EVENT)
    expected = _alerts_in(event)
    assert len(expected) == 3

    responses = [alert_app.handler(load_event(GOOD_EVENT)) for _ in range(3)]

    assert responses == [{"batchItemFailures": []}] * 3
    envelopes = alerts_inbox()
    published = [json.loads(envelope["Message"]) for envelope in envelopes]
    assert sorted(p["transaction_id"] for p in published) == sorted(expected)
    for envelope, payload in zip(envelopes, published):
        source = expected[payload["transaction_id"]]
        assert envelope["Type"] == "Notification"
        assert envelope["Timestamp"]  # raw delivery is off: the SNS envelope carries SNS's timestamp
        assert payload["score"] == source["score"]
        assert payload["tx_amount"] == source["tx_amount"]
        assert payload["produced_at"] == source["produced_at"]
        assert payload["customer_id_masked"] == "****" + source["customer_id"][-4:]
        assert envelope["MessageAttributes"]["transaction_id"]["Value"] == source["transaction_id"]
        assert envelope["MessageAttributes"]["severity"]["Value"] == ("high" if source["score"] >= 0.9 else "medium")
        assert len(envelope["Subject"]) <= 100
    totals = alert_app.metric_totals()
    assert totals["AlertsSent"] == 3
    assert totals["DuplicatesSkipped"] == 6
    assert totals.get("AlertFailures", 0) == 0
    duplicates = [r for r in alert_app.log_records() if r["message"].startswith("duplicate alert skipped")]
    assert sorted(r["correlation_id"] for r in duplicates) == sorted(list(expected) * 2)


def test_mixed_batch_reports_exactly_the_bad_records_and_publishes_all_valid_ones(
    alert_app, load_event, alerts_inbox
):
    event = load_event(MIXED_EVENT)
    valid = _alerts_in(event)
    assert sorted(valid) == ["1760001", "1760002"]

    response = alert_app.handler(event)

    assert _failed_ids(response) == set(BAD_RECORDS)
    assert len(response["batchItemFailures"]) == len(BAD_RECORDS)
    published = sorted(json.loads(e["Message"])["transaction_id"] for e in alerts_inbox())
    assert published == ["1760001", "1760002"]
    totals = alert_app.metric_totals()
    assert totals["AlertsSent"] == 2
    assert totals["AlertFailures"] == len(BAD_RECORDS)
    rejected = {
        (f"{r['kafka_topic']}-{r['kafka_partition']}", r["kafka_offset"]): r["reason_code"]
        for r in alert_app.log_records()
        if r["message"] == "invalid alert record"
    }
    assert rejected == BAD_RECORDS


def test_batch_of_only_bad_records_is_reported_not_raised(alert_app, load_event, alerts_inbox):
    event = load_event(MIXED_EVENT)
    for key in event["records"]:
        event["records"][key] = [r for r in event["records"][key] if (key, r["offset"]) in BAD_RECORDS]

    response = alert_app.handler(event)

    assert _failed_ids(response) == set(BAD_RECORDS)
    assert alerts_inbox() == []


def test_no_unmasked_customer_or_terminal_id_in_logs_or_messages(alert_app, load_event, alerts_inbox):
    events = [load_event(GOOD_EVENT), load_event(MIXED_EVENT), load_event(GOOD_EVENT)]
    sensitive = set().union(*(_sensitive_ids(e) for e in events))
    assert "CUST-LEAKCHECK-4417" in sensitive  # carried by the invalid records whose reasons get logged

    for event in events:
        alert_app.handler(event)

    envelopes = alerts_inbox()
    outputs = {
        "log": alert_app.log_text(),
        "stdout": alert_app.stdout(),
        "sns": json.dumps(envelopes),  # default JSON, e-mail and SMS bodies, subject, attributes
    }
    # The check must have looked at lines that talk about customers at all.
    assert "customer_id_masked" in outputs["log"] and len(envelopes) == 5
    for where, text in outputs.items():
        leaked = sorted(i for i in sensitive if i in text)
        assert leaked == [], f"unmasked ids in {where}: {leaked}"


def test_throttled_publish_is_retried_by_botocore_and_sent_once(alert_app, load_event, alerts_inbox):
    throttled = {"count": 0}

    def throttle_first_publish(request, **_):
        if throttled["count"]:
            return None  # let the real request through
        throttled["count"] += 1
        body = (
            b'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type>'
            b"<Code>Throttled</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>"
        )
        return AWSResponse(request.url, 429, {"Content-Type": "text/xml"}, _RawBody(body))

    alert_app.module.sns.meta.events.register_first("before-send.sns.Publish", throttle_first_publish)
    event = load_event(GOOD_EVENT)
    first_partition = next(iter(event["records"]))
    event["records"] = {first_partition: event["records"][first_partition][:1]}

    response = alert_app.handler(event)

    assert response == {"batchItemFailures": []}
    assert throttled["count"] == 1
    assert [json.loads(e["Message"])["transaction_id"] for e in alerts_inbox()] == ["1754031"]


def test_failed_publish_is_reported_and_published_on_redelivery(alert_app, load_event, alerts_inbox):
    def deny_publish(request, **_):
        body = (
            b'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type>'
            b"<Code>AuthorizationError</Code><Message>denied</Message></Error><RequestId>1</RequestId></ErrorResponse>"
        )
        return AWSResponse(request.url, 403, {"Content-Type": "text/xml"}, _RawBody(body))

    events = alert_app.module.sns.meta.events
    events.register_first("before-send.sns.Publish", deny_publish)
    failed = alert_app.handler(load_event(GOOD_EVENT))
    events.unregister("before-send.sns.Publish", deny_publish)

    assert _failed_ids(failed) == {("fraud-alerts-0", 41), ("fraud-alerts-0", 42), ("fraud-alerts-1", 17)}
    assert alerts_inbox() == []
    # The idempotency record was released on failure, so the redelivery publishes (nothing is lost).
    assert alert_app.handler(load_event(GOOD_EVENT)) == {"batchItemFailures": []}
    assert sorted(json.loads(e["Message"])["transaction_id"] for e in alerts_inbox()) == [
        "1754031",
        "1754188",
        "1755002",
    ]
    totals = alert_app.metric_totals()
    assert totals["AlertFailures"] == 3
    assert totals["AlertsSent"] == 3


class _RawBody:
    """Minimal urllib3-like raw body for a botocore ``AWSResponse``."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body
