"""Exactly once across crashes: SIGKILL the streaming job three times during a replay and restart it.

Every transaction must land in the lake exactly once with the features and score a run without crashes
computes (the offline features and the same SavedModel), and every alert must be on ``fraud-alerts`` once and
reach SNS once.
"""

import random
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from frauddetect import kafka_io
from frauddetect.config import ALERTS_TOPIC
from frauddetect.data import canonical
from frauddetect.demo import _write_bootstrap
from frauddetect.features import FEATURE_COLUMNS, offline_features
from frauddetect.local_stack import EmbeddedStack, wait_for
from frauddetect.model import ModelConfig, SavedModelScorer
from frauddetect.replay import plan_replay, produce_replay
from frauddetect.simulator import simulate_transactions
from frauddetect.training import train_and_export

pytestmark = pytest.mark.e2e

START, END = "2018-05-20", "2018-05-26"
BATCH = 400  # transactions per micro-batch: many batches, so the kills land mid-stream


def read_topic(bootstrap: str, topic: str) -> list[tuple[str, dict]]:
    """Every record of a topic, all partitions: (key, headers)."""
    ends = kafka_io.end_offsets_via_fetch(bootstrap, [topic])[topic]
    end = sum(ends.values())
    consumer = Consumer(kafka_io.consumer_config(bootstrap))
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    out = []
    deadline = time.monotonic() + 60
    while len(out) < end and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            out.append((msg.key().decode(), dict(msg.headers() or [])))
    consumer.close()
    assert len(out) == end
    return out


def progress_file(run: Path, batch: int) -> Path:
    return run / "checkpoints" / "progress" / f"batch-{batch:010d}.json"


def sink_marker(run: Path, batch: int) -> Path:
    return run / "checkpoints" / "sinks" / f"batch-{batch:010d}.json"


def spark_commit(run: Path, batch: int) -> Path:
    return run / "checkpoints" / "spark" / "commits" / str(batch)


def crash_condition(run: Path, point: str, batch: int):
    """A predicate that turns true at the chosen crash point of micro-batch ``batch``: anywhere after the
    previous one; after some of its lake files, before its sinks are marked done; after its sinks are marked
    done (alerts acknowledged), before Spark commits it."""
    if point == "random":
        return progress_file(run, batch - 1).exists
    if point == "after_lake_write":
        return lambda: any((run / "lake" / "scored_transactions").glob(f"*/batch-{batch:010d}-*.parquet")) \
            and not sink_marker(run, batch).exists()
    return lambda: sink_marker(run, batch).exists() and not spark_commit(run, batch).exists()


def test_three_sigkills_lose_nothing_and_duplicate_nothing(tmp_path):
    raw = simulate_transactions(n_customers=300, n_terminals=600, n_days=56, seed=5)
    tx = canonical(raw)
    history = tx[tx["tx_datetime"] < pd.Timestamp(START, tz="UTC")]
    bootstrap = tmp_path / "history.parquet"
    _write_bootstrap(history, START, bootstrap)
    model_dir = tmp_path / "model"
    train_and_export(history, str(model_dir), deploy_start=START, alerts_per_day=20, train_days=10,
                     config=ModelConfig(extra_history_days=(0,)))
    plan = plan_replay(raw, START, END)
    rng = random.Random(20261129)

    with EmbeddedStack(tmp_path / "run") as stack:
        stack.start_job(model_dir, state_bootstrap=bootstrap, max_offsets_per_trigger=BATCH)
        stack.start_alert_lambda()
        # paced, so that the stream is still running at every crash point (restarts take ~15 s each)
        producer = threading.Thread(target=produce_replay, daemon=True, kwargs={
            "plan": plan, "producer": Producer(kafka_io.producer_config(stack.broker.bootstrap_servers)),
            "rate": 60})
        producer.start()
        wait_for(lambda: stack.progress() is not None, 300, "the first micro-batch", stack.job, stack.job_log)
        kills_mid_stream = 0
        interrupted = []
        # three kinds of crash point: anywhere, after the batch's lake files, after its Kafka sinks
        for point in ("random", "after_lake_write", "after_sinks"):
            done = (stack.progress() or {"batch_id": -1})["batch_id"]
            target = done + rng.randint(1, 2)
            crash_at = crash_condition(tmp_path / "run", point, target)
            wait_for(crash_at, 300, f"crash point {point} of micro-batch {target}", stack.job, stack.job_log,
                     interval=0.002)
            if point == "random":
                time.sleep(rng.uniform(0.0, 1.0))
            if stack.progress()["counts"]["transactions"] < plan.n_transactions:
                kills_mid_stream += 1
            stack.kill_job()
            run = tmp_path / "run"
            if point == "after_lake_write":  # the job died inside the micro-batch's sinks
                interrupted.append(sink_marker(run, target).exists())
            elif point == "after_sinks":  # ... or after them, before Spark recorded the batch as done
                interrupted.append(spark_commit(run, target).exists())
            stack.start_job(model_dir, state_bootstrap=bootstrap, max_offsets_per_trigger=BATCH)
        producer.join(300)
        final = stack.wait_processed(plan.n_transactions, 600)
        stack.wait_delivered(final["counts"]["alerts"])
        alert_records = read_topic(stack.broker.bootstrap_servers, ALERTS_TOPIC)
        sns_ids = [m["MessageAttributes"]["transaction_id"]["Value"] for m in stack.drain.messages.values()]
        lake = pd.read_parquet(tmp_path / "run" / "lake" / "scored_transactions")
    assert kills_mid_stream == 3
    # the two targeted crashes hit a micro-batch after some of its output was written, before its end
    assert interrupted == [False, False]
    assert "already published before a restart" in (tmp_path / "run" / "logs" / "streaming_job.log").read_text()

    # the lake: every transaction exactly once
    assert not lake["transaction_id"].duplicated().any()
    window = tx[(tx["tx_datetime"] >= pd.Timestamp(START, tz="UTC"))]
    assert set(lake["transaction_id"]) == set(window["transaction_id"])

    # ... with the features and scores of a run without crashes
    expected = offline_features(tx).set_index("transaction_id").loc[lake["transaction_id"]]
    np.testing.assert_allclose(lake[list(FEATURE_COLUMNS)].to_numpy(), expected[list(FEATURE_COLUMNS)].to_numpy(),
                               atol=1e-6)
    scores = SavedModelScorer(model_dir).score(expected[list(FEATURE_COLUMNS)].to_numpy(np.float32))
    np.testing.assert_allclose(lake["score"].to_numpy(), scores, atol=1e-5)

    # alerts: once on the topic, once through SNS
    alerted = set(lake.loc[lake["alert"], "transaction_id"])
    assert len(alerted) > 0
    keys = [k for k, _ in alert_records]
    assert len(keys) == len(set(keys)) and set(keys) == alerted
    assert len(sns_ids) == len(set(sns_ids)) and set(sns_ids) == alerted
