"""The Docker dev loop, checked without Docker: ``local/docker-compose.yml``, its LocalStack init hook, and
``frauddetect demo --stack compose``.

* The compose file is valid against the Compose specification's JSON schema, as shipped by the
  ``check-jsonschema`` package (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``).
* Every image is pinned to an exact version.
* Ports, listeners, region and services agree with what the code connects to
  (:data:`frauddetect.stacks.COMPOSE_BOOTSTRAP_SERVERS` and friends); the one-shot topic service creates
  the topics of :mod:`frauddetect.config` as ``kafka_io.ensure_topics`` does; every long-running service
  has a health check and every one-shot service is waited for.
* Negative tests: modified copies of the file (an unpinned image, a port that disagrees, ...) are caught.
* The init hook, run with bash against a moto server (``awslocal`` replaced by a boto3 shim), creates
  exactly what :func:`frauddetect.resources.ensure_local_resources` creates, and the code adopts it.
* ``frauddetect demo --stack compose`` against nothing fails in seconds, naming each missing service.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from importlib import resources as importlib_resources
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from frauddetect import kafka_io, stacks
from frauddetect.config import (
    ALERTS_TOPIC,
    LABELS_TOPIC,
    QUARANTINE_TOPIC,
    TRANSACTIONS_TOPIC,
)
from frauddetect.resources import ensure_local_resources

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "local" / "docker-compose.yml"
HOOK_DIR = ROOT / "local" / "localstack" / "init" / "ready.d"
HOOK = HOOK_DIR / "10-frauddetect-resources.sh"
SHIM = Path(__file__).resolve().parent / "awscli_shim.py"
TOPICS = [TRANSACTIONS_TOPIC, LABELS_TOPIC, ALERTS_TOPIC, QUARANTINE_TOPIC]
SETTINGS = stacks.resolve_stack("compose", environ={})  # the defaults, whatever this shell exports
LOCALSTACK_INIT = "/etc/localstack/init/ready.d"
# repository[:X.Y.Z][@sha256:...], with at least one of the two: an exact version or a digest.
EXACT_IMAGE = re.compile(
    r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*(?:(?::\d+\.\d+\.\d+(?:@sha256:[0-9a-f]{64})?)|(?:@sha256:[0-9a-f]{64}))$"
)


# -- reading the compose file ------------------------------------------------------------------------------
def load(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text())


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def published(service: dict) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) of each published port (short and long syntax)."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip"), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append((None, int(parts[0]), int(parts[1])))
    return out


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def command_text(service: dict) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else "\n".join(map(str, command))


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for item in filter(None, (v.strip() for v in value.split(","))):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


# -- the checks (each returns a list of problems; [] means it agrees) ------------------------------------------
def compose_schema() -> dict:
    vendor = importlib_resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))


def schema_problems(doc: dict) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"schema: /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def pin_problems(doc: dict) -> list[str]:
    problems = []
    for name, service in doc.get("services", {}).items():
        image = service.get("image")
        if image is None:
            problems.append(f"{name}: no image (a local build is not pinned)")
        elif not EXACT_IMAGE.match(str(image)):
            problems.append(f"{name}: image {image!r} is not pinned to an exact version (repo:X.Y.Z or a digest)")
    return problems


def port_problems(doc: dict, settings: stacks.StackSettings = SETTINGS) -> list[str]:
    """Kafka and LocalStack are reachable from the host exactly where the compose stack settings point."""
    problems = []
    services = doc.get("services", {})
    kafka, localstack = services.get("kafka", {}), services.get("localstack", {})

    host, port = settings.bootstrap_servers.rsplit(":", 1)
    kafka_env = env_of(kafka)
    advertised = listeners(kafka_env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    bound = listeners(kafka_env.get("KAFKA_LISTENERS", ""))
    host_listener = [name for name, address in advertised.items() if address == (host, int(port))]
    if not host_listener:
        problems.append(f"kafka: no advertised listener is {settings.bootstrap_servers} "
                        f"(KAFKA_ADVERTISED_LISTENERS={kafka_env.get('KAFKA_ADVERTISED_LISTENERS')!r})")
    else:
        container_port = bound.get(host_listener[0], (None, None))[1]
        if container_port is None:
            problems.append(f"kafka: listener {host_listener[0]} is advertised but not in KAFKA_LISTENERS")
        elif not any(hp == int(port) and cp == container_port and ip in (None, "0.0.0.0", host)
                     for ip, hp, cp in published(kafka)):
            problems.append(f"kafka: port {port} on {host} is not published to the {host_listener[0]} listener "
                            f"(container port {container_port}); published: {published(kafka)}")
    if kafka_env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") != "false":
        problems.append("kafka: KAFKA_AUTO_CREATE_TOPICS_ENABLE must be \"false\" (as on MSK: topics are created)")

    endpoint = urlsplit(settings.aws_endpoint_url)
    ls_env = env_of(localstack)
    gateway = int(ls_env.get("GATEWAY_LISTEN", ":4566").rsplit(":", 1)[-1])
    if not any(hp == endpoint.port and cp == gateway and ip in (None, "0.0.0.0", endpoint.hostname)
               for ip, hp, cp in published(localstack)):
        problems.append(f"localstack: {settings.aws_endpoint_url} is not published to the gateway (container port "
                        f"{gateway}); published: {published(localstack)}")
    enabled = {s.strip() for s in ls_env.get("SERVICES", "").split(",") if s.strip()}
    if enabled != set(stacks.COMPOSE_AWS_SERVICES):
        problems.append(f"localstack: SERVICES is {sorted(enabled)}, the code uses {sorted(stacks.COMPOSE_AWS_SERVICES)}")
    if ls_env.get("AWS_DEFAULT_REGION") != settings.region:
        problems.append(f"localstack: AWS_DEFAULT_REGION is {ls_env.get('AWS_DEFAULT_REGION')!r}, "
                        f"the code uses {settings.region!r}")
    return problems


def topic_problems(doc: dict) -> list[str]:
    """The one-shot ``kafka-init`` creates the code's topics as ``ensure_topics`` would."""
    problems = []
    services = doc.get("services", {})
    init = services.get("kafka-init")
    if init is None:
        return ["kafka-init: missing (the service that creates the topics)"]
    env = env_of(init)
    topics = env.get("TOPICS", "").split()
    if sorted(topics) != sorted(TOPICS) or len(set(topics)) != len(topics):
        problems.append(f"kafka-init: TOPICS is {topics}, frauddetect/config.py has {TOPICS}")
    defaults = inspect.signature(kafka_io.ensure_topics).parameters
    for key, param in (("PARTITIONS", "partitions"), ("REPLICATION_FACTOR", "replication_factor")):
        if env.get(key) != str(defaults[param].default):
            problems.append(f"kafka-init: {key} is {env.get(key)!r}, ensure_topics uses {defaults[param].default}")
    docker_listener = listeners(env_of(services.get("kafka", {})).get("KAFKA_ADVERTISED_LISTENERS", ""))
    if env.get("BOOTSTRAP_SERVERS") not in {f"{h}:{p}" for h, p in docker_listener.values()}:
        problems.append(f"kafka-init: BOOTSTRAP_SERVERS {env.get('BOOTSTRAP_SERVERS')!r} is none of kafka's "
                        f"advertised listeners")
    command = command_text(init)
    if not re.search(r"kafka-topics\.sh\b.*--create --if-not-exists", command, re.DOTALL):
        problems.append("kafka-init: the command does not run kafka-topics.sh --create --if-not-exists")
    if not re.search(r"for \w+ in \$\$TOPICS", command):
        problems.append("kafka-init: the command does not loop over $$TOPICS")
    if depends_on(init).get("kafka") != "service_healthy":
        problems.append("kafka-init: must depend on kafka with condition service_healthy")
    return problems


