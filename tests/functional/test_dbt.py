"""dbt on a real demo lake, target ``local`` (DuckDB): ``dbt build`` passes (models, data tests, dbt unit
tests), the daily KPI mart's fraud counts and Card Precision@100 equal the Python reference computed from
the same lake (:func:`frauddetect.analytics.reference_daily_kpis`, which uses
``frauddetect.evaluation.card_precision_top_k``), re-runs leave row counts unchanged, and late labels and
new days are picked up incrementally.

The lake comes from ``frauddetect demo`` (a subprocess: real broker, Spark job and model) on a small
simulated population, streaming 12 days so that the first 5 are label-complete (labels arrive 7 days after
their transaction), with an alert budget of 20 a day (each alert goes through the Lambda and SNS before the
demo returns). Built once per module: about 80 s here; each dbt build about 10 s.
The handbook-week check (the issue's "Done when") is marked e2e.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frauddetect import analytics

HANDBOOK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "handbook"
SIM_START, SIM_END = "2018-05-11", "2018-05-22"  # days 40..51 of the simulation; 05-11..05-15 fully labelled
COUNT_COLUMNS = ["transactions", "labeled_transactions", "known_frauds", "frauds", "alerts", "true_alerts"]


def _run_demo(workdir: Path, input_path: Path, start: str, end: str, *options: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "frauddetect", "demo", "--input", str(input_path), "--start", start, "--end", end,
         "--workdir", str(workdir), "--json", *options],
        check=False, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _build(workdir: Path, *args: str):
    t0 = time.perf_counter()
    result = analytics.dbt_build(workdir, args=("--quiet", *args))
    assert result.success, analytics.failed_nodes(result) or result.exception
    return time.perf_counter() - t0


def _row_counts(workdir: Path) -> dict[str, int]:
    import duckdb

    with duckdb.connect(str(analytics.analytics_paths(workdir).duckdb), read_only=True) as con:
        tables = [r[0] for r in con.sql(
            "select table_name from information_schema.tables where table_schema = 'main' order by 1").fetchall()]
        return {t: con.execute(f'select count(*) from main."{t}"').fetchone()[0] for t in tables}


def assert_kpis_match_reference(kpis: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Fraud counts equal exactly, Card Precision@100 to 1e-12, amounts to the cent; NULL where NaN."""
    kpis = kpis.assign(event_date=kpis["event_date"].astype(str).str[:10]).set_index("event_date")
    assert list(kpis.index) == list(reference.index)
    assert (kpis["is_label_complete"].astype(bool) == reference["is_label_complete"]).all()
    for col in COUNT_COLUMNS:
        got = kpis[col].astype("float64").to_numpy()
        want = reference[col].astype("float64").to_numpy()
        np.testing.assert_array_equal(got, want, err_msg=col)
    np.testing.assert_allclose(kpis["card_precision_at_100"].astype("float64"),
                               reference["card_precision_at_100"], rtol=0, atol=1e-12, equal_nan=True)
    for col in ("amount_flagged", "amount_missed_fraud"):
        np.testing.assert_allclose(kpis[col].astype("float64"), reference[col], rtol=0, atol=0.011,
                                   equal_nan=True, err_msg=col)


@pytest.fixture(scope="module")
def sim_lake(tmp_path_factory) -> Path:
    """A demo run's workdir (``lake/`` inside) on a small simulated population, streaming 12 days."""
    from frauddetect.simulator import simulate_transactions

    base = tmp_path_factory.mktemp("dbt_demo")
    raw = simulate_transactions(n_customers=500, n_terminals=1000, n_days=52, seed=7)
    raw.to_parquet(base / "simulated.parquet", index=False)
    workdir = base / "run"
    # a small alert budget: every alert goes through the Lambda and SNS before the demo ends, ~15/s here
    summary = _run_demo(workdir, base / "simulated.parquet", SIM_START, SIM_END, "--alerts-per-day", "20")
    assert summary["scored"] > 0 and summary["alerts"] > 0
    return workdir


@pytest.fixture(scope="module")
def built(sim_lake) -> Path:
    """The lake's workdir after a first ``dbt build``."""
    _build(sim_lake)
    return sim_lake


@pytest.mark.functional
def test_dbt_build_passes_and_writes_inside_the_workdir(built):
    paths = analytics.analytics_paths(built)
    assert paths.duckdb.exists() and (paths.target / "manifest.json").exists() and paths.logs.exists()
    counts = _row_counts(built)
    assert counts["fct_transactions"] == counts["stg_scored_transactions"] > 0
    assert counts["stg_quarantine"] == 0  # a clean stream writes no quarantine files: read as empty
    assert counts["rpt_daily_kpis"] == 12


@pytest.mark.functional
def test_daily_kpis_equal_the_python_reference(built):
    kpis = analytics.daily_kpis(built)
    reference = analytics.reference_daily_kpis(built / "lake")
    assert_kpis_match_reference(kpis, reference)
    ranked = reference["card_precision_at_100"].notna()
    assert ranked.sum() >= 3 and (~ranked).sum() >= 3  # both label-complete and label-unknown days
    assert reference.loc[ranked, "frauds"].sum() > 0
    assert analytics.kpi_table(kpis, last_days=7).row_count == 7  # what the demo prints


@pytest.mark.functional
def test_rerunning_twice_leaves_row_counts_unchanged(built):
    before = _row_counts(built)
    kpis_before = analytics.daily_kpis(built)
    for _ in range(2):
        result = analytics.run_dbt(["run", "--quiet"], built)
        assert result.success, analytics.failed_nodes(result)
        assert _row_counts(built) == before
    pd.testing.assert_frame_equal(analytics.daily_kpis(built), kpis_before)


