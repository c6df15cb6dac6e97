"""``frauddetect features`` as a user runs it: CSV in the raw schema -> Parquet of the 19 model features."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from frauddetect.data import load_transactions
from frauddetect.features import FEATURE_COLUMNS, offline_features
from frauddetect.simulator import simulate_transactions

pytestmark = pytest.mark.functional


def test_features_command_writes_the_shared_feature_code_output(tmp_path):
    raw = simulate_transactions(n_customers=50, n_terminals=100, n_days=45, seed=3)
    src = tmp_path / "tx.csv"
    raw.to_csv(src, index=False)
    out = tmp_path / "features.parquet"
    proc = subprocess.run([sys.executable, "-m", "frauddetect", "features", "--input", str(src), "--output",
                           str(out), "--start", "2018-05-01"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = pd.read_parquet(out)
    assert list(got.columns) == ["transaction_id", *FEATURE_COLUMNS]
    tx = load_transactions(src)
    expected = offline_features(tx)[tx["tx_datetime"] >= pd.Timestamp("2018-05-01", tz="UTC")]
    assert len(got) == len(expected) > 0
    np.testing.assert_array_equal(got["transaction_id"].to_numpy(), expected["transaction_id"].to_numpy())
    np.testing.assert_allclose(got[list(FEATURE_COLUMNS)].to_numpy(), expected[list(FEATURE_COLUMNS)].to_numpy())
    # a customer's 30-day count can only grow with history: the first kept day still sees April's rows
    assert got["customer_id_nb_tx_30day_window"].max() > 1


def test_features_command_rejects_a_file_without_the_raw_schema(tmp_path):
    src = tmp_path / "bad.csv"
    pd.DataFrame({"a": [1]}).to_csv(src, index=False)
    proc = subprocess.run([sys.executable, "-m", "frauddetect", "features", "--input", str(src), "--output",
                           str(tmp_path / "o.parquet")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "missing column(s)" in proc.stderr
