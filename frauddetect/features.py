"""The model's 19 transaction features (the handbook's 15 + 4 terminal sequence features): ONE implementation
for the stream, training, the APIs and tests.

Definitions (handbook ch. 3 "Baseline feature transformation"; ``../shared/data/handbook/README.md``):

- ``tx_amount``: the amount, currency units.
- ``tx_during_weekend``: 1 if the transaction's UTC weekday is Saturday or Sunday, else 0.
- ``tx_during_night``: 1 if its UTC hour is <= 6, else 0.
- per customer (card), for w in 1, 7, 30 days: ``customer_id_nb_tx_{w}day_window`` = number of that
  customer's transactions with time in (t - w days, t], and ``customer_id_avg_amount_{w}day_window`` =
  their mean amount. The row's own transaction is inside its windows; of transactions with the very same
  timestamp only those that came before it (in event order: time, then arrival) are, as with the
  handbook's pandas rolling windows.
- per terminal, with label delay d = 7 days, for w in 1, 7, 30: the terminal's transactions with time in
  (t - d - w days, t - d]; ``terminal_id_nb_tx_{w}day_window`` = their count and
  ``terminal_id_risk_{w}day_window`` = the share of them known to be fraudulent (0 when the count is 0).

"Known to be fraudulent" is where the live system and the handbook meet: a transaction counts as a fraud for
a row at time t only if a fraud label for it has been received AND its ``labeled_at`` <= t. The handbook
assumes every label becomes known exactly d days after its transaction; labelling the history that way
(``labels_from_ground_truth``) reproduces its published features, and a label that arrives later than d
days (a late chargeback) only counts from its arrival on.

The computation is vectorised (numpy searchsorted over (key, time) sorted arrays) and split by key:
:func:`card_features` needs only a card's history (30 days, :data:`CARD_RETENTION_US`) and
:func:`terminal_features` only a terminal's history with its labels (37 days, :data:`TERMINAL_RETENTION_US`).
The stream's card and terminal operators (``frauddetect.stream``) call them on the history their state holds
for the keys of a micro-batch; :func:`offline_features` calls them once on a whole table. Times are int64
microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

US_PER_DAY = 86_400 * 1_000_000
LABEL_DELAY_DAYS = 7
CUSTOMER_WINDOWS_DAYS = (1, 7, 30)
TERMINAL_WINDOWS_DAYS = (1, 7, 30)

HANDBOOK_FEATURE_COLUMNS: tuple[str, ...] = (
    "tx_amount",
    "tx_during_weekend",
    "tx_during_night",
    *(
        name
        for w in CUSTOMER_WINDOWS_DAYS
        for name in (f"customer_id_nb_tx_{w}day_window", f"customer_id_avg_amount_{w}day_window")
    ),
    *(
        name
        for w in TERMINAL_WINDOWS_DAYS
        for name in (f"terminal_id_nb_tx_{w}day_window", f"terminal_id_risk_{w}day_window")
    ),
)
"""The handbook's 15 features, in its ``input_features`` order (golden parity is checked on these)."""

TERMINAL_LAST_K = (1, 3, 5)
TERMINAL_SEQUENCE_DAYS = 30
"""How far back (before t - d) the terminal sequence features look; inside the state's retention."""

TERMINAL_SEQUENCE_COLUMNS: tuple[str, ...] = (
    *(f"terminal_id_fraud_share_last_{k}_tx" for k in TERMINAL_LAST_K),
    "terminal_id_days_since_known_fraud",
)
"""Extra terminal features (this project's, not the handbook's), for rows at time t with label delay d:

- ``terminal_id_fraud_share_last_{k}_tx`` (k = 1, 3, 5): of the terminal's last k transactions with time
  in (t - d - 30 days, t - d], the share known to be fraudulent (0 when there are none);
- ``terminal_id_days_since_known_fraud``: days from the terminal's latest known fraud with time in that
  range to t - d; 30 when there is none.

Why: a compromised terminal turns EVERY later transaction into a fraud, while a fraud on a card that is
merely passing by (a stolen card, an inflated amount) leaves one fraud among many genuine ones. The
handbook's window shares mix both (one fraud among seven transactions reads 0.14 either way); "the last
known transactions were all frauds" and "how recently" tell them apart. Measured on the handbook's
validation folds (model selection, 2018-07-11): average precision 0.695 -> 0.707 (README "Model").
"""

