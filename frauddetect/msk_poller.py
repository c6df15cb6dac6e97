"""Local stand-in for the Amazon MSK event source mapping (ESM) of the fraud-alert Lambda.

:class:`MskPoller` consumes a Kafka topic with confluent-kafka, batches records like the ESM
(``batch_size`` = ``BatchSize``, ``max_batching_window_s`` = ``MaximumBatchingWindowInSeconds``), builds the
exact event the ESM delivers, and calls the real handler function in-process with a Lambda-like context.
With ``ReportBatchItemFailures`` semantics it re-invokes only the failed records, at most
``max_retry_attempts`` more times (``MaximumRetryAttempts``), then writes each still-failing record with its
reason to a dead-letter destination (the ESM's on-failure destination): an SQS queue or a JSONL file. A
batch's offsets are committed only after every record in it succeeded or was dead-lettered, so a crash or
stop in between means redelivery (at least once), which the handler's idempotency turns into exactly-once.

Event shape (``eventSource: "aws:kafka"``)::

    {"eventSource": "aws:kafka", "eventSourceArn": "...", "bootstrapServers": "host:port,...",
     "records": {"<topic>-<partition>": [
         {"topic": str, "partition": int, "offset": int, "timestamp": int (ms since epoch),
          "timestampType": "CREATE_TIME" | "LOG_APPEND_TIME" | "NO_TIMESTAMP_TYPE",
          "key": base64 str (absent when the key is null), "value": base64 str (absent for a tombstone),
          "headers": [{"<name>": [byte, ...]}, ...]}, ...]}}

Typical use (after ``ensure_local_resources`` and exporting its ``lambda_environment()``)::

    from lambdas.alert_handler.app import handler
    poller = MskPoller(handler, bootstrap_servers="127.0.0.1:9092", dead_letter=resources.alerts_dlq_url,
                       explain=frauddetect.alerts.explain_msk_record, max_batching_window_s=0.0)
    poller.start(); poller.wait_until_assigned(30); ...; poller.stop()
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import boto3
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

__all__ = [
    "DEFAULT_EVENT_SOURCE_ARN",
    "DeadLetterSink",
    "InvalidBatchResponse",
    "JsonlDeadLetter",
    "LocalLambdaContext",
    "MskPoller",
    "PollerError",
    "PollerStats",
    "SqsDeadLetter",
    "build_msk_event",
    "dead_letter_sink",
    "failed_records",
    "msk_record",
    "msk_record_from_message",
]

log = logging.getLogger(__name__)

DEFAULT_EVENT_SOURCE_ARN = (
    "arn:aws:kafka:us-east-1:123456789012:cluster/frauddetect-local/00000000-0000-0000-0000-000000000000-1"
)
"""Placeholder MSK cluster ARN for ``eventSourceArn``; the handler only passes it through."""

_TIMESTAMP_TYPES = {TIMESTAMP_CREATE_TIME: "CREATE_TIME", TIMESTAMP_LOG_APPEND_TIME: "LOG_APPEND_TIME"}


# --------------------------------------------------------------------------------------------------
# Event shape (pure)
# --------------------------------------------------------------------------------------------------


def msk_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    timestamp_ms: int = -1,
    timestamp_type: str = "CREATE_TIME",
    headers: Iterable[tuple[str, bytes | None]] | None = None,
) -> dict[str, Any]:
    """One record as the MSK ESM puts it in an event: key/value base64, header values as byte lists.

    A null key or a null value (tombstone) leaves the field out, as the ESM does; a header with a null
    value becomes an empty byte list.
    """
    record: dict[str, Any] = {
        "topic": topic,
        "partition": int(partition),
        "offset": int(offset),
        "timestamp": int(timestamp_ms),
        "timestampType": timestamp_type,
    }
    if key is not None:
        record["key"] = base64.b64encode(key).decode("ascii")
    if value is not None:
        record["value"] = base64.b64encode(value).decode("ascii")
    record["headers"] = [{name: list(data or b"")} for name, data in (headers or [])]
    return record


def msk_record_from_message(message: Message) -> dict[str, Any]:
    """:func:`msk_record` of a consumed confluent-kafka message (which must not be an error)."""
    timestamp_type, timestamp_ms = message.timestamp()
    return msk_record(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=message.value(),
        timestamp_ms=timestamp_ms,
        timestamp_type=_TIMESTAMP_TYPES.get(timestamp_type, "NO_TIMESTAMP_TYPE"),
        headers=message.headers(),
    )


def build_msk_event(
    records: Sequence[Mapping[str, Any]],
    *,
    bootstrap_servers: str,
    event_source_arn: str = DEFAULT_EVENT_SOURCE_ARN,
) -> dict[str, Any]:
    """The Lambda event for ``records`` (from :func:`msk_record`): grouped under ``"<topic>-<partition>"``
    keys in first-seen order, records keeping their order within a partition."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(f"{record['topic']}-{record['partition']}", []).append(dict(record))
    return {
        "eventSource": "aws:kafka",
        "eventSourceArn": event_source_arn,
        "bootstrapServers": bootstrap_servers,
        "records": grouped,
    }


