"""Online = offline = published: the handbook's golden week against both feature paths, row by row."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frauddetect.data import load_transactions, read_raw
from frauddetect.features import FEATURE_COLUMNS, HANDBOOK_FEATURE_COLUMNS, FeatureState, offline_features
from frauddetect.pipeline import MicroBatchProcessor
from frauddetect.replay import plan_replay
from frauddetect.streaming import load_bootstrap_state

pytestmark = pytest.mark.functional

HANDBOOK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "handbook"
START, END = "2018-07-25", "2018-07-31"


@pytest.fixture(scope="module")
def handbook():
    if not (HANDBOOK / "transactions.parquet").exists():
        pytest.skip(f"handbook data not found at {HANDBOOK}")
    golden = pd.read_parquet(HANDBOOK / "features_2018-07-25_2018-07-31.parquet")
    golden["transaction_id"] = golden["TRANSACTION_ID"].astype(str)
    return load_transactions(HANDBOOK / "transactions.parquet"), golden.set_index("transaction_id")


def mismatches(got: pd.DataFrame, golden: pd.DataFrame) -> dict[str, int]:
    both = got.join(golden, how="inner")
    assert len(both) == len(golden), "every golden row must be featurised"
    return {c: int((np.abs(both[c] - both[c.upper()].astype(float)) > 1e-6).sum()) for c in HANDBOOK_FEATURE_COLUMNS}


def test_offline_features_equal_the_published_ones(handbook):
    tx, golden = handbook
    feats = offline_features(tx).set_index("transaction_id")
    assert mismatches(feats, golden) == {c: 0 for c in HANDBOOK_FEATURE_COLUMNS}


class ConstantScorer:
    """Scores are irrelevant here; the features are under test."""

    model_version = "parity"

    def score(self, x):
        return np.zeros(len(x), dtype=np.float32)


def test_streamed_micro_batches_equal_the_published_ones(handbook, tmp_path):
    tx, golden = handbook
    start = pd.Timestamp(START, tz="UTC")
    hist = tx[(tx["tx_datetime"] < start) & (tx["tx_datetime"] >= start - pd.Timedelta(days=38))].copy()
    labeled_at = hist["tx_datetime"] + pd.Timedelta(days=7)
    hist["labeled_at"] = labeled_at.where(labeled_at <= start)
    hist.to_parquet(tmp_path / "history.parquet")
    proc = MicroBatchProcessor(state=load_bootstrap_state(str(tmp_path / "history.parquet")),
                               scorer=ConstantScorer(), threshold=1.0)
    plan = plan_replay(read_raw(HANDBOOK / "transactions.parquet"), START, END)
    ev = plan.events
    records = pd.DataFrame({
        "key": ev["key"].str.encode("utf-8"), "value": ev["value"].str.encode("utf-8"),
        "topic": np.where(ev["kind"] == "transaction", "transactions", "labels"), "partition": 0,
        "timestamp": pd.Timestamp.now(tz="UTC"),
    })
    records["offset"] = records.groupby("topic").cumcount()
    scored = []
    for lo in range(0, len(records), 7_919):  # odd batch size: boundaries fall anywhere in a day
        result = proc.process(records.iloc[lo : lo + 7_919])
        assert result.quarantine.empty
        scored.append(result.scored)
    got = pd.concat(scored).set_index("transaction_id")
    assert len(got) == plan.n_transactions == len(golden)
    assert mismatches(got, golden) == {c: 0 for c in HANDBOOK_FEATURE_COLUMNS}


def test_stream_equals_offline_on_the_whole_handbook_file(handbook):
    """Every day of the handbook data, through the micro-batch logic in day-sized batches, against the
    offline path (zero mismatches); the golden week pins both to the published values above."""
    tx, _ = handbook
    raw = read_raw(HANDBOOK / "transactions.parquet")
    plan = plan_replay(raw, "2018-04-01", "2018-09-04")
    ev = plan.events
    records = pd.DataFrame({
        "key": ev["key"].str.encode("utf-8"), "value": ev["value"].str.encode("utf-8"),
        "topic": np.where(ev["kind"] == "transaction", "transactions", "labels"), "partition": 0,
        "timestamp": pd.Timestamp.now(tz="UTC"),
    })
    records["offset"] = records.groupby("topic").cumcount()
    proc = MicroBatchProcessor(state=FeatureState(),
                               scorer=ConstantScorer(), threshold=1.0)
    scored = []
    for lo in range(0, len(records), 20_000):
        result = proc.process(records.iloc[lo : lo + 20_000])
        assert result.quarantine.empty
        scored.append(result.scored[["transaction_id", *FEATURE_COLUMNS]])
    got = pd.concat(scored).set_index("transaction_id")
    expected = offline_features(tx).set_index("transaction_id")
    assert len(got) == len(expected) == 1_504_628
    diff = np.abs(got[list(FEATURE_COLUMNS)].to_numpy() - expected.loc[got.index, list(FEATURE_COLUMNS)].to_numpy())
    assert int((diff > 1e-6).sum()) == 0
    assert len(proc.state) < 400_000  # bounded: ~38 days of transactions, not the 157 days streamed
