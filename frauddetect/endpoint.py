"""Scoring through a SageMaker endpoint: ``InvokeEndpoint`` with the TF Serving JSON contract.

The deployed model is the SavedModel of :func:`frauddetect.model.export_model` behind the SageMaker
TensorFlow Serving container, so a request is TF Serving's REST row format and the answer its
predictions (``../shared/DESIGN.md``, "Model serving")::

    POST /endpoints/{EndpointName}/invocations      Content-Type: application/json
    {"instances": [[19 raw features], ...]}   ->   {"predictions": [[p], ...]}

:class:`EndpointScorer` is a :class:`~frauddetect.model.Scorer` like the in-process
:class:`~frauddetect.model.SavedModelScorer`: same input checks, same output checks, same
:class:`~frauddetect.model.ScoringError` when a batch cannot be scored. Retries and timeouts are
botocore's (``Config(retries=..., connect_timeout=..., read_timeout=...)``): throttling, 5xx answers of
the SageMaker front end (InternalFailure, ServiceUnavailable), dropped connections and read timeouts are
retried with backoff; a ``ModelError`` (the model container answered an error, HTTP 424) is not, because
the same rows would get the same answer -- the streaming job then retries the whole micro-batch and fails
it, so a row is never taken as "not fraud".

``frauddetect.local_endpoint`` serves the same path on a local port, so this client is tested end to end
with boto3 and a real SavedModel.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from frauddetect.model import Scorer, ScoringError

CONTENT_TYPE = "application/json"
#: InvokeEndpoint's request payload limit for real-time endpoints (6 MB).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
#: A row of 19 float32 features is ~400 bytes of JSON (each value written as the float64 that holds it
#: exactly), so 4,096 rows are ~1.7 MB: well under the limit, and few enough that one request does not
#: run into the endpoint's 60 s invocation timeout on a small instance.
DEFAULT_MAX_ROWS_PER_REQUEST = 4_096


def encode_instances(features: np.ndarray) -> bytes:
    """``{"instances": [[...], ...]}`` for float32 rows (m, 19), as compact UTF-8 JSON.

    Values go out as the float64 repr of each float32 (``tolist``), which parses back to the identical
    float32 in TF Serving; NaN/inf are refused (ValueError), since JSON cannot carry them.
    """
    return json.dumps({"instances": features.tolist()}, separators=(",", ":"), allow_nan=False).encode()


def decode_predictions(body: bytes, n_rows: int) -> np.ndarray:
    """Parse a TF Serving answer ``{"predictions": [[p], ...]}`` for ``n_rows`` rows -> (n_rows,) float32.

    Raises ScoringError on a body that is not JSON, has no ``predictions`` list (e.g. an ``{"error":
    ...}`` object), or holds anything but ``n_rows`` single numbers. Range and NaN checks are the
    :class:`~frauddetect.model.Scorer`'s.
    """
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScoringError(f"endpoint answer is not JSON ({exc}): {body[:200]!r}") from exc
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list):
        raise ScoringError(f"endpoint answer has no 'predictions' list: {str(answer)[:200]}")
    try:
        y = np.asarray(predictions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ScoringError(f"endpoint predictions are not numbers: {exc}") from exc
    if y.shape not in ((n_rows, 1), (n_rows,)):
        raise ScoringError(f"endpoint returned predictions of shape {y.shape} for {n_rows} rows")
    return y.reshape(n_rows).astype(np.float32)


class EndpointScorer(Scorer):
    """Scores feature batches with a SageMaker real-time endpoint (``sagemaker-runtime InvokeEndpoint``).

    ``score(features (n, 19) raw float or a DataFrame with the feature columns) -> (n,) float32`` in
    [0, 1], row-aligned, as every :class:`~frauddetect.model.Scorer`. Rows are sent in requests of at
    most ``max_rows_per_request`` rows; a request whose JSON would still exceed ``max_payload_bytes``
    (6 MB, InvokeEndpoint's limit) is split in halves before it is sent.

    ``endpoint_name``: the SageMaker endpoint. ``region``: its AWS region (default: boto3's resolution,
    e.g. ``AWS_REGION``). ``endpoint_url``: another address for the runtime API -- a VPC interface
    endpoint, or a local endpoint (``frauddetect.local_endpoint``); without AWS credentials and with an
    ``endpoint_url``, requests go unsigned (the local endpoint does not check signatures, and a real
    endpoint refuses them anyway). ``client``: a ready ``sagemaker-runtime`` client instead (then
    ``region``, ``endpoint_url``, timeouts and retries are the client's own).
    ``connect_timeout`` / ``read_timeout``: seconds per attempt. ``max_attempts``: attempts per request,
    first one included (botocore's ``total_max_attempts``); ``retry_mode``: ``"standard"`` or
    ``"adaptive"`` (standard plus client-side rate limiting when throttled).
    ``model_version``: recorded with every score (lineage); the deployed model's version from its
    metadata when known, else the endpoint name.

    :meth:`score` raises ScoringError on an empty batch, a wrong shape, missing feature columns or
    NaN/inf features (before any request), and when the endpoint cannot be reached, keeps failing after
    the retries, rejects the rows (``ModelError``, with the model's own message), or answers anything but
    one probability per row. Raises ValueError at construction on bad settings or when no region can be
    resolved.
    """

    def __init__(
        self,
        endpoint_name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
        model_version: int | str | None = None,
        max_rows_per_request: int = DEFAULT_MAX_ROWS_PER_REQUEST,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
        retry_mode: str = "standard",
    ) -> None:
        if not endpoint_name:
            raise ValueError("endpoint_name is required")
        if max_rows_per_request < 1 or max_payload_bytes < 1 or max_attempts < 1:
            raise ValueError("max_rows_per_request, max_payload_bytes and max_attempts must be positive")
        if retry_mode not in ("standard", "adaptive"):
            raise ValueError(f"retry_mode must be 'standard' or 'adaptive', got {retry_mode!r}")
        self.endpoint_name = endpoint_name
        self.model_version = model_version if model_version is not None else endpoint_name
        self.max_batch_rows = max_rows_per_request
        self.max_payload_bytes = max_payload_bytes
        self.client = client or self._make_client(
            region, endpoint_url, connect_timeout, read_timeout, max_attempts, retry_mode
        )
        # Attempts (first send and retries) of the current request, per thread: botocore retries inside
        # one invoke_endpoint call and reports no count for errors that are not HTTP answers (refused
        # connections, timeouts), so the count comes from its before-send event.
        self._local = threading.local()
        self.client.meta.events.register(
            "before-send.sagemaker-runtime.InvokeEndpoint", self._count_attempt, unique_id=f"fd-attempts-{id(self)}"
        )

    @staticmethod
    def _make_client(region, endpoint_url, connect_timeout, read_timeout, max_attempts, retry_mode):
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        session = boto3.session.Session(region_name=region)
        if session.region_name is None:
            if not endpoint_url:
                raise ValueError("no AWS region for the endpoint: give region= (--endpoint-region) or set AWS_REGION")
            # Any region will do for a local endpoint; botocore only needs one to build the request.
            session = boto3.session.Session(region_name="us-east-1")
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": retry_mode},
        )
        if endpoint_url and session.get_credentials() is None:
            config = config.merge(Config(signature_version=UNSIGNED))
        return session.client("sagemaker-runtime", endpoint_url=endpoint_url, config=config)

    def _count_attempt(self, **_: Any) -> None:
        self._local.attempts = getattr(self._local, "attempts", 0) + 1

    @property
    def last_attempts(self) -> int:
        """HTTP attempts the last request of this thread took (1 = no retry); 0 before any request."""
        return getattr(self._local, "attempts", 0)

    def _predict(self, features: np.ndarray) -> np.ndarray:
        body = encode_instances(features)
        if len(body) > self.max_payload_bytes:
            if len(features) == 1:
                raise ScoringError(f"one row is {len(body)} bytes of JSON, over the {self.max_payload_bytes} limit")
            half = len(features) // 2
            return np.concatenate([self._predict(features[:half]), self._predict(features[half:])])
        return decode_predictions(self._invoke(body), len(features))

    def _invoke(self, body: bytes) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        self._local.attempts = 0
        try:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=body, ContentType=CONTENT_TYPE, Accept=CONTENT_TYPE
            )
            return response["Body"].read()
        except ClientError as exc:
            raise ScoringError(self._describe(exc)) from exc
        except BotoCoreError as exc:  # no HTTP answer: connection refused/reset, timeouts
            raise ScoringError(
                f"endpoint {self.endpoint_name}: no answer after {self.last_attempts} attempt(s): {exc}"
            ) from exc

    def _describe(self, exc: Any) -> str:
        """The error SageMaker (or the model behind it) answered, for a ScoringError message."""
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        if code == "ModelError" and "OriginalStatusCode" in exc.response:
            # The model container's own status and body (e.g. TF Serving's {"error": ...} for bad rows).
            message = f"model answered {exc.response['OriginalStatusCode']}: {exc.response.get('OriginalMessage', '')}"
        return f"endpoint {self.endpoint_name}: {code} after {self.last_attempts} attempt(s): {message}"