class InvalidBatchResponse(ValueError):
    """A handler response the ESM would treat as a failure of the whole batch."""


def failed_records(
    response: Any, records: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Records of an invocation that the handler's partial batch response reports as failed.

    ``response`` ``None``, ``{}``, or ``{"batchItemFailures": None | []}`` means all succeeded. Each failure
    is ``{"itemIdentifier": {"partition": "<topic>-<partition>", "offset": int}}``.

    Raises:
        InvalidBatchResponse: not a dict, or an item identifier that is malformed or names no record of
            this invocation (the ESM then counts the whole batch as failed).
    """
    if response is None:
        return []
    if not isinstance(response, Mapping):
        raise InvalidBatchResponse(f"response is a {type(response).__name__}, not an object")
    failures = response.get("batchItemFailures") or []
    by_id = {(f"{r['topic']}-{r['partition']}", r["offset"]): r for r in records}
    failed: dict[tuple[str, int], Mapping[str, Any]] = {}
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not isinstance(identifier, Mapping):
            raise InvalidBatchResponse("batchItemFailures item without an itemIdentifier object")
        key = (identifier.get("partition"), identifier.get("offset"))
        if key not in by_id:
            raise InvalidBatchResponse("itemIdentifier names no record of this invocation")
        failed[key] = by_id[key]
    return [r for k, r in by_id.items() if k in failed]


# --------------------------------------------------------------------------------------------------
# Dead-letter destinations
# --------------------------------------------------------------------------------------------------


class DeadLetterSink(Protocol):
    """Where records go after their last failed attempt. ``send`` must raise if the entry was not stored."""

    def send(self, entry: Mapping[str, Any]) -> None: ...


class JsonlDeadLetter:
    """Appends one JSON object per line to ``path`` (created with its parent directories), fsynced."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def send(self, entry: Mapping[str, Any]) -> None:
        """Append ``entry``; raises ``OSError`` if it could not be written."""
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())


class SqsDeadLetter:
    """Sends each entry as one SQS message (JSON body) to ``queue_url``.

    ``client`` defaults to ``boto3.client("sqs")`` configured from the environment (``AWS_ENDPOINT_URL``
    points it at the local endpoint).
    """

    def __init__(self, queue_url: str, *, client: Any | None = None) -> None:
        self.queue_url = queue_url
        self._client = client

    def send(self, entry: Mapping[str, Any]) -> None:
        """Send ``entry``; raises botocore errors if SQS did not accept it."""
        if self._client is None:
            self._client = boto3.client("sqs")
        self._client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(entry, separators=(",", ":")))


def dead_letter_sink(target: str | os.PathLike[str] | DeadLetterSink) -> DeadLetterSink:
    """A sink for ``target``: an ``http(s)://`` SQS queue URL, a JSONL file path, or a sink as is."""
    if isinstance(target, (str, os.PathLike)):
        text = os.fspath(target)
        if text.startswith(("http://", "https://")):
            return SqsDeadLetter(text)
        return JsonlDeadLetter(text)
    return target


