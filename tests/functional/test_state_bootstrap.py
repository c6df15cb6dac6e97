"""A job that starts on an existing deployment seeds its feature state from the lake's history."""


import numpy as np
import pandas as pd
import pytest

from frauddetect.features import FEATURE_COLUMNS, FeatureState
from frauddetect.pipeline import MicroBatchProcessor
from frauddetect.simulator import simulate_transactions
from frauddetect.replay import plan_replay
from frauddetect.streaming import LakeWriter, lake_history, load_bootstrap_state

pytestmark = pytest.mark.functional


class ConstantScorer:
    model_version = "bootstrap-test"

    def score(self, x):
        return np.full(len(x), 0.1, dtype=np.float32)


def records_of(plan):
    ev = plan.events
    rec = pd.DataFrame({
        "key": ev["key"].str.encode("utf-8"), "value": ev["value"].str.encode("utf-8"),
        "topic": np.where(ev["kind"] == "transaction", "transactions", "labels"), "partition": 0,
        "timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
    })
    rec["offset"] = rec.groupby("topic").cumcount()
    return rec


def test_a_job_seeded_from_the_lake_computes_what_a_continuous_job_computes(tmp_path):
    raw = simulate_transactions(n_customers=200, n_terminals=400, n_days=90, seed=11)
    first = records_of(plan_replay(raw, "2018-04-01", "2018-06-14"))
    second = records_of(plan_replay(raw, "2018-06-15", "2018-06-29"))

    continuous = MicroBatchProcessor(state=FeatureState(), scorer=ConstantScorer(), threshold=0.5)
    lake = LakeWriter(str(tmp_path / "lake"))
    for i, lo in enumerate(range(0, len(first), 5_000)):
        out = continuous.process(first.iloc[lo : lo + 5_000])
        lake.write("scored_transactions", out.scored, i)
        lake.write("labels", out.labels, i)
    expected = continuous.process(second).scored.set_index("transaction_id")

    history = lake_history(str(tmp_path / "lake"), FeatureState().retention_us)
    assert history["tx_datetime"].min() >= pd.Timestamp("2018-05-07", tz="UTC")  # 38 days, not all 75
    assert history["labeled_at"].notna().sum() > 0
    restarted = MicroBatchProcessor(state=load_bootstrap_state(history), scorer=ConstantScorer(), threshold=0.5)
    got = restarted.process(second).scored.set_index("transaction_id")
    assert len(got) == len(expected) > 1_000
    np.testing.assert_allclose(got.loc[expected.index, list(FEATURE_COLUMNS)].to_numpy(),
                               expected[list(FEATURE_COLUMNS)].to_numpy(), atol=1e-9)
    assert expected["terminal_id_risk_30day_window"].max() > 0  # labels from the lake were used
