"""The MSK event source mapping stand-in without a broker: event shape, response reading, retry policy."""

from __future__ import annotations

import base64
import json

import pytest

from frauddetect.alerts import explain_msk_record
from frauddetect.msk_poller import (
    InvalidBatchResponse,
    JsonlDeadLetter,
    LocalLambdaContext,
    MskPoller,
    SqsDeadLetter,
    build_msk_event,
    dead_letter_sink,
    failed_records,
    msk_record,
)

pytestmark = pytest.mark.unit


def record(partition: int, offset: int, key: bytes | None = b"k", value: bytes | None = b"{}") -> dict:
    return msk_record(topic="fraud-alerts", partition=partition, offset=offset, key=key, value=value,
                      timestamp_ms=1522570502120)


def test_msk_record_matches_the_esm_shape():
    r = msk_record(topic="fraud-alerts", partition=3, offset=42, key=b"1754031", value=b'{"a":1}',
                   timestamp_ms=1522570502120, timestamp_type="LOG_APPEND_TIME",
                   headers=[("producer", b"fd"), ("empty", None)])
    assert r == {
        "topic": "fraud-alerts",
        "partition": 3,
        "offset": 42,
        "timestamp": 1522570502120,
        "timestampType": "LOG_APPEND_TIME",
        "key": base64.b64encode(b"1754031").decode(),
        "value": base64.b64encode(b'{"a":1}').decode(),
        "headers": [{"producer": [102, 100]}, {"empty": []}],
    }


def test_null_key_and_tombstone_value_are_left_out():
    r = record(0, 1, key=None, value=None)
    assert "key" not in r and "value" not in r


def test_event_groups_records_by_topic_partition_in_order():
    records = [record(1, 7), record(0, 3), record(1, 8), record(0, 4)]
    event = build_msk_event(records, bootstrap_servers="127.0.0.1:9092", event_source_arn="arn:x")
    assert event["eventSource"] == "aws:kafka"
    assert event["eventSourceArn"] == "arn:x"
    assert event["bootstrapServers"] == "127.0.0.1:9092"
    assert list(event["records"]) == ["fraud-alerts-1", "fraud-alerts-0"]
    assert [r["offset"] for r in event["records"]["fraud-alerts-1"]] == [7, 8]
    assert [r["offset"] for r in event["records"]["fraud-alerts-0"]] == [3, 4]


def test_failed_records_reads_the_partial_batch_response():
    records = [record(0, 3), record(0, 4), record(1, 7)]
    assert failed_records(None, records) == []
    assert failed_records({}, records) == []
    assert failed_records({"batchItemFailures": None}, records) == []
    assert failed_records({"batchItemFailures": []}, records) == []
    response = {"batchItemFailures": [{"itemIdentifier": {"partition": "fraud-alerts-1", "offset": 7}},
                                      {"itemIdentifier": {"partition": "fraud-alerts-0", "offset": 3}}]}
    assert [(r["partition"], r["offset"]) for r in failed_records(response, records)] == [(0, 3), (1, 7)]


@pytest.mark.parametrize(
    "response",
    [
        "ok",
        {"batchItemFailures": [{"itemIdentifier": "fraud-alerts-0-3"}]},
        {"batchItemFailures": [{"itemIdentifier": {"partition": "fraud-alerts-0", "offset": 99}}]},
        {"batchItemFailures": [{"id": {"partition": "fraud-alerts-0", "offset": 3}}]},
    ],
)
def test_malformed_responses_fail_the_whole_batch(response):
    with pytest.raises(InvalidBatchResponse):
        failed_records(response, [record(0, 3)])


def test_context_counts_down_and_never_goes_negative():
    context = LocalLambdaContext("fraud-alert-handler", timeout_s=0.0)
    assert context.get_remaining_time_in_millis() == 0
    assert context.invoked_function_arn.endswith(":function:fraud-alert-handler")
    assert 0 < LocalLambdaContext("f", timeout_s=60).get_remaining_time_in_millis() <= 60_000


