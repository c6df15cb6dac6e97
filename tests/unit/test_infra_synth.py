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

    _, dev_logs = dev.only("AWS::Logs::LogGroup")
    _, prod_logs = prod.only("AWS::Logs::LogGroup")
    assert dev_logs["Properties"]["RetentionInDays"] < prod_logs["Properties"]["RetentionInDays"]
