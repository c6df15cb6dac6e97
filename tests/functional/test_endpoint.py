"""The SageMaker endpoint scorer end to end: boto3's sagemaker-runtime client, a real HTTP server
(``frauddetect.local_endpoint``) and a real SavedModel (the session's ``small_model``).

Faults (a SageMaker front end that answers 503, a slow answer, a port with nothing behind it, a model that
answers nonsense) are injected by small WSGI apps in front of, or instead of, the real one; the client,
its retries and the HTTP stack are always the real ones.
"""

from __future__ import annotations

import io
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
import requests
from synthetic_features import synthetic_features
from werkzeug.wrappers import Request, Response

from frauddetect.endpoint import EndpointScorer, decode_predictions
from frauddetect.features import FEATURE_COLUMNS
from frauddetect.local_endpoint import LocalEndpoint, make_app
from frauddetect.model import N_FEATURES, SavedModelScorer, ScoringError
from frauddetect.stream.score import score_rows

pytestmark = pytest.mark.functional

ENDPOINT = "frauddetect-test"


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region: requests are signed as for AWS (the local endpoint ignores it)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")


@pytest.fixture(scope="module")
def in_process(small_model) -> SavedModelScorer:
    return SavedModelScorer(small_model.model_dir)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return synthetic_features(1_000, seed=7)[0]


class Gate:
    """WSGI middleware in front of ``app``: records each request's body size; the first ``failures``
    requests get the SageMaker front end's ``status``/``error_type`` answer, or with ``delay_s`` are
    held that long and then passed on."""

    def __init__(self, app, *, failures: int = 0, status: int = 503, error_type: str = "ServiceUnavailable",
                 delay_s: float = 0.0) -> None:
        self.app, self.failures, self.status, self.error_type, self.delay_s = app, failures, status, error_type, delay_s
        self.body_sizes: list[int] = []

    @property
    def requests(self) -> int:
        return len(self.body_sizes)

    def __call__(self, environ, start_response):
        body = Request(environ).get_data()
        environ["wsgi.input"] = io.BytesIO(body)  # the app behind reads the body again
        self.body_sizes.append(len(body))
        if self.requests <= self.failures:
            if not self.delay_s:
                body = json.dumps({"Message": f"injected {self.error_type}"})
                return Response(body, status=self.status, mimetype="application/json",
                                headers={"x-amzn-ErrorType": self.error_type})(environ, start_response)
            time.sleep(self.delay_s)
        return self.app(environ, start_response)


