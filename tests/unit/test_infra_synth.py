"""The CDK app synthesizes for every environment, with the properties that matter (aws_cdk.assertions).

Each environment is synthesized once per module (jsii synth takes seconds); the tests read the template.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# infra/ is not part of the installed distribution (only frauddetect and lambdas are): make the repository
# root importable, as `python app.py` does for the CDK CLI.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Node 20 makes jsii print a multi-line end-of-life banner on start; it is noise in test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk.assertions import Match, Template  # noqa: E402

from infra.app import build_app  # noqa: E402
from infra.config import ENVIRONMENTS, get_config  # noqa: E402

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Synth:
    template: Template
    outdir: Path

    def only(self, resource_type: str) -> tuple[str, dict]:
        """(logical id, resource) of the single resource of ``resource_type``."""
        found = self.template.find_resources(resource_type)
        assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
        return next(iter(found.items()))


def _synth(env_name: str, outdir: Path) -> Synth:
    with pytest.MonkeyPatch.context() as mp:
        # Environment-agnostic stacks whatever the caller's AWS profile: deterministic templates.
        mp.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
        mp.delenv("CDK_DEFAULT_REGION", raising=False)
        mp.delenv("CDK_OUTDIR", raising=False)
        app = build_app(context={"env": env_name}, outdir=str(outdir))
        stack = app.node.find_child(get_config(env_name).stack_name)
        return Synth(template=Template.from_stack(stack), outdir=outdir)


@pytest.fixture(scope="module")
def synths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synth]:
    return {name: _synth(name, tmp_path_factory.mktemp(f"cdk-{name}")) for name in ENVIRONMENTS}


@pytest.fixture(params=sorted(ENVIRONMENTS))
def synth(request: pytest.FixtureRequest, synths: dict[str, Synth]) -> Synth:
    return synths[request.param]


def test_unknown_environment_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        get_config("staging")
    assert get_config(None).name == "dev"


def test_lake_bucket_is_kms_encrypted_private_and_versioned(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": Match.any_value(),
                            }
                        }
                    )
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {"Rules": Match.any_value()},
        },
    )
    # Every customer-managed key rotates.
    for key in synth.template.find_resources("AWS::KMS::Key").values():
        assert key["Properties"]["EnableKeyRotation"] is True


def test_lake_bucket_policy_denies_non_tls_access(synth: Synth) -> None:
    bucket_id, _ = synth.only("AWS::S3::Bucket")
    synth.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Principal": {"AWS": "*"},
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_glue_database_points_at_the_lake(synth: Synth) -> None:
    _, db = synth.only("AWS::Glue::Database")
    assert db["Properties"]["DatabaseInput"]["Name"] in {f"frauddetect_{n}" for n in ENVIRONMENTS}
    assert "LocationUri" in db["Properties"]["DatabaseInput"]


def test_idempotency_table_matches_powertools_schema(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
        },
    )


def test_alerts_topic_is_kms_encrypted(synth: Synth) -> None:
    synth.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def _alert_function(synth: Synth) -> tuple[str, dict]:
    functions = synth.template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "lambdas.alert_handler.app.handler"}}
    )
    assert len(functions) == 1
    return next(iter(functions.items()))


def test_alert_lambda_is_arm64_python_with_its_environment(synth: Synth) -> None:
    topic_id, _ = synth.only("AWS::SNS::Topic")
    table_id, _ = synth.only("AWS::DynamoDB::Table")
    _, fn = _alert_function(synth)
    props = fn["Properties"]
    assert props["Architectures"] == ["arm64"]
    assert props["Runtime"].startswith("python3.1")
    env = props["Environment"]["Variables"]
    assert env["ALERTS_TOPIC_ARN"] == {"Ref": topic_id}
    assert env["IDEMPOTENCY_TABLE"] == {"Ref": table_id}
    assert env["POWERTOOLS_SERVICE_NAME"]
    # Dependencies come from the Powertools layer for the same Python version and architecture.
    layer_arn = str(props["Layers"])
    runtime_tag = props["Runtime"].replace("python3.", "python3")  # python3.13 -> python313
    assert f"AWSLambdaPowertoolsPythonV3-{runtime_tag}-arm64" in layer_arn


def test_alert_lambda_role_can_publish_and_use_the_table(synth: Synth) -> None:
    topic_id, _ = synth.only("AWS::SNS::Topic")
    table_id, _ = synth.only("AWS::DynamoDB::Table")
    _, fn = _alert_function(synth)
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    synth.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": Match.array_with([{"Ref": role_id}]),
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Allow", "Action": "sns:Publish", "Resource": {"Ref": topic_id}}
                        ),
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": Match.array_with(["dynamodb:GetItem", "dynamodb:PutItem"]),
                                "Resource": {"Fn::GetAtt": [table_id, "Arn"]},
                            }
                        ),
                    ]
                )
            },
        },
    )


def test_alert_lambda_asset_holds_only_the_handler_packages(synth: Synth) -> None:
    _, fn = _alert_function(synth)
    asset_hash = fn["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    asset = synth.outdir / f"asset.{asset_hash}"
    assert (asset / "lambdas" / "alert_handler" / "app.py").is_file()
    assert (asset / "frauddetect" / "alerts.py").is_file()
    assert sorted(p.name for p in asset.iterdir()) == ["frauddetect", "lambdas"]
    assert not list(asset.rglob("__pycache__"))


def test_environments_differ_where_intended(synths: dict[str, Synth]) -> None:
    dev, prod = synths["dev"], synths["prod"]
    for resource_type in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::DynamoDB::Table"):
        for _, resource in dev.template.find_resources(resource_type).items():
            assert resource["DeletionPolicy"] == "Delete", resource_type
        for _, resource in prod.template.find_resources(resource_type).items():
            assert resource["DeletionPolicy"] == "Retain", resource_type
    _, dev_table = dev.only("AWS::DynamoDB::Table")
    _, prod_table = prod.only("AWS::DynamoDB::Table")
    assert dev_table["Properties"].get("DeletionProtectionEnabled") is not True
    assert prod_table["Properties"]["DeletionProtectionEnabled"] is True

    dev_logs = dev.template.find_resources("AWS::Logs::LogGroup")
    prod_logs = prod.template.find_resources("AWS::Logs::LogGroup")
    assert len(dev_logs) == len(prod_logs) == 2  # one per Lambda: alerts, label feedback
    assert max(g["Properties"]["RetentionInDays"] for g in dev_logs.values()) < min(
        g["Properties"]["RetentionInDays"] for g in prod_logs.values()
    )


def test_label_feedback_lambda_sits_behind_an_iam_authorised_http_api(synth: Synth) -> None:
    table_id, _ = synth.only("AWS::DynamoDB::Table")
    functions = synth.template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "lambdas.label_feedback.app.handler"}}
    )
    assert len(functions) == 1
    function_id, fn = next(iter(functions.items()))
    props = fn["Properties"]
    assert props["Architectures"] == ["arm64"]
    env = props["Environment"]["Variables"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == {"Ref": "KafkaBootstrapServers"}
    assert env["LABELS_TOPIC"] == "labels"
    assert env["IDEMPOTENCY_TABLE"] == {"Ref": table_id}  # shared with the alert handler, other key prefix
    # Same asset as the alert handler: one upload.
    _, alert_fn = _alert_function(synth)
    assert props["Code"] == alert_fn["Properties"]["Code"]

    _, api = synth.only("AWS::ApiGatewayV2::Api")
    assert api["Properties"]["ProtocolType"] == "HTTP"
    _, route = synth.only("AWS::ApiGatewayV2::Route")
    assert route["Properties"]["RouteKey"] == "POST /verdicts"
    assert route["Properties"]["AuthorizationType"] == "AWS_IAM"
    _, integration = synth.only("AWS::ApiGatewayV2::Integration")
    assert integration["Properties"]["IntegrationType"] == "AWS_PROXY"
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0"
    assert function_id in str(integration["Properties"]["IntegrationUri"])
    synth.template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"Action": "lambda:InvokeFunction", "Principal": "apigateway.amazonaws.com",
         "FunctionName": {"Fn::GetAtt": [function_id, "Arn"]}},
    )

    role_id = props["Role"]["Fn::GetAtt"][0]
    policies = synth.template.find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}})
    statements = [st for p in policies.values() for st in p["Properties"]["PolicyDocument"]["Statement"]]
    actions = {a for st in statements for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"} <= actions
    assert {"kafka-cluster:Connect", "kafka-cluster:WriteData", "kafka-cluster:DescribeTopic"} <= actions
    write = next(st for st in statements if "kafka-cluster:WriteData" in st["Action"])
    parts = write["Resource"]["Fn::Join"][1]
    assert parts[-1].startswith(":topic/frauddetect-") and parts[-1].endswith("/*/labels")  # that topic only
    assert "sns:Publish" not in actions  # it only writes labels
