"""The fraud model: training, the alert-threshold policy, export for TF Serving / SageMaker, and scorers.

Serving contract (``../shared/DESIGN.md``, "Model serving"): the model takes the 19 RAW features of
:data:`frauddetect.features.FEATURE_COLUMNS`, in that order, as float32, and returns one fraud probability
per row. Preprocessing is inside the model (a fixed signed log1p, then a ``keras.layers.Normalization``
adapted on the training features), so every caller -- the streaming job, the demo, TF Serving, the SageMaker
endpoint -- sends the same raw values and none can drift from the training-time scaling.

Artifacts written by :func:`export_model` into ``model_dir``::

    model_dir/
      <version>/saved_model.pb, variables/...   TF Serving layout: an integer version directory
      model.tar.gz                               what a SageMaker TensorFlow Serving model points at:
                                                   <version>/saved_model.pb, <version>/variables/...,
                                                   metadata.json, all at the archive's root
      metadata.json                              feature order, alert threshold, training window,
                                                   metrics, library versions, version

The SavedModel's ``serving_default`` signature takes ``features``: float32 (None, 19) and returns
``probability``: float32 (None, 1). With one input and one output, TF Serving's REST API answers
``{"instances": [[19 floats], ...]}`` with ``{"predictions": [[p], ...]}`` (the row format drops the
names of a single input/output), which is what the SageMaker TensorFlow Serving container forwards from
``/invocations``.

Scorers share one interface, :class:`Scorer`: ``score(features (n, 19)) -> (n,) float32``. A batch that
cannot be scored raises :class:`ScoringError`; it is never read as "not fraud".

TensorFlow is imported lazily: a process that only scores through a SageMaker endpoint (the Glue job) or
only needs the threshold policy does not load it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import platform
import re
import shutil
import tarfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frauddetect.features import FEATURE_COLUMNS

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

log = logging.getLogger(__name__)

N_FEATURES = len(FEATURE_COLUMNS)
AMOUNT_INDEX = FEATURE_COLUMNS.index("tx_amount")
SIGNATURE_NAME = "serving_default"
INPUT_NAME = "features"
OUTPUT_NAME = "probability"
METADATA_FILE = "metadata.json"
ARCHIVE_FILE = "model.tar.gz"
METADATA_SCHEMA_VERSION = 1

_VERSION_DIR = re.compile(r"^[0-9]+$")
# Metadata keys export_model sets itself; a caller's value would be silently wrong, so it is refused.
_RESERVED_METADATA = frozenset({"schema_version", "version", "created_at", "serving", "libraries"})


class ScoringError(RuntimeError):
    """A batch could not be scored (bad input, or the model/endpoint failed or answered nonsense).

    Callers must treat the batch as unscored (retry, quarantine, page someone), never as "not fraud".
    """


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def limit_tf_threads(intra_op: int = 1, inter_op: int = 1) -> bool:
    """Cap TensorFlow's CPU thread pools (intra-op: threads inside one op; inter-op: ops run at once).

    TensorFlow fixes its pools when its runtime starts, so this only takes effect before the first op
    runs in the process; afterwards it logs a warning and returns False (the pools stay as they are).
    Returns True when the requested values are in effect. ``0`` means "TensorFlow's choice" (all cores).
    """
    import tensorflow as tf

    threading = tf.config.threading
    if (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()) == (
        intra_op,
        inter_op,
    ):
        return True
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        log.warning(
            "TensorFlow already started with intra_op=%d, inter_op=%d threads; cannot change to %d, %d",
            threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads(),
            intra_op,
            inter_op,
        )
        return False
    return True


def _training_arrays(features: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (features (n, 19), labels (n,)) pair for training; returns float32 / float32 arrays."""
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ValueError(f"{what} features: expected shape (n, {N_FEATURES}), got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{what} labels: expected shape ({x.shape[0]},), got {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: no rows")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} features: NaN or infinite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what} labels: only 0 and 1 are allowed")
    if y.min() == y.max():
        raise ValueError(f"{what} labels: need both classes (got only {int(y[0])})")
    return x, y.astype(np.float32)


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|), elementwise: the model's fixed input transform (numpy twin of the graph op)."""
    return np.sign(x) * np.log1p(np.abs(x))


