"""The Fraud Detection Handbook's evaluation protocol: delayed train/test splits, prequential folds, metrics.

Source: Le Borgne, Siblini, Lebichot, Bontempi, "Reproducible Machine Learning for Credit Card Fraud
Detection - Practical Handbook": ch. 3 "Baseline fraud detection system" and ch. 5 "Validation
strategies" (``get_train_test_set``, ``prequentialSplit``), ch. 4 "Precision top-k metrics"
(``card_precision_top_k_day``, ``card_precision_top_k``) and ch. 5 "Model selection"
(``prequential_grid_search``, ``model_selection_wrapper``); the functions follow the handbook's published
``shared_functions.py`` line by line where its code is more precise than its prose. Summary in
``../shared/data/handbook/README.md``.

Input frames use the project's canonical lower-case columns (``frauddetect.data``): ``customer_id``,
``tx_datetime`` (UTC; naive is read as UTC), ``tx_fraud`` (0/1) and, for metrics, a ``score`` column.
A "day" is a UTC calendar day, which is what the handbook's ``TX_TIME_DAYS`` (days since 2018-04-01
00:00) counts.

Semantics that are easy to get wrong (all checked against the published code and numbers):

- Known compromised cards in a test set: on test day i (0-based, calendar day start + train + delay + i)
  the cards removed are those with a fraud in the training period or on calendar days
  start + train .. start + train + i - 1, i.e. up to test day - delay - 1. The frauds of test day - delay
  itself are NOT yet known (the handbook's ``TX_TIME_DAYS == start + delta_train + day - 1``).
- Card Precision@k removes, from later days, only the cards that were both in a day's top k AND frauds
  ("detected"), not every card of the top k, and divides by k even when a day has fewer than k cards.
- Ties in Card Precision@k: cards with equal scores are ranked the way the handbook's pandas code ranks
  them (cards in ascending id order, then ``sort_values(ascending=False)`` with pandas' default,
  non-stable quicksort). This matters for models with few distinct scores: the published depth-2
  decision tree's CP@100 (0.241) comes out of that order; a stable tie-break by id gives 0.240 and random
  tie orders give 0.240 +/- 0.0025. Numeric ids held as strings (the canonical frame) are ordered as
  numbers, like the handbook's integer ids.
- Prequential folds go BACKWARDS in time from the start date: fold f starts at start - f x 7 days. The
  handbook's published "test performance" uses start 2018-08-15 (folds 08-15, 08-08, 08-01, 07-25) and
  selects models on "validation" folds from 2018-07-11 (07-11, 07-04, 06-27, 06-20): each validation fold
  is its test fold moved back 35 days, and the newest validation fold's test week is the oldest test
  fold's training week. See :func:`model_selection_starts`.
- Logistic regression baselines: scikit-learn >= 1.4 (PR #26721) minimises the mean log-loss where the
  handbook's version minimised the sum, so its default stopping rule (tol=1e-4 on the gradient) is
  ``tol=1e-4 / n_train`` today; with today's default the published rows come out 0.001 lower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

DAY = pd.Timedelta(days=1)


class CardPrecisionAtK(NamedTuple):
    """Card Precision@k: the mean over days and the per-day values (in day order)."""

    mean: float
    per_day: list[float]


def _utc(times: pd.Series) -> pd.Series:
    """Datetimes as tz-aware UTC (naive read as UTC)."""
    times = pd.Series(times)
    return times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")


def _timestamp_utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def day_index(times: pd.Series) -> np.ndarray:
    """UTC calendar day of each time as int64 days since 1970-01-01, shape (n,)."""
    return (_utc(times).dt.as_unit("us").astype("int64").to_numpy() // (86_400 * 1_000_000)).astype(np.int64)


def _card_order_key(ids: pd.Series) -> pd.Series:
    """Card ids as the handbook orders them: numbers as numbers (its ids are ints), anything else as is."""
    if pd.api.types.is_numeric_dtype(ids):
        return ids
    as_number = pd.to_numeric(ids, errors="coerce")
    if as_number.notna().all() and (as_number % 1 == 0).all():
        as_int = as_number.astype("int64")
        # only when the mapping is one-to-one ("7" and "007" must not merge)
        if (as_int.astype(str) == ids.astype(str)).all():
            return as_int
    return ids


def card_precision_top_k(
    predictions_df: pd.DataFrame,
    k: int = 100,
    *,
    score_col: str = "score",
    day_col: str | None = None,
    remove_detected: bool = True,
) -> CardPrecisionAtK:
    """Card Precision@k (handbook ch. 4 "Precision top-k metrics", ``card_precision_top_k``).

    For each day, in day order: drop the transactions of cards already detected on an earlier day; reduce
    to one row per card with its max score and max label; take the k highest-scoring cards; CP@k of the
    day = (number of those k cards that are frauds) / k; the cards that were in the top k AND frauds are
    "detected" and removed from later days (when ``remove_detected``). Returns the mean over days and the
    per-day values.

    ``predictions_df``: one row per transaction with ``customer_id``, ``tx_fraud`` (0/1), ``score_col``
    (higher = more suspicious) and either ``tx_datetime`` (UTC calendar days) or ``day_col`` (any
    sortable day label, e.g. the handbook's ``TX_TIME_DAYS``). Ties in score are ranked as the handbook's
    pandas code ranks them (see the module docstring). Raises ValueError for an empty frame or k < 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(predictions_df) == 0:
        raise ValueError("card_precision_top_k needs at least one prediction")
    frame = pd.DataFrame(
        {
            "card": _card_order_key(predictions_df["customer_id"]).to_numpy(),
            "score": predictions_df[score_col].to_numpy(dtype=np.float64),
            "fraud": predictions_df["tx_fraud"].to_numpy(dtype=np.int64),
            "day": (
                predictions_df[day_col].to_numpy()
                if day_col is not None
                else day_index(predictions_df["tx_datetime"])
            ),
        }
    )
    detected: set = set()
    per_day: list[float] = []
    for _, day_rows in frame.groupby("day", sort=True):
        if detected:
            day_rows = day_rows[~day_rows["card"].isin(detected)]
        # groupby sorts cards by id; sort_values' default (quicksort) then decides ties, as in the handbook
        cards = day_rows.groupby("card")[["score", "fraud"]].max().sort_values(by="score", ascending=False)
        top = cards.head(k)
        hits = top.index[top["fraud"].to_numpy() == 1]
        per_day.append(len(hits) / k)
        if remove_detected:
            detected.update(hits)
    return CardPrecisionAtK(float(np.mean(per_day)), per_day)


def performance_metrics(
    predictions_df: pd.DataFrame,
    top_k_list: Iterable[int] = (100,),
    *,
    score_col: str = "score",
    day_col: str | None = None,
) -> dict[str, float]:
    """AUC ROC, average precision and Card Precision@k of scored transactions (handbook
    ``performance_assessment``, unrounded).

    ``predictions_df``: as for :func:`card_precision_top_k`. AUC ROC and AP are transaction-level, from
    ``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` (the handbook's own calls). Returns
    ``{"auc_roc": ..., "average_precision": ..., "card_precision@100": ...}`` (one CP key per k).
    Raises ValueError when the labels hold a single class (AUC undefined).
    """
    y = predictions_df["tx_fraud"].to_numpy()
    s = predictions_df[score_col].to_numpy(dtype=np.float64)
    out = {"auc_roc": float(roc_auc_score(y, s)), "average_precision": float(average_precision_score(y, s))}
    for k in top_k_list:
        out[f"card_precision@{k}"] = card_precision_top_k(
            predictions_df, k, score_col=score_col, day_col=day_col
        ).mean
    return out


def train_test_split_delayed(
    tx_with_features: pd.DataFrame,
    start_train,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    *,
    sampling_ratio: float = 1.0,
    random_state: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The handbook's train/test split with a label delay (``get_train_test_set``, ch. 3 and 5).

    Training set: transactions with ``tx_datetime`` in [start_train, start_train + train_days).
    Test set: for each i in 0 .. test_days - 1, the transactions of calendar day
    D_i = D0 + train_days + delay_days + i (D0 = the UTC day of the earliest training transaction), minus
    those of cards known to be compromised by then: cards with a fraud in the training set or on days
    D0 + train_days .. D0 + train_days + i - 1 (up to D_i - delay_days - 1; the delay days' frauds become
    known one day at a time). With ``sampling_ratio`` < 1 the training set keeps that fraction of its
    frauds and of its genuine transactions (pandas ``sample`` with ``random_state``, as in the handbook),
    after the known cards were taken from the full training set.

    ``tx_with_features``: canonical transactions (``tx_datetime``, ``customer_id``, ``tx_fraud``) plus
    any feature columns, any row order. ``start_train``: date/timestamp (UTC when naive). Returns
    ``(train, test)``: row subsets of the input (index kept; the index labels identify rows), each in time
    order (stable). Raises ValueError when the training period holds no transactions.
    """
    times = _utc(tx_with_features["tx_datetime"])
    start = _timestamp_utc(start_train)
    in_train = ((times >= start) & (times < start + train_days * DAY)).to_numpy()
    if not in_train.any():
        raise ValueError(f"no transactions in the training period starting {start}")
    days = day_index(times)
    first_day = int(days[in_train].min())
    fraud = tx_with_features["tx_fraud"].to_numpy() == 1
    cards, _ = pd.factorize(tx_with_features["customer_id"])

    known = np.zeros(cards.max() + 1, dtype=bool)
    known[cards[in_train & fraud]] = True
    test_mask = np.zeros(len(tx_with_features), dtype=bool)
    for i in range(test_days):
        known[cards[(days == first_day + train_days + i - 1) & fraud]] = True
        on_day = np.flatnonzero(days == first_day + train_days + delay_days + i)
        test_mask[on_day] = ~known[cards[on_day]]

    train = tx_with_features[in_train]
    if sampling_ratio < 1:
        train = pd.concat(
            [
                train[train["tx_fraud"] == 1].sample(frac=sampling_ratio, random_state=random_state),
                train[train["tx_fraud"] == 0].sample(frac=sampling_ratio, random_state=random_state),
            ]
        )
    return _in_time_order(train), _in_time_order(tx_with_features[test_mask])


def _in_time_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by time, ties kept in input order (the handbook sorts by its time-ordered ids)."""
    return frame.iloc[np.argsort(_utc(frame["tx_datetime"]).to_numpy(), kind="stable")]


def prequential_fold_starts(start_train, n_folds: int = 4, assessment_days: int = 7) -> list[pd.Timestamp]:
    """Training start of each prequential fold (handbook ``prequentialSplit``): fold f starts at
    ``start_train - f * assessment_days`` days, f = 0 .. n_folds - 1 (newest first). UTC timestamps."""
    start = _timestamp_utc(start_train)
    return [start - f * assessment_days * DAY for f in range(n_folds)]


def model_selection_starts(
    reference_start="2018-07-25", n_folds: int = 4, delay_days: int = 7, assessment_days: int = 7
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(validation start, test start) of the handbook's model selection (ch. 5 "Model selection").

    ``start_date_training_for_valid = reference - (delay + assessment)`` and
    ``start_date_training_for_test = reference + (n_folds - 1) x assessment`` days: with the handbook's
    reference 2018-07-25 that is (2018-07-11, 2018-08-15). Feed each to :func:`prequential_splits`: the
    published "test performance" is the mean over the test start's folds (08-15, 08-08, 08-01, 07-25),
    model selection uses the validation start's folds (07-11, 07-04, 06-27, 06-20).
    """
    ref = _timestamp_utc(reference_start)
    return ref - (delay_days + assessment_days) * DAY, ref + (n_folds - 1) * assessment_days * DAY


def prequential_splits(
    tx_with_features: pd.DataFrame,
    start_train,
    n_folds: int = 4,
    train_days: int = 7,
    delay_days: int = 7,
    assessment_days: int = 7,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Prequential folds (handbook ``prequentialSplit``): for fold f = 0 .. n_folds - 1, the
    :func:`train_test_split_delayed` split starting at ``start_train - f * assessment_days`` days.

    Returns ``[(train_positions, test_positions), ...]`` newest fold first, as int64 arrays of POSITIONS
    in ``tx_with_features`` (row numbers, not index labels), so the list can be passed as ``cv=`` to
    scikit-learn's ``GridSearchCV`` with ``X = tx_with_features[features]``, exactly as the handbook does.
    """
    positions = pd.Series(np.arange(len(tx_with_features)), index=tx_with_features.index)
    if not positions.index.is_unique:
        raise ValueError("tx_with_features needs a unique index")
    folds = []
    for start in prequential_fold_starts(start_train, n_folds, assessment_days):
        train, test = train_test_split_delayed(tx_with_features, start, train_days, delay_days, assessment_days)
        folds.append((positions.loc[train.index].to_numpy(), positions.loc[test.index].to_numpy()))
    return folds


def prequential_performance(
    tx_with_features: pd.DataFrame,
    fit_predict: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray],
    start_train,
    n_folds: int = 4,
    train_days: int = 7,
    delay_days: int = 7,
    assessment_days: int = 7,
    top_k_list: Iterable[int] = (100,),
) -> pd.DataFrame:
    """Per-fold metrics of a model over prequential folds; the handbook's figure is their mean (and std).

    ``fit_predict(train, test)`` trains on the training frame and returns the test rows' scores, shape
    (len(test),); scaling belongs inside it (the handbook fits a ``StandardScaler`` on each fold's
    training set). Returns one row per fold (index = fold training start, newest first) with the columns
    of :func:`performance_metrics`; ``result.mean()`` and ``result.std(ddof=0)`` give the handbook's
    "mean +/- std" (scikit-learn's ``cv_results_`` std is the population std).
    """
    rows = {}
    for start in prequential_fold_starts(start_train, n_folds, assessment_days):
        train, test = train_test_split_delayed(tx_with_features, start, train_days, delay_days, assessment_days)
        scored = test.assign(score=np.asarray(fit_predict(train, test), dtype=np.float64))
        rows[start] = performance_metrics(scored, top_k_list)
    return pd.DataFrame.from_dict(rows, orient="index")
