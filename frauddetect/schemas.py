"""Event contracts on Kafka (``../shared/DESIGN.md``, "Contracts") and their validation at the stream's edge.

- Transaction event (topic ``transactions``, key = customer id): ``transaction_id`` (str),
  ``tx_datetime`` (ISO-8601 in UTC: a ``Z`` or ``+00:00`` offset is required), ``customer_id`` (str),
  ``terminal_id`` (str), ``tx_amount`` (decimal currency units, >= 0, fits DECIMAL(38, 18)); other fields are
  ignored.
- Label event (topic ``labels``, key = transaction id): ``transaction_id``, ``tx_fraud`` (0/1),
  ``labeled_at`` (ISO-8601 UTC), ``source`` (e.g. ``chargeback``, ``analyst``), and the labelled
  transaction's ``terminal_id`` and ``customer_id``: the stream routes a label to the terminal that holds its
  transaction (a chargeback names the merchant; an analyst's verdict comes from an alert that has both).

Validation never raises on bad input: :func:`parse_transactions` and :func:`parse_labels` split a
micro-batch into valid rows and quarantine rows carrying a human-readable reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

# DECIMAL(38, 18): the widest decimal Spark, Glue and Athena hold. Amounts from float sources carry
# representation noise (the handbook's 85.64999999999999), so a cents-only rule would reject real data.
MAX_AMOUNT_DIGITS = 38
AMOUNT_DECIMAL_PLACES = 18

Amount = Annotated[
    Decimal,
    Field(ge=0, max_digits=MAX_AMOUNT_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, allow_inf_nan=False),
]
# No control characters: ids travel in Kafka keys, log lines and the stream's packed state
# (frauddetect.stream.keyed_state.RowPack joins strings with a control character).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _no_control_chars(value: str) -> str:
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_control_chars)]


def _require_utc(value: datetime) -> datetime:
    if value.utcoffset() != timedelta(0):
        raise ValueError("timestamp must be in UTC (offset Z or +00:00)")
    return value


class TransactionEvent(BaseModel):
    """A card transaction as published to the ``transactions`` topic (amounts in currency units)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    transaction_id: Identifier
    tx_datetime: AwareDatetime
    customer_id: Identifier
    terminal_id: Identifier
    tx_amount: Amount

    _utc = field_validator("tx_datetime")(_require_utc)


class LabelEvent(BaseModel):
    """A fraud label (chargeback, analyst verdict, or replayed ground truth) for one transaction, with the
    transaction's terminal and card, by which the stream finds the transaction."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    transaction_id: Identifier
    tx_fraud: Literal[0, 1]
    labeled_at: AwareDatetime
    source: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_control_chars)]
    terminal_id: Identifier
    customer_id: Identifier

    _utc = field_validator("labeled_at")(_require_utc)


def _reason(exc: ValidationError) -> str:
    """One line naming every failing field, e.g. ``tx_amount: Input should be a finite number``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _epoch_us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=value.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_transactions(values: Sequence[bytes | None]) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Validate raw Kafka values of the ``transactions`` topic.

    Returns ``(valid, rejected)``: ``valid`` has one row per valid record with columns ``pos`` (index into
    ``values``), ``transaction_id``, ``customer_id``, ``terminal_id`` (str), ``time_us`` (int64 µs since
    epoch, UTC), ``tx_amount`` (float64 currency units); ``rejected`` lists ``(pos, reason)``.
    """
    rows: list[tuple] = []
    rejected: list[tuple[int, str]] = []
    validate = TransactionEvent.model_validate_json
    for pos, raw in enumerate(values):
        if raw is None:
            rejected.append((pos, "record: empty value (tombstone)"))
            continue
        try:
            ev = validate(raw)
        except ValidationError as exc:
            rejected.append((pos, _reason(exc)))
            continue
        rows.append(
            (pos, ev.transaction_id, ev.customer_id, ev.terminal_id, _epoch_us(ev.tx_datetime), float(ev.tx_amount))
        )
    valid = pd.DataFrame(
        rows, columns=["pos", "transaction_id", "customer_id", "terminal_id", "time_us", "tx_amount"]
    ).astype({"pos": np.int64, "time_us": np.int64, "tx_amount": np.float64})
    for col in ("transaction_id", "customer_id", "terminal_id"):
        valid[col] = valid[col].astype(object)
    return valid, rejected


def parse_labels(values: Sequence[bytes | None]) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Validate raw Kafka values of the ``labels`` topic.

    Returns ``(valid, rejected)``: ``valid`` columns ``pos``, ``transaction_id`` (str), ``tx_fraud``
    (int8), ``labeled_at_us`` (int64 µs since epoch), ``source``, ``terminal_id``, ``customer_id`` (str);
    ``rejected`` lists ``(pos, reason)``.
    """
    rows: list[tuple] = []
    rejected: list[tuple[int, str]] = []
    for pos, raw in enumerate(values):
        if raw is None:
            rejected.append((pos, "record: empty value (tombstone)"))
            continue
        try:
            ev = LabelEvent.model_validate_json(raw)
        except ValidationError as exc:
            rejected.append((pos, _reason(exc)))
            continue
        rows.append((pos, ev.transaction_id, ev.tx_fraud, _epoch_us(ev.labeled_at), ev.source, ev.terminal_id,
                     ev.customer_id))
    valid = pd.DataFrame(
        rows, columns=["pos", "transaction_id", "tx_fraud", "labeled_at_us", "source", "terminal_id", "customer_id"]
    ).astype({"pos": np.int64, "tx_fraud": np.int8, "labeled_at_us": np.int64})
    for col in ("transaction_id", "source", "terminal_id", "customer_id"):
        valid[col] = valid[col].astype(object)
    return valid, rejected