FEATURE_COLUMNS: tuple[str, ...] = (*HANDBOOK_FEATURE_COLUMNS, *TERMINAL_SEQUENCE_COLUMNS)
"""The model inputs, in the order the model takes them: the handbook's 15, then the terminal sequence
features (19 in all)."""

CARD_FEATURE_COLUMNS: tuple[str, ...] = tuple(c for c in HANDBOOK_FEATURE_COLUMNS if c.startswith("customer_id_"))
"""The 6 per-card window features (what the card side of the stream computes)."""

TERMINAL_FEATURE_COLUMNS: tuple[str, ...] = (
    *(c for c in HANDBOOK_FEATURE_COLUMNS if c.startswith("terminal_id_")),
    *TERMINAL_SEQUENCE_COLUMNS,
)
"""The 10 per-terminal features: 6 windows with the label delay, then the 4 sequence features."""

CARD_RETENTION_US = max(CUSTOMER_WINDOWS_DAYS) * US_PER_DAY
"""How far before a row's time the card windows look (30 days): card rows older than the watermark minus this
can no longer fall into any window."""

TERMINAL_RETENTION_US = (LABEL_DELAY_DAYS + max(*TERMINAL_WINDOWS_DAYS, TERMINAL_SEQUENCE_DAYS)) * US_PER_DAY
"""How far before a row's time the terminal features look (7 + 30 days)."""

NO_LABEL = np.iinfo(np.int64).max
"""``labeled_at_us`` of a transaction without a label."""
_INT63 = 2**62  # headroom below int64's max for composite keys


