"""The replay producer's plan: event-time merge, label release after the delay, raw values passed through."""

import json

import pandas as pd
import pytest

from frauddetect.replay import plan_replay

pytestmark = pytest.mark.unit


def raw():
    return pd.DataFrame({
        "TRANSACTION_ID": [1, 2, 3, 4],
        "TX_DATETIME": pd.to_datetime(["2018-08-02 08:00:00", "2018-08-09 09:00:00", "2018-08-09 10:00:00",
                                       "2018-08-09 11:00:00"]),
        "CUSTOMER_ID": [7, 7, 8, 9],
        "TERMINAL_ID": [70, 70, 80, 90],
        "TX_AMOUNT": [10.0, 20.5, 30.0, 40.0],
        "TX_FRAUD": [1, 0, 0, 0],
    })


def test_labels_are_released_after_the_delay_and_merged_in_event_time():
    plan = plan_replay(raw(), "2018-08-09", "2018-08-09")
    kinds = plan.events["kind"].tolist()
    # the label of tx 1 (2018-08-02 08:00) is released at 2018-08-09 08:00, before the window's transactions
    assert kinds == ["label", "transaction", "transaction", "transaction"]
    label = json.loads(plan.events["value"].iloc[0])
    assert label == {"transaction_id": "1", "terminal_id": "70", "customer_id": "7", "tx_fraud": 1,
                     "labeled_at": "2018-08-09T08:00:00.000000Z", "source": "replayed_ground_truth"}
    first_tx = json.loads(plan.events["value"].iloc[1])
    assert first_tx == {"transaction_id": "2", "tx_datetime": "2018-08-09T09:00:00Z", "customer_id": "7",
                        "terminal_id": "70", "tx_amount": 20.5}
    assert plan.n_transactions == 3 and plan.n_labels == 1  # labels of 08-09 are released after the window
    # each record's Kafka timestamp is its event time (what the stream's clock-skew check compares with)
    assert plan.events["timestamp_ms"].tolist() == [1533801600000, 1533805200000, 1533808800000, 1533812400000]


def test_a_label_released_at_a_transaction_time_comes_first():
    r = raw()
    r.loc[0, "TX_DATETIME"] = pd.Timestamp("2018-08-02 09:00:00")  # released exactly at tx 2's time
    plan = plan_replay(r, "2018-08-09", "2018-08-09")
    assert plan.events["kind"].tolist()[:2] == ["label", "transaction"]


def test_bad_raw_values_are_passed_through_for_the_stream_to_quarantine():
    r = raw().astype(str)
    r.loc[2, "TX_AMOUNT"] = "twelve"
    r.loc[3, "TX_DATETIME"] = "not-a-time"
    r.loc[1, "TERMINAL_ID"] = ""
    plan = plan_replay(r, "2018-08-09", "2018-08-09")
    values = [json.loads(v) for v in plan.events.loc[plan.events["kind"] == "transaction", "value"]]
    assert "terminal_id" not in values[0]
    assert values[1]["tx_amount"] == "twelve"
    assert values[2]["tx_datetime"] == "not-a-time"  # kept in place, after its predecessor


def test_mixed_time_layouts_and_unparseable_times_are_never_lost():
    r = pd.DataFrame({
        "TRANSACTION_ID": [1, 2, 3, 4, 5],
        "TX_DATETIME": ["2018-07-24 23:00:00", "garbage", "2018-07-25T01:00:00Z", "2018-07-25T02:00:00+00:00",
                        "2018-07-25 03:00:00"],
        "CUSTOMER_ID": [1] * 5, "TERMINAL_ID": [1] * 5, "TX_AMOUNT": [1.0] * 5, "TX_FRAUD": [0] * 5,
    })
    plan = plan_replay(r, "2018-07-25", "2018-07-25")
    ids = [json.loads(v)["transaction_id"] for v in plan.events.loc[plan.events["kind"] == "transaction", "value"]]
    # the garbage row sits before the window in the input but is replayed (for the stream to quarantine)
    assert ids == ["2", "3", "4", "5"]