def _answering(body: bytes, status: int = 200):
    """A WSGI app standing in for a broken model: answers every request with ``body``."""
    return Response(body, status=status, mimetype="application/json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- same scores as the in-process model -----------------------------------------------------------


def test_endpoint_scores_equal_the_in_process_model_in_batched_requests(in_process, rows):
    gate = Gate(make_app(in_process, ENDPOINT))
    with LocalEndpoint(gate) as server:
        scorer = EndpointScorer(ENDPOINT, endpoint_url=server.url, max_rows_per_request=300)
        scores = scorer.score(rows)
        framed = pd.DataFrame(rows, columns=FEATURE_COLUMNS).assign(transaction_id="t")
        by_name = scorer.score(framed[["transaction_id", *reversed(FEATURE_COLUMNS)]])
    assert scores.shape == (1_000,) and scores.dtype == np.float32
    expected = in_process.score(rows)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(by_name, scores)  # a frame is sent by column name, not position
    assert gate.requests == 2 * 4  # 1,000 rows in requests of <= 300, twice
    assert scores.min() < 0.2 and scores.max() > 0.4  # a spread of scores, not one constant


def test_a_request_over_the_payload_limit_is_split_before_it_is_sent(in_process, rows):
    gate = Gate(make_app(in_process, ENDPOINT))
    with LocalEndpoint(gate) as server:
        scorer = EndpointScorer(ENDPOINT, endpoint_url=server.url, max_rows_per_request=1_000,
                                max_payload_bytes=40_000)
        scores = scorer.score(rows[:400])
    np.testing.assert_allclose(scores, in_process.score(rows[:400]), rtol=0, atol=1e-6)
    assert gate.requests > 1 and max(gate.body_sizes) <= 40_000


def _first_line(proc: subprocess.Popen, timeout_s: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise TimeoutError(f"no line from the endpoint process within {timeout_s} s")
    return proc.stdout.readline()


def test_model_tar_gz_served_by_a_fresh_process_scores_like_the_in_process_model(small_model, in_process, rows,
                                                                                   tmp_path):
    archive = tmp_path / "model.tar.gz"  # the archive alone, as SageMaker gets it from S3
    shutil.copy(small_model.archive_path, archive)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "frauddetect.local_endpoint", "--model-dir", str(archive), "--port", "0",
         "--endpoint-name", ENDPOINT],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        started = json.loads(_first_line(proc, 120) or "null")
        assert started, proc.stderr.read()[-3000:] if proc.poll() is not None else "no output"
        assert started["model_version"] == 3
        assert started["invocations_url"] == f"{started['url']}/endpoints/{ENDPOINT}/invocations"
        client = boto3.client("sagemaker-runtime", endpoint_url=started["url"])  # plain boto3, nothing else
        scores = EndpointScorer(ENDPOINT, client=client, max_rows_per_request=400).score(rows)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    np.testing.assert_allclose(scores, in_process.score(rows), rtol=0, atol=1e-6)
    assert proc.returncode == 0


# --- bad requests: refused by the client, and by the server --------------------------------------------


def _with(value, column="tx_amount", n=3):
    x = np.ones((n, N_FEATURES))
    x[1, FEATURE_COLUMNS.index(column)] = value
    return x


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (np.empty((0, N_FEATURES)), "empty batch"),
        (np.ones((4, N_FEATURES - 1)), rf"shape \(n, {N_FEATURES}\), got \(4, {N_FEATURES - 1}\)"),
        (np.ones(N_FEATURES), rf"shape \(n, {N_FEATURES}\)"),
        (_with(np.nan), "NaN/inf features, first at row 1 column 'tx_amount'"),
        (_with(-np.inf, "terminal_id_risk_30day_window"), "column 'terminal_id_risk_30day_window'"),
        (_with(1e300), "NaN/inf"),
        (pd.DataFrame(np.ones((2, N_FEATURES)), columns=FEATURE_COLUMNS).drop(columns="tx_during_night"),
         r"lacks column\(s\) \['tx_during_night'\]"),
    ],
)
def test_the_client_refuses_bad_batches_before_sending_anything(in_process, batch, message):
    gate = Gate(make_app(in_process, ENDPOINT))
    with LocalEndpoint(gate) as server, pytest.raises(ScoringError, match=message):
        EndpointScorer(ENDPOINT, endpoint_url=server.url).score(batch)
    assert gate.requests == 0


