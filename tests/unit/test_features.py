"""Feature definitions on hand-made cases whose right values are computed by hand from the handbook's text."""

import numpy as np
import pandas as pd
import pytest

from frauddetect.features import (
    CARD_FEATURE_COLUMNS,
    FEATURE_COLUMNS,
    HANDBOOK_FEATURE_COLUMNS,
    NO_LABEL,
    TERMINAL_FEATURE_COLUMNS,
    card_features,
    calendar_features,
    labels_from_ground_truth,
    latest_labels,
    offline_features,
    terminal_features,
    to_epoch_us,
)

pytestmark = pytest.mark.unit

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2018-08-01 12:00:00", tz="UTC")  # a Wednesday


def frame(rows):
    """rows: (id, time, customer, terminal, amount, fraud)."""
    return pd.DataFrame(
        rows, columns=["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud"]
    ).astype({"tx_amount": float})


def test_model_features_are_the_handbook_fifteen_in_order_then_the_terminal_sequence_features():
    assert FEATURE_COLUMNS[:15] == HANDBOOK_FEATURE_COLUMNS and len(FEATURE_COLUMNS) == 19
    assert FEATURE_COLUMNS[15:] == (
        "terminal_id_fraud_share_last_1_tx",
        "terminal_id_fraud_share_last_3_tx",
        "terminal_id_fraud_share_last_5_tx",
        "terminal_id_days_since_known_fraud",
    )
    assert HANDBOOK_FEATURE_COLUMNS[:5] == (
        "tx_amount",
        "tx_during_weekend",
        "tx_during_night",
        "customer_id_nb_tx_1day_window",
        "customer_id_avg_amount_1day_window",
    )
    assert HANDBOOK_FEATURE_COLUMNS[-1] == "terminal_id_risk_30day_window"


def test_calendar_features_weekend_and_night_boundaries():
    times = pd.Series(pd.to_datetime(
        ["2018-08-04 06:59:59", "2018-08-04 07:00:00", "2018-08-05 23:59:59", "2018-08-06 00:00:00",
         "2018-08-03 12:00:00"], utc=True))
    weekend, night = calendar_features(to_epoch_us(times))
    assert weekend.tolist() == [1, 1, 1, 0, 0]  # Sat, Sat, Sun, Mon, Fri
    assert night.tolist() == [1, 0, 0, 1, 0]  # hour <= 6


def test_customer_windows_include_own_row_and_exclude_the_boundary():
    tx = frame([
        ("a", T0 - 30 * DAY, "c1", "t1", 10, 0),  # exactly 30 days before the last row: outside (t-30d, t]
        ("b", T0 - 7 * DAY + pd.Timedelta(seconds=1), "c1", "t1", 20, 0),
        ("c", T0 - DAY, "c1", "t1", 30, 0),  # exactly 1 day before: outside the 1-day window
        ("d", T0, "c1", "t2", 40, 0),
        ("e", T0, "c2", "t2", 5, 0),  # another customer, one transaction only
    ])
    f = offline_features(tx).set_index("transaction_id")
    assert f.loc["d", "customer_id_nb_tx_1day_window"] == 1
    assert f.loc["d", "customer_id_avg_amount_1day_window"] == 40
    assert f.loc["d", "customer_id_nb_tx_7day_window"] == 3  # b, c, d
    assert f.loc["d", "customer_id_avg_amount_7day_window"] == pytest.approx(30)
    assert f.loc["d", "customer_id_nb_tx_30day_window"] == 3  # a is exactly 30 days old
    assert f.loc["e", "customer_id_nb_tx_30day_window"] == 1
    assert f.loc["e", "customer_id_avg_amount_30day_window"] == 5


def test_ties_in_time_count_only_earlier_arrivals():
    tx = frame([("x1", T0, "c", "t", 10, 0), ("x2", T0, "c", "t", 30, 0)])
    f = offline_features(tx).set_index("transaction_id")
    assert f.loc["x1", "customer_id_nb_tx_1day_window"] == 1
    assert f.loc["x2", "customer_id_nb_tx_1day_window"] == 2
    assert f.loc["x2", "customer_id_avg_amount_1day_window"] == 20


