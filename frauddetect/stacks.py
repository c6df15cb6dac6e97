"""Where Kafka and the AWS APIs are: the one configuration surface behind ``frauddetect demo --stack``.

Three stacks, one set of commands; only the endpoints differ:

* ``embedded`` (default): the demo starts a Tansu broker and a moto server itself on free loopback ports
  (:mod:`frauddetect.embedded`); nothing to configure.
* ``compose``: Apache Kafka and LocalStack from ``local/docker-compose.yml``, already running. The demo
  connects to :data:`COMPOSE_BOOTSTRAP_SERVERS` and :data:`COMPOSE_AWS_ENDPOINT_URL` (the ports that file
  publishes; ``tests/unit/test_compose.py`` fails if the two disagree) and starts nothing but the streaming
  job and the alert Lambda's poller, exactly as on the embedded stack.
* ``aws``: Amazon MSK and the real AWS endpoints. The settings resolve (bootstrap servers from the
  command line or the environment, the region from the environment), but the demo refuses them: in AWS
  the Glue job, the Lambda and its event source mapping run the pipeline, deployed with ``cdk deploy``.

Overrides, for every non-embedded stack: ``--bootstrap-servers`` / ``FRAUDDETECT_BOOTSTRAP_SERVERS`` and
``--aws-endpoint-url`` / ``FRAUDDETECT_AWS_ENDPOINT_URL`` (the command line wins).

:func:`check_demo_stack` is what ``frauddetect demo`` runs before anything slow: for ``compose`` it checks,
in a few seconds, that each service answers (and names the ones that do not), then that the stack holds
no data from an earlier run (the demo's counts assume empty topics, queue and idempotency table).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "COMPOSE_AWS_ENDPOINT_URL",
    "COMPOSE_BOOTSTRAP_SERVERS",
    "COMPOSE_FILE",
    "COMPOSE_REGION",
    "COMPOSE_UP",
    "ENV_AWS_ENDPOINT_URL",
    "ENV_BOOTSTRAP_SERVERS",
    "STACKS",
    "StackError",
    "StackNotFresh",
    "StackNotSupported",
    "StackSettings",
    "StackUnavailable",
    "check_demo_stack",
    "check_reachable",
    "resolve_stack",
]

STACKS = ("embedded", "compose", "aws")

#: The compose file, relative to the repository root (for messages; the code never reads it).
COMPOSE_FILE = "local/docker-compose.yml"
#: Kafka's host listener as ``local/docker-compose.yml`` publishes and advertises it.
COMPOSE_BOOTSTRAP_SERVERS = "127.0.0.1:9092"
#: LocalStack's gateway as ``local/docker-compose.yml`` publishes it.
COMPOSE_AWS_ENDPOINT_URL = "http://127.0.0.1:4566"
#: The region of the resources on LocalStack (its init hook's and ``ensure_local_resources``' default).
COMPOSE_REGION = "us-east-1"
#: AWS services the system uses on LocalStack (its ``SERVICES`` setting).
COMPOSE_AWS_SERVICES = ("dynamodb", "s3", "sns", "sqs")
COMPOSE_UP = f"docker compose -f {COMPOSE_FILE} up -d --wait"
COMPOSE_RESET = f"docker compose -f {COMPOSE_FILE} down -v && {COMPOSE_UP}"

ENV_BOOTSTRAP_SERVERS = "FRAUDDETECT_BOOTSTRAP_SERVERS"
ENV_AWS_ENDPOINT_URL = "FRAUDDETECT_AWS_ENDPOINT_URL"


class StackError(RuntimeError):
    """The selected stack cannot run the demo; the message says why and what to do."""


class StackNotSupported(StackError):
    """The demo does not run on this stack (``aws``)."""


class StackUnavailable(StackError):
    """One or more services of the stack do not answer; the message names each of them."""


class StackNotFresh(StackError):
    """The stack holds records or messages from an earlier run."""


@dataclass(frozen=True)
class StackSettings:
    """Endpoints of one stack.

    Attributes:
        name: ``embedded``, ``compose`` or ``aws``.
        bootstrap_servers: Kafka ``host:port[,...]``; ``None`` for ``embedded`` (picked when it starts).
        aws_endpoint_url: AWS-API endpoint; ``None`` for ``embedded`` (picked when moto starts) and for
            ``aws`` (the real endpoints).
        region: AWS region of the resources.
    """

    name: str = "embedded"
    bootstrap_servers: str | None = None
    aws_endpoint_url: str | None = None
    region: str = COMPOSE_REGION

    @property
    def starts_services(self) -> bool:
        """True where the demo starts the broker and the AWS APIs itself (``embedded``)."""
        return self.name == "embedded"

    def describe(self) -> str:
        """One line for the demo's progress output."""
        if self.name == "compose":
            return (f"compose stack: Kafka (Apache Kafka) {self.bootstrap_servers}, "
                    f"AWS APIs (LocalStack) {self.aws_endpoint_url}")
        if self.name == "aws":
            return f"aws stack: Kafka (MSK) {self.bootstrap_servers}, AWS APIs in {self.region}"
        return "embedded stack"


