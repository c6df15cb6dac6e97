"""Analyst verdicts on alerts -> ``labels`` topic records: the request contract and the pure mapping.

The label feedback Lambda (``lambdas/label_feedback``) takes an analyst's verdict on a transaction
(:class:`VerdictRequest`, the JSON body of ``POST /verdicts``), turns it into a :class:`LabelRecord` with
:func:`label_record` and produces that to the Kafka topic ``labels``, where the streaming job applies it to
the feature state: a ``fraud`` verdict makes the transaction count as a fraud in its terminal's
``terminal_id_risk_*`` features of every transaction at or after the verdict's ``labeled_at``
(``frauddetect.features``); a ``genuine`` verdict replaces an earlier fraud label (e.g. overturns a
chargeback) from its arrival on.

The request names the transaction's terminal and card: ``terminal_id`` and ``customer_id``, copied from the
alert the analyst judged (:class:`frauddetect.alerts.AlertEvent` has both; notifications only show them
masked). The label carries them (:class:`~frauddetect.schemas.LabelEvent` requires them) because the
streaming job routes each label to the stateful operator of its terminal and finds the transaction there
by (``terminal_id``, ``transaction_id``). A label whose transaction the stream never saw on that terminal
waits, and is quarantined with reason "label for an unknown transaction" once the watermark passes its
``labeled_at``: a wrong terminal id is accepted here (202) but does not silently do nothing, it ends up
in the quarantine.

Everything here is pure (no AWS, no Kafka, no clock): the caller passes the time the request was received.

Privacy: the only free text, ``note``, goes through :func:`redact_card_numbers` before it leaves, and
:class:`InvalidVerdict` / :func:`describe_validation_error` never quote input values, so both are log-safe.
``terminal_id`` and ``customer_id`` are sensitive ids (alerts only ever show them masked): they go into the
label record, which needs them, and nowhere else; never log them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from frauddetect.alerts import Identifier, UtcDatetime, mask_identifier
from frauddetect.config import LABELS_TOPIC
from frauddetect.schemas import LabelEvent

__all__ = [
    "ANALYST_SOURCE_PREFIX",
    "DEFAULT_MAX_FUTURE_SKEW",
    "LABELS_TOPIC",
    "MAX_ANALYST_ID_CHARS",
    "MAX_NOTE_CHARS",
    "InvalidVerdict",
    "LabelRecord",
    "Verdict",
    "VerdictRequest",
    "describe_validation_error",
    "label_record",
    "redact_card_numbers",
    "source_for",
]

ANALYST_SOURCE_PREFIX = "analyst:"
"""``source`` of an analyst's label is ``"analyst:<analyst_id>"`` (chargebacks, replays use other sources)."""

MAX_ANALYST_ID_CHARS = 64 - len(ANALYST_SOURCE_PREFIX)
"""56: ``LabelEvent.source`` holds at most 64 characters, and the analyst id goes into it."""

MAX_NOTE_CHARS = 2_000
"""Bound on the free-text note (a Kafka record stays small; API Gateway allows 10 MB bodies)."""

DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)
"""How far a client-supplied ``labeled_at`` may lie after the request's arrival (client clock skew)."""

Verdict = Literal["fraud", "genuine"]

_TX_FRAUD: dict[str, Literal[0, 1]] = {"fraud": 1, "genuine": 0}

# 13-19 digits (card number lengths), optionally grouped by single spaces or dashes, not part of a longer
# digit run. Deliberately broad (no Luhn check): a false positive only masks part of a note.
_CARD_NUMBER = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")

AnalystId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=MAX_ANALYST_ID_CHARS, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"
    ),
]
"""An analyst's id: letters, digits and ``. _ @ + -`` (user names, e-mail addresses), 1..56 characters."""

Note = Annotated[str, StringConstraints(strict=True, max_length=MAX_NOTE_CHARS)]


