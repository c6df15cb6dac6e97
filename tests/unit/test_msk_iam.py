"""MSK IAM access control for confluent-kafka clients (frauddetect.kafka_io.msk_iam_settings) and its use by
the label feedback Lambda (``KAFKA_AUTH``, which the CDK app sets to ``msk-iam``)."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from frauddetect.kafka_io import msk_iam_settings, producer_config

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
