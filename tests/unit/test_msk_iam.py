"""MSK IAM access control for confluent-kafka clients (frauddetect.kafka_io.auth_settings/msk_iam_settings) and
its use by the label feedback Lambda (``KAFKA_AUTH``) and by every Kafka client of the streaming job
(``--kafka-auth``); the CDK app sets both to ``msk-iam``. No network: client classes are replaced by
recorders, the signer by a stand-in."""

from __future__ import annotations

import importlib
import pickle
import sys
import types

import pytest

from frauddetect.kafka_io import auth_settings, msk_iam_settings, producer_config

pytestmark = pytest.mark.unit

APP_MODULE = "lambdas.label_feedback.app"


@pytest.fixture
def signer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A stand-in ``aws_msk_iam_sasl_signer`` recording the regions it signs for (the real one needs AWS
    credentials; it is installed in the Lambda layer and on Glue, not here)."""
    regions: list[str] = []

    class MSKAuthTokenProvider:
        @staticmethod
        def generate_auth_token(region: str) -> tuple[str, int]:
            regions.append(region)
            return "signed-token", 1_900_000_000_000

    module = types.ModuleType("aws_msk_iam_sasl_signer")
    module.MSKAuthTokenProvider = MSKAuthTokenProvider
    monkeypatch.setitem(sys.modules, "aws_msk_iam_sasl_signer", module)
    return regions


def test_msk_iam_settings_speak_sasl_oauthbearer_over_tls_with_signed_tokens(signer: list[str]) -> None:
    settings = msk_iam_settings("eu-west-1")
    assert settings["security.protocol"] == "SASL_SSL"
    assert settings["sasl.mechanism"] == "OAUTHBEARER"
    assert signer == []  # nothing is signed until librdkafka asks for a token
    assert settings["oauth_cb"]("ignored") == ("signed-token", 1_900_000_000.0)  # librdkafka wants seconds
    assert signer == ["eu-west-1"]
    merged = producer_config("b-1:9098", **settings)
    assert merged["acks"] == "all" and merged["security.protocol"] == "SASL_SSL"


def _feedback_app(monkeypatch: pytest.MonkeyPatch, **env: str):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b-1:9098")
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "idempotency")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delitem(sys.modules, APP_MODULE, raising=False)
    return importlib.import_module(APP_MODULE)


def test_feedback_lambda_uses_msk_iam_when_deployed_and_plaintext_locally(
    monkeypatch: pytest.MonkeyPatch, signer: list[str]
) -> None:
    app = _feedback_app(monkeypatch, KAFKA_AUTH="msk-iam", AWS_REGION="eu-central-1")
    settings = app.producer_settings()
    assert (settings["security.protocol"], settings["sasl.mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
    settings["oauth_cb"]("")
    assert signer == ["eu-central-1"]  # the function's own region (AWS_REGION, set by Lambda)

    monkeypatch.delenv("KAFKA_AUTH")
    assert "security.protocol" not in app.producer_settings()  # the embedded broker speaks PLAINTEXT
    monkeypatch.setenv("KAFKA_AUTH", "scram")
    with pytest.raises(ValueError, match="KAFKA_AUTH"):
        app.kafka_overrides()
    monkeypatch.delitem(sys.modules, APP_MODULE, raising=False)


# ---------------------------------------------------------------------------------------------------------
# The streaming job: --kafka-auth reaches every Kafka client it creates (source consumers, sink clients)
# ---------------------------------------------------------------------------------------------------------

SECURITY_KEYS = {"security.protocol", "sasl.mechanism", "oauth_cb"}


class _FakeClient:
    """Stands in for a confluent-kafka Producer/Consumer: a cluster without topics (no network)."""

    def list_topics(self, *_args, **_kwargs) -> types.SimpleNamespace:
        return types.SimpleNamespace(topics={})

    def close(self) -> None:
        pass


class _Clients:
    """A client class double that records the configuration of each client created."""

    def __init__(self) -> None:
        self.configs: list[dict] = []

    def __call__(self, config: dict) -> _FakeClient:
        self.configs.append(config)
        return _FakeClient()


def _job_config(tmp_path, *extra: str):
    from frauddetect.stream.config import parse_args

    config, _ = parse_args(
        ["--bootstrap-servers", "b-1:9098", "--lake-uri", str(tmp_path / "lake"),
         "--checkpoint-uri", str(tmp_path / "ckpt"), "--model-dir", "m", *extra]
    )
    return config


def _assert_msk_iam(config: dict, signer: list[str], region: str) -> None:
    assert (config["security.protocol"], config["sasl.mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
    signer.clear()
    # librdkafka calls oauth_cb with the sasl.oauthbearer.config string and wants (token, expiry in s)
    assert config["oauth_cb"]("") == ("signed-token", 1_900_000_000.0)
    assert signer == [region]


def test_auth_settings_is_the_one_switch(signer: list[str]) -> None:
    assert auth_settings("none") == {} and auth_settings("none", "eu-west-1") == {}
    _assert_msk_iam(auth_settings("msk-iam", "eu-west-1"), signer, "eu-west-1")
    with pytest.raises(ValueError, match="region"):
        auth_settings("msk-iam")
    with pytest.raises(ValueError, match="unknown Kafka auth 'scram'"):
        auth_settings("scram", "eu-west-1")


def test_kafka_confluent_source_builds_msk_iam_in_every_process_from_string_options(
    tmp_path, monkeypatch: pytest.MonkeyPatch, signer: list[str]
) -> None:
    from frauddetect.stream import source
    from frauddetect.stream.source_options import KafkaSourceOptions

    for topic in ("transactions", "labels"):
        options = _job_config(tmp_path, "--kafka-auth", "msk-iam", "--kafka-region", "eu-west-1").source_options(topic)
        assert (options["auth"], options["authRegion"]) == ("msk-iam", "eu-west-1")
        assert all(isinstance(v, str) for v in options.values())  # what Spark can hand to other processes
    # Spark pickles the reader (and its options) to the executors that read: the callback is built there
    parsed = pickle.loads(pickle.dumps(KafkaSourceOptions.parse(options)))
    clients = _Clients()
    monkeypatch.setattr(source, "Consumer", clients)
    monkeypatch.setattr(source, "_CONSUMERS", {})
    reader = source.KafkaStreamReader(parsed)
    reader._probe()  # the driver's planning consumer
    source._consumer(parsed)  # an executor's reading consumer
    assert len(clients.configs) == 2
    for config in clients.configs:
        _assert_msk_iam(config, signer, "eu-west-1")
        assert config["bootstrap.servers"] == "b-1:9098" and config["enable.partition.eof"] is True


def test_kafka_confluent_source_rejects_msk_iam_without_region() -> None:
    from frauddetect.stream.source_options import KafkaSourceOptions

    with pytest.raises(ValueError, match="kafka_confluent: options 'auth'/'authRegion'.*region"):
        KafkaSourceOptions.parse({"kafka.bootstrap.servers": "b:9098", "subscribe": "t", "auth": "msk-iam"})


def test_spark_kafka_source_on_glue_gets_the_java_clients_msk_iam_settings(tmp_path) -> None:
    for topic in ("transactions", "labels"):
        options = _job_config(
            tmp_path, "--source-format", "kafka", "--kafka-auth", "msk-iam", "--kafka-region", "eu-west-1"
        ).source_options(topic)
        assert options["kafka.security.protocol"] == "SASL_SSL"
        assert options["kafka.sasl.mechanism"] == "AWS_MSK_IAM"
        assert options["kafka.sasl.jaas.config"] == "software.amazon.msk.auth.iam.IAMLoginModule required;"
        assert options["kafka.sasl.client.callback.handler.class"].endswith("IAMClientCallbackHandler")
        assert "auth" not in options  # options Spark's source does not know are not passed to it


def test_sink_producer_and_consumers_get_msk_iam(tmp_path, monkeypatch: pytest.MonkeyPatch, signer) -> None:
    import confluent_kafka

    from frauddetect import kafka_io
    from frauddetect.stream import sinks

    producers, consumers = _Clients(), _Clients()
    monkeypatch.setattr(confluent_kafka, "Producer", producers)
    monkeypatch.setattr(sinks, "_PRODUCERS", {})
    monkeypatch.setattr(kafka_io, "Consumer", consumers)  # end_offsets_via_fetch's
    monkeypatch.setattr(confluent_kafka, "Consumer", consumers)  # the duplicate check's own reader
    config = _job_config(tmp_path, "--kafka-auth", "msk-iam", "--kafka-region", "eu-central-1")
    settings = sinks.SinkSettings(config.lake_uri, config.bootstrap_servers, config.kafka_auth, config.kafka_region)
    assert sinks.already_published(settings, {}, 0, 0) == {"fraud-alerts": set(), "quarantine": set()}
    sinks._producer(settings)
    assert len(producers.configs) == 1 and len(consumers.configs) == 2
    (producer,) = producers.configs
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    for client in producers.configs + consumers.configs:
        _assert_msk_iam(client, signer, "eu-central-1")


def test_kafka_auth_none_leaves_the_local_configuration_as_it_was(tmp_path, monkeypatch) -> None:
    import confluent_kafka

    from frauddetect import kafka_io
    from frauddetect.stream import sinks
    from frauddetect.stream.source_options import KafkaSourceOptions

    config = _job_config(tmp_path)
    assert (config.kafka_auth, config.kafka_region, config.kafka_client_settings()) == ("none", None, {})
    options = config.source_options("transactions")
    assert options == {
        "kafka.bootstrap.servers": "b-1:9098",
        "subscribe": "transactions",
        "startingOffsets": "earliest",
        "failOnDataLoss": "true",
        "maxOffsetsPerTrigger": "50000",
        "plannedOffsetsPath": str(tmp_path / "ckpt" / "sources" / "transactions.json"),
    }
    assert not SECURITY_KEYS & set(KafkaSourceOptions.parse(options).consumer_config())
    producers = _Clients()
    monkeypatch.setattr(confluent_kafka, "Producer", producers)
    monkeypatch.setattr(sinks, "_PRODUCERS", {})
    sinks._producer(sinks.SinkSettings(config.lake_uri, config.bootstrap_servers))
    assert producers.configs == [kafka_io.producer_config("b-1:9098", **{"enable.idempotence": True})]