class VerdictRequest(BaseModel):
    """An analyst's verdict on one transaction: the JSON body of ``POST /verdicts``.

    Fields:
        transaction_id: the transaction judged (the alert's ``transaction_id``); 1..128 characters, no
            control characters. JSON string only (a number is rejected, not converted).
        terminal_id: the transaction's terminal (merchant) id, the alert's ``terminal_id`` (same rules as
            ``transaction_id``). The stream looks the transaction up on this terminal; a label for a
            transaction it never saw there is quarantined ("label for an unknown transaction") once the
            watermark passes its ``labeled_at``. Sensitive: never logged.
        customer_id: the transaction's card/customer id, the alert's ``customer_id`` (same rules as
            ``transaction_id``). Sensitive: never logged.
        verdict: ``"fraud"`` or ``"genuine"`` (lowercase).
        analyst_id: who decided (see :data:`AnalystId`); part of the idempotency key.
        note: optional free text, at most :data:`MAX_NOTE_CHARS` characters; card numbers in it are masked
            before it is published, and it is never logged.
        labeled_at: optional time the verdict counts from, ISO-8601 with a UTC offset (``Z`` or
            ``+00:00``); default: when the request was received. At most :data:`DEFAULT_MAX_FUTURE_SKEW`
            in the future (checked by :func:`label_record`).

    Unknown fields are rejected (``extra="forbid"``): a misspelt ``verdit`` must not pass as a request
    without a verdict. Raises ``pydantic.ValidationError``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_id: Identifier
    terminal_id: Identifier
    customer_id: Identifier
    verdict: Verdict
    analyst_id: AnalystId
    note: Note | None = None
    labeled_at: UtcDatetime | None = None


class InvalidVerdict(ValueError):
    """A verdict that parses but cannot become a label (e.g. ``labeled_at`` in the future).

    The message names the rule, never field values (log-safe and safe to return to the client).
    """


@dataclass(frozen=True)
class LabelRecord:
    """One record for the ``labels`` topic.

    Attributes:
        topic: ``labels``.
        key: the transaction id, UTF-8 (the topic's contract: labels are keyed by transaction id).
        value: compact UTF-8 JSON: the :class:`~frauddetect.schemas.LabelEvent` fields
            (``transaction_id``, ``tx_fraud``, ``labeled_at``, ``source``, ``terminal_id``,
            ``customer_id``; the two ids as the request gave them, unmasked, since the stream routes the label
            by them) plus ``verdict``, ``analyst_id``, ``received_at`` and, when given, the redacted ``note``
            (extra fields the LabelEvent contract ignores; kept for audit in the topic).
        label: the LabelEvent the value carries (validated).
    """

    topic: str
    key: bytes
    value: bytes
    label: LabelEvent


def source_for(analyst_id: str) -> str:
    """``LabelEvent.source`` for an analyst's verdict: ``"analyst:<analyst_id>"`` (at most 64 chars)."""
    return f"{ANALYST_SOURCE_PREFIX}{analyst_id}"


def redact_card_numbers(text: str) -> str:
    """Mask every card-number-like digit run (13-19 digits, optionally grouped by spaces or dashes).

    ``"card 4111 1111 1111 1111 reported stolen"`` -> ``"card ****1111 reported stolen"``; shorter numbers
    (amounts, transaction ids, dates) are left alone.
    """
    return _CARD_NUMBER.sub(lambda m: mask_identifier(re.sub(r"\D", "", m.group())), text)


def _iso_z(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def label_record(
    request: VerdictRequest,
    *,
    received_at: datetime,
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    topic: str = LABELS_TOPIC,
) -> LabelRecord:
    """The ``labels`` record for a verdict: ``fraud`` -> ``tx_fraud`` 1, ``genuine`` -> 0.

    Args:
        request: the validated verdict.
        received_at: when the request arrived (timezone-aware); the default ``labeled_at``.
        max_future_skew: how far ``request.labeled_at`` may lie after ``received_at``.
        topic: the labels topic name.

    Raises:
        InvalidVerdict: ``labeled_at`` more than ``max_future_skew`` after ``received_at`` (a label from
            the future would silently start counting later than the analyst thinks).
        ValueError: ``received_at`` is naive.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    labeled_at = request.labeled_at or received_at
    if labeled_at > received_at + max_future_skew:
        raise InvalidVerdict(
            f"labeled_at: must not be more than {int(max_future_skew.total_seconds())} s in the future"
        )
    document = {
        "transaction_id": request.transaction_id,
        "tx_fraud": _TX_FRAUD[request.verdict],
        "labeled_at": _iso_z(labeled_at),
        "source": source_for(request.analyst_id),
        "terminal_id": request.terminal_id,
        "customer_id": request.customer_id,
        "verdict": request.verdict,
        "analyst_id": request.analyst_id,
        "received_at": _iso_z(received_at),
    }
    if request.note:
        document["note"] = redact_card_numbers(request.note)
    value = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    # The stream parses exactly these bytes with LabelEvent; check here so a bad record never leaves.
    label = LabelEvent.model_validate_json(value)
    return LabelRecord(topic=topic, key=request.transaction_id.encode("utf-8"), value=value, label=label)


def describe_validation_error(exc: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "verdict", "message": "Input should be 'fraud' or 'genuine'"}, ...]`` without inputs."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "message": error["msg"],
        }
        for error in exc.errors(include_input=False, include_url=False, include_context=False)
    ]
