"""The handbook's reference feature method (ch. 3): pandas group-by with time-based rolling windows.

Used only to compare speed (and, as an independent oracle, values) with ``frauddetect.features``. Written
from the handbook's description: per customer, rolling count and mean amount over 1/7/30 days; per
terminal, rolling counts and fraud sums over (delay + w) and delay days, subtracted, risk = frauds / count
(0 when no transaction). Input: the raw schema (``TX_DATETIME``, ``CUSTOMER_ID``, ``TERMINAL_ID``,
``TX_AMOUNT``, ``TX_FRAUD``, ``TRANSACTION_ID``); returns one row per transaction with the 15 features in
upper case, indexed by ``TRANSACTION_ID``.
"""

import numpy as np
import pandas as pd

WINDOWS = (1, 7, 30)
DELAY = 7


def _customer(group: pd.DataFrame) -> pd.DataFrame:
    g = group.sort_values("TX_DATETIME", kind="stable").set_index("TX_DATETIME")
    out = {}
    for w in WINDOWS:
        roll = g["TX_AMOUNT"].rolling(f"{w}D")
        n = roll.count()
        out[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = n.to_numpy()
        out[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = (roll.sum() / n).to_numpy()
    return pd.DataFrame(out, index=g["TRANSACTION_ID"].to_numpy())


def _terminal(group: pd.DataFrame) -> pd.DataFrame:
    g = group.sort_values("TX_DATETIME", kind="stable").set_index("TX_DATETIME")
    frauds_delay = g["TX_FRAUD"].rolling(f"{DELAY}D").sum()
    count_delay = g["TX_FRAUD"].rolling(f"{DELAY}D").count()
    out = {}
    for w in WINDOWS:
        frauds = g["TX_FRAUD"].rolling(f"{DELAY + w}D").sum() - frauds_delay
        count = g["TX_FRAUD"].rolling(f"{DELAY + w}D").count() - count_delay
        out[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = count.to_numpy()
        out[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = np.where(count > 0, frauds / count.where(count > 0, 1), 0.0)
    return pd.DataFrame(out, index=g["TRANSACTION_ID"].to_numpy())


def handbook_features(raw: pd.DataFrame) -> pd.DataFrame:
    """The 15 features by the handbook's method for every row of ``raw`` (see the module doc)."""
    tx = raw.copy()
    out = pd.DataFrame(index=tx["TRANSACTION_ID"].to_numpy())
    out["TX_AMOUNT"] = tx["TX_AMOUNT"].to_numpy()
    out["TX_DURING_WEEKEND"] = (tx["TX_DATETIME"].dt.weekday >= 5).astype(int).to_numpy()
    out["TX_DURING_NIGHT"] = (tx["TX_DATETIME"].dt.hour <= 6).astype(int).to_numpy()
    cust = pd.concat(_customer(g) for _, g in tx.groupby("CUSTOMER_ID", sort=False))
    term = pd.concat(_terminal(g) for _, g in tx.groupby("TERMINAL_ID", sort=False))
    return out.join(cust).join(term)
