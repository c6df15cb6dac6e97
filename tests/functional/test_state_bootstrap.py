"""A job that starts on an existing deployment seeds its operators' state from the lake's history: the lake as
the job writes it, read back by Spark (:func:`frauddetect.stream.bootstrap.lake_history`)."""

import numpy as np
import pandas as pd
import pytest
from stream_harness import LocalJob, PlannedTopics

from frauddetect.features import FEATURE_COLUMNS, NO_LABEL, TERMINAL_RETENTION_US
from frauddetect.replay import plan_replay
from frauddetect.simulator import simulate_transactions
from frauddetect.stream.bootstrap import bootstrap_watermark_us, lake_history
from frauddetect.stream.lake import LakeWriter

pytestmark = pytest.mark.functional

DAY_US = 86_400_000_000


def stream(job: LocalJob, plan, lake: LakeWriter | None = None, first_batch: int = 0) -> pd.DataFrame:
    """Run a replay plan through ``job`` in capped micro-batches; returns the scored rows."""
    topics, scored, batch = PlannedTopics(plan.events), [], first_batch
    while not topics.drained():
        frames = job.run(*topics.micro_batch(len(plan.events), cap=4_000))["lake"]
        if lake is not None:
            for table, frame in frames.items():
                lake.write(table, frame, batch)
        scored.append(frames.get("scored_transactions"))
        batch += 1
    return pd.concat(scored, ignore_index=True).set_index("transaction_id")


def test_a_job_seeded_from_the_lake_computes_what_a_continuous_job_computes(spark, tmp_path):
    raw = simulate_transactions(n_customers=200, n_terminals=400, n_days=90, seed=11)
    first, second = plan_replay(raw, "2018-04-01", "2018-06-14"), plan_replay(raw, "2018-06-15", "2018-06-29")
    continuous = LocalJob()
    stream(continuous, first, LakeWriter(str(tmp_path / "lake")))
    expected = stream(continuous, second)

    lateness_us = 86_400 * 1_000_000
    hist = lake_history(spark, str(tmp_path / "lake"), TERMINAL_RETENTION_US + lateness_us)
    history = hist.toPandas()
    assert pd.Timestamp(int(history["time_us"].min()), unit="us", tz="UTC") >= pd.Timestamp("2018-05-06", tz="UTC")
    assert (history["labeled_at_us"] != NO_LABEL).sum() > 1_000  # the labels the lake holds come with them
    assert bootstrap_watermark_us(hist, lateness_us) == int(history["time_us"].max()) - lateness_us
    # the second window's labels for the first window's last week arrive in the stream, as after a restart
    restarted = LocalJob(history=history)
    got = stream(restarted, second)
    assert len(got) == len(expected) > 1_000
    np.testing.assert_allclose(got.loc[expected.index, list(FEATURE_COLUMNS)].to_numpy(dtype=float),
                               expected[list(FEATURE_COLUMNS)].to_numpy(dtype=float), atol=1e-9)
    assert expected["terminal_id_risk_30day_window"].max() > 0  # labels from the lake were used


def test_an_empty_or_missing_lake_gives_no_history(spark, tmp_path):
    assert lake_history(spark, str(tmp_path / "nothing"), 38 * DAY_US) is None
