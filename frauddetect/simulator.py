"""The Fraud Detection Handbook's transaction data simulator, vectorised and seedable.

Source: Le Borgne, Siblini, Lebichot, Bontempi, "Reproducible Machine Learning for Credit Card Fraud
Detection - Practical Handbook", ch. 3 "Transaction data simulator" (``generate_customer_profiles_table``,
``generate_terminal_profiles_table``, ``get_list_terminals_within_radius``,
``generate_transactions_table``, ``add_frauds``). The published data set
(``../shared/data/handbook/transactions.parquet``, which runs from 2018-04-01 to 2018-09-04) was made
with 5,000 customers, 10,000 terminals and r = 5.

The model, as published:

- customer profile: location (x, y) ~ U(0, 100)^2, ``mean_amount`` ~ U(5, 100), ``std_amount`` =
  mean_amount / 2, ``mean_nb_tx_per_day`` ~ U(0, 4);
- terminal profile: location (x, y) ~ U(0, 100)^2;
- a customer's available terminals: those at Euclidean distance < r (strict) from the customer;
- each day, a customer makes Poisson(mean_nb_tx_per_day) transaction attempts. An attempt's second of day
  is ``int(N(43200, 20000))`` (truncated towards zero) and the attempt is DISCARDED unless
  0 < second < 86400 (not redrawn), so a day holds fewer transactions than the Poisson count; its amount
  ~ N(mean_amount, std_amount), redrawn from U(0, 2 mean_amount) when negative, rounded to cents; its
  terminal is uniform among the available ones (a customer with none makes no transactions);
- frauds, applied in this order (a later scenario overwrites an earlier one's ``TX_FRAUD_SCENARIO``):
  1. every transaction with amount > 220 is a fraud;
  2. for each day d in 0 .. max(TX_TIME_DAYS) - 1, 2 distinct terminals drawn at random are compromised:
     every transaction on them on days d .. d + 27 is a fraud;
  3. for each day d in 0 .. max(TX_TIME_DAYS) - 1, 3 distinct customers drawn at random are compromised:
     of their transactions on days d .. d + 13, floor(n / 3) drawn at random (n = their count, all three
     customers together) get amount x 5 and are frauds. A transaction drawn on several days is multiplied
     each time.

Consequences worth knowing (they hold in the published file too): amounts > 220 are all frauds, but not
all of scenario 1 (scenarios 2 and 3 overwrite the label, and scenario 3 makes large amounts);
scenario 2 and 3 frauds can have any amount. With the published absolute counts (2 terminals, 3 customers a
day), the fraud share grows as the population shrinks; see :class:`SimulatorConfig`.

Differences from the handbook's code, on purpose: random numbers come from one numpy ``Generator``
(independent streams per step, spawned from the seed) instead of the legacy global seeds per customer and
per day, so the values differ from the published file while the distributions are the same; ties in time
are ordered by customer (the handbook's unstable sort leaves them arbitrary); scenario 3's x 5 amounts are
rounded back to cents (the handbook keeps float noise such as 85.64999999999999).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

SECONDS_PER_DAY = 86_400

RAW_SCHEMA: dict[str, str] = {
    "TRANSACTION_ID": "int64",
    "TX_DATETIME": "datetime64[ns]",
    "CUSTOMER_ID": "int64",
    "TERMINAL_ID": "int64",
    "TX_AMOUNT": "float64",
    "TX_TIME_SECONDS": "int64",
    "TX_TIME_DAYS": "int64",
    "TX_FRAUD": "int64",
    "TX_FRAUD_SCENARIO": "int64",
}
"""Columns and dtypes of the handbook's raw transaction files (as in ``transactions.parquet``)."""


@dataclass(frozen=True)
class SimulatorConfig:
    """Parameters of the simulator; defaults are a small demo population.

    The handbook's published data set used ``n_customers=5000, n_terminals=10000, n_days=183``. The fraud
    scenarios compromise a fixed NUMBER of terminals and customers per day, so with the demo's 1,000
    customers and 2,000 terminals the compromised share of the population is 5x the handbook's and so is
    the share of scenario 2 and 3 frauds (about 3% of transactions instead of 0.8%). Scale
    ``compromised_terminals_per_day`` / ``compromised_customers_per_day`` to change that; the handbook's
    values are kept as defaults so that the scenarios mean what the handbook says they mean.
    """

    n_customers: int = 1_000
    n_terminals: int = 2_000
    n_days: int = 60
    start_date: str = "2018-04-01"
    radius: float = 5.0
    # Fraud scenarios (handbook ch. 3, "Fraud scenarios generation")
    amount_threshold: float = 220.0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    customer_fraud_divisor: int = 3  # floor(n / 3) of the compromised cards' n transactions become frauds
    customer_fraud_amount_factor: float = 5.0

    def __post_init__(self) -> None:
        for name in ("n_customers", "n_terminals", "n_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.radius <= 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")
        if self.compromised_terminals_per_day > self.n_terminals and self.n_terminals > 0:
            raise ValueError("compromised_terminals_per_day exceeds n_terminals")
        if self.compromised_customers_per_day > self.n_customers and self.n_customers > 0:
            raise ValueError("compromised_customers_per_day exceeds n_customers")


