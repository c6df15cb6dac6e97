"""Fraud-alert contract and the pure functions that turn one alert into one SNS notification.

The streaming job builds an :class:`AlertEvent` for every scored transaction whose score reaches the alert
threshold and produces it to the Kafka topic ``fraud-alerts`` (key = transaction id, value = the model's
JSON, see :meth:`AlertEvent.kafka_key` / :meth:`AlertEvent.kafka_value`). The alert Lambda parses each
record back with :func:`parse_msk_record` and publishes what :func:`build_notification` returns.

Everything here is pure: no AWS clients, no I/O, safe to import from Spark workers and the Lambda alike.

Privacy rule kept by every builder in this module: customer (card) and terminal identifiers only ever
leave as :func:`mask_identifier` output, and :class:`InvalidAlertRecord` reasons never quote field values,
so they are safe to log.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

__all__ = [
    "ALERTS_TOPIC",
    "DEFAULT_HIGH_SEVERITY_SCORE",
    "MAX_SUBJECT_CHARS",
    "SNS_MAX_PUBLISH_BYTES",
    "AlertEvent",
    "InvalidAlertRecord",
    "Severity",
    "SnsNotification",
    "build_email_text",
    "build_message_attributes",
    "build_notification",
    "build_payload",
    "build_sms_text",
    "build_subject",
    "explain_msk_record",
    "format_money",
    "latency_ms",
    "mask_identifier",
    "parse_alert_record",
    "parse_msk_record",
    "publish_size_bytes",
    "severity_for",
    "to_ascii_line",
]

ALERTS_TOPIC = "fraud-alerts"
"""Kafka topic the streaming job produces alerts to."""

MAX_SUBJECT_CHARS = 100
"""SNS ``Subject`` limit: ASCII, no line breaks or control characters, at most 100 characters."""

SNS_MAX_PUBLISH_BYTES = 262_144
"""SNS ``Publish`` limit (256 KiB, bytes not characters) for message + subject + message attributes."""

DEFAULT_HIGH_SEVERITY_SCORE = 0.9
"""Scores at or above this are ``high`` severity; alerts below it (but above the alert threshold) ``medium``."""

SMS_MAX_CHARS = 140
"""Kept to one SMS segment (140 bytes of 8-bit data; our text is ASCII)."""

Severity = Literal["high", "medium"]

_MASK = "****"
_THRESHOLD_TOLERANCE = 1e-6
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_ISO_CURRENCY = re.compile(r"^[A-Z]{3}$")


# --------------------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------------------


def _iso_string_or_datetime(value: Any) -> Any:
    # Lax pydantic would also take integers as Unix seconds; the contract says ISO-8601 strings, and a
    # number here means a producer bug we want quarantined rather than silently reinterpreted.
    if isinstance(value, (str, datetime)):
        return value
    raise ValueError("must be an ISO-8601 string with a UTC offset")


def _require_utc(value: datetime) -> datetime:
    if value.utcoffset() != timezone.utc.utcoffset(None):
        raise ValueError("must be in UTC (offset +00:00 or 'Z')")
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_string_or_datetime), AfterValidator(_require_utc)]
"""Timezone-aware datetime whose offset is exactly UTC; serialised as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""

Identifier = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
"""Non-empty string of at most 128 characters without control characters (bounded so a message always fits)."""