def _strings(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}/{i}")
    elif isinstance(node, str):
        yield path, node


def interpolation_problems(doc: dict) -> list[str]:
    """The file uses no compose variables: a single ``$`` is a shell variable that compose would replace."""
    return [f"{path}: a single $ is interpolated by compose (empty here); write $$ for the shell"
            for path, text in _strings(doc) if "$" in text.replace("$$", "")]


def health_problems(doc: dict) -> list[str]:
    """Long-running services have a health check; one-shot services are waited for (or `up --wait` fails)."""
    problems = []
    services = doc.get("services", {})
    one_shot = {name for name, s in services.items() if str(s.get("restart", "")) == "no"}
    adopted = {dep for s in services.values() for dep, cond in depends_on(s).items()
               if cond == "service_completed_successfully"}
    for name, service in services.items():
        if name in one_shot:
            if name not in adopted:
                problems.append(f"{name}: one-shot service that no long-running service waits for "
                                f"(service_completed_successfully): `docker compose up --wait` would fail")
            continue
        check = service.get("healthcheck") or {}
        if check.get("disable") or not check.get("test"):
            problems.append(f"{name}: no health check")
        for dep, cond in depends_on(service).items():
            if dep not in one_shot and cond != "service_healthy":
                problems.append(f"{name}: depends on {dep} with {cond}, not service_healthy")
    return problems


