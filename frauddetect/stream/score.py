"""Scoring stage: the 19 features of every transaction row -> score and alert, on the executors (``mapInPandas``).

Each Python worker builds its scorer once and keeps it (:func:`worker_scorer`): the SavedModel in-process
locally, a SageMaker endpoint client (batched ``InvokeEndpoint``, botocore's retries and timeouts) on AWS.
A batch that keeps failing after :attr:`ScorerSpec.retries` further attempts raises: the task, then the
micro-batch fails and Spark replays it from its checkpoint, so a failure to score is never taken as "not
fraud". Other rows (labels, quarantine, stats) pass through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from frauddetect.features import CARD_FEATURE_COLUMNS, TERMINAL_FEATURE_COLUMNS, model_features
from frauddetect.stream.card import stats_rows
from frauddetect.stream.columns import as_int, concat, from_frame, length, nulls, take, to_frame
from frauddetect.stream.records import SCORED_COLUMNS, TRANSACTION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerSpec:
    """How a worker builds its scorer (plain values: it is shipped to the executors).

    ``model_dir``: exported model (in-process SavedModel) unless ``endpoint_name`` is given, which scores
    through that SageMaker endpoint (``endpoint_region``, ``endpoint_url`` optional); ``model_version``: the
    version recorded with every score when the scorer does not know it (an endpoint); ``threshold``: alert
    when score >= threshold; ``retries``: further attempts of a failed batch before the task fails.
    """

    threshold: float
    model_dir: str | None = None
    endpoint_name: str | None = None
    endpoint_region: str | None = None
    endpoint_url: str | None = None
    model_version: str | None = None
    retries: int = 3

    def build(self):
        """A new :class:`~frauddetect.model.Scorer` (loads the SavedModel or creates the endpoint client).
        Raises FileNotFoundError/ValueError when the model or the endpoint settings are unusable."""
        if self.endpoint_name:
            from frauddetect.endpoint import EndpointScorer

            return EndpointScorer(self.endpoint_name, region=self.endpoint_region, endpoint_url=self.endpoint_url,
                                  model_version=self.model_version)
        from frauddetect.model import SavedModelScorer

        return SavedModelScorer(self.model_dir)


_SCORERS: dict[ScorerSpec, object] = {}


def worker_scorer(spec: ScorerSpec):
    """The scorer of ``spec`` in this process, built on first use (the SavedModel is loaded once per worker)."""
    scorer = _SCORERS.get(spec)
    if scorer is None:
        scorer = _SCORERS[spec] = spec.build()
    return scorer


def score_with_retries(scorer, x: np.ndarray, retries: int) -> tuple[np.ndarray, int]:
    """(scores (n,) float32, failed attempts that a retry recovered). Raises the last error after
    ``retries`` further attempts."""
    for attempt in range(retries + 1):
        try:
            scores = np.asarray(scorer.score(x), dtype=np.float32).reshape(-1)
            if scores.shape != (len(x),) or not np.isfinite(scores).all():
                raise ValueError(f"scorer returned shape {scores.shape} or non-finite scores for {len(x)} rows")
            return scores, attempt
        except Exception as exc:  # noqa: BLE001 - any scorer failure is retried, then re-raised
            log.warning("scoring %d rows failed (attempt %d of %d): %s", len(x), attempt + 1, retries + 1, exc)
            if attempt == retries:
                raise
            time.sleep(min(2.0, 0.1 * 2**attempt))
    raise AssertionError("unreachable")


def score_rows(rows: pd.DataFrame, scorer, threshold: float, retries: int) -> pd.DataFrame:
    """Score the ``transaction`` rows of a frame (STREAM_SCHEMA columns) -> SCORED_SCHEMA columns; other rows
    keep null scores. A ``stats`` row counts the recovered scoring failures."""
    cols = from_frame(rows)
    n = length(cols)
    is_tx = cols["kind"] == TRANSACTION
    score = np.full(n, np.nan)
    alert = nulls(n)
    threshold_col = np.full(n, np.nan)
    version = nulls(n)
    scored_at = nulls(n)
    parts = []
    if is_tx.any():
        tx = take(cols, is_tx)
        feats = model_features(as_int(tx["time_us"]), tx["tx_amount"].astype(np.float64),
                               pd.DataFrame({c: tx[c].astype(np.float64) for c in CARD_FEATURE_COLUMNS}),
                               pd.DataFrame({c: tx[c].astype(np.float64) for c in TERMINAL_FEATURE_COLUMNS}))
        started = time.perf_counter()
        scores, recovered = score_with_retries(scorer, feats.to_numpy(dtype=np.float32), retries)
        parts.append(stats_rows({"score_ms": round((time.perf_counter() - started) * 1000)}))
        score[is_tx] = scores.astype(np.float64)
        alert[is_tx] = scores >= threshold
        threshold_col[is_tx] = float(threshold)
        version[is_tx] = str(scorer.model_version)
        scored_at[is_tx] = time.time_ns() // 1_000
        if recovered:
            parts.append(stats_rows({"scoring_retries": recovered}))
    cols.update(score=score, alert=alert, threshold=threshold_col, model_version=version, scored_at_us=scored_at)
    return to_frame(concat([cols, *parts], SCORED_COLUMNS), SCORED_COLUMNS)


def scoring_stage(spec: ScorerSpec):
    """The ``mapInPandas`` function of the scoring stage."""

    def score(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = None
        for rows in batches:
            if scorer is None and (rows["kind"] == TRANSACTION).any():
                scorer = worker_scorer(spec)
            yield score_rows(rows, scorer, spec.threshold, spec.retries) if scorer is not None else \
                to_frame(from_frame(rows), SCORED_COLUMNS)

    return score