Probability = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class AlertEvent(BaseModel):
    """One fraud alert: a scored transaction whose fraud probability reached the alert threshold.

    Fields (JSON names identical):
        transaction_id: the transaction's id (also the Kafka record key); 1..128 chars.
        tx_datetime: when the transaction happened, UTC.
        customer_id: the card/customer id; sensitive, only ever shown masked.
        terminal_id: the terminal (merchant) id; sensitive, only ever shown masked.
        tx_amount: amount in currency units (finite float).
        score: model's fraud probability, finite, in [0, 1].
        threshold: the alert threshold in force when scored, in [0, 1]; ``score >= threshold`` (to 1e-6).
        model_version: version label of the model that scored.
        scored_at: when the streaming job scored the transaction, UTC.
        produced_at: when the *transaction* was produced to Kafka, UTC; the start of alert latency.
        features: optional model inputs by feature name (finite floats), for analysts; the first thing
            dropped when a notification would exceed the SNS size limit.

    Unknown fields are ignored so producers can add fields before consumers learn them. Instances are
    immutable. Raises ``pydantic.ValidationError`` on construction from bad data; use
    :func:`parse_alert_record` to get a log-safe :class:`InvalidAlertRecord` instead.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    transaction_id: Identifier
    tx_datetime: UtcDatetime
    customer_id: Identifier
    terminal_id: Identifier
    tx_amount: FiniteFloat
    score: Probability
    threshold: Probability
    model_version: Identifier
    scored_at: UtcDatetime
    produced_at: UtcDatetime
    features: dict[Annotated[str, StringConstraints(min_length=1)], FiniteFloat] | None = None

    @model_validator(mode="after")
    def _score_reaches_threshold(self) -> AlertEvent:
        # The topic only carries scores >= threshold; anything else is a producer bug, not an alert. The
        # tolerance absorbs float32 scores compared upstream in float32 and widened to float64 here.
        if self.score < self.threshold - _THRESHOLD_TOLERANCE:
            raise ValueError("score is below threshold: not an alert")
        return self

    def kafka_key(self) -> bytes:
        """Kafka record key: the transaction id, UTF-8."""
        return self.transaction_id.encode("utf-8")

    def kafka_value(self) -> bytes:
        """Kafka record value: compact JSON (UTF-8), timestamps as ISO-8601 ``...Z``, no null fields."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


class InvalidAlertRecord(ValueError):
    """A ``fraud-alerts`` record that can never become a notification (retrying cannot fix it).

    Attributes:
        code: machine-readable cause: ``missing_key``, ``null_value``, ``bad_base64``, ``not_utf8``,
            ``not_json``, ``not_object``, ``schema_violation`` or ``key_mismatch``.
        detail: human-readable detail naming fields and rules, never field values (log-safe).
    """

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)

    @property
    def reason(self) -> str:
        """``"code: detail"``, suitable for logs and dead-letter entries."""
        return str(self)