_ROW = [1.0] * N_FEATURES


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not JSON"),
        (json.dumps({"inputs": [_ROW]}).encode(), 'expected a JSON object {"instances"'),
        (json.dumps([_ROW]).encode(), 'expected a JSON object {"instances"'),
        (json.dumps({"instances": []}).encode(), "empty batch"),
        (json.dumps({"instances": [_ROW[:-1]]}).encode(), rf"shape \(n, {N_FEATURES}\), got \(1, {N_FEATURES - 1}\)"),
        (json.dumps({"instances": [_ROW, _ROW[:-1]]}).encode(), "not numeric"),
        (json.dumps({"instances": [["a"] * N_FEATURES]}).encode(), "not numeric"),
        (json.dumps({"instances": [[float("nan")] + _ROW[1:]]}).encode(), "NaN/inf features.*'tx_amount'"),
        (json.dumps({"instances": [_ROW[:-1] + [float("inf")]]}).encode(), "NaN/inf features"),
    ],
)
def test_the_server_answers_bad_requests_with_400_and_sagemaker_passes_it_on(in_process, body, message):
    with LocalEndpoint(make_app(in_process, ENDPOINT)) as server:
        headers = {"Content-Type": "application/json"}
        container = requests.post(f"{server.url}/invocations", data=body, headers=headers, timeout=10)
        front = requests.post(f"{server.url}/endpoints/{ENDPOINT}/invocations", data=body, headers=headers,
                              timeout=10)
    # The model container (TF Serving contract): 400 {"error": ...}
    assert container.status_code == 400
    assert set(container.json()) == {"error"}
    assert re.search(message, container.json()["error"])
    # SageMaker's runtime: the container's 400 inside a ModelError (HTTP 424), as on AWS.
    assert front.status_code == 424 and front.headers["x-amzn-ErrorType"] == "ModelError"
    assert front.json()["OriginalStatusCode"] == 400
    assert json.loads(front.json()["OriginalMessage"]) == container.json()


def test_a_model_error_reaches_the_caller_with_the_models_message_and_is_not_retried(in_process):
    gate = Gate(make_app(in_process, ENDPOINT))
    with LocalEndpoint(gate) as server:
        client = boto3.client("sagemaker-runtime", endpoint_url=server.url)
        with pytest.raises(client.exceptions.ModelError) as raw:
            client.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps({"instances": [[1.0, 2.0]]}),
                                   ContentType="application/json")
        scorer = EndpointScorer(ENDPOINT, endpoint_url=server.url, max_attempts=3)
        # A row the client would refuse, sent anyway below the client's checks: the server's own answer.
        with pytest.raises(ScoringError) as scored:
            scorer._predict(np.ones((2, N_FEATURES - 1), dtype=np.float32))
    assert raw.value.response["OriginalStatusCode"] == 400
    assert str(scored.value) == (
        f"endpoint {ENDPOINT}: ModelError after 1 attempt(s): model answered 400: "
        f'{{"error": "expected features of shape (n, {N_FEATURES}), got (2, {N_FEATURES - 1})"}}'
    )
    assert gate.requests == 2  # one each: a model's 4xx is an answer, not a transient failure


def test_content_types_other_than_json_are_refused_with_415(in_process):
    with LocalEndpoint(make_app(in_process, ENDPOINT)) as server:
        client = boto3.client("sagemaker-runtime", endpoint_url=server.url)
        with pytest.raises(client.exceptions.ModelError) as info:
            client.invoke_endpoint(EndpointName=ENDPOINT, Body=b"1,2,3", ContentType="text/csv")
    assert info.value.response["OriginalStatusCode"] == 415


def test_an_unknown_endpoint_name_is_a_scoring_error(in_process, rows):
    with LocalEndpoint(make_app(in_process, ENDPOINT)) as server, pytest.raises(ScoringError) as info:
        EndpointScorer("no-such-endpoint", endpoint_url=server.url).score(rows[:2])
    assert "ValidationError after 1 attempt(s): Endpoint no-such-endpoint of account" in str(info.value)


# --- a failed score is never "not fraud" -----------------------------------------------------------------


@pytest.mark.parametrize(("status", "error_type"), [(503, "ServiceUnavailable"), (500, "InternalFailure")])
def test_transient_endpoint_errors_are_retried_by_botocore(in_process, rows, status, error_type):
    gate = Gate(make_app(in_process, ENDPOINT), failures=2, status=status, error_type=error_type)
    with LocalEndpoint(gate) as server:
        scorer = EndpointScorer(ENDPOINT, endpoint_url=server.url, max_attempts=3)
        scores = scorer.score(rows[:50])
    np.testing.assert_allclose(scores, in_process.score(rows[:50]), rtol=0, atol=1e-6)
    assert gate.requests == 3 and scorer.last_attempts == 3


