"""The streaming job itself on a real Spark cluster (``local-cluster``: two executor JVMs) against the embedded
broker: a backlog of six weeks (the stream's whole history, so the lake ends up holding every transaction)
read in capped micro-batches over partitioned topics (dense enough that the partitions' event times stay
well within the allowed lateness of each other while Spark's planning drains them at equal shares of their
lag, as in any real catch-up; docs/architecture.md, "Event-time policy"), bad and future-dated records among good ones, and a job
started again without its checkpoint that seeds its operators' state from that lake.

One job run per phase; the model is the small exported one (scores are not under test here, features are).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Producer

from frauddetect import kafka_io
from frauddetect.config import LABELS_TOPIC, TRANSACTIONS_TOPIC
from frauddetect.data import canonical
from frauddetect.features import FEATURE_COLUMNS, offline_features
from frauddetect.local_stack import EmbeddedStack
from frauddetect.replay import plan_replay, produce_replay
from frauddetect.simulator import simulate_transactions
from frauddetect.stream.config import STATE_STORE_PROVIDER

pytestmark = pytest.mark.functional

MASTER = "local-cluster[2,1,1024]"
START, END = "2018-04-01", "2018-05-12"  # the simulator's first day: no history before the stream
LATER_START, LATER_END = "2018-05-13", "2018-05-14"
CAP = 5_000


def inject(events: pd.DataFrame, row: int, value: str, key: str) -> pd.DataFrame:
    """The plan with one more transaction record before ``row``, stamped with that row's Kafka timestamp."""
    extra = events.iloc[[row]].assign(kind="transaction", key=key, value=value, transaction_id=None)
    return pd.concat([events.iloc[:row], extra, events.iloc[row:]], ignore_index=True)


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory, small_model):
    work = tmp_path_factory.mktemp("stream-job")
    raw = simulate_transactions(n_customers=600, n_terminals=1200, n_days=45, start_date=START, seed=3)
    tx = canonical(raw)
    plan = plan_replay(raw, START, END)
    events = plan.events
    tx_rows = np.flatnonzero(events["kind"].to_numpy() == "transaction")
    middle = int(tx_rows[len(tx_rows) // 2])
    first = json.loads(events.loc[tx_rows[0], "value"])
    stamp = pd.Timestamp(events.loc[middle, "event_time"])
    future = {**first, "transaction_id": "future-1",
              "tx_datetime": (stamp + pd.Timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    events = inject(events, middle, json.dumps(future), first["customer_id"])
    events = inject(events, middle + 10, json.dumps(first), first["customer_id"])  # the first one again
    events = inject(events, middle + 20, "{not json", "garbage")
    plan.events = events
    later = plan_replay(raw, LATER_START, LATER_END)

    with EmbeddedStack(work / "run") as stack:
        producer = Producer(kafka_io.producer_config(stack.bootstrap_servers))
        produce_replay(plan, producer)  # a backlog: everything is in the topics before the job starts
        stack.start_job(small_model.model_dir, spark_master=MASTER, max_offsets_per_trigger=CAP, threshold=0.5)
        first_progress = stack.wait_processed(plan.n_transactions + 3, 600)
        stack.stop_job()
        checkpoint = stack.checkpoints
        first_run = {
            "progress": first_progress,
            "planned": {t: (checkpoint / "sources" / f"{t}.json").stat().st_mtime_ns
                        for t in (TRANSACTIONS_TOPIC, LABELS_TOPIC)},
            "summary": stack.state_summary(),
            "batches": len({e["batchId"] for e in stack.query_progress()}),
            "lake": pd.read_parquet(work / "run" / "lake" / "scored_transactions"),
            "quarantine": pd.read_parquet(work / "run" / "lake" / "quarantine"),
            "order": events,
        }
        # the checkpoint is lost (a redeployment): the job starts where the topics end and seeds its state
        # from the lake, which holds the last 38 days the features look back on
        ends = kafka_io.end_offsets_via_fetch(stack.bootstrap_servers, [TRANSACTIONS_TOPIC, LABELS_TOPIC])
        shutil.rmtree(checkpoint)
        produce_replay(later, producer)
        stack.start_job(small_model.model_dir, state_bootstrap="lake", spark_master=MASTER, threshold=0.5,
                        starting_offsets=json.dumps({t: {str(p): o for p, o in parts.items()}
                                                     for t, parts in ends.items()}))
        second_progress = stack.wait_processed(later.n_transactions, 600)
        stack.stop_job()
        lake = pd.read_parquet(work / "run" / "lake" / "scored_transactions")
    return {"tx": tx, "plan": plan, "later": later, "first": first_run, "second": second_progress,
            "lake": lake, "log": (work / "run" / "logs" / "streaming_job.log").read_text()}


def test_every_transaction_of_a_backlog_is_scored_once_with_the_offline_features(stream_run):
    tx, first = stream_run["tx"], stream_run["first"]
    lake = first["lake"]
    window = tx[(tx["tx_datetime"] >= pd.Timestamp(START, tz="UTC"))
                & (tx["tx_datetime"] < pd.Timestamp(END, tz="UTC") + pd.Timedelta(days=1))]
    assert not lake["transaction_id"].duplicated().any()
    assert set(lake["transaction_id"]) == set(window["transaction_id"])
    expected = offline_features(tx).set_index("transaction_id").loc[lake["transaction_id"], list(FEATURE_COLUMNS)]
    assert int((np.abs(lake[list(FEATURE_COLUMNS)].to_numpy() - expected.to_numpy()) > 1e-6).sum()) == 0
    # capped: many micro-batches, spread over the four transaction partitions
    assert first["batches"] >= len(window) // CAP
    assert lake["kafka_partition"].nunique() == 4


def test_a_future_dated_transaction_is_quarantined_and_those_after_it_are_scored(stream_run):
    first = stream_run["first"]
    q = first["quarantine"].set_index(first["quarantine"]["value"].str.extract(r'"transaction_id": "([^"]+)"')[0])
    assert "ahead of the record's Kafka timestamp" in q.loc["future-1", "reason"]
    assert "allowed clock skew 300 s" in q.loc["future-1", "reason"]
    # the watermark did not move to its time: the transactions produced after it are scored, none is late
    order = first["order"]
    after = order.iloc[int(np.flatnonzero(order["value"].str.contains('"future-1"'))[0]) + 1:]
    after_ids = set(after.loc[after["kind"] == "transaction", "transaction_id"].dropna())
    assert len(after_ids) > 300 and after_ids <= set(first["lake"]["transaction_id"])
    reasons = first["progress"]["quarantine_reasons"]
    assert sum(reasons.values()) == 3 and not any("late" in r for r in reasons)
    assert any(r.startswith("duplicate transaction_id") for r in reasons)
    assert any("Invalid JSON" in r for r in reasons)


def test_the_operators_state_is_in_rocksdb_and_labels_are_planned_after_transactions(stream_run):
    first = stream_run["first"]
    summary = first["summary"]
    assert summary["provider"] == STATE_STORE_PROVIDER
    assert summary["card_rows"] > 1_000 and summary["terminal_rows"] > 1_000
    # Spark plans the sources in plan order, transactions first: the labels' ends are taken after them
    planned = first["planned"]
    assert planned[TRANSACTIONS_TOPIC] <= planned[LABELS_TOPIC]


def test_a_job_without_its_checkpoint_seeds_its_state_from_the_lake(stream_run):
    tx, lake, later = stream_run["tx"], stream_run["lake"], stream_run["later"]
    assert "state bootstrap: lake" in stream_run["log"]
    assert not lake["transaction_id"].duplicated().any()
    second = lake[lake["tx_datetime"] >= pd.Timestamp(LATER_START, tz="UTC")]
    assert len(second) == later.n_transactions > 300
    assert stream_run["second"]["counts"]["quarantined"] == 0
    expected = offline_features(tx).set_index("transaction_id").loc[second["transaction_id"], list(FEATURE_COLUMNS)]
    assert int((np.abs(second[list(FEATURE_COLUMNS)].to_numpy() - expected.to_numpy()) > 1e-6).sum()) == 0
    assert (second["terminal_id_risk_30day_window"] > 0).any()  # labels from the lake and the stream count
