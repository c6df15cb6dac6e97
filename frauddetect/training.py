"""Training and evaluation workflows shared by the CLI (``frauddetect train`` / ``evaluate``), the demo and
the SageMaker entry point (``training/train.py``).

Windows follow the handbook's delayed-label protocol (ch. 3 and 5), for a model trained on
``[train_start, train_start + train_days)``:

- the next ``delay_days`` (7) are the label-delay window: their transactions exist when the model is
  trained, their labels mostly do not (frauds are confirmed about a week later). The alert threshold is
  chosen on the model's scores of these transactions -- the most recent traffic, which is what the daily
  alert budget will be spent on -- and needs no labels (:func:`frauddetect.model.choose_threshold`);
- the model goes live at ``deploy_start = train_start + train_days + delay_days``, which is the handbook's
  first test day for the same training start.

Features always come from :func:`frauddetect.features.offline_features`, the same code the stream uses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from frauddetect.evaluation import (
    model_selection_starts,
    performance_metrics,
    prequential_fold_starts,
    train_test_split_delayed,
)
from frauddetect.features import FEATURE_COLUMNS, LABEL_DELAY_DAYS, offline_features
from frauddetect.model import (
    MODEL_INPUTS,
    ExportedModel,
    ModelConfig,
    choose_threshold,
    export_model,
    standardization_stats,
    train_ensemble,
)

log = logging.getLogger("frauddetect.training")

DAY = pd.Timedelta(days=1)
METRICS = ("auc_roc", "average_precision", "card_precision@100")

# The handbook's published test performance (../shared/data/handbook/README.md): the best value of each
# metric over its table, and the row it comes from. ``frauddetect evaluate`` reports the margin to these.
PUBLISHED_BEST = {
    "auc_roc": (0.879, "Balanced bagging"),
    "average_precision": (0.687, "XGBoost"),
    "card_precision@100": (0.305, "Balanced bagging"),
}


def _utc_day(value) -> pd.Timestamp:
    """A date/timestamp as UTC midnight (naive values are UTC); raises ValueError if unparseable."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.floor("D"):
        raise ValueError(f"{value!r}: expected a date (UTC midnight)")
    return ts


@dataclass(frozen=True)
class TrainingWindows:
    """The time windows of one training run (UTC, half-open)."""

    train_start: pd.Timestamp
    train_end: pd.Timestamp  # = start of the label-delay window, on which the threshold is chosen
    deploy_start: pd.Timestamp  # = end of the label-delay window, first day the model scores

    @classmethod
    def from_dates(
        cls,
        *,
        train_start=None,
        deploy_start=None,
        train_days: int = 7,
        delay_days: int = LABEL_DELAY_DAYS,
    ) -> "TrainingWindows":
        """Windows from exactly one of ``train_start`` / ``deploy_start`` (dates, UTC).

        Raises ValueError when both or neither are given or a number of days is not positive.
        """
        if (train_start is None) == (deploy_start is None):
            raise ValueError("give exactly one of train_start and deploy_start")
        if train_days < 1 or delay_days < 1:
            raise ValueError(f"train_days ({train_days}) and delay_days ({delay_days}) must be >= 1")
        if train_start is not None:
            start = _utc_day(train_start)
        else:
            start = _utc_day(deploy_start) - (train_days + delay_days) * DAY
        return cls(start, start + train_days * DAY, start + (train_days + delay_days) * DAY)


@dataclass
class TrainingResult:
    """The exported model and what it was measured on."""

    exported: ExportedModel
    threshold: float
    metrics: dict
    train_rows: int
    val_rows: int
    train_seconds: float