def build_model(
    train_features: np.ndarray,
    fraud_rate: float,
    *,
    hidden_units: tuple[int, ...] = (64, 32),
    dropout: float = 0.2,
) -> "keras.Model":
    """The (uncompiled) network: [signed log1p of every feature, the amount itself] -> Normalization
    adapted on ``train_features`` -> dense ReLU layers with dropout -> one sigmoid unit. Takes RAW float32
    features (None, 19), returns (None, 1) probabilities.

    The fixed log transform tames the heavy tails of amounts and transaction counts before the
    standardisation (measured on the handbook split: +0.008 AUC, +0.02 AP over standardising raw
    values); it is signed so that any real input stays finite. The amount also enters on its linear
    scale, where a cut-off in currency units (e.g. "over 220") is one unit's threshold instead of a
    sliver of log space (the handbook's validation folds, 4-network ensemble: AUC 0.885 -> 0.887, AP 0.720
    -> 0.729; README "Model"). ``fraud_rate`` (in (0, 1)) sets the output bias to log(p / (1 - p)), so training starts
    from the base rate instead of 0.5; with ~0.8 % positives this avoids a first epoch spent only
    learning the prior.
    """
    import keras

    inputs = keras.Input(shape=(N_FEATURES,), dtype="float32", name=INPUT_NAME)
    x = keras.ops.concatenate(
        [keras.ops.sign(inputs) * keras.ops.log1p(keras.ops.abs(inputs)), inputs[:, AMOUNT_INDEX : AMOUNT_INDEX + 1]],
        axis=1,
    )
    norm = keras.layers.Normalization(axis=-1, name="standardize")
    # Adapted here, so the standardisation becomes part of the exported graph: callers send raw values.
    # (A constant feature gets variance 0; Keras divides by max(std, epsilon), so it maps to 0, not NaN.)
    raw = np.asarray(train_features, dtype=np.float32)
    norm.adapt(np.concatenate([signed_log1p(raw), raw[:, AMOUNT_INDEX : AMOUNT_INDEX + 1]], axis=1))
    x = norm(x)
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    bias = math.log(fraud_rate / (1.0 - fraud_rate))
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        bias_initializer=keras.initializers.Constant(bias),
        name=OUTPUT_NAME,
    )(x)
    return keras.Model(inputs, outputs, name="frauddetect_ffnn")


