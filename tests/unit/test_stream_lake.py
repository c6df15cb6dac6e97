"""The lake files the job writes: column by column the types the catalog declares, and one file name per
micro-batch and task, so a replayed micro-batch overwrites what its crashed attempt wrote."""

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from stream_harness import LocalJob, kafka_records, label, transaction

from frauddetect.stream.lake import LAKE_TABLES, LakeWriter

pytestmark = pytest.mark.unit

# The Glue tables (infra.catalog) and dbt's lake source read the declarations in
# dbt/models/staging/_sources.yml; Athena reads the files with those types, so a mismatch (int64 where `int`
# is declared) fails at query time, not when the job writes.
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
    job = LocalJob()
    stamp = int(pd.Timestamp("2018-08-01T00:00:00Z").value // 1_000_000)
    tx = kafka_records([transaction("a", "2018-08-01T00:00:00Z", 250.0), transaction("b", "2018-08-01T00:01:00Z"),
                        b"{not json"], "transactions", timestamps_ms=[stamp] * 3)
    labels = kafka_records([label("a", 1, "2018-08-01T00:00:30Z"), b'{"transaction_id": "a"}'], "labels",
                           start_offset=3, timestamps_ms=[stamp + 30_000] * 2)
    return job.run(tx, labels)["lake"]


def test_lake_files_have_the_column_types_the_catalog_declares(tmp_path: Path) -> None:
    frames = one_batch_filling_every_table()
    declared = declared_columns()
    assert set(frames) == set(LAKE_TABLES) == set(declared)
    writer = LakeWriter(str(tmp_path))
    problems = []
    for table, frame in frames.items():
        assert len(frame), f"{table}: the batch should fill every table"
        writer.write(table, frame, batch_id=0, part=3)
        files = sorted((tmp_path / table).rglob("*.parquet"))
        assert files and all(re.fullmatch(r"event_date=\d{4}-\d{2}-\d{2}", f.parent.name) for f in files), files
        assert all(re.fullmatch(r"batch-0000000000-part-00003-\d+\.parquet", f.name) for f in files), files
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


def test_a_replayed_micro_batch_overwrites_its_files(tmp_path: Path) -> None:
    frames = one_batch_filling_every_table()
    writer = LakeWriter(str(tmp_path))
    for _ in range(2):  # the crashed attempt, then the replay
        writer.write("scored_transactions", frames["scored_transactions"], batch_id=7, part=0, run="0a1b2c3d")
    writer.write("scored_transactions", frames["scored_transactions"], batch_id=7, part=1, run="0a1b2c3d")
    lake = pd.read_parquet(tmp_path / "scored_transactions")
    assert len(lake) == 2 * len(frames["scored_transactions"])  # once per task, not once per attempt
    # a job without its checkpoint counts batches from 0 again, under another query id: nothing is replaced
    writer.write("scored_transactions", frames["scored_transactions"], batch_id=7, part=0, run="ffee0011")
    assert len(pd.read_parquet(tmp_path / "scored_transactions")) == 3 * len(frames["scored_transactions"])


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
