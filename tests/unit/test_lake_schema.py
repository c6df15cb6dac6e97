"""The Parquet files the streaming job writes have, column by column, the types the catalog declares.

The Glue tables (``infra.catalog``) and dbt's ``lake`` source read the same declarations in
``dbt/models/staging/_sources.yml``; Athena reads the files with those types, and a mismatch (an ``int64``
where ``int`` is declared) fails or misreads at query time, not when the job writes. One micro-batch that
fills all four tables goes through the job's writer (``LakeWriter``) into a temporary directory, and each
file's Arrow schema is compared with the declaration.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from frauddetect.features import FeatureState
from frauddetect.pipeline import MicroBatchProcessor
from frauddetect.streaming import LAKE_TABLES, LakeWriter

pytestmark = pytest.mark.unit

DBT_SOURCES = Path(__file__).resolve().parents[2] / "dbt" / "models" / "staging" / "_sources.yml"
PARTITION = "event_date"

# Declared type (dbt's portable name or the Hive name the Glue table gets) -> the Arrow types Athena reads
# as that type. An undeclared name fails the test: add it here with its Arrow counterpart.
ARROW_TYPES: dict[str, Callable[[pa.DataType], bool]] = {
    "bigint": lambda t: t == pa.int64(),
    "int": lambda t: t == pa.int32(),
    "integer": lambda t: t == pa.int32(),
    "smallint": lambda t: t == pa.int16(),
    "tinyint": lambda t: t == pa.int8(),
    "double": lambda t: t == pa.float64(),
    "float": lambda t: t == pa.float32(),
    "real": lambda t: t == pa.float32(),
    "boolean": lambda t: t == pa.bool_(),
    "varchar": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "timestamp": pa.types.is_timestamp,
    "date": pa.types.is_date32,
}
DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")


def matches(declared: str, arrow_type: pa.DataType) -> bool:
    decimal = DECIMAL.match(declared)
    if decimal:
        return arrow_type == pa.decimal128(int(decimal[1]), int(decimal[2]))
    check = ARROW_TYPES.get(declared)
    assert check is not None, f"no Arrow counterpart known for the declared type {declared!r}"
    return check(arrow_type)


def declared_columns() -> dict[str, dict[str, str]]:
    """``{table: {column: declared type}}`` of the dbt ``lake`` source."""
    sources = yaml.safe_load(DBT_SOURCES.read_text(encoding="utf-8"))["sources"]
    lake = next(s for s in sources if s["name"] == "lake")
    return {t["name"]: {c["name"]: c["data_type"] for c in t["columns"]} for t in lake["tables"]}


class AmountScorer:
    """Score rises with the amount: 0.5 at 100."""

    model_version = "schema-1"

    def score(self, x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(x[:, 0] - 100) / 10))


def _records(values: list[bytes], topic: str, partition: int, first_offset: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": [b"k"] * len(values),
            "value": values,
            "topic": topic,
            "partition": partition,
            "offset": np.arange(first_offset, first_offset + len(values)),
            "timestamp": pd.Timestamp("2018-08-01T00:05:00Z"),
            "timestampType": 0,
        }
    )


def one_batch_filling_every_table() -> dict[str, pd.DataFrame]:
    """The lake frames of one micro-batch with scored rows, an alert, an applied label and quarantine rows."""

    def tx(tid: str, minute: int, amount: float) -> bytes:
        when = f"2018-08-01T00:{minute:02d}:00Z"
        return json.dumps(
            {"transaction_id": tid, "tx_datetime": when, "customer_id": "c1", "terminal_id": "t1", "tx_amount": amount}
        ).encode()

    label = json.dumps(
        {"transaction_id": "a", "tx_fraud": 1, "labeled_at": "2018-08-01T00:30:00Z", "source": "chargeback"}
    ).encode()
    records = pd.concat(
        [
            _records([tx("a", 0, 250.0), tx("b", 1, 12.5), b"{not json"], "transactions", partition=2, first_offset=7),
            _records([label, b'{"transaction_id": "a"}'], "labels", partition=1, first_offset=3),
        ],
        ignore_index=True,
    )
    processor = MicroBatchProcessor(state=FeatureState(), scorer=AmountScorer(), threshold=0.5, score_retries=0)
    return processor.process(records).lake_frames()


def test_lake_files_have_the_column_types_the_catalog_declares(tmp_path: Path) -> None:
    frames = one_batch_filling_every_table()
    declared = declared_columns()
    assert set(frames) == set(LAKE_TABLES) == set(declared)
    writer = LakeWriter(str(tmp_path))
    problems = []
    for table, frame in frames.items():
        assert len(frame), f"{table}: the batch should fill every table"
        writer.write(table, frame, batch_id=0)
        files = sorted((tmp_path / table).rglob("*.parquet"))
        assert files and all(re.fullmatch(r"event_date=\d{4}-\d{2}-\d{2}", f.parent.name) for f in files), files
        schema = pq.read_schema(files[0])
        columns = {name: type_ for name, type_ in declared[table].items() if name != PARTITION}
        assert PARTITION in declared[table]  # a Hive partition: in the path, not in the file
        assert sorted(schema.names) == sorted(columns), f"{table}: file columns differ from the declaration"
        problems += [
            f"{table}.{name}: declared {type_}, written {schema.field(name).type}"
            for name, type_ in columns.items()
            if not matches(type_, schema.field(name).type)
        ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("declared", "arrow_type", "expected"),
    [
        ("integer", pa.int64(), False),  # the quarantine.kafka_partition bug this test was written for
        ("int", pa.int32(), True),
        ("bigint", pa.int32(), False),
        ("varchar", pa.large_string(), True),
        ("timestamp", pa.timestamp("us", tz="UTC"), True),
        ("decimal(10,2)", pa.decimal128(10, 2), True),
        ("decimal(10,2)", pa.float64(), False),
        ("double", pa.float32(), False),
    ],
)
def test_type_correspondence(declared: str, arrow_type: pa.DataType, expected: bool) -> None:
    assert matches(declared, arrow_type) is expected
