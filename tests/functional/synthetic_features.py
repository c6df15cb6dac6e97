"""Synthetic raw feature rows for model tests that need a real model but not a good one."""

from __future__ import annotations

import numpy as np

from frauddetect.features import FEATURE_COLUMNS


def synthetic_features(n: int, seed: int = 0):
    """(n, 15) float32 raw features in :data:`~frauddetect.features.FEATURE_COLUMNS` order, in the
    handbook's ranges (amounts ~45, counts by window length, risks mostly near 0), and (n,) 0/1 labels
    that depend on the amount and the terminal risk (~10 % positives)."""
    rng = np.random.default_rng(seed)
    columns = []
    for name in FEATURE_COLUMNS:
        days = next((d for d in (1, 7, 30) if f"_{d}day_" in name), 1)
        if "amount" in name:
            columns.append(rng.lognormal(3.8, 0.8, n))
        elif name.startswith("tx_during"):
            columns.append(rng.integers(0, 2, n).astype(float))
        elif "nb_tx" in name:
            columns.append(rng.poisson(3 * days, n).astype(float))
        else:  # terminal risk: share of known frauds in the window
            columns.append(rng.beta(0.3, 15, n))
    x = np.column_stack(columns).astype(np.float32)
    risk = x[:, FEATURE_COLUMNS.index("terminal_id_risk_7day_window")]
    y = ((x[:, 0] > 200) | (risk > 0.08) | (rng.random(n) < 0.01)).astype(np.int64)
    return x, y