def _hook_default(variable: str) -> str | None:
    match = re.search(rf'^\s*(?:export\s+)?{variable}="\$\{{\w+:-([^}}]+)\}}"', HOOK.read_text(), re.MULTILINE)
    return match.group(1) if match else None


def hook_problems(doc: dict, compose_dir: Path = COMPOSE.parent) -> list[str]:
    """LocalStack mounts the hook folder where it runs ready-stage hooks; the hook's defaults are the code's."""
    problems = []
    mounts = []
    for volume in doc.get("services", {}).get("localstack", {}).get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume.get("source", ""), volume.get("target", "")))
        else:
            source, target = str(volume).split(":")[:2]
            mounts.append((source, target))
    sources = [(compose_dir / source).resolve() for source, target in mounts if target == LOCALSTACK_INIT]
    if sources != [HOOK_DIR.resolve()]:
        problems.append(f"localstack: {HOOK_DIR.relative_to(ROOT)} is not mounted at {LOCALSTACK_INIT}: {mounts}")
    if not HOOK.stat().st_mode & stat.S_IXUSR:
        problems.append(f"{HOOK.name}: not executable")
    signature = inspect.signature(ensure_local_resources).parameters
    if _hook_default("PREFIX") != signature["prefix"].default:
        problems.append(f"{HOOK.name}: PREFIX defaults to {_hook_default('PREFIX')!r}, "
                        f"ensure_local_resources to {signature['prefix'].default!r}")
    if _hook_default("AWS_DEFAULT_REGION") != signature["region"].default or SETTINGS.region != signature["region"].default:
        problems.append(f"{HOOK.name}: region {_hook_default('AWS_DEFAULT_REGION')!r}, compose settings "
                        f"{SETTINGS.region!r}, ensure_local_resources {signature['region'].default!r}")
    return problems


CHECKS = {"schema": schema_problems, "pins": pin_problems, "ports": port_problems, "topics": topic_problems,
          "interpolation": interpolation_problems, "health": health_problems, "hook": hook_problems}


def all_problems(path: Path) -> list[str]:
    doc = load(path)
    problems = []
    for name, check in CHECKS.items():
        try:
            problems += check(doc)
        except Exception as exc:  # noqa: BLE001 - a file the schema rejects may break a reader: still a finding
            problems.append(f"{name}: cannot read the file ({type(exc).__name__}: {exc})")
    return problems


# -- the compose file as committed ------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("check", CHECKS)
def test_compose_file_passes(check):
    assert CHECKS[check](load()) == []


@pytest.mark.unit
def test_schema_comes_from_the_package_and_is_the_compose_specification():
    schema = compose_schema()
    assert schema["title"] == "Compose Specification"
    assert {"services", "name", "include"} <= set(schema["properties"])
    import check_jsonschema

    vendored = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    assert json.loads(vendored.read_text(encoding="utf-8")) == schema  # the package's file, not a copy here


