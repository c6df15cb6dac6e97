"""Fixtures shared by functional tests: a moto server standing in for AWS, and the alert Lambda on it.

The alert Lambda is exercised the way the local stack runs it: resources come from
``frauddetect.resources.ensure_local_resources`` on a ``moto`` server, and boto3 reaches that server only
through ``AWS_ENDPOINT_URL`` (no endpoint in the handler code).
"""

from __future__ import annotations

import importlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from emf_metrics import emf_metric_totals

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = REPO_ROOT / "tests" / "events"
ALERT_APP_MODULE = "lambdas.alert_handler.app"

# `lambdas` is not an installed package (only `frauddetect` is); Lambda imports it from the bundle root.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto server (all AWS services on one port) for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def local_aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """Fresh moto state plus the resources every local stack creates; returns ``LocalResources``.

    The environment is what the alert Lambda gets locally (``LocalResources.lambda_environment()``) plus
    dummy credentials, so any boto3 client made in the test talks to the moto server.
    """
    from frauddetect.resources import ensure_local_resources

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    resources = ensure_local_resources(moto_endpoint, region="us-east-1", prefix="fdtest")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name, value in resources.lambda_environment().items():
        monkeypatch.setenv(name, value)
    return resources


class AlertApp:
    """The imported alert Lambda module plus what it wrote: its log lines and everything on stdout."""

    def __init__(self, module: Any, log_stream: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
        self.module = module
        self._log_stream = log_stream
        self._capsys = capsys
        self._stdout: list[str] = []

    def handler(self, event: dict[str, Any]) -> dict[str, Any]:
        """Invoke the real handler with a Lambda-like context."""
        from frauddetect.msk_poller import LocalLambdaContext

        return self.module.handler(event, LocalLambdaContext("fraud-alert-handler"))

    def log_records(self) -> list[dict[str, Any]]:
        """Structured log records the Powertools Logger wrote so far (parsed JSON lines)."""
        return [json.loads(line) for line in self._log_stream.getvalue().splitlines() if line.strip()]

    def log_text(self) -> str:
        """Raw log output so far."""
        return self._log_stream.getvalue()

    def stdout(self) -> str:
        """Everything printed to stdout so far (EMF metric blobs among it)."""
        self._stdout.append(self._capsys.readouterr().out)
        return "".join(self._stdout)

    def metric_totals(self) -> dict[str, float]:
        """Sum of every EMF metric value printed so far, by metric name."""
        return emf_metric_totals(self.stdout())


@pytest.fixture
def alert_app(local_aws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[AlertApp]:
    """The alert Lambda module imported fresh against ``local_aws`` (clients are made at import, as in
    Lambda), with its logger writing to a buffer the test can read."""
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "fraud-alerts")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "FraudDetect")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fraud-alert-handler")
    monkeypatch.delitem(sys.modules, ALERT_APP_MODULE, raising=False)
    module = importlib.import_module(ALERT_APP_MODULE)
    handler = module.logger.registered_handler
    stream = io.StringIO()
    # Powertools keeps one handler per service, bound to the stdout of the first import (a capture stream
    # pytest closes after that test); swap the stream without setStream(), which would flush the closed one.
    previous, handler.stream = handler.stream, stream
    try:
        yield AlertApp(module, stream, capsys)
    finally:
        handler.stream = previous
        sys.modules.pop(ALERT_APP_MODULE, None)


def _load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / name).read_text())


@pytest.fixture
def load_event():
    """``load_event(name)``: a recorded-shape Lambda event from ``tests/events/`` (a fresh copy)."""
    return _load_event


def _drain_queue(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def alerts_inbox(local_aws):
    """``alerts_inbox()``: receive and delete everything on the queue subscribed to the alerts topic;
    returns the SNS envelopes (dicts with ``Message``, ``Subject``, ``Timestamp``, ``MessageAttributes``)."""
    return lambda: _drain_queue(local_aws.alerts_queue_url)


# ---------------------------------------------------------------------------------------------------------
# A small exported fraud model (real Keras training and SavedModel export, seconds instead of minutes)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory):
    """An :class:`~frauddetect.model.ExportedModel` (version 3): the project's Keras network trained for 2
    epochs on 4,000 synthetic rows, exported with ``export_model`` (SavedModel, model.tar.gz, metadata
    with threshold 0.5). For tests of loading, serving and scoring -- not of model quality."""
    from synthetic_features import synthetic_features

    from frauddetect.model import export_model, limit_tf_threads, train_model

    limit_tf_threads(1, 1)  # other engineers' tests share the 2 cores
    x, y = synthetic_features(4_000, seed=1)
    model = train_model(x, y, epochs=2, seed=0)
    return export_model(model, tmp_path_factory.mktemp("small_model"), version=3, metadata={"threshold": 0.5})