def _describe_validation_error(exc: ValidationError) -> str:
    # include_input=False: pydantic would otherwise quote the offending values, e.g. a customer id.
    parts = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        location = ".".join(str(item) for item in error["loc"]) or "<record>"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def parse_alert_record(key: bytes | None, value: bytes | None) -> AlertEvent:
    """Parse one ``fraud-alerts`` Kafka record (raw key and value bytes) into an :class:`AlertEvent`.

    Raises:
        InvalidAlertRecord: no key, null value (tombstone), value not UTF-8 / not JSON / not a JSON
            object, schema violation (including NaN or out-of-range score, non-UTC timestamps), or a key
            that differs from the value's ``transaction_id``.
    """
    if not key:
        raise InvalidAlertRecord("missing_key", "record has no key; the contract keys alerts by transaction id")
    if value is None:
        raise InvalidAlertRecord("null_value", "record value is null (tombstone)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidAlertRecord("not_utf8", f"value is not UTF-8 at byte {exc.start}") from None
    try:
        # json accepts NaN/Infinity literals; the model rejects non-finite numbers with a clear reason.
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidAlertRecord("not_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(document, dict):
        raise InvalidAlertRecord("not_object", f"value is a JSON {type(document).__name__}, not an object")
    try:
        alert = AlertEvent.model_validate(document)
    except ValidationError as exc:
        raise InvalidAlertRecord("schema_violation", _describe_validation_error(exc)) from None
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError:
        key_text = None
    if key_text != alert.transaction_id:
        raise InvalidAlertRecord("key_mismatch", "record key differs from value.transaction_id")
    return alert


def _b64decode_field(record: Mapping[str, Any], name: str) -> bytes | None:
    encoded = record.get(name)
    if encoded is None:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise InvalidAlertRecord("bad_base64", f"record {name} is not valid base64") from None


def parse_msk_record(record: Mapping[str, Any]) -> AlertEvent:
    """Parse one record of an Amazon MSK / self-managed Kafka Lambda event into an :class:`AlertEvent`.

    ``record`` is one element of ``event["records"]["<topic>-<partition>"]``: ``key`` and ``value`` are
    base64 strings, either of which may be absent or null (null key; tombstone value).

    Raises:
        InvalidAlertRecord: as :func:`parse_alert_record`, plus ``bad_base64``.
    """
    key = _b64decode_field(record, "key")
    value = _b64decode_field(record, "value")
    return parse_alert_record(key, value)


def explain_msk_record(record: Mapping[str, Any]) -> str | None:
    """Why an MSK event record can never become an alert: the :class:`InvalidAlertRecord` reason, or
    ``None`` when it parses (its failure was then transient, e.g. SNS). For dead-letter entries."""
    try:
        parse_msk_record(record)
    except InvalidAlertRecord as exc:
        return exc.reason
    return None


# --------------------------------------------------------------------------------------------------
# Presentation helpers
# --------------------------------------------------------------------------------------------------


def mask_identifier(value: str | int, *, visible: int = 4) -> str:
    """Mask a card, customer or terminal identifier for logs and notifications.

    Returns ``"****"`` followed by at most the last ``visible`` characters, and never more than half of
    the identifier: ``"4111111111111111"`` -> ``"****1111"``, ``"4821"`` -> ``"****21"``, ``"7"`` ->
    ``"****"``. The half rule matters because the handbook's customer and terminal ids are 1-4 digit
    numbers, which "last 4" alone would print in full; the fixed prefix also hides the length.
    Powertools data masking only erases whole values or applies one fixed regex, which cannot express
    the length-dependent rule, hence this small function.
    """
    text = str(value)
    shown = min(max(visible, 0), len(text) // 2)
    return _MASK + (text[-shown:] if shown else "")


def format_money(amount: float | int | Decimal, currency: str | None = None) -> str:
    """Format an amount in currency units for people: thousands separators, exactly 2 decimals.

    Rounds half up on the decimal value the float prints as (``2.675`` -> ``"2.68"``, where binary
    ``f"{2.675:.2f}"`` gives ``"2.67"``); ``-0.001`` gives ``"0.00"``. With an ISO 4217 ``currency``
    code the result is ``"EUR 1,234.56"``.

    Raises:
        ValueError: non-finite or non-numeric amount (booleans included), or a malformed currency code.
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float, Decimal)):
        raise ValueError(f"amount must be a number, got {type(amount).__name__}")
    try:
        decimal = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    except InvalidOperation:
        raise ValueError("amount is not a number") from None
    if not decimal.is_finite():
        raise ValueError("amount must be finite")
    rounded = decimal.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if rounded.is_zero():
        rounded = abs(rounded)  # no "-0.00"
    text = f"{rounded:,.2f}"
    if currency is None:
        return text
    if not _ISO_CURRENCY.match(currency):
        raise ValueError("currency must be a 3-letter ISO 4217 code")
    return f"{currency} {text}"


def severity_for(score: float, *, high_at: float = DEFAULT_HIGH_SEVERITY_SCORE) -> Severity:
    """``"high"`` when ``score >= high_at``, else ``"medium"`` (every alert already passed the threshold).

    Raises:
        ValueError: ``score`` not finite.
    """
    if not math.isfinite(score):
        raise ValueError("score must be finite")
    return "high" if score >= high_at else "medium"


def to_ascii_line(text: str) -> str:
    """Reduce any text to one line of printable ASCII.

    Accents are folded (``"é"`` -> ``"e"``, ``"ﬁ"`` -> ``"fi"``), other non-ASCII characters dropped,
    control characters (newlines included) turned into spaces, and runs of whitespace collapsed.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(_CONTROL_CHARS.sub(" ", folded).split())


def _truncate(text: str, limit: int, ellipsis: str = "...") -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ellipsis), 0)].rstrip() + ellipsis[:limit]


