"""The alert policy (``frauddetect.model.choose_threshold``) on hand-made score windows.

Policy: a daily budget of alerts; the threshold is where the validation window would have raised
floor(alerts_per_day * days) alerts (alert = score >= threshold), never more when scores tie.
"""

import numpy as np
import pytest

from frauddetect.model import choose_threshold

pytestmark = pytest.mark.unit

SCORES = np.array([0.10, 0.95, 0.30, 0.80, 0.05, 0.60, 0.99, 0.20, 0.70, 0.40], dtype=np.float32)


def alerts(scores, threshold):
    return int((np.asarray(scores) >= threshold).sum())


def test_threshold_is_the_kth_highest_score_for_the_whole_window_budget():
    # 2 days at 2 alerts/day = 4 alerts: 0.99, 0.95, 0.80, 0.70
    threshold = choose_threshold(SCORES, days=2, alerts_per_day=2)
    assert threshold == pytest.approx(0.70)
    assert threshold == float(np.float32(0.70))  # exactly a score, in the scores' precision
    assert alerts(SCORES, threshold) == 4


def test_budget_is_an_average_per_day_and_a_fractional_budget_rounds_down():
    # 1.5 days at 3/day = 4.5 -> 4 alerts (the budget is a ceiling)
    threshold = choose_threshold(SCORES, days=1.5, alerts_per_day=3)
    assert alerts(SCORES, threshold) == 4
    assert choose_threshold(SCORES, days=1, alerts_per_day=1) == float(np.float32(0.99))


def test_threshold_does_not_depend_on_row_order():
    shuffled = np.random.default_rng(0).permutation(SCORES)
    expected = choose_threshold(SCORES, days=1, alerts_per_day=3)
    assert choose_threshold(shuffled, days=1, alerts_per_day=3) == expected


def test_tie_across_the_budget_boundary_moves_the_threshold_up_never_over_budget():
    scores = np.array([0.9, 0.7, 0.7, 0.7, 0.1], dtype=np.float32)
    # budget 2: the 2nd and 3rd highest tie at 0.7; alerting 0.7 would give 4 alerts, so only 0.9 alerts
    threshold = choose_threshold(scores, days=1, alerts_per_day=2)
    assert threshold == float(np.float32(0.9))
    assert alerts(scores, threshold) == 1
    # a tie that ends exactly at the budget is fine: budget 4 takes 0.9 and all three 0.7s
    assert choose_threshold(scores, days=1, alerts_per_day=4) == float(np.float32(0.7))
    assert alerts(scores, float(np.float32(0.7))) == 4


def test_tie_at_the_top_gives_a_threshold_just_above_the_highest_score():
    scores = np.array([0.5, 0.5, 0.5, 0.1], dtype=np.float32)
    threshold = choose_threshold(scores, days=1, alerts_per_day=2)
    assert threshold == float(np.nextafter(np.float32(0.5), np.float32(1)))
    assert threshold > 0.5
    assert alerts(scores, threshold) == 0


def test_float64_scores_keep_their_precision():
    scores = np.array([0.3, 0.2 + 1e-12, 0.2, 0.1])
    assert choose_threshold(scores, days=1, alerts_per_day=2) == 0.2 + 1e-12


@pytest.mark.parametrize(
    ("n_scores", "days", "per_day"),
    [(10, 1, 10), (10, 2, 5), (3, 7, 100)],
)
def test_window_with_no_more_transactions_than_the_budget_is_refused(n_scores, days, per_day):
    with pytest.raises(ValueError, match="too small"):
        choose_threshold(np.linspace(0, 1, n_scores), days=days, alerts_per_day=per_day)


@pytest.mark.parametrize(
    ("scores", "days", "per_day", "message"),
    [
        (SCORES, 0, 100, "must be positive"),
        (SCORES, 1, -1, "must be positive"),
        (SCORES, 1, 0.5, "less than one alert"),
        (np.array([0.1, np.nan, 0.3]), 1, 1, "NaN"),
        (np.array([[0.1, 0.2], [0.3, 0.4]]), 1, 1, "1-D"),
        (np.array([1, 0, 1]), 1, 1, "1-D float"),
    ],
)
def test_invalid_inputs_raise_clear_errors(scores, days, per_day, message):
    with pytest.raises(ValueError, match=message):
        choose_threshold(scores, days=days, alerts_per_day=per_day)
