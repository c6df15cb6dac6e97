"""Reading transaction tables (Parquet or CSV) in the handbook's raw schema into the canonical frame.

Raw schema (``../shared/data/handbook/README.md``): ``TRANSACTION_ID``, ``TX_DATETIME`` (no zone, UTC),
``CUSTOMER_ID``, ``TERMINAL_ID``, ``TX_AMOUNT`` (currency units), ``TX_FRAUD`` (0/1, optional), other
columns ignored. Canonical frame: ``transaction_id``, ``customer_id``, ``terminal_id`` (str),
``tx_datetime`` (datetime64[us, UTC]), ``tx_amount`` (float64), ``tx_fraud`` (int8, when present).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

RAW_COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT")
LABEL_COLUMN = "TX_FRAUD"


def read_raw(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet or CSV file as it is (CSV values kept as strings, so bad values survive to validation).

    Raises ValueError for another file type or a file without the raw schema's columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path, columns=columns)
    elif suffix in (".csv", ".gz"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=columns)
    else:
        raise ValueError(f"{path}: expected a .parquet or .csv file")
    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} of the handbook's raw schema")
    return frame


def parse_raw_times(values: pd.Series) -> pd.Series:
    """Raw ``TX_DATETIME`` values -> UTC timestamps (same index); NaT where a value does not parse.

    Strings are read as ISO-8601 one by one (``2018-07-25 01:00:00``, ``…T01:00:00Z`` and ``…+00:00`` may
    be mixed: pandas' default would infer one format from the first row and turn the others into NaT);
    values without a zone are taken as UTC.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    return pd.to_datetime(values.astype(str).str.strip(), format="ISO8601", errors="coerce", utc=True)


def valid_rows(raw: pd.DataFrame) -> pd.Series:
    """Boolean mask (same index) of rows that convert cleanly: time parses, amount is a finite number
    >= 0, ids are present and ``TX_FRAUD`` (when the column exists) is 0 or 1."""
    ok = parse_raw_times(raw["TX_DATETIME"]).notna()
    amount = pd.to_numeric(raw["TX_AMOUNT"], errors="coerce")
    ok &= amount.notna() & np.isfinite(amount.fillna(-1)) & (amount >= 0)
    for col in ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID"):
        ok &= raw[col].notna() & (raw[col].astype(str).str.strip() != "")
    if LABEL_COLUMN in raw.columns:
        ok &= pd.to_numeric(raw[LABEL_COLUMN], errors="coerce").isin([0, 1])
    return ok


def canonical(raw: pd.DataFrame) -> pd.DataFrame:
    """Strictly convert a raw-schema frame to the canonical one (same index).

    Raises ValueError naming the first bad column when a value does not convert (use the stream's
    validation, ``frauddetect.schemas``, to quarantine bad rows one by one instead).
    """
    out = pd.DataFrame(index=raw.index)
    out["transaction_id"] = raw["TRANSACTION_ID"].astype(str)
    times = parse_raw_times(raw["TX_DATETIME"])
    if times.isna().any():
        bad = raw.loc[times.isna(), "TX_DATETIME"].iloc[0]
        raise ValueError(f"TX_DATETIME: {times.isna().sum()} value(s) do not parse as ISO-8601, e.g. {bad!r}")
    out["tx_datetime"] = times.dt.as_unit("us")
    out["customer_id"] = raw["CUSTOMER_ID"].astype(str)
    out["terminal_id"] = raw["TERMINAL_ID"].astype(str)
    amount = pd.to_numeric(raw["TX_AMOUNT"], errors="coerce").astype(np.float64)
    if amount.isna().any() or out["tx_datetime"].isna().any():
        raise ValueError("TX_AMOUNT/TX_DATETIME: missing or non-numeric values")
    out["tx_amount"] = amount
    if LABEL_COLUMN in raw.columns:
        out["tx_fraud"] = pd.to_numeric(raw[LABEL_COLUMN]).astype(np.int8)
    return out


def load_transactions(path: str | Path, start=None, end=None) -> pd.DataFrame:
    """Read and strictly convert a raw-schema file; optionally keep tx_datetime in [start, end + 1 day).

    ``start``/``end``: dates or timestamps (UTC); ``end`` is inclusive of its whole day.
    """
    frame = canonical(read_raw(path))
    if start is not None:
        frame = frame[frame["tx_datetime"] >= pd.Timestamp(start, tz="UTC")]
    if end is not None:
        frame = frame[frame["tx_datetime"] < pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)]
    return frame