def resolve_stack(
    name: str = "embedded",
    *,
    bootstrap_servers: str | None = None,
    aws_endpoint_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> StackSettings:
    """The settings of stack ``name``: arguments first, then the environment, then the stack's defaults.

    ``aws``: bootstrap servers from the argument or ``FRAUDDETECT_BOOTSTRAP_SERVERS`` (``None`` if neither),
    region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, no endpoint override (the real AWS endpoints).

    :raises ValueError: unknown ``name``, or endpoints given for ``embedded``.
    """
    env = os.environ if environ is None else environ
    if name not in STACKS:
        raise ValueError(f"unknown stack {name!r}: one of {', '.join(STACKS)}")
    if name == "embedded":
        if bootstrap_servers or aws_endpoint_url:
            raise ValueError("--bootstrap-servers and --aws-endpoint-url go with --stack compose or aws; "
                             "the embedded stack picks its own endpoints")
        return StackSettings("embedded")
    bootstrap = bootstrap_servers or env.get(ENV_BOOTSTRAP_SERVERS)
    endpoint = aws_endpoint_url or env.get(ENV_AWS_ENDPOINT_URL)
    if name == "compose":
        return StackSettings("compose", bootstrap or COMPOSE_BOOTSTRAP_SERVERS,
                             endpoint or COMPOSE_AWS_ENDPOINT_URL, COMPOSE_REGION)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or COMPOSE_REGION
    return StackSettings("aws", bootstrap, endpoint, region)


# -- reachability ------------------------------------------------------------------------------------------
def _tcp_problem(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def _kafka_problem(bootstrap: str, timeout: float) -> str | None:
    problems = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        problem = _tcp_problem(host.strip("[]"), int(port), timeout)
        if problem is None:
            break
        problems.append(problem)
    else:
        return problems[0] if len(problems) == 1 else "; ".join(problems)
    from confluent_kafka.admin import AdminClient  # deferred: librdkafka only when a port answered

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=2 * timeout)
    except Exception as exc:  # noqa: BLE001 - KafkaException or a timeout
        return f"the port answers but Kafka does not answer a metadata request ({exc})"
    return None


def _http_json(url: str, timeout: float) -> dict | None:
    """GET ``url`` as JSON; ``None`` when it is not there (404, not JSON: not a LocalStack)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, ValueError, OSError):
        return None


def _aws_problem(endpoint_url: str, region: str, timeout: float) -> str | None:
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {endpoint_url!r}"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    problem = _tcp_problem(parts.hostname, port, timeout)
    if problem is not None:
        return problem
    base = endpoint_url.rstrip("/")
    health = _http_json(f"{base}/_localstack/health", timeout)
    if health is not None:  # LocalStack: its own view of the services and of the init hook
        services = health.get("services", {})
        down = [s for s in COMPOSE_AWS_SERVICES if services.get(s) not in ("available", "running")]
        if down:
            return f"services not enabled or not running: {', '.join(down)} (SERVICES in {COMPOSE_FILE})"
        ready = _http_json(f"{base}/_localstack/init/ready", timeout) or {}
        failed = [s.get("name") for s in ready.get("scripts", []) if s.get("state") == "ERROR"]
        if failed:
            return f"its init hook failed ({', '.join(map(str, failed))}): see `docker compose logs localstack`"
        if not ready.get("completed"):
            return "up, but its init hook (local/localstack/init/ready.d) has not finished yet"
        return None
    import boto3  # any other AWS-API endpoint (a moto server): one cheap call proves it answers
    from botocore.config import Config

    sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name=region,
                       aws_access_key_id="testing", aws_secret_access_key="testing",
                       config=Config(connect_timeout=timeout, read_timeout=timeout,
                                     retries={"total_max_attempts": 1}))
    try:
        sqs.list_queues()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable", with its reason
        return f"the port answers but SQS calls fail ({exc})"
    return None


def check_reachable(settings: StackSettings, timeout: float = 2.0) -> None:
    """Check that every service of a non-embedded stack answers, within a few seconds.

    :raises StackUnavailable: naming each service that does not answer (Kafka at host:port, LocalStack
        at URL) and how to start the compose stack.
    """
    if settings.starts_services:
        return
    compose = settings.name == "compose"
    missing = []
    if settings.bootstrap_servers:
        problem = _kafka_problem(settings.bootstrap_servers, timeout)
        if problem:
            service = "Kafka (service `kafka`)" if compose else "Kafka"
            missing.append(f"{service} at {settings.bootstrap_servers}: {problem}")
    if settings.aws_endpoint_url:
        problem = _aws_problem(settings.aws_endpoint_url, settings.region, timeout)
        if problem:
            service = "LocalStack (service `localstack`)" if compose else "AWS APIs"
            missing.append(f"{service} at {settings.aws_endpoint_url}: {problem}")
    if missing:
        hint = f"\nStart it with: {COMPOSE_UP}" if compose else ""
        raise StackUnavailable(f"the {settings.name} stack is not up:\n  - " + "\n  - ".join(missing) + hint)


# -- freshness -----------------------------------------------------------------------------------------------
def _check_fresh(settings: StackSettings, timeout: float = 10.0) -> None:
    """Refuse a stack that holds data from an earlier run (compose services live across demo runs)."""
    import boto3

    from frauddetect import kafka_io
    from frauddetect.config import ALERTS_TOPIC, LABELS_TOPIC, QUARANTINE_TOPIC, TRANSACTIONS_TOPIC
    from frauddetect.resources import ensure_local_resources

    leftovers = []
    topics = [TRANSACTIONS_TOPIC, LABELS_TOPIC, ALERTS_TOPIC, QUARANTINE_TOPIC]
    ends = kafka_io.end_offsets_via_fetch(settings.bootstrap_servers, topics, timeout=timeout)
    for topic in topics:
        records = sum(ends.get(topic, {}).values())
        if records:
            leftovers.append(f"Kafka topic `{topic}` holds {records:,} records")
    # The one function that names and creates the resources (idempotent; the init hook made them already).
    resources = ensure_local_resources(settings.aws_endpoint_url, region=settings.region)
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    table = boto3.client("dynamodb", endpoint_url=settings.aws_endpoint_url, region_name=settings.region,
                         **credentials).scan(TableName=resources.idempotency_table, Limit=1, Select="COUNT")
    if table["Count"]:
        leftovers.append(f"DynamoDB table `{resources.idempotency_table}` holds idempotency records")
    attributes = boto3.client("sqs", endpoint_url=settings.aws_endpoint_url, region_name=settings.region,
                              **credentials).get_queue_attributes(
        QueueUrl=resources.alerts_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    if sum(int(v) for v in attributes.values()):
        leftovers.append(f"SQS queue `{resources.alerts_queue_url.rsplit('/', 1)[-1]}` holds messages")
    if leftovers:
        raise StackNotFresh(
            "the compose stack holds data from an earlier run, and the demo counts everything it finds:\n  - "
            + "\n  - ".join(leftovers) + f"\nReset it (drops all its state): {COMPOSE_RESET}"
        )


def check_demo_stack(settings: StackSettings) -> None:
    """What ``frauddetect demo`` checks before anything slow (training, Spark).

    ``embedded``: nothing. ``compose``: every service answers (:func:`check_reachable`), then the stack is
    fresh. ``aws``: refused.

    :raises StackNotSupported: for ``aws``.
    :raises StackUnavailable: a service does not answer (named in the message).
    :raises StackNotFresh: topics, queue or idempotency table hold data from an earlier run.
    """
    if settings.name == "aws":
        raise StackNotSupported(
            "--stack aws is not supported by the demo: deploy with cdk (`cdk deploy`, see infra/). In AWS the "
            "Glue streaming job, the alert Lambda and its MSK event source mapping run the pipeline; the "
            "demo's local Spark job, in-process Lambda poller and SQS proof-of-delivery queue are local only."
        )
    if settings.starts_services:
        return
    check_reachable(settings)
    _check_fresh(settings)