def to_epoch_us(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Datetimes (tz-aware UTC, or naive taken as UTC) -> int64 µs since the Unix epoch, shape (n,).

    Raises ValueError on missing times (NaT).
    """
    s = pd.Series(times)
    if s.dt.tz is None:
        s = s.dt.tz_localize("UTC")
    else:
        s = s.dt.tz_convert("UTC")
    if s.isna().any():
        raise ValueError("missing timestamps (NaT) cannot be featurised")
    return s.dt.as_unit("us").astype("int64").to_numpy()


def calendar_features(time_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tx_during_weekend, tx_during_night) as int8 arrays of shape (n,), from µs since epoch, UTC.

    Weekend = Saturday or Sunday; night = hour <= 6 (handbook definitions).
    """
    days = time_us // US_PER_DAY
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    hour = (time_us % US_PER_DAY) // (3_600 * 1_000_000)
    return (weekday >= 5).astype(np.int8), (hour <= 6).astype(np.int8)


def _composite(code: np.ndarray, t: np.ndarray, stride: int) -> np.ndarray:
    """Key that orders by (code, t) in one int64; t must lie in [0, stride)."""
    return code.astype(np.int64) * np.int64(stride) + t


@dataclass
class _Keyed:
    """Rows of one key (customer or terminal) with relative times, ready for searchsorted."""

    code: np.ndarray
    t: np.ndarray


def _code_chunks(n_codes: int, stride: int) -> list[tuple[int, int]]:
    """Split key codes so that code * stride never overflows int64 (only matters at millions of keys)."""
    per_chunk = max(1, _INT63 // stride)
    return [(lo, min(n_codes, lo + per_chunk)) for lo in range(0, n_codes, per_chunk)]


def customer_window_features(
    code: np.ndarray, t: np.ndarray, amount: np.ndarray, query: np.ndarray, windows_us: list[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per-customer count and mean amount over (t - w, t] for the rows flagged in ``query``.

    ``code``, ``t``, ``amount`` and ``query`` have shape (n,) and must already be in event order within a
    customer (sorted by code, then time, then arrival); a row's window holds itself and the rows before it.
    Returns {w: (count float64 (m,), mean float64 (m,))} for the m query rows, in their order.
    """
    n = len(code)
    out = {w: (np.empty(int(query.sum())), np.empty(int(query.sum()))) for w in windows_us}
    if n == 0:
        return out
    t0 = t.min() - max(windows_us)
    trel = t - t0
    stride = int(trel.max()) + 1
    qpos = np.flatnonzero(query)
    n_codes = int(code.max()) + 1
    filled = 0
    for lo, hi in _code_chunks(n_codes, stride):
        rows = np.flatnonzero((code >= lo) & (code < hi))  # contiguous: sorted by code
        if len(rows) == 0:
            continue
        r0, r1 = rows[0], rows[-1] + 1
        key = _composite(code[r0:r1] - lo, trel[r0:r1], stride)
        csum = np.concatenate(([0.0], np.cumsum(amount[r0:r1])))
        q = qpos[(qpos >= r0) & (qpos < r1)] - r0
        for w in windows_us:
            first = np.searchsorted(key, key[q] - w, side="right")
            cnt = q - first + 1
            total = csum[q + 1] - csum[first]
            out[w][0][filled : filled + len(q)] = cnt
            out[w][1][filled : filled + len(q)] = total / cnt
        filled += len(q)
    return out


def terminal_window_features(
    hist: _Keyed,
    fraud_code: np.ndarray,
    fraud_from: np.ndarray,
    fraud_t: np.ndarray,
    queries: _Keyed,
    delay_us: int,
    windows_us: list[int],
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per-terminal count and fraud share over (t - d - w, t - d] for each query row.

    ``hist``: every known transaction (code, relative time) sorted by (code, t); ``fraud_*``: the
    transactions with a fraud label, their code, the time from which the label is known (``labeled_at``)
    and their own time; ``queries``: the rows to featurise (any order). All times relative µs >= 0.
    A fraud j counts for query i iff time_j in (t_i - d - w, t_i - d] and labeled_at_j <= t_i, i.e. iff
    t_i in [max(time_j + d, labeled_at_j), time_j + d + w): counted as an interval stabbing query.
    Returns {w: (count float64 (m,), risk float64 (m,))}; risk is 0 where the count is 0.
    """
    m = len(queries.code)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    horizon = max(
        int(hist.t.max()) if len(hist.t) else 0,
        int(queries.t.max()) if m else 0,
    )
    stride = horizon + delay_us + max(windows_us) + 1
    n_codes = int(max(hist.code.max() if len(hist.code) else 0, queries.code.max() if m else 0)) + 1
    if n_codes * stride >= _INT63:  # keep one code path; chunking only bites with millions of terminals
        raise OverflowError("too many terminals in one batch for int64 composite keys; split the batch")
    hist_key = _composite(hist.code, hist.t, stride)
    # Queries shifted by -d so that both window bounds are simple offsets: time_j in (s - w, s], s = t - d.
    s = queries.t - delay_us
    valid = s >= 0
    s = np.where(valid, s, 0)
    q_hi = _composite(queries.code, s, stride)
    q_key = _composite(queries.code, queries.t, stride)
    hi = np.searchsorted(hist_key, q_hi, side="right")
    for w in windows_us:
        q_lo = _composite(queries.code, np.maximum(s - w, 0), stride)
        lo = np.searchsorted(hist_key, q_lo, side="right")
        lo = np.where(s - w < 0, np.searchsorted(hist_key, _composite(queries.code, 0, stride), "left"), lo)
        count = np.where(valid, hi - lo, 0).astype(np.float64)
        start = np.maximum(fraud_t + delay_us, fraud_from)
        end = fraud_t + delay_us + w
        keep = start < end
        a = np.sort(_composite(fraud_code[keep], start[keep], stride))
        b = np.sort(_composite(fraud_code[keep], end[keep], stride))
        frauds = (np.searchsorted(a, q_key, side="right") - np.searchsorted(b, q_key, side="right")).astype(
            np.float64
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            risk = np.where(count > 0, frauds / np.where(count > 0, count, 1), 0.0)
        out[w] = (count, risk)
    return out


def terminal_sequence_features(
    hist: _Keyed,
    hist_fraud: np.ndarray,
    hist_labeled_at: np.ndarray,
    queries: _Keyed,
    delay_us: int,
    horizon_us: int,
    last_k: tuple[int, ...] = TERMINAL_LAST_K,
) -> dict[str, np.ndarray]:
    """The :data:`TERMINAL_SEQUENCE_COLUMNS` for each query row (definitions there).

    ``hist``: every known transaction (terminal code, relative µs time) sorted by (code, t, arrival);
    ``hist_fraud`` (bool) and ``hist_labeled_at`` (relative µs, when the fraud label became known) in the
    same order; ``queries``: the rows to featurise (any order), relative µs >= 0. A transaction j is a
    known fraud for query i iff it is labelled fraud and labeled_at_j <= t_i, as in
    :func:`terminal_window_features`; only transactions with time in (t_i - d - horizon, t_i - d] count.
    Returns {column: float64 (m,)}.
    """
    m = len(queries.code)
    latest = max(int(hist.t.max()) if len(hist.t) else 0, int(queries.t.max()) if m else 0)
    stride = latest + delay_us + horizon_us + 1
    n_codes = int(max(hist.code.max() if len(hist.code) else 0, queries.code.max() if m else 0)) + 1
    if n_codes * stride >= _INT63:
        raise OverflowError("too many terminals in one batch for int64 composite keys; split the batch")
    hist_key = _composite(hist.code, hist.t, stride)
    s = queries.t - delay_us  # the newest transaction time whose label may count
    valid = s >= 0
    s = np.where(valid, s, 0)
    hi = np.where(valid, np.searchsorted(hist_key, _composite(queries.code, s, stride), side="right"), 0)
    oldest = s - horizon_us  # exclusive bound
    lo = np.where(
        oldest >= 0,
        np.searchsorted(hist_key, _composite(queries.code, np.maximum(oldest, 0), stride), side="right"),
        np.searchsorted(hist_key, _composite(queries.code, 0, stride), side="left"),
    )
    lo = np.minimum(lo, hi)
    out: dict[str, np.ndarray] = {}
    seen = np.zeros(m)
    frauds = np.zeros(m)
    for back in range(1, max(last_k) + 1):
        idx = hi - back
        present = idx >= lo
        safe = np.where(present, idx, 0)
        seen += present
        if len(hist_key):
            frauds += present & hist_fraud[safe] & (hist_labeled_at[safe] <= queries.t)
        if back in last_k:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"terminal_id_fraud_share_last_{back}_tx"] = np.where(seen > 0, frauds / np.maximum(seen, 1), 0.0)

    # Latest known fraud in range: start from the latest fraud in range, step back over frauds whose label
    # is not known yet at t_i (late labels; rare, so few rounds).
    fraud_rows = np.flatnonzero(hist_fraud)
    pos = np.searchsorted(fraud_rows, hi, side="left") - 1  # last fraud row below hi
    days = np.full(m, horizon_us / US_PER_DAY)
    pending = pos >= 0
    while pending.any():
        cand = fraud_rows[np.where(pending, pos, 0)]
        pending &= cand >= lo
        found = pending & (hist_labeled_at[cand] <= queries.t)
        days = np.where(found, (s - hist.t[cand]) / US_PER_DAY, days)
        pending &= ~found
        pos = pos - 1
        pending &= pos >= 0
    out["terminal_id_days_since_known_fraud"] = days
    return out


def labels_from_ground_truth(
    tx: pd.DataFrame, delay_us: int = LABEL_DELAY_DAYS * US_PER_DAY
) -> pd.DataFrame:
    """Labels as the handbook assumes them: each transaction's ``tx_fraud`` known ``delay`` after it.

    ``tx``: canonical transactions with ``transaction_id``, ``tx_datetime``, ``tx_fraud``.
    Returns columns ``transaction_id``, ``tx_fraud`` (int8), ``labeled_at_us`` (int64 µs).
    """
    return pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"].to_numpy(dtype=object),
            "tx_fraud": tx["tx_fraud"].to_numpy().astype(np.int8),
            "labeled_at_us": to_epoch_us(tx["tx_datetime"]) + delay_us,
        }
    )




def card_features(
    customer_id: np.ndarray, time_us: np.ndarray, tx_amount: np.ndarray, seq: np.ndarray, query: np.ndarray
) -> pd.DataFrame:
    """The :data:`CARD_FEATURE_COLUMNS` of the rows flagged in ``query``, over all the rows given.

    The rows are a card history that includes the query rows themselves, in any order: ``customer_id``
    (card ids, any hashable), ``time_us`` (int64 µs), ``tx_amount`` (float64), ``seq`` (int64 arrival order,
    which breaks ties in time: of rows with the same time only those that arrived before a row are in its
    windows) and ``query`` (bool), all of shape (n,). Returns a float64 frame of shape (query.sum(), 6) in
    the order of ``np.flatnonzero(query)``.
    """
    n_query = int(np.count_nonzero(query))
    if n_query == 0:
        return pd.DataFrame({c: np.empty(0) for c in CARD_FEATURE_COLUMNS})
    codes, _ = pd.factorize(pd.Series(customer_id, dtype=object), sort=False)
    t = np.asarray(time_us, dtype=np.int64)
    order = np.lexsort((np.asarray(seq, dtype=np.int64), t, codes))
    windows = [w * US_PER_DAY for w in CUSTOMER_WINDOWS_DAYS]
    q_sorted = np.asarray(query, dtype=bool)[order]
    got = customer_window_features(codes[order], t[order], np.asarray(tx_amount, np.float64)[order], q_sorted,
                                   windows)
    # customer_window_features answers in sorted order; put the answers back in the caller's order.
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    rank = np.argsort(np.argsort(position[np.flatnonzero(query)], kind="stable"), kind="stable")
    out = {}
    for w_days, w in zip(CUSTOMER_WINDOWS_DAYS, windows):
        count, mean = got[w]
        out[f"customer_id_nb_tx_{w_days}day_window"] = count[rank]
        out[f"customer_id_avg_amount_{w_days}day_window"] = mean[rank]
    return pd.DataFrame(out)[list(CARD_FEATURE_COLUMNS)]


def terminal_features(
    terminal_id: np.ndarray,
    transaction_id: np.ndarray,
    time_us: np.ndarray,
    tx_fraud: np.ndarray,
    labeled_at_us: np.ndarray,
    query: np.ndarray,
) -> pd.DataFrame:
    """The :data:`TERMINAL_FEATURE_COLUMNS` of the rows flagged in ``query``, over all the rows given.

    The rows are a terminal history that includes the query rows, in any order: ``terminal_id``,
    ``transaction_id`` (which breaks ties in time for the sequence features, so the answer does not depend
    on arrival order), ``time_us`` (int64 µs), ``tx_fraud`` (1 where the transaction's latest label says
    fraud) and ``labeled_at_us`` (int64 µs the latest label became known, :data:`NO_LABEL` without one) and
    ``query`` (bool), all of shape (n,). A fraud counts for a query at time t only if its ``labeled_at`` <= t.
    Returns a float64 frame of shape (query.sum(), 10) in the order of ``np.flatnonzero(query)``.
    Raises OverflowError when one call holds too many terminals for int64 composite keys.
    """
    qrows = np.flatnonzero(query)
    if len(qrows) == 0:
        return pd.DataFrame({c: np.empty(0) for c in TERMINAL_FEATURE_COLUMNS})
    codes, _ = pd.factorize(pd.Series(terminal_id, dtype=object), sort=False)
    ties, _ = pd.factorize(pd.Series(transaction_id, dtype=object), sort=True)
    t = np.asarray(time_us, dtype=np.int64)
    t0 = int(t.min())
    fraud = np.asarray(tx_fraud) == 1
    labeled_at = np.asarray(labeled_at_us, dtype=np.int64)
    order = np.lexsort((ties, t, codes))
    hist = _Keyed(codes[order], t[order] - t0)
    queries = _Keyed(codes[qrows], t[qrows] - t0)
    delay = LABEL_DELAY_DAYS * US_PER_DAY
    windows = [w * US_PER_DAY for w in TERMINAL_WINDOWS_DAYS]
    out: dict[str, np.ndarray] = {}
    got = terminal_window_features(hist, codes[fraud], np.maximum(labeled_at[fraud] - t0, 0), t[fraud] - t0,
                                   queries, delay, windows)
    for w_days, w in zip(TERMINAL_WINDOWS_DAYS, windows):
        out[f"terminal_id_nb_tx_{w_days}day_window"], out[f"terminal_id_risk_{w_days}day_window"] = got[w]
    relative_labeled_at = np.where(labeled_at == NO_LABEL, NO_LABEL, labeled_at - t0)
    out.update(terminal_sequence_features(hist, fraud[order], relative_labeled_at[order], queries, delay,
                                          TERMINAL_SEQUENCE_DAYS * US_PER_DAY))
    return pd.DataFrame(out)[list(TERMINAL_FEATURE_COLUMNS)]


def model_features(time_us: np.ndarray, tx_amount: np.ndarray, card: pd.DataFrame, terminal: pd.DataFrame) -> pd.DataFrame:
    """The model's inputs, :data:`FEATURE_COLUMNS` in order, float64 of shape (n, 19).

    ``time_us``/``tx_amount``: shape (n,); ``card``/``terminal``: the outputs of :func:`card_features` and
    :func:`terminal_features` for the same n rows, in the same order.
    """
    weekend, night = calendar_features(np.asarray(time_us, dtype=np.int64))
    out = pd.DataFrame({"tx_amount": np.asarray(tx_amount, dtype=np.float64),
                        "tx_during_weekend": weekend.astype(np.float64),
                        "tx_during_night": night.astype(np.float64)})
    for frame in (card, terminal):
        for col in frame.columns:
            out[col] = frame[col].to_numpy(dtype=np.float64)
    return out[list(FEATURE_COLUMNS)]


def latest_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """One label per transaction: the one with the latest ``labeled_at_us`` (of equal times, the last row).

    ``labels``: ``transaction_id``, ``tx_fraud`` (0/1), ``labeled_at_us`` (int64 µs), in arrival order.
    Returns the same columns, one row per transaction id.
    """
    ordered = labels.reset_index(drop=True)
    ordered = ordered.iloc[np.lexsort((np.arange(len(ordered)), ordered["labeled_at_us"].to_numpy()))]
    return ordered.drop_duplicates("transaction_id", keep="last")[["transaction_id", "tx_fraud", "labeled_at_us"]]


def offline_features(tx: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Batch (offline) features for a whole table of transactions, with the functions the stream uses.

    ``tx``: canonical transactions (``frauddetect.data``): ``transaction_id``, ``tx_datetime`` (UTC),
    ``customer_id``, ``terminal_id``, ``tx_amount`` and, when ``labels`` is None, ``tx_fraud`` (labels are
    then taken as known 7 days after each transaction, as in the handbook). ``labels``: ``transaction_id``,
    ``tx_fraud``, ``labeled_at_us`` (the latest per transaction counts, :func:`latest_labels`). Ties in time
    on a card are broken by input order (the order a producer would publish them in). Returns a DataFrame
    aligned with ``tx``'s rows (same index) with ``transaction_id`` and the 19 :data:`FEATURE_COLUMNS` as
    float64. Raises ValueError on missing times.
    """
    if labels is None:
        labels = labels_from_ground_truth(tx)
    time_us = to_epoch_us(tx["tx_datetime"])
    tids = tx["transaction_id"].astype(str).to_numpy(dtype=object)
    known = latest_labels(labels.assign(transaction_id=labels["transaction_id"].astype(str)))
    pos = pd.Index(known["transaction_id"].to_numpy(dtype=object), dtype=object).get_indexer(tids)
    fraud = np.zeros(len(tids), dtype=np.int8)
    labeled_at = np.full(len(tids), NO_LABEL, dtype=np.int64)
    has = pos >= 0
    fraud[has] = known["tx_fraud"].to_numpy(dtype=np.int8)[pos[has]]
    labeled_at[has] = known["labeled_at_us"].to_numpy(dtype=np.int64)[pos[has]]
    query = np.ones(len(tx), dtype=bool)
    seq = np.arange(len(tx), dtype=np.int64)
    card = card_features(tx["customer_id"].astype(str).to_numpy(dtype=object), time_us,
                         tx["tx_amount"].to_numpy(dtype=np.float64), seq, query)
    terminal = terminal_features(tx["terminal_id"].astype(str).to_numpy(dtype=object), tids, time_us, fraud,
                                 labeled_at, query)
    feats = model_features(time_us, tx["tx_amount"].to_numpy(dtype=np.float64), card, terminal)
    feats.index = tx.index
    feats.insert(0, "transaction_id", tids)
    return feats