def generate_customer_profiles(n_customers: int, rng: np.random.Generator) -> pd.DataFrame:
    """Customer profiles, one row per customer (handbook ``generate_customer_profiles_table``).

    Returns columns ``CUSTOMER_ID`` (0..n-1), ``x_customer_id``, ``y_customer_id`` (U(0, 100)),
    ``mean_amount`` (U(5, 100), currency units), ``std_amount`` (mean / 2), ``mean_nb_tx_per_day``
    (U(0, 4)).
    """
    mean_amount = rng.uniform(5, 100, n_customers)
    return pd.DataFrame(
        {
            "CUSTOMER_ID": np.arange(n_customers, dtype=np.int64),
            "x_customer_id": rng.uniform(0, 100, n_customers),
            "y_customer_id": rng.uniform(0, 100, n_customers),
            "mean_amount": mean_amount,
            "std_amount": mean_amount / 2,
            "mean_nb_tx_per_day": rng.uniform(0, 4, n_customers),
        }
    )


def generate_terminal_profiles(n_terminals: int, rng: np.random.Generator) -> pd.DataFrame:
    """Terminal profiles (handbook ``generate_terminal_profiles_table``): ``TERMINAL_ID`` (0..n-1) and
    its location ``x_terminal_id``, ``y_terminal_id`` ~ U(0, 100)."""
    return pd.DataFrame(
        {
            "TERMINAL_ID": np.arange(n_terminals, dtype=np.int64),
            "x_terminal_id": rng.uniform(0, 100, n_terminals),
            "y_terminal_id": rng.uniform(0, 100, n_terminals),
        }
    )


def terminals_within_radius(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's available terminals: Euclidean distance < ``radius`` (handbook
    ``get_list_terminals_within_radius``), as a CSR structure.

    ``customer_xy``: shape (n_customers, 2); ``terminal_xy``: shape (n_terminals, 2). Returns
    ``(indptr, indices)``: customer i's terminals are ``indices[indptr[i]:indptr[i + 1]]`` (ascending),
    ``indptr`` int64 of shape (n_customers + 1,).
    """
    n_c = len(customer_xy)
    if n_c == 0 or len(terminal_xy) == 0:
        return np.zeros(n_c + 1, dtype=np.int64), np.empty(0, dtype=np.int64)
    # A k-d tree avoids the n_customers x n_terminals distance matrix (50M pairs at the handbook's size).
    found = cKDTree(terminal_xy).query_ball_point(customer_xy, r=radius, return_sorted=True)
    counts = np.fromiter(map(len, found), dtype=np.int64, count=n_c)
    indices = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64, count=int(counts.sum()))
    owner = np.repeat(np.arange(n_c), counts)
    # query_ball_point's ball is closed (<= r); the handbook's is open (< r)
    inside = np.sqrt(np.sum(np.square(customer_xy[owner] - terminal_xy[indices]), axis=1)) < radius
    counts = np.bincount(owner[inside], minlength=n_c)
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64), indices[inside]


def generate_transactions(
    customers: pd.DataFrame,
    indptr: np.ndarray,
    indices: np.ndarray,
    n_days: int,
    start_date: str,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Genuine transactions of all customers (handbook ``generate_transactions_table`` and
    ``generate_dataset``), sorted by time, ``TRANSACTION_ID`` = 0..n-1, no fraud columns yet.

    ``customers``: :func:`generate_customer_profiles` output; ``indptr``/``indices``: the customers'
    available terminals (:func:`terminals_within_radius`). Returns the raw schema's first seven columns.
    """
    mean_nb = customers["mean_nb_tx_per_day"].to_numpy()
    mean_amount = customers["mean_amount"].to_numpy()
    std_amount = customers["std_amount"].to_numpy()
    n_c = len(customers)

    attempts = rng.poisson(np.repeat(mean_nb, n_days)).reshape(n_c, n_days) if n_c else np.zeros((0, n_days))
    flat = attempts.ravel().astype(np.int64)
    cust = np.repeat(np.repeat(np.arange(n_c, dtype=np.int64), n_days), flat)
    day = np.repeat(np.tile(np.arange(n_days, dtype=np.int64), n_c), flat)
    n = len(cust)

    # int() in the handbook truncates towards zero; attempts outside (0, 86400) are dropped, not redrawn
    second = np.trunc(rng.normal(SECONDS_PER_DAY / 2, 20_000, n)).astype(np.int64)
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean_amount[cust[negative]])
    amount = np.round(amount, 2)
    n_available = indptr[cust + 1] - indptr[cust]
    pick = np.floor(rng.random(n) * n_available).astype(np.int64)

    keep = (second > 0) & (second < SECONDS_PER_DAY) & (n_available > 0)
    cust, day, second, amount = cust[keep], day[keep], second[keep], amount[keep]
    terminal = indices[indptr[cust] + pick[keep]]
    tx_seconds = second + day * SECONDS_PER_DAY

    # rows are in customer order here, so a stable sort orders equal times by customer
    order = np.argsort(tx_seconds, kind="stable")
    tx_seconds = tx_seconds[order]
    origin = pd.Timestamp(start_date)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(len(order), dtype=np.int64),
            "TX_DATETIME": (origin + pd.to_timedelta(tx_seconds, unit="s")).as_unit("ns"),
            "CUSTOMER_ID": cust[order],
            "TERMINAL_ID": terminal[order],
            "TX_AMOUNT": amount[order],
            "TX_TIME_SECONDS": tx_seconds,
            "TX_TIME_DAYS": day[order],
        }
    )