def test_terminal_windows_are_shifted_by_the_label_delay():
    # query at T0; window for w=1 is (T0-8d, T0-7d]
    tx = frame([
        ("old", T0 - 8 * DAY, "c1", "t", 1, 1),  # exactly t-d-w: outside
        ("in1", T0 - 7 * DAY, "c2", "t", 1, 1),  # exactly t-d: inside, fraud
        ("in7", T0 - 10 * DAY, "c3", "t", 1, 0),  # in 7- and 30-day windows
        ("young", T0 - 6 * DAY, "c4", "t", 1, 1),  # inside the delay: never used
        ("q", T0, "c5", "t", 1, 0),
        ("fresh", T0, "c6", "new-terminal", 1, 0),
    ])
    f = offline_features(tx).set_index("transaction_id")
    assert f.loc["q", "terminal_id_nb_tx_1day_window"] == 1
    assert f.loc["q", "terminal_id_risk_1day_window"] == 1.0
    assert f.loc["q", "terminal_id_nb_tx_7day_window"] == 3  # old, in1, in7
    assert f.loc["q", "terminal_id_risk_7day_window"] == pytest.approx(2 / 3)
    assert f.loc["fresh", "terminal_id_nb_tx_30day_window"] == 0
    assert f.loc["fresh", "terminal_id_risk_30day_window"] == 0  # 0 when no history, not NaN


def test_a_label_counts_only_from_its_labeled_at():
    tx = frame([("f", T0 - 7 * DAY, "c1", "t", 1, 1), ("q1", T0, "c2", "t", 1, 0),
                ("q2", T0 + DAY / 2, "c3", "t", 1, 0)])
    late_label = pd.DataFrame({"transaction_id": ["f"], "tx_fraud": [1],
                               "labeled_at_us": to_epoch_us(pd.Series([T0 + DAY / 4]))})
    f = offline_features(tx, labels=late_label).set_index("transaction_id")
    assert f.loc["q1", "terminal_id_risk_1day_window"] == 0  # chargeback not known yet at T0
    assert f.loc["q2", "terminal_id_risk_1day_window"] == 1  # known at T0 + 6h, still in window
    on_time = pd.DataFrame({"transaction_id": ["f"], "tx_fraud": [1],
                            "labeled_at_us": to_epoch_us(pd.Series([T0]))})
    f = offline_features(tx, labels=on_time).set_index("transaction_id")
    assert f.loc["q1", "terminal_id_risk_1day_window"] == 1  # labeled_at == t counts


def test_the_card_side_answers_in_the_callers_order_over_any_history_order():
    """The card operator calls card_features on a shard's rows in storage order: the answer is per row."""
    rng = np.random.default_rng(3)
    n = 400
    times = to_epoch_us(pd.Series(T0 + pd.to_timedelta(np.sort(rng.integers(0, 40 * 86400, n)), unit="s")))
    cards = rng.integers(0, 9, n).astype(str).astype(object)
    amounts = rng.gamma(2, 30, n)
    query = rng.random(n) < 0.3
    whole = card_features(cards, times, amounts, np.arange(n), query)
    shuffled = rng.permutation(n)
    again = card_features(cards[shuffled], times[shuffled], amounts[shuffled], np.arange(n)[shuffled], query[shuffled])
    # the query rows of the shuffled call, back in the first call's order
    order = np.argsort(shuffled[np.flatnonzero(query[shuffled])])
    np.testing.assert_allclose(again.to_numpy()[order], whole.to_numpy())
    assert list(whole.columns) == list(CARD_FEATURE_COLUMNS)


def test_the_terminal_side_breaks_ties_in_time_by_transaction_id_not_by_arrival():
    """Two transactions at one terminal in the same second: the newer-looking one is the larger id, whatever
    the order the stream received them in (they come from different cards, so from different partitions)."""
    edge = to_epoch_us(pd.Series([T0 - 7 * DAY]))[0]
    terminal = np.array(["t", "t", "t"], dtype=object)
    times = np.array([edge, edge, edge + 7 * 86_400_000_000], dtype=np.int64)
    fraud = np.array([1, 0, 0], dtype=np.int8)
    labeled_at = np.array([edge, NO_LABEL, NO_LABEL], dtype=np.int64)
    query = np.array([False, False, True])
    for ids in (["b", "a", "q"], ["a", "b", "q"]):
        got = terminal_features(terminal, np.array(ids, dtype=object), times, fraud, labeled_at, query)
        fraud_is_last = ids[0] > ids[1]  # "b" sorts after "a": it is the last transaction before t - d
        assert got["terminal_id_fraud_share_last_1_tx"].iloc[0] == (1.0 if fraud_is_last else 0.0)
        assert got["terminal_id_fraud_share_last_3_tx"].iloc[0] == 0.5
    assert list(got.columns) == list(TERMINAL_FEATURE_COLUMNS)