# --------------------------------------------------------------------------------------------------
# Lambda context
# --------------------------------------------------------------------------------------------------


class LocalLambdaContext:
    """The parts of the Lambda context object Powertools reads, for one in-process invocation.

    ``get_remaining_time_in_millis`` counts down from ``timeout_s`` (the function timeout) so the
    idempotency utility's in-progress expiry behaves as in Lambda.
    """

    def __init__(self, function_name: str, *, timeout_s: float = 60.0, memory_limit_in_mb: int = 256,
                 region: str = "us-east-1", account_id: str = "123456789012") -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before this invocation's timeout (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# --------------------------------------------------------------------------------------------------
# Poller
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollerStats:
    """Counters of a poller, as of one moment.

    Attributes:
        records_seen: records consumed from Kafka.
        invocations: handler calls (first attempts and retries).
        succeeded: records the handler accepted (on any attempt).
        failures: failed record attempts: records reported in ``batchItemFailures`` plus every record of
            an invocation that raised or answered malformed; one record can fail several times.
        handler_errors: invocations that raised or returned a malformed response.
        dead_lettered: records written to the dead-letter destination.
        committed: records whose offsets were committed (succeeded + dead-lettered, once per record).
    """

    records_seen: int = 0
    invocations: int = 0
    succeeded: int = 0
    failures: int = 0
    handler_errors: int = 0
    dead_lettered: int = 0
    committed: int = 0


class PollerError(RuntimeError):
    """The poller thread stopped on an error (Kafka fatal error, dead-letter write failure)."""


class _Stopping(Exception):
    pass