# A modified copy of the file per case: (what is changed, replaced by, a problem that must be reported).
MUTATIONS = {
    "kafka image without tag": ("image: apache/kafka:4.2.0\n    ports", "image: apache/kafka\n    ports",
                                "kafka: image 'apache/kafka' is not pinned"),
    "localstack image latest": ("localstack/localstack:4.14.0", "localstack/localstack:latest",
                                "localstack: image 'localstack/localstack:latest' is not pinned"),
    "kafka-init image minor only": ("image: apache/kafka:4.2.0\n    depends_on:\n      kafka:",
                                    "image: apache/kafka:4.2\n    depends_on:\n      kafka:",
                                    "kafka-init: image 'apache/kafka:4.2' is not pinned"),
    "kafka published port": ('"127.0.0.1:9092:9092"', '"127.0.0.1:9093:9092"', "kafka: port 9092"),
    "kafka advertised port": ("HOST://127.0.0.1:9092", "HOST://127.0.0.1:29092", "kafka: no advertised listener"),
    "kafka listener port": ("HOST://:9092", "HOST://:9094", "kafka: port 9092"),
    "localstack published port": ('"127.0.0.1:4566:4566"', '"127.0.0.1:4567:4566"',
                                  "localstack: http://127.0.0.1:4566 is not published"),
    "localstack service missing": ("SERVICES: dynamodb,s3,sns,sqs", "SERVICES: s3,sns,sqs",
                                   "localstack: SERVICES"),
    "localstack region": ("AWS_DEFAULT_REGION: us-east-1", "AWS_DEFAULT_REGION: eu-west-1",
                          "localstack: AWS_DEFAULT_REGION"),
    "topic missing": ("TOPICS: transactions labels fraud-alerts quarantine", "TOPICS: transactions labels fraud-alerts",
                      "kafka-init: TOPICS"),
    "partitions": ('\n      PARTITIONS: "1"', '\n      PARTITIONS: "3"', "kafka-init: PARTITIONS"),
    "shell variable left to compose": ('"$$topic"', '"$topic"', "/services/kafka-init/command/0: a single $"),
    "health check removed": ("    healthcheck:\n      # Healthy once", "    x-healthcheck:\n      # Healthy once",
                             "localstack: no health check"),
    "one-shot not waited for": ("      kafka-init:\n        condition: service_completed_successfully\n", "",
                                "kafka-init: one-shot service"),
    "hook not mounted": ("/etc/localstack/init/ready.d:ro", "/etc/localstack/init/boot.d:ro",
                         "is not mounted at /etc/localstack/init/ready.d"),
    "schema: ports not a list": ('    ports:\n      - "127.0.0.1:4566:4566"', '    ports: "127.0.0.1:4566:4566"',
                                 "schema: /services/localstack/ports"),
    "schema: unknown key": ("    restart: \"no\"", "    restart_policy: \"no\"", "schema: /services/kafka-init"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", MUTATIONS)
def test_a_modified_copy_of_the_compose_file_is_caught(case, tmp_path):
    old, new, expected = MUTATIONS[case]
    text = COMPOSE.read_text()
    assert text.count(old) == 1, f"the mutation {case!r} no longer applies to {COMPOSE.name}"
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace(old, new))
    problems = all_problems(copy)
    assert any(expected in p for p in problems), problems


# -- the init hook against the code -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_endpoint():
    from frauddetect.embedded import MotoServer

    with MotoServer() as server:
        yield server.endpoint_url


def _reset(endpoint: str) -> None:
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()


def _snapshot(endpoint: str, region: str) -> dict:
    """Every SNS topic and subscription, SQS queue (with policy), DynamoDB table (key, billing, TTL), bucket."""
    import boto3

    kw = {"endpoint_url": endpoint, "region_name": region,
          "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    sns, sqs, ddb, s3 = (boto3.client(s, **kw) for s in ("sns", "sqs", "dynamodb", "s3"))
    topics = {}
    for topic in sns.list_topics()["Topics"]:
        arn = topic["TopicArn"]
        subscriptions = []
        for sub in sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]:
            attributes = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
            subscriptions.append((sub["Protocol"], sub["Endpoint"], attributes.get("RawMessageDelivery")))
        topics[arn] = sorted(subscriptions)
    queues = {}
    for url in sqs.list_queues().get("QueueUrls", []):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        policy = json.loads(attributes["Policy"]) if "Policy" in attributes else None
        queues[attributes["QueueArn"]] = {"policy": policy, "redrive": attributes.get("RedrivePolicy")}
    tables = {}
    for name in ddb.list_tables()["TableNames"]:
        table = ddb.describe_table(TableName=name)["Table"]
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        tables[name] = {"key": table["KeySchema"], "attributes": table["AttributeDefinitions"],
                        "billing": table.get("BillingModeSummary", {}).get("BillingMode"),
                        "ttl": (ttl.get("TimeToLiveStatus"), ttl.get("AttributeName"))}
    buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    return {"topics": topics, "queues": queues, "tables": tables, "buckets": buckets}


def _run_hook(endpoint: str, tmp_path: Path, region: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    awslocal = bin_dir / "awslocal"
    awslocal.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SHIM}" "$@"\n')
    awslocal.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "AWSLOCAL_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": region}
    env.pop("FRAUDDETECT_RESOURCE_PREFIX", None)
    return subprocess.run(["bash", str(HOOK)], env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.functional
def test_init_hook_creates_exactly_what_ensure_local_resources_creates(moto_endpoint, tmp_path):
    region = env_of(load()["services"]["localstack"])["AWS_DEFAULT_REGION"]  # what the hook sees in LocalStack

    _reset(moto_endpoint)
    ensure_local_resources(moto_endpoint, region=region)
    expected = _snapshot(moto_endpoint, region)

    _reset(moto_endpoint)
    run = _run_hook(moto_endpoint, tmp_path, region)
    assert run.returncode == 0, run.stderr
    from_hook = _snapshot(moto_endpoint, region)
    assert from_hook == expected
    assert sum(len(s) for s in expected["topics"].values()) == 1 and expected["tables"] and expected["buckets"]

    # What `frauddetect demo --stack compose` does next: the code finds the hook's resources and adds nothing
    # (in particular no second subscription, which would deliver every alert twice).
    ensure_local_resources(moto_endpoint, region=region)
    assert _snapshot(moto_endpoint, region) == expected


# -- frauddetect demo --stack compose against services that are not there ----------------------------------------
def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.unit
def test_demo_on_compose_fails_fast_naming_each_missing_service(tmp_path):
    kafka_port, aws_port = _unused_port(), _unused_port()
    env = {**os.environ, stacks.ENV_BOOTSTRAP_SERVERS: f"127.0.0.1:{kafka_port}"}  # env, and a flag below
    workdir = tmp_path / "run"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "frauddetect", "demo", "--stack", "compose",
         "--aws-endpoint-url", f"http://127.0.0.1:{aws_port}", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert f"Kafka (service `kafka`) at 127.0.0.1:{kafka_port}: connection refused" in proc.stderr
    assert f"LocalStack (service `localstack`) at http://127.0.0.1:{aws_port}: connection refused" in proc.stderr
    assert "docker compose -f local/docker-compose.yml up -d --wait" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()  # nothing was started or written
    assert elapsed < 20, f"took {elapsed:.1f} s"  # ~0.1 s of work; the rest is interpreter start on a busy machine


@pytest.mark.functional
def test_only_the_missing_service_is_named(moto_endpoint, tmp_path):
    from frauddetect.embedded import EmbeddedBroker

    kafka_missing = stacks.StackSettings("compose", f"127.0.0.1:{_unused_port()}", moto_endpoint)
    with pytest.raises(stacks.StackUnavailable) as missing_kafka:
        stacks.check_reachable(kafka_missing)
    assert "Kafka (service `kafka`)" in str(missing_kafka.value)
    assert "LocalStack" not in str(missing_kafka.value)

    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        aws_missing = stacks.StackSettings("compose", broker.bootstrap_servers, f"http://127.0.0.1:{_unused_port()}")
        with pytest.raises(stacks.StackUnavailable) as missing_aws:
            stacks.check_reachable(aws_missing)
        assert "LocalStack (service `localstack`)" in str(missing_aws.value)
        assert "Kafka" not in str(missing_aws.value)

        # Both up and empty: the demo may run. Then one record left from an earlier run: refused, named.
        _reset(moto_endpoint)
        up = stacks.StackSettings("compose", broker.bootstrap_servers, moto_endpoint)
        stacks.check_demo_stack(up)
        from confluent_kafka import Producer

        producer = Producer(kafka_io.producer_config(broker.bootstrap_servers))
        producer.produce(TRANSACTIONS_TOPIC, b"{}")
        assert producer.flush(10) == 0
        del producer  # before the broker stops: no reconnect noise
        with pytest.raises(stacks.StackNotFresh, match=r"Kafka topic `transactions` holds 1 records"):
            stacks.check_demo_stack(up)


# -- the settings -----------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_stack_settings_resolve_from_flags_then_environment_then_defaults():
    assert stacks.resolve_stack() == stacks.StackSettings("embedded")
    compose = stacks.resolve_stack("compose", environ={})
    assert (compose.bootstrap_servers, compose.aws_endpoint_url) == ("127.0.0.1:9092", "http://127.0.0.1:4566")
    env = {stacks.ENV_BOOTSTRAP_SERVERS: "k:1", stacks.ENV_AWS_ENDPOINT_URL: "http://a:2"}
    assert stacks.resolve_stack("compose", environ=env).bootstrap_servers == "k:1"
    assert stacks.resolve_stack("compose", bootstrap_servers="f:3", environ=env).bootstrap_servers == "f:3"
    aws = stacks.resolve_stack("aws", environ={"AWS_REGION": "eu-west-1", stacks.ENV_BOOTSTRAP_SERVERS: "b-1:9098"})
    assert (aws.bootstrap_servers, aws.aws_endpoint_url, aws.region) == ("b-1:9098", None, "eu-west-1")
    with pytest.raises(ValueError, match="go with --stack compose or aws"):
        stacks.resolve_stack("embedded", bootstrap_servers="x:1")
    with pytest.raises(ValueError, match="unknown stack"):
        stacks.resolve_stack("docker")


@pytest.mark.unit
def test_demo_on_aws_is_refused_with_the_way_to_deploy(capsys):
    from frauddetect.cli import main

    assert main(["demo", "--stack", "aws", "--bootstrap-servers", "b-1.example:9098"]) == 2
    assert "not supported by the demo: deploy with cdk" in capsys.readouterr().err