def test_the_latest_label_of_a_transaction_wins_and_ties_go_to_the_later_one():
    labels = pd.DataFrame({"transaction_id": ["a", "a", "b", "b"], "tx_fraud": [1, 0, 0, 1],
                           "labeled_at_us": [10, 20, 5, 5]})
    got = latest_labels(labels).set_index("transaction_id")
    assert got.loc["a", "tx_fraud"] == 0 and got.loc["b", "tx_fraud"] == 1


def _terminal_history(*, late_label: bool = False):
    """Terminal t1's transactions before a query row q at T0 (label delay 7 days, so t - d = T0 - 7 d).

    Relative to T0 - 7 d: a 31 days before (outside the 30-day look-back), b 20 days before (fraud),
    c 3 days before (genuine), d 2 days before (fraud), e 1 day before (genuine), f 1 hour AFTER t - d
    (fraud, but not known yet: younger than the delay), and q itself at T0.
    """
    edge = T0 - 7 * DAY
    rows = [
        ("a", edge - 31 * DAY, "c1", "t1", 10, 1),
        ("b", edge - 20 * DAY, "c2", "t1", 10, 1),
        ("c", edge - 3 * DAY, "c3", "t1", 10, 0),
        ("d", edge - 2 * DAY, "c4", "t1", 10, 1),
        ("e", edge - 1 * DAY, "c5", "t1", 10, 0),
        ("f", edge + pd.Timedelta(hours=1), "c6", "t1", 10, 1),
        ("q", T0, "c7", "t1", 10, 0),
        ("z", T0, "c8", "t2", 10, 0),  # a terminal without history
    ]
    tx = frame(rows)
    labels = labels_from_ground_truth(tx)
    if late_label:  # d's fraud label arrives 2 days after T0: unknown when q is scored
        labels.loc[labels["transaction_id"] == "d", "labeled_at_us"] = to_epoch_us(pd.Series([T0 + 2 * DAY]))[0]
    return tx, labels


def test_terminal_sequence_features_by_hand():
    tx, labels = _terminal_history()
    f = offline_features(tx, labels).set_index("transaction_id")
    # last transactions up to t - d, newest first: e (genuine), d (fraud), c (genuine), b (fraud); a is
    # older than 30 days, f younger than the delay
    assert f.loc["q", "terminal_id_fraud_share_last_1_tx"] == 0.0
    assert f.loc["q", "terminal_id_fraud_share_last_3_tx"] == pytest.approx(1 / 3)
    assert f.loc["q", "terminal_id_fraud_share_last_5_tx"] == pytest.approx(2 / 4)  # only 4 in range
    assert f.loc["q", "terminal_id_days_since_known_fraud"] == pytest.approx(2.0)  # d
    assert f.loc["z", ["terminal_id_fraud_share_last_1_tx", "terminal_id_fraud_share_last_5_tx"]].tolist() == [0, 0]
    assert f.loc["z", "terminal_id_days_since_known_fraud"] == 30.0  # none in 30 days


def test_terminal_sequence_features_use_a_late_label_only_once_it_has_arrived():
    tx, labels = _terminal_history(late_label=True)
    f = offline_features(tx, labels).set_index("transaction_id")
    assert f.loc["q", "terminal_id_fraud_share_last_3_tx"] == 0.0  # e, d (label not in yet), c
    assert f.loc["q", "terminal_id_fraud_share_last_5_tx"] == pytest.approx(1 / 4)  # b only
    assert f.loc["q", "terminal_id_days_since_known_fraud"] == pytest.approx(20.0)  # steps back to b