class MskPoller:
    """Consumes a topic and invokes a Lambda handler like the MSK event source mapping, in a thread.

    Args:
        handler: the Lambda handler, called as ``handler(event, context)``.
        bootstrap_servers: Kafka bootstrap servers, ``"host:port[,host:port]"``; also ``bootstrapServers``.
        dead_letter: SQS queue URL, JSONL path, or :class:`DeadLetterSink` (see :func:`dead_letter_sink`).
        topic: topic to consume (default ``fraud-alerts``).
        group_id: consumer group (the ESM's ``ConsumerGroupId``).
        batch_size: max records per invocation (ESM ``BatchSize``, default 100).
        max_batching_window_s: after the first record of a batch arrives, wait at most this long for more
            (ESM ``MaximumBatchingWindowInSeconds``; MSK default 0.5 s; 0 = invoke as soon as any arrive).
        max_retry_attempts: re-invocations of failed records before dead-lettering (ESM
            ``MaximumRetryAttempts``; must be >= 0).
        retry_backoff_s: pause before retry n of ``retry_backoff_s * 2**(n-1)`` seconds, capped at 5 s.
        starting_position: ``"TRIM_HORIZON"`` (earliest, default) or ``"LATEST"`` for a group without
            committed offsets.
        explain: optional ``record -> reason | None`` used for the dead-letter reason of records the
            handler reported (e.g. :func:`frauddetect.alerts.explain_msk_record`); otherwise the reason
            says only that the handler reported the record.
        function_name / function_timeout_s: for the Lambda context.
        event_source_arn: ``eventSourceArn`` of the events.
        consumer_config: extra librdkafka settings, overriding the defaults.
    """

    def __init__(
        self,
        handler: Callable[[dict[str, Any], Any], Any],
        *,
        bootstrap_servers: str,
        dead_letter: str | os.PathLike[str] | DeadLetterSink,
        topic: str = "fraud-alerts",
        group_id: str = "fraud-alert-handler",
        batch_size: int = 100,
        max_batching_window_s: float = 0.5,
        max_retry_attempts: int = 2,
        retry_backoff_s: float = 0.05,
        starting_position: str = "TRIM_HORIZON",
        explain: Callable[[Mapping[str, Any]], str | None] | None = None,
        function_name: str = "fraud-alert-handler",
        function_timeout_s: float = 60.0,
        event_source_arn: str = DEFAULT_EVENT_SOURCE_ARN,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_batching_window_s < 0 or max_retry_attempts < 0 or retry_backoff_s < 0:
            raise ValueError("max_batching_window_s, max_retry_attempts and retry_backoff_s must be >= 0")
        if starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError("starting_position must be 'TRIM_HORIZON' or 'LATEST'")
        self.handler = handler
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.batch_size = batch_size
        self.max_batching_window_s = max_batching_window_s
        self.max_retry_attempts = max_retry_attempts
        self.retry_backoff_s = retry_backoff_s
        self.explain = explain
        self.function_name = function_name
        self.function_timeout_s = function_timeout_s
        self.event_source_arn = event_source_arn
        self.dead_letter = dead_letter_sink(dead_letter)
        self.consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "client.id": f"{function_name}-poller",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if starting_position == "TRIM_HORIZON" else "latest",
            # librdkafka's default (500 ms) makes every fetch wait when the topic is quiet: alert latency.
            "fetch.wait.max.ms": 10,
            # Tansu holds the first JoinGroup for about half the session timeout (23 s with the 45 s
            # default); 6 s is the smallest Apache Kafka / MSK accept by default (group.min.session...).
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            **(consumer_config or {}),
        }
        self._stats = PollerStats()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> MskPoller:
        """Start consuming in a daemon thread; returns ``self``. Raises ``RuntimeError`` if running."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("poller already running")
        self._stop.clear()
        self._assigned.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"msk-poller-{self.topic}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> PollerStats:
        """Stop after the current invocation, close the consumer and return the final counters.

        A batch not yet fully resolved is not committed (it is redelivered on the next start).

        Raises:
            PollerError: the thread had died on an error (chained), or did not stop within ``timeout``.
        """
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise PollerError(f"poller did not stop within {timeout} s")
        if self._error is not None:
            raise PollerError(f"poller stopped on an error: {self._error!r}") from self._error
        return self.stats

    @property
    def running(self) -> bool:
        """Whether the poller thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the poller thread, if any."""
        return self._error

    @property
    def stats(self) -> PollerStats:
        """A snapshot of the counters."""
        with self._changed:
            return self._stats

    def wait_until_assigned(self, timeout: float) -> bool:
        """Block until the consumer group assigned partitions to this poller (True) or ``timeout`` s."""
        return self._assigned.wait(timeout)

    def wait_until(self, predicate: Callable[[PollerStats], bool], timeout: float) -> bool:
        """Block until ``predicate(stats)`` holds (True), the thread dies, or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self._stats):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.running:
                    return predicate(self._stats)
                self._changed.wait(min(remaining, 0.5))
            return True

    # -- internals ---------------------------------------------------------------------------------

    def _count(self, **increments: int) -> None:
        with self._changed:
            self._stats = replace(
                self._stats, **{name: getattr(self._stats, name) + n for name, n in increments.items()}
            )
            self._changed.notify_all()

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer = Consumer(self.consumer_config)
            consumer.subscribe([self.topic], on_assign=lambda _c, _p: self._assigned.set())
            while not self._stop.is_set():
                messages = self._collect_batch(consumer)
                if not messages:
                    continue
                self._count(records_seen=len(messages))
                self.deliver([msk_record_from_message(m) for m in messages])
                offsets: dict[tuple[str, int], int] = {}
                for m in messages:
                    position = (m.topic(), m.partition())
                    offsets[position] = max(offsets.get(position, -1), m.offset())
                consumer.commit(
                    offsets=[TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()], asynchronous=False
                )
                self._count(committed=len(messages))
        except _Stopping:
            log.info("poller stopped mid-batch; the batch stays uncommitted and will be redelivered")
        except BaseException as exc:  # noqa: BLE001 - surfaced through stop()/error, never swallowed
            log.exception("poller thread failed")
            self._error = exc
        finally:
            if consumer is not None:
                consumer.close()
            with self._changed:
                self._changed.notify_all()

    def _collect_batch(self, consumer: Consumer) -> list[Message]:
        batch: list[Message] = []
        deadline: float | None = None
        while len(batch) < self.batch_size and not self._stop.is_set():
            timeout = 0.1 if deadline is None else max(0.0, deadline - time.monotonic())
            messages = consumer.consume(num_messages=self.batch_size - len(batch), timeout=timeout)
            for message in messages:
                error = message.error()
                if error is None:
                    batch.append(message)
                elif error.fatal():
                    raise KafkaException(error)
                elif error.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    log.warning("kafka consumer error: %s", error)
            if not batch:
                if not messages:
                    return batch  # idle: give the caller a chance to notice stop()
                continue
            if deadline is None:
                deadline = time.monotonic() + self.max_batching_window_s
            if time.monotonic() >= deadline:
                break
        return batch

    def _invoke(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], str | None]:
        """One handler call: (failed records, function error reason or None for a partial response)."""
        event = build_msk_event(
            records, bootstrap_servers=self.bootstrap_servers, event_source_arn=self.event_source_arn
        )
        context = LocalLambdaContext(self.function_name, timeout_s=self.function_timeout_s)
        self._count(invocations=1)
        try:
            response = self.handler(event, context)
        except Exception as exc:  # noqa: BLE001 - a function error fails the whole invocation, as in Lambda
            self._count(handler_errors=1)
            log.warning("handler invocation failed: %s", type(exc).__name__)
            return list(records), f"function error: {type(exc).__name__}: {exc}"
        try:
            return failed_records(response, records), None
        except InvalidBatchResponse as exc:
            self._count(handler_errors=1)
            log.warning("handler returned an invalid partial batch response: %s", exc)
            return list(records), f"invalid partial batch response: {exc}"

    def deliver(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Resolve one batch as the ESM does: invoke, re-invoke only the failed records up to
        ``max_retry_attempts`` times, then dead-letter what still fails. Updates the counters (except
        ``records_seen`` / ``committed``, which belong to the Kafka loop). Runs in the caller's thread, so
        the retry and dead-letter policy can be exercised without a broker.

        A stop requested during a retry backoff abandons the batch (raises an internal exception caught by
        the Kafka loop) before anything of it is dead-lettered or committed; on the next start it is
        delivered again, and the handler's idempotency absorbs the records that had already succeeded.

        Raises:
            Exception: whatever the dead-letter sink raised (the batch must then not be committed).
        """
        pending: Sequence[Mapping[str, Any]] = records
        attempts = 0
        while pending:
            attempts += 1
            failed, function_error = self._invoke(pending)
            self._count(succeeded=len(pending) - len(failed), failures=len(failed))
            if not failed:
                return
            if attempts > self.max_retry_attempts:
                for record in failed:
                    self._dead_letter(record, attempts, function_error)
                return
            pending = failed
            if self._stop.wait(min(5.0, self.retry_backoff_s * 2 ** (attempts - 1))):
                raise _Stopping

    def _reason(self, record: Mapping[str, Any], function_error: str | None) -> str:
        if function_error is not None:
            return function_error
        if self.explain is not None:
            try:
                explained = self.explain(record)
            except Exception as exc:  # noqa: BLE001 - the explanation is best effort, the record is not
                explained = f"(explain failed: {type(exc).__name__})"
            if explained:
                return explained
        return "reported in batchItemFailures by the handler"

    def _dead_letter(self, record: Mapping[str, Any], attempts: int, function_error: str | None) -> None:
        entry = {
            "version": "1.0",
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": attempts,
            "reason": self._reason(record, function_error),
            "functionName": self.function_name,
            "eventSourceArn": self.event_source_arn,
            "bootstrapServers": self.bootstrap_servers,
            "topic": record["topic"],
            "partition": record["partition"],
            "offset": record["offset"],
            "record": dict(record),
        }
        self.dead_letter.send(entry)  # raising here stops the poller before the commit: nothing is lost
        self._count(dead_lettered=1)
        log.warning(
            "record dead-lettered after %d attempts: %s-%s@%s",
            attempts, record["topic"], record["partition"], record["offset"],
        )