def test_dead_letter_sink_dispatch(tmp_path):
    assert isinstance(dead_letter_sink("http://127.0.0.1:5000/123456789012/dlq"), SqsDeadLetter)
    assert isinstance(dead_letter_sink(tmp_path / "dlq.jsonl"), JsonlDeadLetter)
    sink = JsonlDeadLetter(tmp_path / "x.jsonl")
    assert dead_letter_sink(sink) is sink


class ScriptedHandler:
    """Fails the offsets in ``failing`` for the first ``times`` calls that include them."""

    def __init__(self, failing: set[int], times: int) -> None:
        self.failing, self.times, self.calls = failing, times, []

    def __call__(self, event, context):
        offsets = [r["offset"] for rs in event["records"].values() for r in rs]
        self.calls.append(offsets)
        failures = [
            {"itemIdentifier": {"partition": f"{r['topic']}-{r['partition']}", "offset": r["offset"]}}
            for rs in event["records"].values() for r in rs
            if r["offset"] in self.failing and sum(r["offset"] in c for c in self.calls) <= self.times
        ]
        return {"batchItemFailures": failures}


def poller(handler, tmp_path, **kwargs) -> MskPoller:
    return MskPoller(handler, bootstrap_servers="127.0.0.1:1", dead_letter=tmp_path / "dlq.jsonl",
                     retry_backoff_s=0.0, **kwargs)


def dead_letters(tmp_path) -> list[dict]:
    path = tmp_path / "dlq.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_only_failed_records_are_retried_and_recover(tmp_path):
    handler = ScriptedHandler(failing={2}, times=2)
    p = poller(handler, tmp_path, max_retry_attempts=2)
    p.deliver([record(0, 1), record(0, 2), record(0, 3)])
    assert handler.calls == [[1, 2, 3], [2], [2]]
    assert dead_letters(tmp_path) == []
    stats = p.stats
    assert (stats.invocations, stats.succeeded, stats.failures, stats.dead_lettered) == (3, 3, 2, 0)


def test_records_failing_every_attempt_are_dead_lettered_with_their_reason(tmp_path):
    bad = msk_record(topic="fraud-alerts", partition=0, offset=2, key=b"1754031", value=None)
    handler = ScriptedHandler(failing={2}, times=99)
    p = poller(handler, tmp_path, max_retry_attempts=1, explain=explain_msk_record)
    p.deliver([record(0, 1), bad])
    assert handler.calls == [[1, 2], [2]]
    [entry] = dead_letters(tmp_path)
    assert entry["condition"] == "RetryAttemptsExhausted"
    assert entry["approximateInvokeCount"] == 2
    assert entry["reason"].startswith("null_value")
    assert (entry["topic"], entry["partition"], entry["offset"]) == ("fraud-alerts", 0, 2)
    assert entry["record"] == bad  # the exact record, so it can be replayed
    assert p.stats.dead_lettered == 1


def test_function_error_retries_the_whole_batch_then_dead_letters_it(tmp_path):
    calls = []

    def broken(event, context):
        calls.append(event)
        raise RuntimeError("boom")

    p = poller(broken, tmp_path, max_retry_attempts=2)
    p.deliver([record(0, 1), record(1, 5)])
    assert len(calls) == 3
    entries = dead_letters(tmp_path)
    assert sorted((e["partition"], e["offset"]) for e in entries) == [(0, 1), (1, 5)]
    assert {e["reason"] for e in entries} == {"function error: RuntimeError: boom"}
    assert (p.stats.handler_errors, p.stats.failures, p.stats.dead_lettered) == (3, 6, 2)


def test_a_dead_letter_write_failure_propagates(tmp_path):
    class Broken:
        def send(self, entry):
            raise OSError("disk full")

    p = MskPoller(ScriptedHandler({1}, 99), bootstrap_servers="x:1", dead_letter=Broken(),
                  max_retry_attempts=0, retry_backoff_s=0.0)
    with pytest.raises(OSError):
        p.deliver([record(0, 1)])
    assert p.stats.dead_lettered == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"max_retry_attempts": -1}, {"max_batching_window_s": -0.1},
     {"starting_position": "AT_TIMESTAMP"}],
)
def test_invalid_settings_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        MskPoller(lambda e, c: None, bootstrap_servers="x:1", dead_letter=tmp_path / "d.jsonl", **kwargs)