def add_frauds(
    transactions: pd.DataFrame,
    n_customers: int,
    n_terminals: int,
    rng: np.random.Generator,
    config: SimulatorConfig = SimulatorConfig(),
    *,
    compromised_terminals: Sequence[np.ndarray] | None = None,
    compromised_customers: Sequence[np.ndarray] | None = None,
) -> pd.DataFrame:
    """Label frauds with the handbook's three scenarios (``add_frauds``); returns a new frame with
    ``TX_FRAUD`` (0/1) and ``TX_FRAUD_SCENARIO`` (0 genuine, 1, 2, 3; the last one applied wins) and, for
    scenario 3, amounts multiplied by ``config.customer_fraud_amount_factor`` (rounded to cents).

    ``transactions``: :func:`generate_transactions` output (``CUSTOMER_ID`` and ``TERMINAL_ID`` in
    0..n-1). Compromise windows start on days 0 .. max(TX_TIME_DAYS) - 1, as in the handbook.
    ``compromised_terminals`` / ``compromised_customers``: for each of those days, the array of ids
    compromised that day (any length); drawn from ``rng`` when None (the config's number a day, distinct
    within a day, as the handbook's ``Series.sample(n)``). Raises ValueError when a given schedule does
    not have one entry per start day.
    """
    out = transactions.copy()
    amount = out["TX_AMOUNT"].to_numpy(dtype=np.float64, copy=True)
    day = out["TX_TIME_DAYS"].to_numpy()
    terminal = out["TERMINAL_ID"].to_numpy()
    customer = out["CUSTOMER_ID"].to_numpy()
    fraud = np.zeros(len(out), dtype=np.int64)
    scenario = np.zeros(len(out), dtype=np.int64)
    # the handbook loops over range(max day): no compromise starts on the last day
    n_start_days = int(day.max()) if len(day) else 0
    if compromised_terminals is None:
        compromised_terminals = _draw_daily(rng, n_terminals, config.compromised_terminals_per_day, n_start_days)
    if compromised_customers is None:
        compromised_customers = _draw_daily(rng, n_customers, config.compromised_customers_per_day, n_start_days)
    for name, schedule in (("terminals", compromised_terminals), ("customers", compromised_customers)):
        if len(schedule) != n_start_days:
            raise ValueError(f"compromised_{name}: expected {n_start_days} days, got {len(schedule)}")

    # Scenario 1: large amounts
    large = amount > config.amount_threshold
    fraud[large] = 1
    scenario[large] = 1

    # Scenario 2: compromised terminals. A transaction (terminal T, day t) is hit iff T was drawn on some
    # day d with d <= t <= d + w - 1; counted with sorted (terminal, day) keys instead of a T x days matrix
    # so memory stays O(transactions) for large terminal counts.
    w2 = config.terminal_compromise_days
    per_day = [np.asarray(ids, dtype=np.int64).ravel() for ids in compromised_terminals]
    if sum(map(len, per_day)):
        start = np.repeat(np.arange(n_start_days, dtype=np.int64), [len(ids) for ids in per_day])
        stride = n_start_days + 2 * w2 + 1
        keys = np.sort(np.concatenate(per_day) * stride + start + w2)
        base = terminal.astype(np.int64) * stride
        hits = np.searchsorted(keys, base + day + w2, side="right") - np.searchsorted(
            keys, base + day + 1, side="left"
        )
        hit = hits > 0
        fraud[hit] = 1
        scenario[hit] = 2

    # Scenario 3: compromised cards, day by day: windows overlap, and a row drawn on several days is
    # multiplied each time, as in the handbook.
    w3 = config.customer_compromise_days
    if n_start_days:
        by_customer = np.argsort(customer, kind="stable")  # each customer's rows, in time order
        sorted_customers = customer[by_customer]
        for d, chosen in enumerate(compromised_customers):
            chosen = np.asarray(chosen, dtype=np.int64).ravel()
            lo = np.searchsorted(sorted_customers, chosen, side="left")
            hi = np.searchsorted(sorted_customers, chosen, side="right")
            rows = np.concatenate([by_customer[a:b] for a, b in zip(lo, hi)] or [np.empty(0, np.int64)])
            rows = rows[(day[rows] >= d) & (day[rows] < d + w3)]
            k = len(rows) // config.customer_fraud_divisor
            if k == 0:
                continue
            picked = rng.choice(rows, k, replace=False)
            amount[picked] = np.round(amount[picked] * config.customer_fraud_amount_factor, 2)
            fraud[picked] = 1
            scenario[picked] = 3

    out["TX_AMOUNT"] = amount
    out["TX_FRAUD"] = fraud
    out["TX_FRAUD_SCENARIO"] = scenario
    return out


