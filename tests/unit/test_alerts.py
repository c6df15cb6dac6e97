"""Alert contract and SNS message building (pure functions of frauddetect.alerts)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from decimal import Decimal

import numpy as np
import pytest

from frauddetect.alerts import (
    MAX_SUBJECT_CHARS,
    SNS_MAX_PUBLISH_BYTES,
    AlertEvent,
    InvalidAlertRecord,
    build_message_attributes,
    build_notification,
    build_sms_text,
    build_subject,
    explain_msk_record,
    format_money,
    latency_ms,
    mask_identifier,
    parse_alert_record,
    parse_msk_record,
    publish_size_bytes,
    severity_for,
    to_ascii_line,
)

pytestmark = pytest.mark.unit

CUSTOMER = "CUST-90417733"
TERMINAL = "TERM-5520981"


def alert_fields(**overrides) -> dict:
    fields = {
        "transaction_id": "1754031",
        "tx_datetime": "2018-04-01T08:15:01Z",
        "customer_id": CUSTOMER,
        "terminal_id": TERMINAL,
        "tx_amount": 1187.45,
        "score": 0.9731,
        "threshold": 0.62,
        "model_version": "fraud-mlp-2018-05-01",
        "scored_at": "2018-04-01T08:15:02.480Z",
        "produced_at": "2018-04-01T08:15:02.120Z",
    }
    fields.update(overrides)
    return fields


def make_alert(**overrides) -> AlertEvent:
    return AlertEvent.model_validate(alert_fields(**overrides))


def raw(**overrides) -> bytes:
    return json.dumps(alert_fields(**overrides)).encode()


def assert_valid_subject(subject: str) -> None:
    assert 0 < len(subject) <= MAX_SUBJECT_CHARS
    assert subject.isascii()
    assert all(32 <= ord(c) < 127 for c in subject), "control characters in subject"
    assert subject[0].isalnum()


# -- contract -------------------------------------------------------------------------------------


def test_kafka_round_trip_keeps_every_field_and_writes_utc_z():
    alert = make_alert(features={"tx_amount": 1187.45, "tx_during_night": 1.0})
    assert alert.kafka_key() == b"1754031"
    value = json.loads(alert.kafka_value())
    assert value["tx_datetime"] == "2018-04-01T08:15:01Z"
    assert value["produced_at"] == "2018-04-01T08:15:02.120000Z"
    assert parse_alert_record(alert.kafka_key(), alert.kafka_value()) == alert


def test_offset_zero_is_accepted_and_normalised_to_utc():
    alert = make_alert(tx_datetime="2018-04-01T08:15:01+00:00")
    assert alert.tx_datetime == datetime(2018, 4, 1, 8, 15, 1, tzinfo=timezone.utc)


def test_streaming_job_payload_shape_is_accepted():
    # What the streaming job's sinks emit (frauddetect.stream.lake.alert_payloads): numpy UTC strings with microseconds, and float32 scores that passed
    # `score >= threshold` in float32 but sit just below the float64 threshold once widened.
    scores = np.array([0.7], dtype=np.float32)
    assert bool((scores >= 0.7)[0]) and float(scores[0]) < 0.7
    stamp = str(np.datetime_as_string(np.datetime64(1522570501000000, "us"), unit="us", timezone="UTC"))
    alert = make_alert(score=float(scores[0]), threshold=0.7, tx_datetime=stamp)
    assert alert.tx_datetime == datetime(2018, 4, 1, 8, 15, 1, tzinfo=timezone.utc)
    assert alert.score == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        (None, raw(), "missing_key"),
        (b"", raw(), "missing_key"),
        (b"1754031", None, "null_value"),
        (b"1754031", b"\xff\xfe", "not_utf8"),
        (b"1754031", b"{not json", "not_json"),
        (b"1754031", b"[1, 2]", "not_object"),
        (b"1754031", raw(score=float("nan")), "schema_violation"),  # json writes NaN, json.loads reads it
        (b"1754031", raw(score=1.5), "schema_violation"),
        (b"1754031", raw(score="0.97"), "schema_violation"),
        (b"1754031", raw(score=True), "schema_violation"),
        (b"1754031", raw(score=0.5), "schema_violation"),  # below the 0.62 threshold
        (b"1754031", raw(tx_amount=float("inf")), "schema_violation"),
        (b"1754031", raw(tx_datetime="2018-04-01T10:15:01+02:00"), "schema_violation"),
        (b"1754031", raw(tx_datetime="2018-04-01T08:15:01"), "schema_violation"),  # naive
        (b"1754031", raw(tx_datetime=1522570501), "schema_violation"),  # epoch seconds
        (b"1754031", raw(customer_id=90417733), "schema_violation"),  # contract says string
        (b"1754031", raw(transaction_id="x" * 129), "schema_violation"),
        (b"1754031", raw(terminal_id="TERM\n5520981"), "schema_violation"),
        (b"1754031", json.dumps({k: v for k, v in alert_fields().items() if k != "produced_at"}).encode(),
         "schema_violation"),
        (b"1754032", raw(), "key_mismatch"),
    ],
)
def test_invalid_records_are_rejected_with_a_reason_code(key, value, code):
    with pytest.raises(InvalidAlertRecord) as caught:
        parse_alert_record(key, value)
    assert caught.value.code == code


def test_rejection_reasons_name_fields_but_never_quote_values():
    value = raw(customer_id=90417733, terminal_id="TERM\n5520981", tx_datetime="2018-04-01T10:15:01+02:00")
    with pytest.raises(InvalidAlertRecord) as caught:
        parse_alert_record(b"1754031", value)
    reason = caught.value.reason
    assert "customer_id" in reason and "terminal_id" in reason and "tx_datetime" in reason
    for secret in ("90417733", "5520981", "10:15:01"):
        assert secret not in reason


def test_msk_record_decoding_and_explanations():
    good = {"key": base64.b64encode(b"1754031").decode(), "value": base64.b64encode(raw()).decode()}
    assert parse_msk_record(good).transaction_id == "1754031"
    assert explain_msk_record(good) is None
    assert explain_msk_record({"key": good["key"]}).startswith("null_value")
    assert explain_msk_record({"key": good["key"], "value": None}).startswith("null_value")
    assert explain_msk_record({"value": good["value"]}).startswith("missing_key")
    assert explain_msk_record({"key": good["key"], "value": "%%%not base64"}).startswith("bad_base64")


# -- masking, money, severity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "masked"),
    [
        ("4111111111111111", "****1111"),
        ("CUST-90417733", "****7733"),
        ("4821", "****21"),  # handbook ids are 1-4 digits: never show more than half
        (4821, "****21"),
        ("123", "****3"),
        ("7", "****"),
        ("", "****"),
    ],
)
def test_mask_identifier_shows_at_most_last_four_and_at_most_half(identifier, masked):
    assert mask_identifier(identifier) == masked


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1187.45, None, "1,187.45"),
        (1234567.891, None, "1,234,567.89"),
        (2.675, None, "2.68"),  # decimal half-up, not binary rounding (f"{2.675:.2f}" == "2.67")
        (0.005, None, "0.01"),
        (-1234.5, None, "-1,234.50"),
        (-0.001, None, "0.00"),
        (0, None, "0.00"),
        (Decimal("10"), "EUR", "EUR 10.00"),
    ],
)
def test_format_money(amount, currency, text):
    assert format_money(amount, currency) == text


@pytest.mark.parametrize("amount", [float("nan"), float("inf"), True, "12.00"])
def test_format_money_rejects_non_numbers(amount):
    with pytest.raises(ValueError):
        format_money(amount)


def test_format_money_rejects_bad_currency_code():
    with pytest.raises(ValueError):
        format_money(1.0, "euro")


def test_severity_boundaries():
    assert severity_for(0.9) == "high"
    assert severity_for(1.0) == "high"
    assert severity_for(0.8999) == "medium"
    assert severity_for(0.8, high_at=0.75) == "high"
    with pytest.raises(ValueError):
        severity_for(float("nan"))


def test_latency_ms_is_signed_milliseconds():
    produced = datetime(2018, 4, 1, 8, 15, 2, 120000, tzinfo=timezone.utc)
    assert latency_ms(produced, datetime(2018, 4, 1, 8, 15, 2, 870000, tzinfo=timezone.utc)) == pytest.approx(750.0)
    assert latency_ms(produced, datetime(2018, 4, 1, 8, 15, 2, 20000, tzinfo=timezone.utc)) == pytest.approx(-100.0)


# -- subject --------------------------------------------------------------------------------------


def test_subject_of_a_typical_alert():
    assert build_subject(make_alert()) == "Fraud alert HIGH: 1,187.45 at terminal ****0981, score 0.973, tx 1754031"


def test_subject_stays_within_sns_rules_for_long_multibyte_ids():
    alert = make_alert(transaction_id="交易-ÄÖÜ-€-🙂" * 12, terminal_id="終端-5520981", tx_amount=123456789.99)
    subject = build_subject(alert)
    assert_valid_subject(subject)
    assert len(subject) == MAX_SUBJECT_CHARS and subject.endswith("...")
    assert subject.startswith("Fraud alert HIGH: 123,456,789.99 at terminal ****0981, score 0.973, tx -AOU--")


def test_subject_strips_newlines_and_control_characters_from_any_text():
    # The schema already forbids control characters; the builder must not depend on that.
    alert = make_alert().model_copy(update={"transaction_id": "17\r\n54\t031\x00\x1b[31m"})
    subject = build_subject(alert)
    assert_valid_subject(subject)
    assert subject.endswith("tx 17 54 031 [31m")


def test_to_ascii_line_folds_accents_and_collapses_whitespace():
    assert to_ascii_line("  Café\n\tﬁnal  ☃ x ") == "Cafe final x"


# -- message --------------------------------------------------------------------------------------


def test_notification_messages_carry_facts_with_ids_masked():
    alert = make_alert(features={"tx_amount": 1187.45, "terminal_id_risk_30day_window": 0.25})
    notification = build_notification(alert)
    structured = json.loads(notification.message)
    assert set(structured) == {"default", "email", "sms"}
    payload = json.loads(structured["default"])
    assert payload["customer_id_masked"] == "****7733"
    assert payload["terminal_id_masked"] == "****0981"
    assert payload["severity"] == "high"
    assert payload["tx_amount_display"] == "1,187.45"
    assert payload["produced_at"] == "2018-04-01T08:15:02.120000Z"
    assert payload["features"] == {"terminal_id_risk_30day_window": 0.25, "tx_amount": 1187.45}
    assert "Amount:         1,187.45" in structured["email"]
    assert "terminal_id_risk_30day_window" in structured["email"]
    everything = notification.message + notification.subject + json.dumps(notification.message_attributes)
    assert CUSTOMER not in everything and TERMINAL not in everything
    assert notification.publish_kwargs("arn:aws:sns:us-east-1:123456789012:alerts")["MessageStructure"] == "json"


def test_sms_is_one_ascii_segment():
    sms = build_sms_text(make_alert(transaction_id="Ü" * 128, tx_amount=987654321.0))
    assert len(sms) <= 140 and sms.isascii() and "\n" not in sms
    assert sms.startswith("FraudDetect HIGH alert: 987,654,321.00 at terminal ****0981 on 2018-04-01 08:15 UTC")


def test_message_attributes_for_filter_policies():
    assert build_message_attributes(make_alert(score=0.75)) == {
        "severity": {"DataType": "String", "StringValue": "medium"},
        "score": {"DataType": "Number", "StringValue": "0.750000"},
        "transaction_id": {"DataType": "String", "StringValue": "1754031"},
    }


def test_oversized_notification_drops_features_first_and_fits_sns_limit():
    features = {f"feature_{i:05d}_{'x' * 40}": i / 7 for i in range(6000)}  # ~0.9 MB as JSON
    alert = make_alert(transaction_id="交" * 128, model_version="v" * 128, features=features)
    notification = build_notification(alert)
    assert notification.features_omitted
    assert notification.size_bytes <= SNS_MAX_PUBLISH_BYTES
    assert notification.size_bytes == publish_size_bytes(
        notification.subject, notification.message, notification.message_attributes
    )
    structured = json.loads(notification.message)
    payload = json.loads(structured["default"])
    assert "features" not in payload and payload["features_omitted"] is True
    assert payload["transaction_id"] == "交" * 128  # required facts are never trimmed
    assert "Model inputs omitted" in structured["email"]


def test_features_are_kept_when_they_fit():
    alert = make_alert(features={f"f{i}": float(i) for i in range(100)})
    notification = build_notification(alert)
    assert not notification.features_omitted
    assert len(json.loads(json.loads(notification.message)["default"])["features"]) == 100


def test_size_counts_utf8_bytes_not_characters():
    attributes = {"a": {"DataType": "String", "StringValue": "é"}}
    assert publish_size_bytes("S", "交", attributes) == 1 + 3 + 1 + len("String") + 2


def test_notification_that_cannot_fit_raises():
    with pytest.raises(ValueError, match="even without features"):
        build_notification(make_alert(features={"a": 1.0}), max_bytes=200)