def train_model(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    seed: int = 0,
    epochs: int = 20,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    hidden_units: tuple[int, ...] = (64, 32),
    dropout: float = 0.2,
    patience: int = 3,
    verbose: int = 0,
) -> "keras.Model":
    """Train the feed-forward fraud classifier on raw features.

    ``features``: (n, 19) float, raw values in :data:`FEATURE_COLUMNS` order; ``labels``: (n,) 0/1.
    With ``val_features``/``val_labels`` (same shapes, e.g. a later window), training stops when the
    validation average precision (area under the precision-recall curve, the metric that tracks the
    rare class) has not improved for ``patience`` epochs, and the best epoch's weights are kept;
    without them it runs ``epochs`` epochs.
    Deterministic for a given ``seed`` and thread configuration (``keras.utils.set_random_seed``); it
    uses TensorFlow's thread pools as configured (cap them first with :func:`limit_tf_threads`).
    About 15 s for 200k rows and 20 epochs on 2 cores.
    Returns a compiled ``keras.Model``: raw float32 (None, 19) -> (None, 1) probabilities in [0, 1].
    Raises ValueError on bad shapes, NaN/inf features, non-0/1 labels or a single class.
    """
    import keras

    x, y = _training_arrays(features, labels, "training")
    validation = None
    if (val_features is None) != (val_labels is None):
        raise ValueError("give both val_features and val_labels, or neither")
    if val_features is not None:
        validation = _training_arrays(val_features, val_labels, "validation")

    keras.utils.set_random_seed(seed)
    model = build_model(x, float(y.mean()), hidden_units=hidden_units, dropout=dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.AUC(curve="PR", name="ap")],
        # Several steps per graph call: a network this small is bound by per-step overhead (~2x faster
        # on 2 cores). No XLA: on CPU it compiles for longer than it trains, and on GPU Keras' "auto"
        # would switch it on and change the numerics between machines.
        steps_per_execution=16,
        jit_compile=False,
    )
    callbacks = []
    if validation is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_ap", mode="max", patience=patience, restore_best_weights=True
            )
        )
    model.fit(
        x,
        y,
        validation_data=validation,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=verbose,
    )
    return model


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Hyperparameters of the production model: an ensemble of feed-forward networks (:func:`build_model`).

    Member i learns from the training window plus ``extra_history_days[i]`` labelled days before it, so the
    ensemble mixes networks fitted to the most recent week with networks that have seen three times as many
    frauds. Measured on the handbook's folds (README "Model"): the 3-week networks rank frauds better at the
    top (average precision, Card Precision@100), the 1-week networks rank the frauds that no feature
    reveals yet slightly above chance (AUC); their mean keeps both. Every member is trained for a fixed
    number of ``epochs`` (no early stopping: the labels of the weeks after the training window are not
    known yet when a model is trained in production).
    """

    extra_history_days: tuple[int, ...] = (0, 0, 14, 14)
    """One entry per member: labelled days before the training window that member also learns from."""
    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = 0.2
    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if not self.extra_history_days or min(self.extra_history_days) < 0:
            raise ValueError(f"extra_history_days needs one entry >= 0 per member, got {self.extra_history_days}")
        if self.epochs < 1 or self.batch_size < 1 or not self.hidden_units:
            raise ValueError(f"invalid model configuration: {self}")
        if not (0.0 <= self.dropout < 1.0 and self.learning_rate > 0):
            raise ValueError(f"invalid dropout/learning rate: {self}")

    @property
    def members(self) -> int:
        """Number of networks in the ensemble."""
        return len(self.extra_history_days)


MODEL_INPUTS: tuple[str, ...] = (*(f"signed_log1p({c})" for c in FEATURE_COLUMNS), "tx_amount")
"""What the first layer standardises, in order: every feature's signed log1p, then the raw amount."""


