"""Analyst verdicts: request validation and the mapping to a ``labels`` record (frauddetect.feedback, pure)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from frauddetect.feedback import (
    MAX_ANALYST_ID_CHARS,
    MAX_NOTE_CHARS,
    InvalidVerdict,
    VerdictRequest,
    describe_validation_error,
    label_record,
    redact_card_numbers,
    source_for,
)
from frauddetect.kafka_io import DeliveryFailed, produce_confirmed
from frauddetect.schemas import parse_labels

pytestmark = pytest.mark.unit

RECEIVED = datetime(2026, 3, 10, 9, 14, 7, 213000, tzinfo=timezone.utc)
TERMINAL_ID = "TERM-55810293"
CUSTOMER_ID = "CUST-90417733"


def body(**overrides) -> dict:
    fields = {"transaction_id": "1754031", "terminal_id": TERMINAL_ID, "customer_id": CUSTOMER_ID,
              "verdict": "fraud", "analyst_id": "a.moreau"}
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not ...}


def request(**overrides) -> VerdictRequest:
    return VerdictRequest.model_validate_json(json.dumps(body(**overrides)))


@pytest.mark.parametrize(("verdict", "tx_fraud"), [("fraud", 1), ("genuine", 0)])
def test_verdict_maps_to_a_label_event_the_stream_accepts(verdict, tx_fraud):
    record = label_record(request(verdict=verdict, labeled_at="2018-04-02T09:30:00Z"), received_at=RECEIVED)

    assert record.topic == "labels"
    assert record.key == b"1754031"
    valid, rejected = parse_labels([record.value])
    assert rejected == []
    row = valid.iloc[0]
    assert row["transaction_id"] == "1754031"
    assert row["tx_fraud"] == tx_fraud
    assert row["source"] == "analyst:a.moreau"
    assert row["labeled_at_us"] == int(datetime(2018, 4, 2, 9, 30, tzinfo=timezone.utc).timestamp() * 1_000_000)
    assert (row["terminal_id"], row["customer_id"]) == (TERMINAL_ID, CUSTOMER_ID)
    value = json.loads(record.value)
    assert value["labeled_at"] == "2018-04-02T09:30:00Z"
    assert value["verdict"] == verdict and value["analyst_id"] == "a.moreau"
    assert value["received_at"] == "2026-03-10T09:14:07.213000Z"
    assert "note" not in value
    assert record.label.tx_fraud == tx_fraud
    assert (record.label.terminal_id, record.label.customer_id) == (TERMINAL_ID, CUSTOMER_ID)


def test_the_label_carries_the_alerts_terminal_and_customer_ids_unmasked():
    """The stream finds the transaction by (terminal_id, transaction_id): the ids go out exactly as given."""
    record = label_record(request(terminal_id="4821", customer_id="7"), received_at=RECEIVED)
    value = json.loads(record.value)
    assert (value["terminal_id"], value["customer_id"]) == ("4821", "7")
    valid, rejected = parse_labels([record.value])
    assert rejected == []
    assert valid[["transaction_id", "terminal_id", "customer_id"]].values.tolist() == [["1754031", "4821", "7"]]
    assert record.key == b"1754031"  # still keyed by transaction id


def test_labeled_at_defaults_to_the_time_the_request_was_received():
    record = label_record(request(), received_at=RECEIVED)
    assert record.label.labeled_at == RECEIVED
    assert json.loads(record.value)["labeled_at"] == "2026-03-10T09:14:07.213000Z"


def test_labeled_at_may_be_a_little_ahead_for_clock_skew_but_not_in_the_future():
    near = RECEIVED + timedelta(minutes=4)
    assert label_record(request(labeled_at=near.isoformat()), received_at=RECEIVED).label.labeled_at == near
    with pytest.raises(InvalidVerdict, match="labeled_at: must not be more than 300 s in the future"):
        label_record(request(labeled_at=(RECEIVED + timedelta(minutes=6)).isoformat()), received_at=RECEIVED)
    with pytest.raises(ValueError, match="timezone-aware"):
        label_record(request(), received_at=RECEIVED.replace(tzinfo=None))


def test_source_fits_the_label_contract_for_the_longest_analyst_id():
    analyst = "a" * MAX_ANALYST_ID_CHARS
    record = label_record(request(analyst_id=analyst), received_at=RECEIVED)
    assert record.label.source == source_for(analyst)
    assert len(record.label.source) == 64
    assert parse_labels([record.value])[1] == []


def test_note_is_published_with_card_numbers_masked():
    note = "Cardholder called: card 4111 1111 1111 1111 stolen, also 5500-0000-0000-0004 and 340000000000009."
    value = json.loads(label_record(request(note=note), received_at=RECEIVED).value)
    assert value["note"] == "Cardholder called: card ****1111 stolen, also ****0004 and ****0009."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111111111111111", "****1111"),
        ("card 4111-1111-1111-1111.", "card ****1111."),
        ("tx 1754031 on 2018-04-02 for 1,187.45", "tx 1754031 on 2018-04-02 for 1,187.45"),  # short numbers stay
        ("ids 123456789012 and 12345678901234567890", "ids 123456789012 and 12345678901234567890"),  # 12, 20 digits
        ("", ""),
    ],
)
def test_redact_card_numbers(text, expected):
    assert redact_card_numbers(text) == expected


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"verdict": "probably_fraud"}, "verdict", "Input should be 'fraud' or 'genuine'"),
        ({"verdict": "FRAUD"}, "verdict", "Input should be 'fraud' or 'genuine'"),
        ({"verdict": ...}, "verdict", "Field required"),
        ({"transaction_id": ...}, "transaction_id", "Field required"),
        ({"transaction_id": 1754031}, "transaction_id", "Input should be a valid string"),
        ({"transaction_id": ""}, "transaction_id", "at least 1 character"),
        ({"transaction_id": "17540\n31"}, "transaction_id", "should match pattern"),
        ({"terminal_id": ...}, "terminal_id", "Field required"),
        ({"terminal_id": 4821}, "terminal_id", "Input should be a valid string"),
        ({"terminal_id": ""}, "terminal_id", "at least 1 character"),
        ({"terminal_id": "T" * 129}, "terminal_id", "at most 128 characters"),
        ({"terminal_id": "TERM-\t55810293"}, "terminal_id", "should match pattern"),
        ({"customer_id": ...}, "customer_id", "Field required"),
        ({"customer_id": 90417733}, "customer_id", "Input should be a valid string"),
        ({"customer_id": "CUST-9041773\u0000"}, "customer_id", "should match pattern"),
        ({"analyst_id": ...}, "analyst_id", "Field required"),
        ({"analyst_id": "a" * (MAX_ANALYST_ID_CHARS + 1)}, "analyst_id", "at most 56 characters"),
        ({"analyst_id": "robert'); drop table"}, "analyst_id", "should match pattern"),
        ({"note": "x" * (MAX_NOTE_CHARS + 1)}, "note", "at most 2000 characters"),
        ({"note": 42}, "note", "Input should be a valid string"),
        ({"labeled_at": "2018-04-02T09:30:00"}, "labeled_at", "timezone"),
        ({"labeled_at": "2018-04-02T11:30:00+02:00"}, "labeled_at", "must be in UTC"),
        ({"labeled_at": 1522661400}, "labeled_at", "ISO-8601"),
        ({"labeled_at": "yesterday"}, "labeled_at", "datetime"),
        ({"terminal": "TERM-55810293"}, "terminal", "Extra inputs are not permitted"),  # misspelt terminal_id
    ],
)
def test_invalid_requests_are_rejected_with_a_message_naming_the_field_not_the_value(overrides, field, message):
    with pytest.raises(ValidationError) as caught:
        request(**overrides)
    errors = describe_validation_error(caught.value)
    assert any(e["field"] == field and message in e["message"] for e in errors), errors
    text = json.dumps(errors)
    for value in (*overrides.values(), TERMINAL_ID, CUSTOMER_ID):
        if isinstance(value, str) and len(value) > 8:
            assert value not in text  # never echoed back


def test_missing_terminal_id_is_named_without_echoing_the_other_ids():
    with pytest.raises(ValidationError) as caught:
        request(terminal_id=...)
    assert describe_validation_error(caught.value) == [{"field": "terminal_id", "message": "Field required"}]
    assert CUSTOMER_ID not in json.dumps(describe_validation_error(caught.value))


def test_request_is_immutable_and_round_trips():
    verdict = request(note="checked", labeled_at="2018-04-02T09:30:00.5Z")
    with pytest.raises(ValidationError):
        verdict.verdict = "genuine"  # type: ignore[misc]
    assert VerdictRequest.model_validate(verdict.model_dump()) == verdict
    assert verdict.labeled_at == datetime(2018, 4, 2, 9, 30, 0, 500000, tzinfo=timezone.utc)


class _FakeProducer:
    """Just enough of confluent_kafka.Producer for produce_confirmed: acks, errors or silence."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.purged = False
        self._report = None

    def produce(self, topic, *, key, value, headers, on_delivery):
        if self.outcome == "queue full":
            raise BufferError("Local: Queue full")
        self._report = on_delivery

    def flush(self, timeout):
        if self.outcome == "ack":
            self._report(None, _FakeMessage())
        elif self.outcome == "error":
            self._report("Broker: Not enough in-sync replicas", None)
        return 1 if self.outcome == "silence" else 0

    def purge(self, in_queue, in_flight):
        self.purged = in_queue and in_flight

    def poll(self, timeout):
        return 0


class _FakeMessage:
    def partition(self):
        return 2

    def offset(self):
        return 41


def test_produce_confirmed_returns_the_acknowledged_position():
    assert produce_confirmed(_FakeProducer("ack"), "labels", key=b"k", value=b"v", timeout=1) == (2, 41)


@pytest.mark.parametrize(("outcome", "message"), [
    ("error", "broker did not store the record"),
    ("silence", "no acknowledgement within 1 s; the record was purged"),
    ("queue full", "record not queued"),
])
def test_produce_confirmed_raises_and_never_leaves_the_record_queued(outcome, message):
    producer = _FakeProducer(outcome)
    with pytest.raises(DeliveryFailed, match=message):
        produce_confirmed(producer, "labels", key=b"k", value=b"v", timeout=1)
    assert producer.purged is (outcome == "silence")
