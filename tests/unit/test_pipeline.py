"""The micro-batch logic: validation, quarantine reasons, duplicates, lateness, labels, scores, alerts; the
column types of the lake files it produces."""

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
from frauddetect.pipeline import SCORED_COLUMNS, MicroBatchProcessor
from frauddetect.schemas import parse_labels, parse_transactions
from frauddetect.streaming import LAKE_TABLES, LakeWriter

pytestmark = pytest.mark.unit


class AmountScorer:
    """A transparent stand-in model for logic tests: score rises with the amount (0.5 at 100)."""

    model_version = "test-1"

    def score(self, x):
        return 1 / (1 + np.exp(-(x[:, 0] - 100) / 10))


class BrokenScorer:
    model_version = "broken"

    def score(self, x):
        raise RuntimeError("endpoint unavailable")


def tx(tid, when, amount=10.0, customer="c1", terminal="t1", **extra):
    body = {"transaction_id": tid, "tx_datetime": when, "customer_id": customer, "terminal_id": terminal,
            "tx_amount": amount, **extra}
    return json.dumps(body).encode()


def records(values, topic="transactions", start_offset=0):
    return pd.DataFrame({
        "key": [b"k"] * len(values), "value": values, "topic": topic, "partition": 0,
        "offset": np.arange(start_offset, start_offset + len(values)),
        "timestamp": pd.Timestamp("2026-01-01", tz="UTC"), "timestampType": 0,
    })


def processor(**kw):
    return MicroBatchProcessor(state=FeatureState(), scorer=AmountScorer(), threshold=0.5, score_retries=0, **kw)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (json.dumps({"transaction_id": "x", "tx_datetime": "2018-08-01T00:00:00Z", "customer_id": "c",
                     "terminal_id": "t"}).encode(), "tx_amount: Field required"),
        (tx("x", "2018-08-01T00:00:00Z", amount="twelve"), "tx_amount: Input should be a valid decimal"),
        (tx("x", "2018-08-01T00:00:00Z", amount=-1), "tx_amount: Input should be greater than or equal to 0"),
        (b'{"transaction_id":"x","tx_datetime":"2018-08-01T00:00:00Z","customer_id":"c","terminal_id":"t",'
         b'"tx_amount":NaN}', "tx_amount: Input should be a finite number"),
        (tx("x", "2018-08-01T00:00:00+02:00"), "timestamp must be in UTC"),
        (tx("x", "2018-08-01T00:00:00"), "tx_datetime: Input should have timezone info"),
        (tx("x", "yesterday"), "tx_datetime: Input should be a valid datetime"),
        (tx(12345, "2018-08-01T00:00:00Z"), "transaction_id: Input should be a valid string"),
        (tx("x", "2018-08-01T00:00:00Z", amount="1" * 40), "tx_amount: Decimal input should have no more than 38"),
        (None, "empty value (tombstone)"),
    ],
)
def test_bad_transactions_are_rejected_with_a_reason(value, reason):
    valid, rejected = parse_transactions([value])
    assert valid.empty
    assert len(rejected) == 1 and reason in rejected[0][1]


def test_extra_fields_are_ignored_and_values_converted():
    valid, rejected = parse_transactions([tx("a", "2018-08-01T12:00:00.5Z", amount="85.64999999999999", mcc="5411")])
    assert rejected == []
    row = valid.iloc[0]
    assert row["time_us"] == pd.Timestamp("2018-08-01T12:00:00.5Z").value // 1000
    assert row["tx_amount"] == 85.64999999999999


def test_bad_records_are_quarantined_and_the_batch_goes_on():
    p = processor()
    result = p.process(records([tx("a", "2018-08-01T00:00:00Z", 150), b"garbage", tx("b", "2018-08-01T00:01:00Z")]))
    assert result.counts.transactions == 3 and result.counts.scored == 2 and result.counts.quarantined == 1
    q = result.quarantine.iloc[0]
    assert q["value"] == "garbage" and q["kafka_offset"] == 1 and "Invalid JSON" in q["reason"]
    assert list(result.scored.columns) == list(SCORED_COLUMNS)
    assert result.scored.set_index("transaction_id").loc["a", "alert"]  # 150 -> score 0.99
    assert [a["transaction_id"] for a in result.alerts] == ["a"]
    assert result.alerts[0]["threshold"] == 0.5 and result.alerts[0]["tx_datetime"].startswith("2018-08-01T00:00:00")