def standardization_stats(model: "keras.Model") -> list[dict[str, list[float]]]:
    """Mean and variance of each network's ``standardize`` layer (one entry per ensemble member, in
    order), each a list of len(:data:`MODEL_INPUTS`) floats: the scaling baked into the graph, for the
    metadata. Raises ValueError when the model holds no such layer."""
    import keras

    def layers(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                yield from layers(layer)
            else:
                yield layer

    stats = [
        {"mean": np.asarray(layer.mean).reshape(-1).tolist(), "variance": np.asarray(layer.variance).reshape(-1).tolist()}
        for layer in layers(model)
        if layer.name == "standardize"
    ]
    if not stats:
        raise ValueError("model has no 'standardize' layer")
    return stats


def member_seed(seed: int, member: int) -> int:
    """Seed of ensemble member ``member`` (0-based) for an ensemble trained with ``seed``."""
    return seed * 1000 + member


def train_ensemble(
    member_data: list[tuple[np.ndarray, np.ndarray]],
    *,
    config: ModelConfig | None = None,
    seed: int = 0,
    verbose: int = 0,
) -> "keras.Model":
    """Train one network per ``member_data`` entry with :func:`train_model` and average their probabilities.

    ``member_data[i]``: (features (n_i, 19) raw float in :data:`FEATURE_COLUMNS` order, labels (n_i,) 0/1)
    for member i -- its training rows (see :class:`ModelConfig`); one entry per member of ``config``.
    Member i is trained with seed :func:`member_seed` (seed, i), so the ensemble is deterministic for a
    seed and thread configuration. Returns ONE ``keras.Model`` (raw float32 (None, 19) -> (None, 1) mean
    probability) that :func:`export_model` writes as a single SavedModel: the endpoint does one forward
    pass, not one call per member. About 6 s per 67k rows (one handbook week) and member on 2 cores.
    Raises ValueError when the number of entries differs from ``config.members``, or as
    :func:`train_model` does.
    """
    import keras

    config = config or ModelConfig()
    if len(member_data) != config.members:
        raise ValueError(f"{len(member_data)} training sets for {config.members} ensemble members")
    members = [
        train_model(
            x,
            y,
            seed=member_seed(seed, i),
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            hidden_units=config.hidden_units,
            dropout=config.dropout,
            verbose=verbose,
        )
        for i, (x, y) in enumerate(member_data)
    ]
    if len(members) == 1:
        return members[0]
    inputs = keras.Input(shape=(N_FEATURES,), dtype="float32", name=INPUT_NAME)
    for i, member in enumerate(members):
        member.name = f"member_{i}"  # unique layer names inside the combined model
    outputs = keras.layers.Average(name="ensemble_mean")([member(inputs) for member in members])
    return keras.Model(inputs, outputs, name="frauddetect_ensemble")


# --------------------------------------------------------------------------------------------------
# Alert policy
# --------------------------------------------------------------------------------------------------


def choose_threshold(scores: np.ndarray, days: float, alerts_per_day: float = 100) -> float:
    """The alert threshold that spends a daily alert budget on the validation window.

    Policy: analysts can investigate about ``alerts_per_day`` alerts a day (the handbook's capacity
    behind Card Precision@100), so the threshold is set where the validation window -- ``scores``, shape
    (n,), the model's scores of every transaction in a window ``days`` days long -- would have raised
    ``k = floor(alerts_per_day * days)`` alerts, i.e. ``alerts_per_day`` a day on average. A transaction
    alerts when ``score >= threshold``.

    Ties: the budget is a ceiling. When the k-th and (k+1)-th highest scores are equal, alerting the
    k-th would alert all of them, so the threshold moves up to the next distinct score above the tie
    (fewer than k alerts in the window); if the tie is at the top, the threshold is just above the
    highest score (no alerts). Returns a float in the scores' own precision (a float32 score compares
    exactly), in (0, 1] for probabilities.
    Raises ValueError when ``days`` or the budget is not positive, scores are not a finite 1-D array, or
    the window holds no more than k transactions (too small to say where the budget ends).
    """
    s = np.asarray(scores)
    if s.ndim != 1 or not np.issubdtype(s.dtype, np.floating):
        raise ValueError(f"scores: expected a 1-D float array, got {s.dtype} with shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores: NaN or infinite values")
    if not (days > 0 and alerts_per_day > 0):
        raise ValueError(f"days ({days}) and alerts_per_day ({alerts_per_day}) must be positive")
    k = math.floor(alerts_per_day * days)
    if k < 1:
        raise ValueError(f"a budget of {alerts_per_day}/day over {days} days is less than one alert")
    if s.size <= k:
        raise ValueError(
            f"validation window too small: {s.size} transactions for a budget of {k} alerts "
            f"({alerts_per_day}/day over {days} days); every transaction would alert"
        )
    desc = np.sort(s)[::-1]
    kth, next_ = desc[k - 1], desc[k]
    if kth > next_:
        return float(kth)
    # The k-th score is tied with the one after it: the smallest score strictly above the tie.
    above = desc[desc > kth]
    if above.size:
        return float(above[-1])
    return float(np.nextafter(kth, np.inf, dtype=s.dtype))


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedModel:
    """Where :func:`export_model` wrote a model version."""

    version: int
    model_dir: Path
    saved_model_dir: Path  # model_dir/<version>: a TF Serving model base path's version directory
    archive_path: Path  # model_dir/model.tar.gz: SageMaker ModelDataUrl content
    metadata_path: Path  # model_dir/metadata.json


def _existing_versions(model_dir: Path) -> list[int]:
    """Integer version directories that hold a SavedModel, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and _VERSION_DIR.match(p.name) and (p / "saved_model.pb").is_file()
    )


def _default_version(model_dir: Path) -> int:
    """UTC seconds since the epoch, bumped above any version already in ``model_dir``.

    TF Serving serves the highest integer version, so a new export must sort last even when two exports
    land in the same second.
    """
    existing = _existing_versions(model_dir)
    now = int(time.time())
    return max(now, existing[-1] + 1) if existing else now


def _library_versions() -> dict[str, str]:
    import keras
    import pandas as pd
    import pyarrow
    import sklearn
    import tensorflow as tf

    import frauddetect

    return {
        "python": platform.python_version(),
        "frauddetect": frauddetect.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and datetimes (datetime, date, pandas.Timestamp) in metadata -> JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")


def _write_saved_model(model: "keras.Model", path: Path) -> None:
    """SavedModel with one explicit signature: features float32 (None, 19) -> probability (None, 1)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    # A dict output fixes the output tensor's name (Keras would call it "output_0"); the input spec's
    # name fixes the input's. training=False: dropout must be off in the served graph.
    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=lambda x: {OUTPUT_NAME: model(x, training=False)},
        input_signature=[tf.TensorSpec(shape=(None, N_FEATURES), dtype=tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


def _reset_tarinfo(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Reproducible, owner-neutral archive entries (SageMaker extracts as its own user)."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _write_archive(archive_path: Path, saved_model_dir: Path, version: int, metadata_json: bytes) -> None:
    """model.tar.gz with ``<version>/...`` and ``metadata.json`` at its root (no leading directory).

    Layout per the SageMaker developer guide (hosting FAQ: TensorFlow archives hold
    ``[model_version_number]/{saved_model.pb, variables}`` and optionally ``code/``; no symlinks): the
    TensorFlow Serving container extracts it to /opt/ml/model and serves every
    /opt/ml/model/<integer>/saved_model.pb as the model named after its parent folder, here "model".
    Other files (metadata.json) are ignored by the container.
    """
    links = [p for p in saved_model_dir.rglob("*") if p.is_symlink()]
    if links:
        raise ValueError(f"{links[0]}: symlinks are not allowed in a SageMaker model archive")
    tmp = archive_path.with_name(archive_path.name + ".tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(saved_model_dir, arcname=str(version), filter=_reset_tarinfo)
            info = _reset_tarinfo(tarfile.TarInfo(METADATA_FILE))
            info.size = len(metadata_json)
            tar.addfile(info, io.BytesIO(metadata_json))
        tmp.replace(archive_path)
    finally:
        tmp.unlink(missing_ok=True)


def export_model(
    model: "keras.Model",
    model_dir: str | Path,
    *,
    version: int | None = None,
    metadata: dict[str, Any],
) -> ExportedModel:
    """Export ``model`` for TF Serving and SageMaker, with its metadata; see the module docstring.

    ``model``: a model from :func:`train_model` (raw (None, 19) -> (None, 1)). ``version``: a positive
    integer (TF Serving's version directory name); default: UTC epoch seconds, bumped above existing
    versions in ``model_dir``. ``metadata``: what the caller knows about this model; MUST include
    ``threshold`` (the alert threshold, a probability in [0, 1], see :func:`choose_threshold`); usually
    also ``training_window`` ({"start", "end"}), ``metrics``, ``alert_policy``. Written to
    ``metadata.json`` together with ``version``, ``created_at`` (UTC ISO-8601), ``feature_columns``,
    the serving signature, and library versions.
    ``metadata.json`` at ``model_dir``'s root describes the LATEST export into ``model_dir``.
    Returns an :class:`ExportedModel`.
    Raises ValueError on a model with the wrong input/output shape, a missing/invalid threshold,
    conflicting ``feature_columns``, a key that export_model sets itself (``version``, ``created_at``,
    ``serving``, ``libraries``, ``schema_version``) or a non-positive version; FileExistsError if the
    version exists; TypeError on a metadata value JSON cannot hold. A failed export leaves no new
    version directory behind.
    """
    model_dir = Path(model_dir)
    if tuple(model.input_shape) != (None, N_FEATURES) or tuple(model.output_shape) != (None, 1):
        raise ValueError(
            f"model must map (None, {N_FEATURES}) -> (None, 1), "
            f"got {model.input_shape} -> {model.output_shape}"
        )
    reserved = sorted(_RESERVED_METADATA & set(metadata))
    if reserved:
        raise ValueError(f"metadata keys {reserved} are set by export_model, not by the caller")
    threshold = metadata.get("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float, np.floating, np.integer))
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise ValueError(f"metadata['threshold'] must be a probability in [0, 1], got {threshold!r}")
    if "feature_columns" in metadata and list(metadata["feature_columns"]) != list(FEATURE_COLUMNS):
        raise ValueError("metadata['feature_columns'] differs from frauddetect.features.FEATURE_COLUMNS")
    if version is None:
        version = _default_version(model_dir)
    if not isinstance(version, (int, np.integer)) or isinstance(version, bool) or version <= 0:
        raise ValueError(f"version must be a positive integer (TF Serving directory name), got {version!r}")
    version = int(version)
    saved_model_dir = model_dir / str(version)
    if saved_model_dir.exists():
        raise FileExistsError(f"{saved_model_dir} already exists; versions are immutable")

    full = {
        **metadata,
        "schema_version": METADATA_SCHEMA_VERSION,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "feature_columns": list(FEATURE_COLUMNS),
        "threshold": float(threshold),
        "serving": {
            "signature": SIGNATURE_NAME,
            "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, N_FEATURES]},
            "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, 1]},
        },
        "libraries": _library_versions(),
    }
    # Serialised before anything is written, so a metadata value JSON cannot hold fails early (TypeError).
    metadata_json = (json.dumps(full, indent=2, sort_keys=True, default=_json_default) + "\n").encode()

    model_dir.mkdir(parents=True, exist_ok=True)
    # Write beside, then rename: a TF Serving watching model_dir must never see a half-written version.
    staging = model_dir / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_saved_model(model, staging)
        staging.rename(saved_model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    archive_path = model_dir / ARCHIVE_FILE
    metadata_path = model_dir / METADATA_FILE
    try:
        _write_archive(archive_path, saved_model_dir, version, metadata_json)
        tmp = metadata_path.with_name(METADATA_FILE + ".tmp")
        tmp.write_bytes(metadata_json)
        tmp.replace(metadata_path)
    except BaseException:
        # No servable version without its archive and metadata (TF Serving would pick it up).
        shutil.rmtree(saved_model_dir, ignore_errors=True)
        raise
    return ExportedModel(version, model_dir, saved_model_dir, archive_path, metadata_path)


def load_metadata(model_dir: str | Path) -> dict[str, Any]:
    """Read ``model_dir/metadata.json`` (a model_dir from :func:`export_model`, or an extracted
    ``model.tar.gz``). Raises FileNotFoundError if absent, ValueError if it is not a JSON object or its
    feature list differs from this code's :data:`FEATURE_COLUMNS` (a model for other features)."""
    path = Path(model_dir) / METADATA_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no model metadata (was the model exported with export_model?)")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if data.get("feature_columns") != list(FEATURE_COLUMNS):
        raise ValueError(
            f"{path}: the model was trained on features {data.get('feature_columns')}, "
            f"this code computes {list(FEATURE_COLUMNS)}"
        )
    return data


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def validate_features(features: Any) -> np.ndarray:
    """Check a batch to score and return it as a C-contiguous float32 array of shape (n, 19).

    Accepts an array-like (n, 19) in :data:`FEATURE_COLUMNS` order, or a DataFrame holding those columns
    (selected by name, so column order and extra columns such as ``transaction_id`` do not matter).
    Raises ScoringError on an empty batch, a wrong shape, missing columns, non-numeric values, or
    NaN/inf (also values that overflow float32).
    """
    if hasattr(features, "columns"):  # a DataFrame: select by name, never by position
        missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
        if missing:
            raise ScoringError(f"feature frame lacks column(s) {missing}")
        features = features[list(FEATURE_COLUMNS)].to_numpy()
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            x = np.ascontiguousarray(features, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ScoringError(f"features are not numeric: {exc}") from exc
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ScoringError(f"expected features of shape (n, {N_FEATURES}), got {x.shape}")
    if x.shape[0] == 0:
        raise ScoringError("empty batch: nothing to score")
    bad = ~np.isfinite(x)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ScoringError(
            f"{bad.any(axis=1).sum()} row(s) with NaN/inf features, first at row {rows[0]} "
            f"column {FEATURE_COLUMNS[cols[0]]!r}"
        )
    return x


class Scorer(ABC):
    """Scores feature batches with one fraud model version.

    Subclasses implement :meth:`_predict`; :meth:`score` validates the input and the answer, so every
    scorer fails the same way (:class:`ScoringError`) on the same bad input.
    """

    #: The model version that produced the scores (the TF Serving version directory), for lineage.
    model_version: int
    #: Rows per call to the backend (bounds memory here, and request size for an endpoint).
    max_batch_rows: int = 65_536

    def score(self, features: Any) -> np.ndarray:
        """Fraud probabilities for a batch: features (n, 19) raw float (or a DataFrame with the
        columns) -> (n,) float32 in [0, 1], row-aligned.

        Raises ScoringError on an empty batch, a wrong shape, NaN/inf features, or when the model
        fails or returns anything but n finite probabilities.
        """
        x = validate_features(features)
        parts = []
        for start in range(0, len(x), self.max_batch_rows):
            chunk = x[start : start + self.max_batch_rows]
            try:
                out = self._predict(chunk)
            except ScoringError:
                raise
            except Exception as exc:  # the model's own failure, whatever the backend raises
                raise ScoringError(f"model version {self.model_version} failed to score: {exc}") from exc
            parts.append(self._check_output(out, len(chunk)))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _check_output(self, out: Any, n: int) -> np.ndarray:
        y = np.asarray(out, dtype=np.float32)
        if y.shape in ((n, 1), (n,)):
            y = y.reshape(n)
        else:
            raise ScoringError(f"model returned shape {y.shape} for {n} rows")
        if not (np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()):
            raise ScoringError("model returned scores that are not finite probabilities in [0, 1]")
        return y

    @abstractmethod
    def _predict(self, features: np.ndarray) -> np.ndarray:
        """Backend call: validated float32 (m, 19) -> (m,) or (m, 1) probabilities."""


class SavedModelScorer(Scorer):
    """Scores with an exported SavedModel through its ``serving_default`` signature -- the very graph
    TF Serving runs, loaded with ``tf.saved_model.load`` (no Keras, no training code).

    ``model_dir``: a directory from :func:`export_model` or an extracted ``model.tar.gz``; the highest
    integer version directory is loaded unless ``version`` is given. ``intra_op_threads`` /
    ``inter_op_threads``: TensorFlow thread pools (see :func:`limit_tf_threads`; only honoured if
    TensorFlow has not started yet in this process).
    Raises FileNotFoundError when there is no such version, ScoringError when the signature is not
    features float32 (None, 19) -> (None, 1).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        version: int | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        max_batch_rows: int = 65_536,
    ) -> None:
        limit_tf_threads(intra_op_threads, inter_op_threads)
        import tensorflow as tf

        self.model_dir = Path(model_dir)
        versions = _existing_versions(self.model_dir)
        if version is None:
            if not versions:
                raise FileNotFoundError(f"{self.model_dir}: no <integer version>/saved_model.pb inside")
            version = versions[-1]
        elif int(version) not in versions:
            raise FileNotFoundError(f"{self.model_dir}: no SavedModel version {version} (have {versions})")
        self.model_version = int(version)
        self.max_batch_rows = max_batch_rows
        self.path = self.model_dir / str(self.model_version)
        # Keep the loaded object alive: a signature function only holds weak references to its variables,
        # and calling it after the object is garbage-collected fails.
        self._loaded = tf.saved_model.load(str(self.path), tags=["serve"])
        try:
            self._fn = self._loaded.signatures[SIGNATURE_NAME]
        except KeyError:
            raise ScoringError(f"{self.path}: no {SIGNATURE_NAME!r} signature") from None
        self._input_name, self._output_name = self._check_signature(self._fn)

    def _check_signature(self, fn: Any) -> tuple[str, str]:
        import tensorflow as tf

        _, kwargs = fn.structured_input_signature
        outputs = fn.structured_outputs
        if len(kwargs) != 1 or len(outputs) != 1:
            raise ScoringError(f"{self.path}: signature must have one input and one output")
        (in_name, spec), (out_name, out_spec) = next(iter(kwargs.items())), next(iter(outputs.items()))
        if spec.dtype != tf.float32 or spec.shape.as_list() != [None, N_FEATURES]:
            raise ScoringError(
                f"{self.path}: input {in_name} is {spec}, expected float32 (None, {N_FEATURES})"
            )
        if out_spec.shape.as_list() != [None, 1]:
            raise ScoringError(f"{self.path}: output {out_name} is {out_spec}, expected (None, 1)")
        return in_name, out_name

    def _predict(self, features: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._fn(**{self._input_name: tf.constant(features)})[self._output_name].numpy()


# The SageMaker endpoint scorer (same Scorer interface, InvokeEndpoint) is frauddetect.endpoint.EndpointScorer.