def _iso_z(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def latency_ms(produced_at: datetime, at: datetime) -> float:
    """Milliseconds from ``produced_at`` to ``at`` (both timezone-aware).

    Negative when the producer's clock runs ahead of ours; returned as is so clock skew stays visible.
    """
    return (at - produced_at).total_seconds() * 1000.0


# --------------------------------------------------------------------------------------------------
# SNS notification
# --------------------------------------------------------------------------------------------------


def build_subject(alert: AlertEvent, *, high_at: float = DEFAULT_HIGH_SEVERITY_SCORE) -> str:
    """SNS subject (used as the e-mail subject): printable ASCII, one line, at most 100 characters.

    Example: ``"Fraud alert HIGH: 1,234.56 at terminal ****0042, score 0.973, tx 8c1f..."``; the
    transaction id comes last so truncation (marked ``...``) only ever shortens it.
    """
    text = (
        f"Fraud alert {severity_for(alert.score, high_at=high_at).upper()}: "
        f"{format_money(alert.tx_amount)} at terminal {mask_identifier(alert.terminal_id)}, "
        f"score {alert.score:.3f}, tx {alert.transaction_id}"
    )
    return _truncate(to_ascii_line(text), MAX_SUBJECT_CHARS)


def build_payload(
    alert: AlertEvent, *, high_at: float = DEFAULT_HIGH_SEVERITY_SCORE, include_features: bool = True
) -> dict[str, Any]:
    """Machine-readable alert (the SNS ``default`` message, which SQS/Lambda/HTTP subscribers get).

    Same facts as the :class:`AlertEvent` with the customer and terminal ids replaced by
    ``customer_id_masked`` / ``terminal_id_masked``, plus ``severity`` and ``tx_amount_display``.
    Timestamps are ISO-8601 ``...Z`` strings. With ``include_features=False`` (or no features) the
    ``features`` key is absent; ``features_omitted`` is true when features existed but were left out.
    """
    payload: dict[str, Any] = {
        "type": "fraud_alert",
        "schema_version": 1,
        "transaction_id": alert.transaction_id,
        "tx_datetime": _iso_z(alert.tx_datetime),
        "customer_id_masked": mask_identifier(alert.customer_id),
        "terminal_id_masked": mask_identifier(alert.terminal_id),
        "tx_amount": alert.tx_amount,
        "tx_amount_display": format_money(alert.tx_amount),
        "score": alert.score,
        "threshold": alert.threshold,
        "severity": severity_for(alert.score, high_at=high_at),
        "model_version": alert.model_version,
        "scored_at": _iso_z(alert.scored_at),
        "produced_at": _iso_z(alert.produced_at),
    }
    if alert.features:
        if include_features:
            payload["features"] = dict(sorted(alert.features.items()))
        else:
            payload["features_omitted"] = True
    return payload


def build_email_text(
    alert: AlertEvent, *, high_at: float = DEFAULT_HIGH_SEVERITY_SCORE, include_features: bool = True
) -> str:
    """Readable plain-text body for e-mail subscribers (analysts); ids masked, one fact per line."""
    severity = severity_for(alert.score, high_at=high_at)
    lines = [
        f"Suspected card fraud - severity {severity.upper()}",
        "",
        f"Transaction:    {alert.transaction_id}",
        f"Time (UTC):     {alert.tx_datetime.strftime('%Y-%m-%d %H:%M:%S')}",
        f"Amount:         {format_money(alert.tx_amount)}",
        f"Customer:       {mask_identifier(alert.customer_id)}",
        f"Terminal:       {mask_identifier(alert.terminal_id)}",
        f"Fraud score:    {alert.score:.4f} (alert threshold {alert.threshold:.4f})",
        f"Model version:  {alert.model_version}",
        f"Scored at:      {_iso_z(alert.scored_at)}",
    ]
    if alert.features:
        lines.append("")
        if include_features:
            lines.append("Model inputs:")
            width = max(len(name) for name in alert.features)
            lines.extend(f"  {name.ljust(width)}  {value:.6g}" for name, value in sorted(alert.features.items()))
        else:
            lines.append("Model inputs omitted (notification size limit).")
    return "\n".join(lines) + "\n"


def build_sms_text(alert: AlertEvent, *, high_at: float = DEFAULT_HIGH_SEVERITY_SCORE) -> str:
    """Short ASCII text for SMS subscribers, at most 140 characters (one segment)."""
    severity = severity_for(alert.score, high_at=high_at)
    text = (
        f"FraudDetect {severity.upper()} alert: {format_money(alert.tx_amount)} at terminal "
        f"{mask_identifier(alert.terminal_id)} on {alert.tx_datetime.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"score {alert.score:.2f}. Ref {alert.transaction_id}"
    )
    return _truncate(to_ascii_line(text), SMS_MAX_CHARS)


def build_message_attributes(
    alert: AlertEvent, *, high_at: float = DEFAULT_HIGH_SEVERITY_SCORE
) -> dict[str, dict[str, str]]:
    """SNS message attributes for subscription filter policies.

    ``severity`` (String ``high``/``medium``), ``score`` (Number, 6 decimals; e.g. filter
    ``{"score": [{"numeric": [">=", 0.95]}]}``) and ``transaction_id`` (String).
    """
    return {
        "severity": {"DataType": "String", "StringValue": severity_for(alert.score, high_at=high_at)},
        "score": {"DataType": "Number", "StringValue": f"{alert.score:.6f}"},
        "transaction_id": {"DataType": "String", "StringValue": alert.transaction_id},
    }


def publish_size_bytes(subject: str, message: str, attributes: Mapping[str, Mapping[str, str]]) -> int:
    """Bytes SNS counts against its 256 KiB publish limit: message, subject and every attribute's
    name, data type and value, all UTF-8."""
    size = len(message.encode("utf-8")) + len(subject.encode("utf-8"))
    for name, attribute in attributes.items():
        size += len(name.encode("utf-8")) + len(attribute["DataType"].encode("utf-8"))
        size += len(attribute.get("StringValue", "").encode("utf-8"))
    return size


@dataclass(frozen=True)
class SnsNotification:
    """Everything one SNS ``Publish`` of an alert needs.

    Attributes:
        subject: see :func:`build_subject`.
        message: JSON object for ``MessageStructure="json"``: ``default`` (the :func:`build_payload`
            JSON), ``email`` (:func:`build_email_text`) and ``sms`` (:func:`build_sms_text`).
        message_attributes: see :func:`build_message_attributes`.
        features_omitted: true when features were dropped to fit the size limit.
        size_bytes: :func:`publish_size_bytes` of the above, at most the limit it was built for.
    """

    subject: str
    message: str
    message_attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    features_omitted: bool = False
    size_bytes: int = 0

    def publish_kwargs(self, topic_arn: str) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client("sns").publish``."""
        return {
            "TopicArn": topic_arn,
            "Subject": self.subject,
            "Message": self.message,
            "MessageStructure": "json",
            "MessageAttributes": self.message_attributes,
        }


def build_notification(
    alert: AlertEvent,
    *,
    high_at: float = DEFAULT_HIGH_SEVERITY_SCORE,
    max_bytes: int = SNS_MAX_PUBLISH_BYTES,
) -> SnsNotification:
    """Build the SNS notification for one alert, within ``max_bytes`` (default: SNS's 256 KiB).

    The optional model inputs (``features``) are dropped first when the full notification is too big;
    the required part is bounded by the schema (ids <= 128 chars) to a few KiB.

    Raises:
        ValueError: even the notification without features exceeds ``max_bytes`` (only possible with a
            ``max_bytes`` far below the SNS limit).
    """
    subject = build_subject(alert, high_at=high_at)
    attributes = build_message_attributes(alert, high_at=high_at)
    attempts = (True, False) if alert.features else (True,)
    size = 0
    for include_features in attempts:
        structured = {
            "default": json.dumps(
                build_payload(alert, high_at=high_at, include_features=include_features),
                ensure_ascii=False,
                separators=(",", ":"),
            ),
            "email": build_email_text(alert, high_at=high_at, include_features=include_features),
            "sms": build_sms_text(alert, high_at=high_at),
        }
        message = json.dumps(structured, ensure_ascii=False, separators=(",", ":"))
        size = publish_size_bytes(subject, message, attributes)
        if size <= max_bytes:
            return SnsNotification(
                subject=subject,
                message=message,
                message_attributes=attributes,
                features_omitted=bool(alert.features) and not include_features,
                size_bytes=size,
            )
    raise ValueError(f"alert notification needs {size} bytes even without features; limit is {max_bytes}")
