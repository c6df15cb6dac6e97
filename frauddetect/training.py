"""Training workflow shared by the CLI, the demo and the SageMaker entry point (``training/``).

Windows follow the handbook's delayed-label protocol (ch. 5): labels of the last ``delay_days`` before the
point of deployment are not known yet, so the model is fitted on ``[end - delay - val - train, end -
delay - val)``, early-stopped and given its alert threshold on the next ``val_days``, and those
``val_days`` end ``delay_days`` before ``end`` (the first day it will score).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from frauddetect.features import FEATURE_COLUMNS, LABEL_DELAY_DAYS, offline_features
from frauddetect.model import ExportedModel, choose_threshold, export_model, train_model

log = logging.getLogger("frauddetect.training")


@dataclass
class TrainingResult:
    """The exported model and what it was measured on."""

    exported: ExportedModel
    threshold: float
    metrics: dict
    train_rows: int
    val_rows: int


def train_and_export(
    tx: pd.DataFrame,
    deploy_start: str | pd.Timestamp,
    model_dir: str,
    *,
    train_days: int = 14,
    val_days: int = 7,
    delay_days: int = LABEL_DELAY_DAYS,
    alerts_per_day: float = 100,
    seed: int = 0,
) -> TrainingResult:
    """Featurise ``tx`` (canonical frame with ``tx_fraud``), train, choose the threshold, export.

    ``deploy_start``: first day the model will score (UTC); only transactions before it are used.
    Raises ValueError when a window has no rows or no fraud.
    """
    start = pd.Timestamp(deploy_start, tz="UTC")
    val_end = start - pd.Timedelta(days=delay_days)
    val_start = val_end - pd.Timedelta(days=val_days)
    train_start = val_start - pd.Timedelta(days=train_days)
    history = tx[tx["tx_datetime"] < start]
    feats = offline_features(history)
    times = history["tx_datetime"]
    train = ((times >= train_start) & (times < val_start)).to_numpy()
    val = ((times >= val_start) & (times < val_end)).to_numpy()
    x = feats[list(FEATURE_COLUMNS)].to_numpy(np.float32)
    y = history["tx_fraud"].to_numpy()
    for name, mask in (("training", train), ("validation", val)):
        if mask.sum() == 0 or y[mask].sum() == 0:
            raise ValueError(f"{name} window has {mask.sum()} rows and {y[mask].sum()} frauds: need both")
    model = train_model(x[train], y[train], val_features=x[val], val_labels=y[val], seed=seed)
    val_scores = model.predict(x[val], batch_size=8192, verbose=0).reshape(-1)
    threshold = choose_threshold(val_scores, days=val_days, alerts_per_day=alerts_per_day)
    metrics = {
        "validation_auc": float(roc_auc_score(y[val], val_scores)),
        "validation_average_precision": float(average_precision_score(y[val], val_scores)),
    }
    exported = export_model(
        model,
        model_dir,
        metadata={
            "threshold": float(threshold),
            "alert_policy": {"alerts_per_day": alerts_per_day, "validation_days": val_days},
            "training_window": {"start": train_start.isoformat(), "end": val_start.isoformat()},
            "validation_window": {"start": val_start.isoformat(), "end": val_end.isoformat()},
            "label_delay_days": delay_days,
            "metrics": metrics,
            "seed": seed,
        },
    )
    log.info("trained on %s rows, validated on %s: %s, threshold %.4f", train.sum(), val.sum(), metrics, threshold)
    return TrainingResult(exported, float(threshold), metrics, int(train.sum()), int(val.sum()))
