"""A local SageMaker endpoint: the real SavedModel behind the ``InvokeEndpoint`` HTTP path.

It answers what a SageMaker real-time endpoint with the TensorFlow Serving container answers, so
:class:`frauddetect.endpoint.EndpointScorer` -- or any ``boto3.client("sagemaker-runtime",
endpoint_url="http://127.0.0.1:PORT")`` -- runs unchanged against it::

    POST /endpoints/{EndpointName}/invocations   SageMaker runtime (what botocore sends)
    POST /invocations                            the model container's own contract (TF Serving REST JSON)
    GET  /ping                                   the container's health check

Request and answer: ``{"instances": [[19 raw features], ...]}`` -> ``{"predictions": [[p], ...]}``.

Errors, as the two layers produce them on AWS:

* the container (``/invocations``) answers a bad request -- not JSON, no ``instances`` list, an empty
  batch, rows that are not 19 numbers, NaN/inf -- with 400 and TF Serving's ``{"error": "..."}``, a
  content type other than JSON with 415, and a model failure with 500;
* the SageMaker front (``/endpoints/...``) passes a container error on as HTTP 424 ``ModelError`` with
  ``OriginalStatusCode`` and ``OriginalMessage`` (botocore raises ``ModelError``); an unknown endpoint
  name or a payload over 6 MB is a 400 ``ValidationError``.

The model is loaded with :class:`frauddetect.model.SavedModelScorer` from an export directory or from a
``model.tar.gz``, extracted the way SageMaker extracts it to ``/opt/ml/model``.

Command line (``python -m frauddetect.local_endpoint --model-dir DIR|model.tar.gz [--port 8080]
[--endpoint-name frauddetect]``): prints one JSON line with the URL once it accepts requests, serves until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from frauddetect.endpoint import CONTENT_TYPE, MAX_PAYLOAD_BYTES
from frauddetect.model import Scorer, ScoringError, validate_features

log = logging.getLogger("frauddetect.local_endpoint")

DEFAULT_ENDPOINT_NAME = "frauddetect"
VARIANT_NAME = "AllTraffic"
#: Stands in for the AWS account in SageMaker's "endpoint not found" message.
LOCAL_ACCOUNT = "000000000000"

WSGIApp = Callable[[dict, Callable], Any]


def _json(status: int, doc: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(doc), status=status, mimetype=CONTENT_TYPE, headers=headers)


def predict(scorer: Scorer, body: bytes, content_type: str | None) -> tuple[int, bytes]:
    """The model container's answer to one ``/invocations`` request: (HTTP status, JSON body).

    200 with ``{"predictions": [[p], ...]}``; 400 with ``{"error": ...}`` for a body that is not a JSON
    object with a non-empty ``instances`` list of rows of 19 finite numbers; 415 for a content type other
    than JSON; 500 when the model fails.
    """
    if (content_type or "").split(";")[0].strip().lower() != CONTENT_TYPE:
        return 415, json.dumps({"error": f"unsupported content type {content_type!r}; send {CONTENT_TYPE}"}).encode()
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return 400, json.dumps({"error": f"body is not JSON: {exc}"}).encode()
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list):
        return 400, json.dumps({"error": 'expected a JSON object {"instances": [[...], ...]}'}).encode()
    if not instances:
        return 400, json.dumps({"error": "empty batch: nothing to score"}).encode()
    try:
        # The same checks as every client's (shape, numbers, NaN/inf -- Python's json reads NaN and
        # Infinity tokens, TF Serving's parser rejects them; both end here as a 400).
        x = validate_features(instances)
    except ScoringError as exc:
        return 400, json.dumps({"error": str(exc)}).encode()
    try:
        scores = scorer.score(x)
    except Exception as exc:
        log.exception("model failed on %d rows", len(x))
        return 500, json.dumps({"error": f"model failed: {exc}"}).encode()
    return 200, json.dumps({"predictions": scores.reshape(-1, 1).tolist()}).encode()


def make_app(scorer: Scorer, endpoint_name: str = DEFAULT_ENDPOINT_NAME) -> WSGIApp:
    """The WSGI application: SageMaker's runtime path, the container's ``/invocations`` and ``/ping``
    (see the module docstring), all scored by ``scorer``."""
    routes = Map(
        [
            Rule("/endpoints/<name>/invocations", endpoint="invoke_endpoint", methods=["POST"]),
            Rule("/invocations", endpoint="invocations", methods=["POST"]),
            Rule("/ping", endpoint="ping", methods=["GET"]),
        ]
    )

    def invocations(request: Request) -> Response:
        status, body = predict(scorer, request.get_data(), request.content_type)
        return Response(body, status=status, mimetype=CONTENT_TYPE)

    def invoke_endpoint(request: Request, name: str) -> Response:
        if name != endpoint_name:
            return _sagemaker_error(400, "ValidationError", f"Endpoint {name} of account {LOCAL_ACCOUNT} not found.")
        body = request.get_data()
        if len(body) > MAX_PAYLOAD_BYTES:
            # SageMaker refuses it before the container sees it; botocore names the error from the header.
            return _sagemaker_error(
                400, "ValidationError", f"Request payload of {len(body)} bytes exceeds {MAX_PAYLOAD_BYTES} bytes."
            )
        status, answer = predict(scorer, body, request.content_type)
        if status != 200:
            kind = "client" if status < 500 else "server"
            text = answer.decode()
            return _sagemaker_error(
                424,
                "ModelError",
                f'Received {kind} error ({status}) from primary with message "{text}". '
                f"See the local endpoint's log for more information.",
                OriginalStatusCode=status,
                OriginalMessage=text,
                LogStreamArn="",
            )
        return Response(answer, status=200, mimetype=CONTENT_TYPE,
                        headers={"x-Amzn-Invoked-Production-Variant": VARIANT_NAME})

    handlers = {"invocations": invocations, "invoke_endpoint": invoke_endpoint, "ping": lambda request: Response("")}

    @Request.application
    def app(request: Request) -> Response:
        try:
            handler, args = routes.bind_to_environ(request.environ).match()
        except HTTPException as exc:  # unknown path or method: JSON like the rest, not an HTML page
            return _json(exc.code or 404, {"error": exc.description})
        return handlers[handler](request, **args)

    return app


def _sagemaker_error(status: int, error_type: str, message: str, **fields: Any) -> Response:
    """An error of the SageMaker runtime API (rest-json: the type in ``x-amzn-ErrorType``)."""
    return _json(status, {"Message": message, **fields}, headers={"x-amzn-ErrorType": error_type})


class LocalEndpoint:
    """Serves a WSGI app (normally :func:`make_app`) on a background thread.

    ``host``/``port``: where to listen (port 0: a free port, see :attr:`port`). Werkzeug's threaded server
    (HTTP/1.1 keep-alive, as botocore's connection pool expects) from the Flask project rather than
    ``http.server``: it handles chunked bodies, keep-alive and request parsing we would otherwise write.
    Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = make_server(host, port, app, threaded=True)
        self.host = host
        self.port: int = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start serving in a daemon thread; returns self."""
        # A short poll interval: stop() waits for one (werkzeug's default is 0.5 s).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-endpoint", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_model(path: str | Path, *, threads: int = 1) -> tuple[Scorer, Path | None]:
    """A :class:`~frauddetect.model.SavedModelScorer` for an export directory or a ``model.tar.gz``.

    An archive is extracted into a new temporary directory (returned second, for the caller to remove;
    None for a directory), refusing members that would land outside it. ``threads``: TensorFlow's
    intra-op threads (inter-op: 1). Raises FileNotFoundError when there is no model there.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model directory or archive")
    extracted = None
    if path.is_file():
        extracted = Path(tempfile.mkdtemp(prefix="frauddetect-model-"))
        try:
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(extracted, filter="data")
        except (tarfile.TarError, OSError):
            shutil.rmtree(extracted, ignore_errors=True)
            raise
    from frauddetect.model import SavedModelScorer

    try:
        return SavedModelScorer(extracted or path, intra_op_threads=threads, inter_op_threads=1), extracted
    except BaseException:
        if extracted:
            shutil.rmtree(extracted, ignore_errors=True)
        raise


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The local endpoint's options, for ``python -m frauddetect.local_endpoint`` or a CLI subcommand."""
    parser.add_argument("--model-dir", required=True,
                        help="exported model directory (<version>/saved_model.pb) or a model.tar.gz")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080, the container's; 0: any free)")
    parser.add_argument("--endpoint-name", default=DEFAULT_ENDPOINT_NAME,
                        help=f"endpoint name in /endpoints/NAME/invocations (default {DEFAULT_ENDPOINT_NAME})")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads (default 1)")


def serve_from_args(args: argparse.Namespace) -> int:
    """Load the model, serve until SIGTERM/SIGINT; returns the exit status (0).

    Prints one JSON line to stdout once requests are accepted: ``url``, ``endpoint_name``,
    ``invocations_url``, ``model_version``. Raises FileNotFoundError when there is no model.
    """
    scorer, extracted = load_model(args.model_dir, threads=args.threads)
    try:
        server = LocalEndpoint(make_app(scorer, args.endpoint_name), host=args.host, port=args.port)
        stop = threading.Event()

        def shutdown(*_: Any) -> None:
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, shutdown)
        with server:
            print(json.dumps({
                "url": server.url,
                "endpoint_name": args.endpoint_name,
                "invocations_url": f"{server.url}/endpoints/{args.endpoint_name}/invocations",
                "model_version": scorer.model_version,
            }), flush=True)
            stop.wait()
    finally:
        if extracted:
            shutil.rmtree(extracted, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m frauddetect.local_endpoint``: parse ``argv``, serve; exit status 2 on a bad model path."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m frauddetect.local_endpoint",
                                     description="Local SageMaker endpoint serving an exported fraud model")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve_from_args(args)
    except FileNotFoundError as exc:
        print(f"local_endpoint: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
