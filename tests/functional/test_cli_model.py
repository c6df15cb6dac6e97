"""``frauddetect train`` and ``frauddetect evaluate`` as a user runs them, on the handbook data.

Small settings (1 network, few epochs, 1 fold) keep this tier fast: the tests check what the commands
write and that the protocol's test rows are the handbook's, not the model's best quality (the full
estimate is run by hand, README "Model").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frauddetect.data import load_transactions
from frauddetect.evaluation import train_test_split_delayed
from frauddetect.features import FEATURE_COLUMNS, offline_features
from frauddetect.model import ARCHIVE_FILE, SavedModelScorer, load_metadata

pytestmark = pytest.mark.functional

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDBOOK_TX = REPO_ROOT.parent / "shared" / "data" / "handbook" / "transactions.parquet"


@pytest.fixture(scope="module")
def handbook_input(tmp_path_factory) -> Path:
    """Raw handbook rows 2018-06-01..2018-08-07 (what a fold starting 07-11 and its features need)."""
    if not HANDBOOK_TX.exists():
        pytest.skip(f"handbook data not found at {HANDBOOK_TX}")
    raw = pd.read_parquet(HANDBOOK_TX)
    keep = (raw["TX_DATETIME"] >= "2018-06-01") & (raw["TX_DATETIME"] < "2018-08-08")
    path = tmp_path_factory.mktemp("input") / "tx.parquet"
    raw[keep].to_parquet(path, index=False)
    return path


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frauddetect", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def test_evaluate_scores_exactly_the_protocol_test_rows(handbook_input, tmp_path):
    out = tmp_path / "predictions.parquet"
    proc = _cli("evaluate", "--input", str(handbook_input), "--test-start", "2018-07-11", "--folds", "1",
                "--extra-history-days", "0", "--epochs", "3", "--predictions-out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    fold = report["per_fold"][0]
    assert fold["train_start"] == "2018-07-11" and fold["fold"] == 0
    for name, published in (("auc_roc", 0.879), ("average_precision", 0.687), ("card_precision@100", 0.305)):
        m = report["metrics"][name]
        assert m["published_best"] == published
        assert m["mean"] == pytest.approx(fold[name]) and m["std"] == 0.0
        assert m["beats"] == (round(m["mean"], 3) > published)
    # 3 epochs of one network still rank far above chance (measured AUC 0.87, AP 0.63 on this fold)
    assert fold["auc_roc"] > 0.8 and fold["average_precision"] > 0.5

    tx = load_transactions(handbook_input)
    frame = pd.concat([tx, offline_features(tx).drop(columns=["transaction_id", "tx_amount"])], axis=1)
    _, test = train_test_split_delayed(frame, "2018-07-11", 7, 7, 7)
    predictions = pd.read_parquet(out)
    assert list(predictions.columns) == ["transaction_id", "fold", "score"]
    assert fold["test_rows"] == len(predictions) == len(test)
    assert sorted(predictions["transaction_id"]) == sorted(test["transaction_id"])
    assert predictions["score"].between(0, 1).all() and (predictions["fold"] == 0).all()


def test_train_exports_a_model_that_scores_raw_features(handbook_input, tmp_path):
    model_dir = tmp_path / "model"
    proc = _cli("train", "--input", str(handbook_input), "--train-start", "2018-07-11", "--model-dir",
                str(model_dir), "--extra-history-days", "0", "7", "--epochs", "2", "--alerts-per-day", "50", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = load_metadata(model_dir)
    assert meta["version"] == result["version"]
    assert (model_dir / str(meta["version"]) / "saved_model.pb").is_file()
    assert (model_dir / ARCHIVE_FILE).is_file()
    assert meta["feature_columns"] == list(FEATURE_COLUMNS)
    assert meta["training_window"] == {"start": "2018-07-11T00:00:00+00:00", "end": "2018-07-18T00:00:00+00:00"}
    assert meta["validation_window"]["end"] == meta["deploy_start"] == "2018-07-25T00:00:00+00:00"
    assert meta["model"]["extra_history_days"] == [0, 7] and meta["model"]["epochs"] == 2
    # member 1 also learned from the 7 days before the training window: 07-04..07-17
    members = meta["preprocessing"]["members"]
    assert [m["train_start"][:10] for m in members] == ["2018-07-11", "2018-07-04"]
    assert members[1]["rows"] > 1.9 * members[0]["rows"] > 0
    inputs = meta["preprocessing"]["inputs"]
    assert len(inputs) == len(FEATURE_COLUMNS) + 1 and inputs[-1] == "tx_amount"
    assert all(len(m["mean"]) == len(m["variance"]) == len(inputs) for m in members)
    # the raw amount's standardisation mean is the training rows' mean amount (currency units, ~50)
    assert 30 < members[0]["mean"][-1] < 80
    assert meta["libraries"]["tensorflow"] and meta["threshold"] == result["threshold"]

    # The threshold spends the budget on the 7 label-delay days: 50 a day -> 350 alerts there.
    tx = load_transactions(handbook_input)
    feats = offline_features(tx)
    week = (tx["tx_datetime"] >= pd.Timestamp("2018-07-18", tz="UTC")) & (
        tx["tx_datetime"] < pd.Timestamp("2018-07-25", tz="UTC"))
    scores = SavedModelScorer(model_dir).score(feats.loc[week, list(FEATURE_COLUMNS)].to_numpy(np.float32))
    assert int((scores >= meta["threshold"]).sum()) == 350
    assert result["validation_auc"] > 0.8


def test_train_refuses_a_window_outside_the_input(handbook_input, tmp_path):
    proc = _cli("train", "--input", str(handbook_input), "--train-start", "2018-09-01", "--model-dir",
                str(tmp_path / "m"), "--extra-history-days", "0", "--epochs", "1")
    assert proc.returncode == 2
    assert "training window 2018-09-01..2018-09-07 has 0 rows" in proc.stderr