def test_an_endpoint_that_keeps_failing_is_a_scoring_error_after_the_retries(in_process, rows):
    gate = Gate(make_app(in_process, ENDPOINT), failures=100)
    with LocalEndpoint(gate) as server, pytest.raises(ScoringError) as info:
        EndpointScorer(ENDPOINT, endpoint_url=server.url, max_attempts=3).score(rows[:5])
    assert str(info.value) == f"endpoint {ENDPOINT}: ServiceUnavailable after 3 attempt(s): injected ServiceUnavailable"
    assert gate.requests == 3


def test_an_endpoint_that_is_down_is_a_scoring_error_after_the_retries(rows):
    scorer = EndpointScorer(ENDPOINT, endpoint_url=f"http://127.0.0.1:{_free_port()}", max_attempts=3,
                            connect_timeout=1)
    with pytest.raises(ScoringError, match=f"endpoint {ENDPOINT}: no answer after 3 attempt"):
        scorer.score(rows[:5])
    assert scorer.last_attempts == 3


def test_a_slow_answer_times_out_and_is_retried(in_process, rows):
    gate = Gate(make_app(in_process, ENDPOINT), failures=1, delay_s=1.5)
    with LocalEndpoint(gate) as server:
        scorer = EndpointScorer(ENDPOINT, endpoint_url=server.url, read_timeout=0.5, max_attempts=2)
        started = time.monotonic()
        scores = scorer.score(rows[:5])
        elapsed = time.monotonic() - started
    np.testing.assert_allclose(scores, in_process.score(rows[:5]), rtol=0, atol=1e-6)
    assert gate.requests == 2 and scorer.last_attempts == 2
    assert 0.5 <= elapsed < 1.5  # the client gave up on the first answer instead of waiting for it


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"<html>busy</html>", "not JSON"),
        (b'{"error": "model not loaded"}', "no 'predictions' list: {'error': 'model not loaded'}"),
        (b'{"predictions": [[0.1], [0.2]]}', r"shape \(2, 1\) for 3 rows"),
        (b'{"predictions": [[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]}', r"shape \(3, 2\) for 3 rows"),
        (b'{"predictions": [[0.1], [NaN], [0.3]]}', "not finite probabilities"),
        (b'{"predictions": [[0.1], [1.5], [0.3]]}', "not finite probabilities"),
        (b'{"predictions": [["high"], [0.2], [0.3]]}', "not numbers"),
    ],
)
def test_a_malformed_answer_is_a_scoring_error(answer, message):
    with LocalEndpoint(_answering(answer)) as server, pytest.raises(ScoringError, match=message):
        EndpointScorer(ENDPOINT, endpoint_url=server.url).score(np.ones((3, N_FEATURES)))


def test_decode_predictions_accepts_the_row_format_and_a_flat_list():
    np.testing.assert_array_equal(decode_predictions(b'{"predictions": [[0.25], [1]]}', 2), [0.25, 1.0])
    np.testing.assert_array_equal(decode_predictions(b'{"predictions": [0.25, 0]}', 2), [0.25, 0.0])