@pytest.mark.functional
def test_every_model_column_is_documented(built):
    import duckdb

    manifest = json.loads((analytics.analytics_paths(built).target / "manifest.json").read_text())
    documented = {n["name"]: list(n["columns"]) for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    with duckdb.connect(str(analytics.analytics_paths(built).duckdb), read_only=True) as con:
        for model, columns in documented.items():
            actual = [r[0] for r in con.sql(f"describe main.{model}").fetchall()]
            missing = [c for c in actual if c not in columns]
            assert not missing, f"{model}: undocumented columns {missing}"
            assert [c for c in columns if c not in actual] == [], f"{model}: documented but absent"


@pytest.mark.functional
def test_late_labels_and_new_days_are_built_incrementally(sim_lake, tmp_path):
    """Build on a lake that lacks its last 2 days and its newest labels, then add them: the incremental
    run (not a full refresh) must end where a build of the complete lake ends."""
    full_lake = sim_lake / "lake"
    workdir = tmp_path / "incr"
    shutil.copytree(full_lake, workdir / "lake")
    withheld = [*sorted((workdir / "lake" / "scored_transactions").iterdir())[-2:],
                *sorted((workdir / "lake" / "alerts").iterdir())[-2:],
                *sorted((workdir / "lake" / "labels").iterdir())[-3:]]
    for part in withheld:
        shutil.rmtree(part)
    _build(workdir)
    partial = analytics.daily_kpis(workdir)
    assert len(partial) == 10
    assert partial["card_precision_at_100"].notna().sum() < \
        analytics.reference_daily_kpis(full_lake)["card_precision_at_100"].notna().sum()

    for part in withheld:
        shutil.copytree(full_lake / part.parent.name / part.name, part)
    _build(workdir)
    assert_kpis_match_reference(analytics.daily_kpis(workdir), analytics.reference_daily_kpis(full_lake))
    counts = _row_counts(workdir)
    assert counts["fct_transactions"] == counts["stg_scored_transactions"]


@pytest.mark.functional
def test_quarantined_records_are_read_from_the_lake(sim_lake, tmp_path):
    """Quarantine rows exactly as the streaming job's stages make and write them reach stg_quarantine with
    their reason; a batch whose keys are all missing reads too."""
    from stream_harness import LocalJob, kafka_records, label, transaction

    from frauddetect.stream.lake import LakeWriter

    def stamp(iso):
        return int(pd.Timestamp(iso).value // 1_000_000)

    workdir = tmp_path / "quarantine"
    shutil.copytree(sim_lake / "lake", workdir / "lake")
    writer = LakeWriter(str(workdir / "lake"))
    job = LocalJob()
    # a transaction without its fields; a label for a transaction the stream never saw (it waits for its
    # transaction until the watermark passes its labeled_at); then a batch whose record key is missing, with a
    # transaction on the label's terminal that moves the watermark past the label, which is quarantined then
    batches = [
        (kafka_records([transaction("ok", "2018-05-21T00:00:00Z"), b'{"transaction_id": "1"}'], "transactions",
                       start_offset=9000, timestamps_ms=[stamp("2018-05-21T00:00:00Z")] * 2, keys=[b"c1", b"c1"]), None),
        (None, kafka_records([label("t9", 1, "2018-05-19T00:00:00Z")], "labels", start_offset=9010,
                             timestamps_ms=[stamp("2018-05-19T00:00:00Z")], keys=[b"t9"])),
        (kafka_records([b"not json", transaction("ok2", "2018-05-21T01:00:00Z")], "transactions", start_offset=9020,
                       timestamps_ms=[stamp("2018-05-21T01:00:00Z")] * 2, keys=[None, b"c1"]), None),
    ]
    written = []
    for batch_id, (transactions, labels) in enumerate(batches, start=900):
        lake = job.run(transactions, labels)["lake"]
        if "quarantine" in lake:
            writer.write("quarantine", lake["quarantine"], batch_id)
            written.append(batch_id)
    assert written == [900, 902]
    result = analytics.dbt_build(workdir, args=("--quiet", "--select", "stg_quarantine"))
    assert result.success, analytics.failed_nodes(result)
    rows = analytics.read_model(workdir, "stg_quarantine", order_by="kafka_offset")
    assert len(rows) == 3 and rows["reason"].notna().all()
    assert rows["source_topic"].tolist() == ["transactions", "labels", "transactions"]
    assert rows["record_key"].isna().tolist() == [False, False, True]


@pytest.mark.e2e
def test_handbook_week_dbt_build_matches_python(tmp_path):
    """The issue's "Done when": the demo on the handbook week 2018-08-15..2018-08-21, then dbt build; the
    KPI mart's fraud counts and Card Precision@100 equal the Python reference from the same lake. (In a
    one-week run no scored transaction has its label yet - labels come 7 days later - so label KPIs are
    NULL on both sides; the simulated-lake tests above cover label-complete days.)"""
    if not (HANDBOOK / "transactions.parquet").exists():
        pytest.skip(f"handbook data not found at {HANDBOOK} (tests read ../shared/data/handbook)")
    workdir = tmp_path / "run"
    _run_demo(workdir, HANDBOOK / "transactions.parquet", "2018-08-15", "2018-08-21")
    _build(workdir)
    kpis = analytics.daily_kpis(workdir)
    assert len(kpis) == 7
    assert_kpis_match_reference(kpis, analytics.reference_daily_kpis(workdir / "lake"))