def _rows_in(times: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    return ((times >= start) & (times < end)).to_numpy()


def member_training_sets(
    features: pd.DataFrame,
    labels: pd.Series,
    times: pd.Series,
    train_start: pd.Timestamp,
    train_end: pd.Timestamp,
    config: ModelConfig,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each ensemble member's training rows: time in [train_start - extra_history_days[i], train_end).

    ``features`` (n, >= 19 columns incl. :data:`FEATURE_COLUMNS`), ``labels`` (n,) 0/1 and ``times`` (n,)
    UTC share one index. Returns [(float32 (n_i, 19), int (n_i,))] in member order. Logs a warning when a
    member's look-back starts before the first transaction given (it then learns from fewer days).
    Raises ValueError when a member's rows hold no fraud (nothing to learn from).
    """
    x = features[list(FEATURE_COLUMNS)].to_numpy(np.float32)
    y = labels.to_numpy()
    first = times.min() if len(times) else None
    out = []
    for i, extra in enumerate(config.extra_history_days):
        start = train_start - extra * DAY
        if first is not None and start < first.floor("D"):
            log.warning("member %d: look-back from %s, but the data starts %s", i, start.date(), first)
        rows = _rows_in(times, start, train_end)
        if rows.sum() == 0 or y[rows].sum() == 0:
            raise ValueError(
                f"training window {start.date()}..{(train_end - DAY).date()} has {rows.sum()} rows and "
                f"{y[rows].sum()} frauds: need both"
            )
        out.append((x[rows], y[rows]))
    return out


def train_and_export(
    tx: pd.DataFrame,
    model_dir: str,
    *,
    train_start=None,
    deploy_start=None,
    train_days: int = 7,
    delay_days: int = LABEL_DELAY_DAYS,
    alerts_per_day: float = 100,
    seed: int = 0,
    config: ModelConfig | None = None,
) -> TrainingResult:
    """Featurise ``tx``, train the ensemble on the training window, choose the threshold, export.

    ``tx``: canonical transactions (:func:`frauddetect.data.load_transactions`) with ``tx_fraud``, covering
    at least the training and label-delay windows (plus up to 37 days before them for the features'
    windows; less history gives smaller counts, as in a cold start). Windows: see the module docstring
    and :class:`TrainingWindows` (give ``train_start`` or ``deploy_start``). Only transactions before the
    deployment start are read. The threshold spends ``alerts_per_day`` alerts a day on the label-delay
    window's scores. Metrics in the result and the metadata: AUC ROC and AP on that window where its
    labels are in ``tx`` (offline data; a live system only learns them later), else None.
    Raises ValueError when the training window has no rows or no fraud, or the delay window is too small
    for the alert budget.
    """
    windows = TrainingWindows.from_dates(
        train_start=train_start, deploy_start=deploy_start, train_days=train_days, delay_days=delay_days
    )
    history = tx[tx["tx_datetime"] < windows.deploy_start]
    feats = offline_features(history)
    times = history["tx_datetime"]
    train = _rows_in(times, windows.train_start, windows.train_end)
    val = _rows_in(times, windows.train_end, windows.deploy_start)
    x = feats[list(FEATURE_COLUMNS)].to_numpy(np.float32)
    y = history["tx_fraud"].to_numpy()
    if train.sum() == 0 or y[train].sum() == 0:
        raise ValueError(
            f"training window {windows.train_start.date()}..{(windows.train_end - DAY).date()} has "
            f"{train.sum()} rows and {y[train].sum()} frauds: need both"
        )
    config = config or ModelConfig()
    member_data = member_training_sets(feats, history["tx_fraud"], times, windows.train_start, windows.train_end,
                                       config)
    began = time.perf_counter()
    model = train_ensemble(member_data, config=config, seed=seed)
    train_seconds = time.perf_counter() - began
    val_scores = model.predict(x[val], batch_size=65536, verbose=0).reshape(-1)
    threshold = choose_threshold(val_scores, days=delay_days, alerts_per_day=alerts_per_day)
    labelled = val.sum() > 0 and 0 < y[val].sum() < val.sum()
    metrics = {
        "validation_auc": float(roc_auc_score(y[val], val_scores)) if labelled else None,
        "validation_average_precision": float(average_precision_score(y[val], val_scores)) if labelled else None,
    }
    exported = export_model(
        model,
        model_dir,
        metadata={
            "threshold": float(threshold),
            "alert_policy": {"alerts_per_day": alerts_per_day, "window": "label-delay window", "days": delay_days},
            "training_window": {"start": windows.train_start, "end": windows.train_end},
            "validation_window": {"start": windows.train_end, "end": windows.deploy_start},
            "deploy_start": windows.deploy_start,
            "label_delay_days": delay_days,
            "preprocessing": {
                "inputs": list(MODEL_INPUTS),
                "note": "in the graph: each network standardises these with its own training rows' statistics",
                "members": [
                    {
                        "train_start": windows.train_start - extra * DAY,
                        "train_end": windows.train_end,
                        "rows": len(member_data[i][1]),
                        "frauds": int(member_data[i][1].sum()),
                        **stats,
                    }
                    for i, (extra, stats) in enumerate(
                        zip(config.extra_history_days, standardization_stats(model), strict=True)
                    )
                ],
            },
            "model": {**asdict(config), "members": config.members, "architecture": "mean of feed-forward networks"},
            "metrics": metrics,
            "seed": seed,
            "train_rows": int(train.sum()),
            "train_frauds": int(y[train].sum()),
            "train_seconds": round(train_seconds, 1),
        },
    )
    log.info(
        "trained on %s rows in %.0f s, threshold on %s rows: %s, threshold %.4f",
        train.sum(), train_seconds, val.sum(), metrics, threshold,
    )
    return TrainingResult(exported, float(threshold), metrics, int(train.sum()), int(val.sum()), train_seconds)


@dataclass
class PrequentialEstimate:
    """Result of :func:`prequential_estimate`."""

    folds: pd.DataFrame
    """One row per fold (newest first): ``fold`` (0 = newest), ``train_start``, ``test_rows``,
    ``train_seconds`` and the three metrics."""
    predictions: pd.DataFrame
    """``transaction_id``, ``fold``, ``score`` for every test row of every fold."""

    def summary(self) -> dict:
        """``{metric: {"mean", "std", "published_best", "published_model", "beats"}}``; std is the
        population std over folds, as the handbook prints it."""
        out = {}
        for m in METRICS:
            best, model = PUBLISHED_BEST[m]
            mean = float(self.folds[m].mean())
            out[m] = {
                "mean": mean,
                "std": float(self.folds[m].std(ddof=0)),
                "published_best": best,
                "published_model": model,
                "beats": bool(round(mean, 3) > best),
            }
        return out


def prequential_estimate(
    tx: pd.DataFrame,
    test_start,
    *,
    n_folds: int = 4,
    train_days: int = 7,
    delay_days: int = LABEL_DELAY_DAYS,
    seed: int = 0,
    config: ModelConfig | None = None,
    on_fold=None,
) -> PrequentialEstimate:
    """The handbook's prequential test estimate of the production model (ch. 5, "Validation strategies").

    ``tx``: canonical transactions with ``tx_fraud`` covering the folds and the 37 days before the oldest
    one. ``test_start``: the training start of the newest fold (the handbook's
    ``start_date_training_for_test``, 2018-08-15 for its published table); fold f trains on the
    ``train_days`` from ``test_start - 7 f`` days and is tested on the 7 days after the ``delay_days``
    label delay, with known compromised cards removed
    (:func:`frauddetect.evaluation.train_test_split_delayed`): the test rows are exactly the handbook's.
    Members with ``config.extra_history_days`` also learn from labelled days before the fold's training
    week (known at that point too; nothing after the training week is used), so ``tx`` must reach back
    that much further. ``on_fold(row dict)`` is called after each fold (progress). Raises ValueError on a
    fold without training rows or frauds.
    """
    config = config or ModelConfig()
    feats = offline_features(tx).drop(columns=["transaction_id", "tx_amount"])
    frame = pd.concat([tx, feats], axis=1)
    rows, predictions = [], []
    for fold, start in enumerate(prequential_fold_starts(test_start, n_folds)):
        _, test = train_test_split_delayed(frame, start, train_days, delay_days, 7)
        member_data = member_training_sets(frame, frame["tx_fraud"], frame["tx_datetime"], start,
                                           start + train_days * DAY, config)
        began = time.perf_counter()
        model = train_ensemble(member_data, config=config, seed=seed)
        seconds = time.perf_counter() - began
        scores = model.predict(test[list(FEATURE_COLUMNS)].to_numpy(np.float32), batch_size=65536, verbose=0)
        scored = test.assign(score=scores.reshape(-1).astype(np.float64))
        row = {"fold": fold, "train_start": start.date().isoformat(), "test_rows": len(test),
               "train_seconds": round(seconds, 1), **performance_metrics(scored)}
        rows.append(row)
        predictions.append(scored[["transaction_id"]].assign(fold=fold, score=scored["score"]))
        if on_fold is not None:
            on_fold(row)
    return PrequentialEstimate(pd.DataFrame(rows), pd.concat(predictions, ignore_index=True))


def handbook_selection_start(test_start) -> pd.Timestamp:
    """The validation (model-selection) start that goes with a test start (handbook ch. 5): 35 days
    earlier; 2018-08-15 -> 2018-07-11. See :func:`frauddetect.evaluation.model_selection_starts`."""
    valid, test = model_selection_starts()
    return _utc_day(test_start) - (test - valid)