def test_without_credentials_or_region_a_local_endpoint_is_called_unsigned(in_process, rows, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with LocalEndpoint(make_app(in_process, ENDPOINT)) as server:
        scores = EndpointScorer(ENDPOINT, endpoint_url=server.url).score(rows[:10])
    np.testing.assert_allclose(scores, in_process.score(rows[:10]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="no AWS region"):
        EndpointScorer(ENDPOINT)


# --- the streaming job's micro-batch with the endpoint ----------------------------------------------------


def _featured_rows(n: int) -> pd.DataFrame:
    """Transactions as the scoring stage gets them (after both operators), from the job's own stages."""
    from stream_harness import LocalJob, kafka_records, transaction

    start = pd.Timestamp("2018-08-01", tz="UTC")
    values, stamps = [], []
    for i in range(n):
        when = start + pd.Timedelta(minutes=7 * i)
        values.append(transaction(f"t{i}", when.isoformat(), 10.0 + 13 * i, f"c{i % 5}", f"term{i % 3}"))
        stamps.append(int(when.value // 1_000_000))
    rows = LocalJob().run(kafka_records(values, "transactions", timestamps_ms=stamps))["rows"]
    return rows[rows["kind"] == "transaction"].drop(columns=["score", "alert", "threshold", "model_version",
                                                             "scored_at_us"])


def _features(scored: pd.DataFrame) -> np.ndarray:
    from frauddetect.features import CARD_FEATURE_COLUMNS, TERMINAL_FEATURE_COLUMNS, model_features

    tx = scored[scored["kind"] == "transaction"]
    return model_features(tx["time_us"].astype(np.int64).to_numpy(), tx["tx_amount"].astype(float).to_numpy(),
                          tx[list(CARD_FEATURE_COLUMNS)].astype(float), tx[list(TERMINAL_FEATURE_COLUMNS)].astype(float)
                          ).to_numpy(dtype=np.float32)


def test_the_scoring_stage_fails_after_its_retries_when_the_endpoint_keeps_failing(in_process):
    gate = Gate(make_app(in_process, ENDPOINT), failures=100)
    with LocalEndpoint(gate) as server:
        scorer = EndpointScorer(ENDPOINT, endpoint_url=server.url, max_attempts=2)
        with pytest.raises(ScoringError, match="ServiceUnavailable after 2 attempt"):
            score_rows(_featured_rows(20), scorer, 0.5, retries=2)
    assert gate.requests == 3 * 2  # 3 scoring calls by the stage, each retried once by botocore


def test_the_scoring_stage_scores_once_the_endpoint_recovers(in_process):
    gate = Gate(make_app(in_process, ENDPOINT), failures=3)  # the first call's 2 attempts, then 1 more
    with LocalEndpoint(gate) as server:
        scorer = EndpointScorer(ENDPOINT, endpoint_url=server.url, max_attempts=2, model_version=3)
        scored = score_rows(_featured_rows(20), scorer, 0.5, retries=2)
    tx = scored[scored["kind"] == "transaction"]
    assert gate.requests == 4 and len(tx) == 20
    np.testing.assert_allclose(tx["score"].to_numpy(dtype=float), in_process.score(_features(scored)), rtol=0,
                               atol=1e-6)
    assert (tx["model_version"] == "3").all()
    assert scored.set_index("stat").loc["scoring_retries", "stat_value"] == 1


def test_the_streaming_job_scores_through_the_endpoint_with_the_models_metadata(small_model, in_process, rows):
    from frauddetect.stream.config import parse_args
    from frauddetect.stream.job import check_endpoint, scorer_spec

    with LocalEndpoint(make_app(in_process, ENDPOINT)) as server:
        config, _ = parse_args(["--bootstrap-servers", "127.0.0.1:9", "--lake-uri", "lake", "--checkpoint-uri", "ck",
                                "--endpoint-name", ENDPOINT, "--endpoint-url", server.url,
                                "--model-dir", str(small_model.model_dir)])
        spec = scorer_spec(config)
        check_endpoint(spec)  # what the job does before Spark starts
        scorer = spec.build()
        scores = scorer.score(rows[:20])
    assert isinstance(scorer, EndpointScorer) and scorer.model_version == "3" and spec.threshold == 0.5
    np.testing.assert_allclose(scores, in_process.score(rows[:20]), rtol=0, atol=1e-6)


def test_the_command_refuses_a_missing_model(tmp_path, capsys):
    from frauddetect.local_endpoint import main

    assert main(["--model-dir", str(tmp_path / "nothing.tar.gz"), "--port", "0"]) == 2
    assert "nothing.tar.gz: no such model directory or archive" in capsys.readouterr().err