def test_duplicates_within_and_across_batches_are_quarantined():
    p = processor()
    first = p.process(records([tx("a", "2018-08-01T00:00:00Z"), tx("a", "2018-08-01T00:00:05Z")]))
    second = p.process(records([tx("a", "2018-08-01T00:10:00Z")], start_offset=2))
    assert first.counts.scored == 1 and first.quarantine["reason"].tolist() == ["duplicate transaction_id"]
    assert second.counts.scored == 0 and second.quarantine["reason"].tolist() == ["duplicate transaction_id"]


def test_late_events_beyond_the_allowed_lateness_are_quarantined():
    p = processor(allowed_lateness_us=3_600_000_000)
    p.process(records([tx("a", "2018-08-02T12:00:00Z")]))
    result = p.process(records([tx("b", "2018-08-02T11:30:00Z"), tx("c", "2018-08-02T10:59:59Z")], start_offset=1))
    assert result.scored["transaction_id"].tolist() == ["b"]  # 30 min late: within the allowed hour
    assert result.quarantine["reason"].str.startswith("late event").tolist() == [True]


def test_labels_for_unknown_transactions_are_quarantined_and_known_ones_kept():
    p = processor()
    p.process(records([tx("a", "2018-08-01T00:00:00Z")]))
    lab = lambda tid: json.dumps({"transaction_id": tid, "tx_fraud": 1, "labeled_at": "2018-08-08T00:00:00Z",
                                  "source": "chargeback"}).encode()
    result = p.process(records([lab("a"), lab("nope"), b'{"transaction_id":"a","tx_fraud":2}'], topic="labels"))
    assert result.counts.labels_applied == 1 and result.counts.labels_quarantined == 2
    assert result.labels["transaction_id"].tolist() == ["a"]
    assert sorted(result.quarantine["reason"].str.slice(0, 20)) == sorted(
        ["label for an unknown", "tx_fraud: Input shou"])


def test_a_scoring_failure_fails_the_batch_instead_of_scoring_not_fraud():
    p = MicroBatchProcessor(state=FeatureState(), scorer=BrokenScorer(), threshold=0.5, score_retries=1)
    with pytest.raises(RuntimeError, match="endpoint unavailable"):
        p.process(records([tx("a", "2018-08-01T00:00:00Z")]))


def test_a_recovered_scoring_failure_is_retried_and_counted(caplog):
    class FlakyScorer(AmountScorer):
        calls = 0

        def score(self, x):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("endpoint throttled")
            return super().score(x)

    p = MicroBatchProcessor(state=FeatureState(), scorer=FlakyScorer(), threshold=0.5, score_retries=2)
    result = p.process(records([tx("a", "2018-08-01T00:00:00Z", amount=150.0)]))
    assert result.counts.scoring_retries == 1 and result.counts.scored == 1
    assert result.scored["score"].iloc[0] == pytest.approx(1 / (1 + np.exp(-5)))  # the real score, not 0
    assert "scoring 1 rows failed (attempt 1 of 3): endpoint throttled" in caplog.text


def test_label_parser_requires_utc_and_binary_labels():
    valid, rejected = parse_labels([
        b'{"transaction_id":"a","tx_fraud":1,"labeled_at":"2018-08-08T00:00:00Z","source":"analyst"}',
        b'{"transaction_id":"a","tx_fraud":1,"labeled_at":"2018-08-08T00:00:00","source":"analyst"}',
    ])
    assert valid["tx_fraud"].tolist() == [1] and len(rejected) == 1


# ---------------------------------------------------------------------------------------------------------
# The Parquet files the job writes have, column by column, the types the catalog declares. The Glue tables
# (infra.catalog) and dbt's lake source read the declarations in dbt/models/staging/_sources.yml; Athena reads
# the files with those types, so a mismatch (int64 where `int` is declared) fails at query time, not when
# the job writes. One micro-batch that fills all four tables goes through the job's LakeWriter.
# ---------------------------------------------------------------------------------------------------------

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


def one_batch_filling_every_table() -> dict[str, pd.DataFrame]:
    """The lake frames of one micro-batch with scored rows, an alert, an applied label and quarantine rows."""
    label = json.dumps(
        {"transaction_id": "a", "tx_fraud": 1, "labeled_at": "2018-08-01T00:30:00Z", "source": "chargeback"}
    ).encode()
    batch = pd.concat(
        [
            records([tx("a", "2018-08-01T00:00:00Z", 250.0), tx("b", "2018-08-01T00:01:00Z"), b"{not json"]),
            records([label, b'{"transaction_id": "a"}'], topic="labels", start_offset=3),
        ],
        ignore_index=True,
    )
    return processor().process(batch).lake_frames()


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
