"""Online = offline = published: the handbook's golden week through the streaming job's stages, micro-batched
as Spark's Kafka source plans them, against the published features and the offline path, row by row."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stream_harness import LocalJob, PlannedTopics, history_frame

from frauddetect.data import load_transactions, read_raw
from frauddetect.features import FEATURE_COLUMNS, HANDBOOK_FEATURE_COLUMNS, offline_features
from frauddetect.replay import plan_replay

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


def test_micro_batches_planned_as_sparks_kafka_source_plans_them_give_the_published_features(handbook):
    """A job seeded with the 38 days before the week catches up on a backlog of four days (capped micro-batches
    spread over four transaction partitions; labels read uncapped, so they run ahead of their transactions and
    wait), then follows a live stream: a few thousand events produced between triggers. Labels come one day
    after their transaction here, so that the backlog holds labels for transactions not read yet (the terminal
    features only count transactions older than the 7-day delay, whose labels are known either way)."""
    tx, golden = handbook
    start = pd.Timestamp(START, tz="UTC")
    plan = plan_replay(read_raw(HANDBOOK / "transactions.parquet"), START, END, label_delay_days=1)
    topics = PlannedTopics(plan.events)
    job = LocalJob(history=history_frame(tx, start, label_delay_days=1))
    backlog = int((plan.events["event_time"] < pd.Timestamp("2018-07-29", tz="UTC")).sum())
    scored, waiting, most_waiting, produced, live_batches = [], 0, 0, backlog, 0
    while not topics.drained():
        if produced == len(plan.events) or not topics.drained_up_to(produced):
            transactions, labels = topics.micro_batch(produced, cap=7_919)
        else:
            produced = min(produced + 4_999, len(plan.events))  # odd sizes: boundaries fall anywhere in a day
            transactions, labels = topics.micro_batch(produced, cap=7_919)
            live_batches += 1
        out = job.run(transactions, labels)
        assert "quarantine" not in out["lake"]
        stats = out["rows"][out["rows"]["kind"] == "stats"].groupby("stat")["stat_value"].sum()
        waiting += int(stats.get("labels_waiting_delta", 0))
        most_waiting = max(most_waiting, waiting)
        scored.append(out["lake"].get("scored_transactions"))
    got = pd.concat(scored).set_index("transaction_id")
    assert len(got) == plan.n_transactions == len(golden)
    assert (job.batches > 10, live_batches > 5, most_waiting > 1_000, waiting) == (True, True, True, 0), (
        job.batches, live_batches, most_waiting)
    assert mismatches(got, golden) == {c: 0 for c in HANDBOOK_FEATURE_COLUMNS}
    expected = offline_features(tx).set_index("transaction_id").loc[got.index, list(FEATURE_COLUMNS)]
    assert int((np.abs(got[list(FEATURE_COLUMNS)].to_numpy() - expected.to_numpy()) > 1e-6).sum()) == 0