def _draw_daily(rng: np.random.Generator, population: int, per_day: int, n_days: int) -> list[np.ndarray]:
    """For each of ``n_days`` days, ``per_day`` distinct ids out of ``population`` (none when the
    population is empty)."""
    if population == 0:
        return [np.empty(0, dtype=np.int64) for _ in range(n_days)]
    return [rng.choice(population, per_day, replace=False) for _ in range(n_days)]


def simulate_transactions(
    n_customers: int = SimulatorConfig.n_customers,
    n_terminals: int = SimulatorConfig.n_terminals,
    n_days: int = SimulatorConfig.n_days,
    start_date: str = SimulatorConfig.start_date,
    radius: float = SimulatorConfig.radius,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    config: SimulatorConfig | None = None,
) -> pd.DataFrame:
    """Simulate labelled card transactions with the handbook's generator (ch. 3), in its raw schema.

    ``n_customers``, ``n_terminals``, ``n_days``, ``start_date`` (midnight of day 0, no zone, read as
    UTC), ``radius`` (grid units on the 100 x 100 map) as in the handbook; ``config``, when given,
    supplies every parameter (the first five arguments are then ignored). ``seed``: an int, a
    ``SeedSequence`` or a ``Generator``; the same int gives the same frame. Independent random streams are
    spawned per step, so e.g. the customer profiles do not change with ``n_days``.

    Returns a DataFrame with exactly the columns and dtypes of :data:`RAW_SCHEMA`, sorted by
    ``TX_DATETIME``, ``TRANSACTION_ID`` = 0..n-1 in that order; ``TX_AMOUNT`` >= 0 in currency units with
    at most 2 decimals. Raises ValueError for negative sizes or a non-positive radius.
    Timing: ~1,000 customers x 2,000 terminals x 60 days (~100k transactions) takes well under a second.
    """
    if config is None:
        config = SimulatorConfig(
            n_customers=n_customers, n_terminals=n_terminals, n_days=n_days, start_date=start_date, radius=radius
        )
    if isinstance(seed, np.random.Generator):
        streams = seed.spawn(4)
    else:
        seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        streams = [np.random.default_rng(s) for s in seq.spawn(4)]
    rng_customers, rng_terminals, rng_transactions, rng_frauds = streams

    customers = generate_customer_profiles(config.n_customers, rng_customers)
    terminals = generate_terminal_profiles(config.n_terminals, rng_terminals)
    indptr, indices = terminals_within_radius(
        customers[["x_customer_id", "y_customer_id"]].to_numpy(),
        terminals[["x_terminal_id", "y_terminal_id"]].to_numpy(),
        config.radius,
    )
    tx = generate_transactions(customers, indptr, indices, config.n_days, config.start_date, rng_transactions)
    tx = add_frauds(tx, config.n_customers, config.n_terminals, rng_frauds, config)
    return tx[list(RAW_SCHEMA)].astype(RAW_SCHEMA)
