"""The CDK app synthesizes dev and prod with the properties that matter (aws_cdk.assertions), cdk-nag's
AwsSolutions checks find nothing unsuppressed, and cfn-lint finds no error in any template.

Each environment is synthesized once per module (jsii plus cdk-nag take ~30 s on a small machine); the tests
read the written templates (``Template.from_json``: no second synthesis). dev is synthesized
environment-agnostic (no AWS profile), prod for a concrete account and region (what the CDK CLI does with a
profile), so both ways of rendering ARNs, image URIs and suppressions are covered.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

# infra/ is not part of the installed distribution (only frauddetect and lambdas are): make the repository
# root importable, as `python app.py` does for the CDK CLI.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Node 20 makes jsii print a multi-line end-of-life banner on start; it is noise in test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import App, Aspects
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from frauddetect import kafka_io
from infra.app import build_app_with_stacks, cdk_json_context
from infra.catalog import lake_tables
from infra.config import ENVIRONMENTS, EnvironmentConfig, MskMode, get_config
from infra.model_endpoint import serving_image_uri
from infra.stacks import KafkaStack, NetworkStack

pytestmark = pytest.mark.unit

# prod is synthesized as the CLI would for this account and region; dev without either.
TARGETS = {"dev": {}, "prod": {"CDK_DEFAULT_ACCOUNT": "123456789012", "CDK_DEFAULT_REGION": "eu-west-1"}}
# prod refuses to synthesize without the model's threshold: given as the CLI passes `-c alert_threshold=0.42`
# (a string); dev runs on the placeholder, with a warning.
CONTEXT = {"dev": {}, "prod": {"alert_threshold": "0.42"}}
PARTS = ("Network", "Data", "Kafka", "Model", "Streaming", "Alerting", "Monitoring")
NAG_RULE = re.compile(r"^(AwsSolutions-|CdkNagValidationFailure)")
TOPICS = ("transactions", "labels", "fraud-alerts", "quarantine")


@dataclass(frozen=True)
class Synth:
    """One environment's cloud assembly: templates by stack part, and cdk-nag/validation findings."""

    config: EnvironmentConfig
    region: str | None
    outdir: Path
    raw: dict[str, dict]
    synth_error: str | None
    findings: list[tuple[str, str, str]]  # (severity, rule/message, construct path)
    warnings: list[tuple[str, str]]  # (construct path, message) of the warning annotations

    def template(self, part: str) -> Template:
        return Template.from_json(self.raw[part])

    def resources(self, resource_type: str, part: str | None = None) -> dict[str, dict]:
        """``{logical id: resource}`` of ``resource_type`` in one stack, or in all (ids prefixed ``Part/``)."""
        parts = [part] if part else list(self.raw)
        return {
            (lid if part else f"{p}/{lid}"): res
            for p in parts
            for lid, res in self.raw[p].get("Resources", {}).items()
            if res["Type"] == resource_type
        }

    def only(self, resource_type: str, part: str) -> tuple[str, dict]:
        """(logical id, resource) of the single resource of ``resource_type`` in stack ``part``."""
        found = self.resources(resource_type, part)
        assert len(found) == 1, f"expected one {resource_type} in {part}, found {sorted(found)}"
        return next(iter(found.items()))

    def statements(self, part: str, role_id: str) -> list[dict]:
        """Every policy statement attached to role ``role_id`` of stack ``part`` (inline and policies)."""
        out = []
        role = self.raw[part]["Resources"][role_id]["Properties"]
        for policy in role.get("Policies", []):
            out += policy["PolicyDocument"]["Statement"]
        for policy in self.resources("AWS::IAM::Policy", part).values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                out += policy["Properties"]["PolicyDocument"]["Statement"]
        return out


def _findings(report_path: Path) -> list[tuple[str, str, str]]:
    if not report_path.exists():
        return []
    report = json.loads(report_path.read_text())
    return [
        (violation["severity"], violation["description"].strip(), construct["constructPath"])
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]


def _warnings(outdir: Path) -> list[tuple[str, str]]:
    """Warning annotations, from each stack's metadata file in the assembly."""
    return [
        (path, str(entry["data"]))
        for metadata in sorted(outdir.glob("*.metadata.json"))
        for path, entries in json.loads(metadata.read_text()).items()
        for entry in entries
        if entry["type"] == "aws:cdk:warning"
    ]


def _synth(env_name: str, outdir: Path) -> Synth:
    with pytest.MonkeyPatch.context() as mp:
        # The target from TARGETS whatever the caller's AWS profile: deterministic templates.
        for var in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION", "CDK_OUTDIR"):
            mp.delenv(var, raising=False)
        for var, value in TARGETS[env_name].items():
            mp.setenv(var, value)
        app, stacks = build_app_with_stacks(context={"env": env_name, **CONTEXT[env_name]}, outdir=str(outdir))
        error = None
        try:
            app.synth()
        except RuntimeError as exc:  # "ValidationFailed": error annotations (cdk-nag) fail the synthesis
            error = str(exc)
        raw = {}
        for stack in stacks.all():
            path = outdir / f"{stack.artifact_id}.template.json"
            if path.exists():
                raw[stack.stack_name.rsplit("-", 1)[1]] = json.loads(path.read_text())
        region = TARGETS[env_name].get("CDK_DEFAULT_REGION")
        findings = _findings(outdir / "validation-report.json")
        return Synth(stacks.network.config, region, outdir, raw, error, findings, _warnings(outdir))


@pytest.fixture(scope="module")
def synths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synth]:
    return {name: _synth(name, tmp_path_factory.mktemp(f"cdk-{name}")) for name in ENVIRONMENTS}


@pytest.fixture(params=sorted(ENVIRONMENTS))
def synth(request: pytest.FixtureRequest, synths: dict[str, Synth]) -> Synth:
    return synths[request.param]


def render(value: Any) -> str:
    """A CloudFormation value as readable text: joins flattened, references as ``<...>``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Fn::Join":
            return arg[0].join(render(v) for v in arg[1])
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if fn == "Fn::GetStackOutput":
            return f"<{arg['StackName']}:{arg['OutputName']}>"
        if fn == "Fn::Sub":
            return arg if isinstance(arg, str) else arg[0]
    return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def arn(service: str, rest: str) -> re.Pattern[str]:
    """A rendered ARN of ``service`` ending in ``rest`` (a regex), with pseudo parameters or literals."""
    return re.compile(
        rf"^arn:(<AWS::Partition>|aws):{service}:(<AWS::Region>|eu-west-1):(<AWS::AccountId>|123456789012):{rest}$"
    )


# ---------------------------------------------------------------------------------------------------------
# The app as a whole: both environments, cdk-nag, cfn-lint, the resources the issue asks for
# ---------------------------------------------------------------------------------------------------------


def test_prod_refuses_to_synthesize_without_the_models_alert_threshold(tmp_path: Path) -> None:
    assert ENVIRONMENTS["prod"].model.alert_threshold is None  # no silent placeholder in the shipped config
    message = r"prod: ModelSettings.alert_threshold is not set.*metadata.json.*frauddetect train"
    with pytest.raises(ValueError, match=message):
        build_app_with_stacks(context={"env": "prod"}, outdir=str(tmp_path))
    for bad in ("high", "1.5", "-0.1", True):
        with pytest.raises(ValueError, match="expected a probability"):
            ENVIRONMENTS["prod"].with_context({"alert_threshold": bad}.get)
    set_here = replace(ENVIRONMENTS["prod"], model=replace(ENVIRONMENTS["prod"].model, alert_threshold=0.61))
    assert set_here.with_context({}.get).alert_threshold() == 0.61
    assert set_here.with_context({"alert_threshold": "0.3"}.get).alert_threshold() == 0.3  # context wins
    assert ENVIRONMENTS["dev"].with_context({}.get).alert_threshold() == 0.5  # dev: the placeholder, warned


def test_placeholders_are_warned_at_synth(synths: dict[str, Synth]) -> None:
    def warned(synth: Synth, text: str) -> list[str]:
        return [path for path, message in synth.warnings if text in message]

    # No ops subscriber: the alarms notify nobody (both environments ship without one).
    for synth in synths.values():
        assert not synth.config.monitoring.ops_email_subscribers
        assert warned(synth, "ops_email_subscribers is empty"), synth.config.name
    # The alert threshold: dev runs on the placeholder and says so; prod got it from the context.
    assert warned(synths["dev"], "alert_threshold is not set") == ["/FraudDetect-dev-Streaming/StreamingJob/Job"]
    assert not warned(synths["prod"], "alert_threshold")


def test_unknown_environment_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        get_config("staging")
    assert get_config(None).name == "dev"


def test_dev_and_prod_synthesize_every_stack(synths: dict[str, Synth]) -> None:
    for name, synth in synths.items():
        assert synth.synth_error is None, synth.synth_error
        assert sorted(synth.raw) == sorted(PARTS), name
        for part, template in synth.raw.items():
            assert template["Description"].startswith(f"frauddetect ({name})"), part


def test_cdk_nag_aws_solutions_finds_nothing_unsuppressed(synths: dict[str, Synth]) -> None:
    for name, synth in synths.items():
        errors = [f for f in synth.findings if f[0] == "error"]
        nag_warnings = [f for f in synth.findings if f[0] != "error" and NAG_RULE.match(f[1])]
        assert not errors, f"{name}: {len(errors)} errors:\n" + "\n".join(f"{e[1][:160]} @ {e[2]}" for e in errors)
        assert not nag_warnings, f"{name}: {nag_warnings}"
        assert synth.synth_error is None, synth.synth_error


def test_cfn_lint_finds_no_error_in_any_template(synths: dict[str, Synth]) -> None:
    from cfnlint.api import lint_file

    errors, warnings = [], []
    for synth in synths.values():
        for path in sorted(synth.outdir.glob("*.template.json")):
            for match in lint_file(path):
                (errors if match.rule.id.startswith("E") else warnings).append(
                    f"{path.name}: {match.rule.id} {match.message}"
                )
    assert not errors, "\n".join(errors)
    # Only CDK's own DependsOn on a function's role next to its GetAtt (W3005) are accepted as warnings.
    assert all(" W3005 " in w for w in warnings), "\n".join(warnings)


def test_templates_hold_every_required_resource(synth: Synth) -> None:
    def count(resource_type: str) -> int:
        return len(synth.resources(resource_type))

    assert count("AWS::MSK::Cluster") + count("AWS::MSK::ServerlessCluster") == 1
    jobs = synth.resources("AWS::Glue::Job")
    assert [(j["Properties"]["GlueVersion"], j["Properties"]["Command"]["Name"]) for j in jobs.values()] == [
        ("6.0", "gluestreaming")
    ]
    assert count("AWS::SageMaker::Endpoint") == 1
    assert count("AWS::S3::Bucket") == 4  # lake, Athena results, artifacts, access logs
    assert count("AWS::Athena::WorkGroup") == 1
    assert count("AWS::Glue::Database") == 1
    handlers = {f["Properties"].get("Handler") for f in synth.resources("AWS::Lambda::Function").values()}
    assert {"lambdas.alert_handler.app.handler", "lambdas.label_feedback.app.handler"} <= handlers
    mappings = synth.resources("AWS::Lambda::EventSourceMapping")
    assert [m["Properties"]["Topics"] for m in mappings.values()] == [["fraud-alerts"]]
    assert count("AWS::SNS::Topic") == 2  # alerts, ops
    assert count("AWS::DynamoDB::Table") == 1
    assert count("AWS::ApiGatewayV2::Api") == 1
    assert count("AWS::KMS::Key") >= 5  # lake, MSK, Glue job, alerts, ops
    assert count("AWS::CloudWatch::Alarm") >= 10


def test_environments_differ_where_intended(synths: dict[str, Synth]) -> None:
    dev, prod = synths["dev"], synths["prod"]
    for resource_type in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::DynamoDB::Table", "AWS::Logs::LogGroup"):
        assert {r["DeletionPolicy"] for r in dev.resources(resource_type).values()} == {"Delete"}, resource_type
        assert {r["DeletionPolicy"] for r in prod.resources(resource_type).values()} == {"Retain"}, resource_type
    _, dev_table = dev.only("AWS::DynamoDB::Table", "Alerting")
    _, prod_table = prod.only("AWS::DynamoDB::Table", "Alerting")
    assert dev_table["Properties"].get("DeletionProtectionEnabled") is not True
    assert prod_table["Properties"]["DeletionProtectionEnabled"] is True
    dev_days = {g["Properties"]["RetentionInDays"] for g in dev.resources("AWS::Logs::LogGroup").values()}
    prod_days = {g["Properties"]["RetentionInDays"] for g in prod.resources("AWS::Logs::LogGroup").values()}
    assert dev_days == {14} and prod_days == {365}
    # Sizes: workers, brokers, endpoint instances, zones.
    _, dev_job = dev.only("AWS::Glue::Job", "Streaming")
    _, prod_job = prod.only("AWS::Glue::Job", "Streaming")
    assert (dev_job["Properties"]["WorkerType"], dev_job["Properties"]["NumberOfWorkers"]) == ("G.025X", 2)
    assert (prod_job["Properties"]["WorkerType"], prod_job["Properties"]["NumberOfWorkers"]) == ("G.1X", 3)
    _, dev_msk = dev.only("AWS::MSK::Cluster", "Kafka")
    _, prod_msk = prod.only("AWS::MSK::Cluster", "Kafka")
    assert (dev_msk["Properties"]["NumberOfBrokerNodes"], prod_msk["Properties"]["NumberOfBrokerNodes"]) == (2, 3)
    assert len(dev.resources("AWS::EC2::NatGateway")) == 1 and len(prod.resources("AWS::EC2::NatGateway")) == 3
    _, dev_cfg = dev.only("AWS::SageMaker::EndpointConfig", "Model")
    _, prod_cfg = prod.only("AWS::SageMaker::EndpointConfig", "Model")
    assert dev_cfg["Properties"]["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"
    assert prod_cfg["Properties"]["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert [s.config.termination_protection for s in (dev, prod)] == [False, True]


# ---------------------------------------------------------------------------------------------------------
# Network and data lake
# ---------------------------------------------------------------------------------------------------------


def test_vpc_has_private_subnets_flow_logs_and_endpoints(synth: Synth) -> None:
    zones = synth.config.network.availability_zones
    subnets = synth.resources("AWS::EC2::Subnet", "Network").values()
    assert sum(1 for s in subnets if s["Properties"]["MapPublicIpOnLaunch"] is False) == zones
    synth.template("Network").has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )
    services = {
        render(e["Properties"]["ServiceName"]).rsplit(".", 1)[-1]: e["Properties"].get("VpcEndpointType", "Gateway")
        for e in synth.resources("AWS::EC2::VPCEndpoint", "Network").values()
    }
    assert services == {
        "s3": "Gateway",
        "dynamodb": "Gateway",
        "runtime": "Interface",  # sagemaker.runtime
        "sns": "Interface",
        "sqs": "Interface",
        "glue": "Interface",
        "monitoring": "Interface",
        "logs": "Interface",
    }


def _lake_key_id(synth: Synth) -> str:
    """Logical id of the key the Data stack creates for the lake (the target of ``alias/frauddetect-<env>-lake``)."""
    aliases = [
        a["Properties"]["TargetKeyId"]
        for a in synth.resources("AWS::KMS::Alias", "Data").values()
        if a["Properties"]["AliasName"] == f"alias/frauddetect-{synth.config.name}-lake"
    ]
    assert len(aliases) == 1 and aliases[0]["Fn::GetAtt"][1] == "Arn", aliases
    key_id = aliases[0]["Fn::GetAtt"][0]
    assert synth.raw["Data"]["Resources"][key_id]["Type"] == "AWS::KMS::Key"
    return key_id


def test_buckets_are_private_versioned_tls_only_and_encrypted(synth: Synth) -> None:
    buckets = synth.resources("AWS::S3::Bucket", "Data")
    encryption = {
        i: b["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"] for i, b in buckets.items()
    }
    # Lake, Athena results and artifacts: SSE-KMS with the stack's own lake key (not aws/s3, not another
    # key); access logs: SSE-S3, which S3 server access log delivery requires.
    lake_key = {"Fn::GetAtt": [_lake_key_id(synth), "Arn"]}
    by_kind = {kind: [i for i in buckets if f"{kind}Bucket" in i] for kind in ("Lake", "AthenaResults", "Artifacts")}
    assert all(len(ids) == 1 for ids in by_kind.values()), by_kind
    for (bucket_id,) in by_kind.values():
        assert encryption[bucket_id] == [
            {
                "BucketKeyEnabled": True,
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": lake_key},
            }
        ], bucket_id
    kms_ids = {i for (i,) in by_kind.values()}
    (log_bucket_id,) = set(buckets) - kms_ids
    assert encryption[log_bucket_id] == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    for bucket_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        rule_ids = {r["Id"] for r in props["LifecycleConfiguration"]["Rules"]}
        assert {"abort-incomplete-multipart-uploads", "expire-noncurrent-versions"} <= rule_ids
        if bucket_id != log_bucket_id:
            assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": log_bucket_id}
        synth.template("Data").has_resource_properties(
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
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )
    for key in synth.resources("AWS::KMS::Key").values():
        assert key["Properties"]["EnableKeyRotation"] is True


def test_glue_tables_follow_the_dbt_sources_with_date_projection(synth: Synth) -> None:
    _, database = synth.only("AWS::Glue::Database", "Data")
    assert database["Properties"]["DatabaseInput"]["Name"] == f"frauddetect_{synth.config.name}"
    tables = {
        t["Properties"]["TableInput"]["Name"]: t["Properties"] for t in synth.resources("AWS::Glue::Table").values()
    }
    expected = {t.name: t for t in lake_tables()}
    assert set(tables) == set(expected) == {"scored_transactions", "labels", "alerts", "quarantine"}
    for name, props in tables.items():
        table = props["TableInput"]
        assert props["DatabaseName"] == f"frauddetect_{synth.config.name}"
        assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [("event_date", "string")]
        columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
        assert columns == [(c, t) for c, t, _ in expected[name].columns]
        assert "transaction_id" in dict(columns) or name == "quarantine"
        params = table["Parameters"]
        assert params["projection.enabled"] == "true"
        assert params["projection.event_date.type"] == "date"
        assert params["projection.event_date.range"].endswith(",NOW")
        location = render(table["StorageDescriptor"]["Location"])
        assert location.endswith(f"/lake/{name}/")
        assert render(params["storage.location.template"]) == f"{location}event_date=${{event_date}}"
        assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")


def test_athena_workgroup_enforces_kms_encrypted_results(synth: Synth) -> None:
    _, workgroup = synth.only("AWS::Athena::WorkGroup", "Data")
    config = workgroup["Properties"]["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["ResultConfiguration"]["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"
    key_id = next(iter(synth.resources("AWS::KMS::Key", "Data")))
    assert config["ResultConfiguration"]["EncryptionConfiguration"]["KmsKey"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert render(config["ResultConfiguration"]["OutputLocation"]).endswith("/results/")
    assert config["BytesScannedCutoffPerQuery"] == synth.config.lake.athena_bytes_scanned_cutoff


# ---------------------------------------------------------------------------------------------------------
# Kafka, the streaming job and its role
# ---------------------------------------------------------------------------------------------------------


def test_msk_cluster_is_iam_only_tls_only_and_encrypted_with_its_topics(synth: Synth) -> None:
    kafka = synth.config.kafka
    _, cluster = synth.only("AWS::MSK::Cluster", "Kafka")
    props = cluster["Properties"]
    assert props["ClusterName"] == f"frauddetect-{synth.config.name}"
    assert props["ClientAuthentication"] == {"Sasl": {"Iam": {"Enabled": True}}, "Unauthenticated": {"Enabled": False}}
    assert props["EncryptionInfo"]["EncryptionInTransit"] == {"ClientBroker": "TLS", "InCluster": True}
    assert "DataVolumeKMSKeyId" in props["EncryptionInfo"]["EncryptionAtRest"]
    assert props["LoggingInfo"]["BrokerLogs"]["CloudWatchLogs"]["Enabled"] is True
    assert props["BrokerNodeGroupInfo"]["InstanceType"] == kafka.broker_instance_type
    _, configuration = synth.only("AWS::MSK::Configuration", "Kafka")
    assert "auto.create.topics.enable=false" in configuration["Properties"]["ServerProperties"]
    topics = {t["Properties"]["TopicName"]: t["Properties"] for t in synth.resources("AWS::MSK::Topic").values()}
    assert set(topics) == set(TOPICS)
    assert {(t["PartitionCount"], t["ReplicationFactor"]) for t in topics.values()} == {
        (kafka.partitions, kafka.replication_factor)
    }


def test_serverless_msk_is_a_per_environment_choice(tmp_path: Path) -> None:
    config = replace(ENVIRONMENTS["dev"], kafka=replace(ENVIRONMENTS["dev"].kafka, mode=MskMode.SERVERLESS))
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    network = NetworkStack(app, config=config, env=None)
    kafka = KafkaStack(app, config=config, env=None, network=network.network)
    Aspects.of(app).add(AwsSolutionsChecks())
    template = Template.from_stack(kafka)
    template.resource_count_is("AWS::MSK::Cluster", 0)
    template.resource_count_is("AWS::MSK::Topic", 0)  # the MSK topic API is for provisioned clusters only
    template.has_resource_properties(
        "AWS::MSK::ServerlessCluster",
        {"ClusterName": "frauddetect-dev", "ClientAuthentication": {"Sasl": {"Iam": {"Enabled": True}}}},
    )


def test_streaming_job_is_a_single_glue_6_streaming_run_in_the_vpc(synth: Synth) -> None:
    _, job = synth.only("AWS::Glue::Job", "Streaming")
    props = job["Properties"]
    assert (props["GlueVersion"], props["Command"]["Name"], props["Command"]["PythonVersion"]) == (
        "6.0",
        "gluestreaming",
        "3",
    )
    assert render(props["Command"]["ScriptLocation"]).endswith(".py")
    assert props["ExecutionProperty"] == {"MaxConcurrentRuns": 1}
    args = props["DefaultArguments"]
    assert render(args["--extra-py-files"]).endswith(".zip")
    assert args["--endpoint-name"] == f"frauddetect-{synth.config.name}"
    assert args["--source-format"] == "kafka"
    assert render(args["--checkpoint-uri"]).endswith("/glue/checkpoints/streaming")
    assert "BootstrapBrokerStringSaslIam" in render(args["--bootstrap-servers"])
    _, connection = synth.only("AWS::Glue::Connection", "Streaming")
    conn = connection["Properties"]["ConnectionInput"]
    assert conn["ConnectionType"] == "NETWORK" and props["Connections"] == {"Connections": [conn["Name"]]}
    assert len(conn["PhysicalConnectionRequirements"]["SecurityGroupIdList"]) == 2
    _, security = synth.only("AWS::Glue::SecurityConfiguration", "Streaming")
    encryption = security["Properties"]["EncryptionConfiguration"]
    assert props["SecurityConfiguration"] == security["Properties"]["Name"]
    assert encryption["CloudWatchEncryption"]["CloudWatchEncryptionMode"] == "SSE-KMS"
    assert encryption["JobBookmarksEncryption"]["JobBookmarksEncryptionMode"] == "CSE-KMS"
    assert encryption["S3Encryptions"][0]["S3EncryptionMode"] == "SSE-KMS"


def test_streaming_job_arguments_are_what_the_job_parses(synth: Synth) -> None:
    """The job definition's arguments, as Glue hands them to the script, pass the job's own parser."""
    from frauddetect.stream.config import SPARK_STATE_CONF, STATE_STORE_PROVIDER, parse_args

    spec = importlib.util.spec_from_file_location("glue_streaming_job", REPO_ROOT / "glue_jobs" / "streaming_job.py")
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    _, job = synth.only("AWS::Glue::Job", "Streaming")
    argv = ["--JOB_NAME", job["Properties"]["Name"], "--JOB_RUN_ID", "jr_1"]
    for name, value in job["Properties"]["DefaultArguments"].items():
        argv += [name, render(value)]
    config, master = parse_args(wrapper._job_args(argv))
    assert master is None  # Glue's launcher sets it
    streaming = synth.config.streaming
    assert config.endpoint_name == synth.config.endpoint_name
    assert config.threshold == synth.config.alert_threshold() == {"dev": 0.5, "prod": 0.42}[synth.config.name]
    assert config.model_dir is None  # scored through the endpoint; no TensorFlow on Glue
    assert config.max_offsets_per_trigger == {"dev": 50_000, "prod": 200_000}[synth.config.name]
    assert config.trigger_seconds == {"dev": 5.0, "prod": 1.0}[synth.config.name]
    assert config.allowed_lateness_seconds == 86_400 and config.state_bootstrap == "lake"  # the job's defaults
    # the stateful operators scale with the executors: one shuffle partition per executor core
    cores = {"dev": 1 * 2, "prod": 2 * 4}[synth.config.name]
    assert streaming.executor_cores() == cores
    assert (config.shuffle_partitions, config.card_state_shards, config.terminal_state_shards) == (cores, 4 * cores,
                                                                                                   4 * cores)
    assert config.spark_checkpoint().startswith("s3://") and config.spark_checkpoint().endswith("/streaming/spark")
    conf = dict(item.split("=", 1) for item in render(job["Properties"]["DefaultArguments"]["--conf"]).split(" --conf "))
    assert conf == SPARK_STATE_CONF
    assert conf["spark.sql.streaming.stateStore.providerClass"] == STATE_STORE_PROVIDER
    assert conf["spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled"] == "true"
    assert config.lake_uri.endswith("/lake")
    # MSK takes IAM over TLS only: the job's every Kafka client must select it, for the stack's region.
    assert (config.kafka_auth, config.kafka_region) == ("msk-iam", "<AWS::Region>")
    for topic in ("transactions", "labels"):
        assert config.source_options(topic)["kafka.sasl.mechanism"] == "AWS_MSK_IAM"  # Spark's source (Java client)
    assert "maxOffsetsPerTrigger" not in config.source_options("labels")  # labels uncapped: never behind
    assert config.kafka_client_settings()["sasl.mechanism"] == "OAUTHBEARER"  # the sinks' confluent-kafka


def _kafka_resources(statements: list[dict], env: str) -> dict[str, set[str]]:
    """``{action: rendered resources}`` of the kafka-cluster statements."""
    out: dict[str, set[str]] = {}
    for st in statements:
        for action in as_list(st["Action"]):
            if action.startswith("kafka-cluster:"):
                out.setdefault(action, set()).update(render(r) for r in as_list(st["Resource"]))
    return out


def _topic(resource: str, env: str) -> str | None:
    """The topic name of a topic ARN of this environment's cluster (its uuid from the Kafka stack)."""
    match = arn("kafka", f"topic/frauddetect-{env}/<FraudDetect-{env}-Kafka:KafkaClusterUuid>/(.+)").match(resource)
    return match.group(4) if match else None


def test_glue_role_touches_only_its_topics_prefixes_endpoint_and_keys(synth: Synth) -> None:
    env = synth.config.name
    _, job = synth.only("AWS::Glue::Job", "Streaming")
    role_id = job["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = synth.statements("Streaming", role_id)
    assert all(st["Effect"] == "Allow" for st in statements)
    assert not synth.raw["Streaming"]["Resources"][role_id]["Properties"].get("ManagedPolicyArns")
    actions = {a for st in statements for a in as_list(st["Action"])}
    assert not [a for a in actions if a.endswith("*")], "no action wildcards"

    kafka = _kafka_resources(statements, env)
    cluster = {r for r in kafka["kafka-cluster:Connect"]}
    assert len(cluster) == 1 and "KafkaCluster" in next(iter(cluster))
    assert kafka["kafka-cluster:WriteDataIdempotently"] == cluster
    assert {_topic(r, env) for r in kafka["kafka-cluster:ReadData"]} == set(TOPICS)
    assert {_topic(r, env) for r in kafka["kafka-cluster:WriteData"]} == {"fraud-alerts", "quarantine"}
    groups = kafka["kafka-cluster:AlterGroup"]
    patterns = {g.rsplit("/", 1)[1] for g in groups}
    assert patterns == {"spark-kafka-source-*", "frauddetect-job-*"}
    assert all(
        arn("kafka", f"group/frauddetect-{env}/<FraudDetect-{env}-Kafka:KafkaClusterUuid>/.+").match(g) for g in groups
    )
    # The job's own throw-away groups are covered; the alert Lambda's group (same cluster) is not, so the job
    # cannot join it or reset its offsets. IAM's * matches any characters, as fnmatch's does.
    _, mapping = synth.only("AWS::Lambda::EventSourceMapping", "Alerting")
    alert_group = mapping["Properties"]["AmazonManagedKafkaEventSourceConfig"]["ConsumerGroupId"]
    assert not [p for p in patterns if fnmatch.fnmatchcase(alert_group, p)], alert_group
    job_group = kafka_io.consumer_config("broker:9098")["group.id"]
    assert [p for p in patterns if fnmatch.fnmatchcase(job_group, p)] == ["frauddetect-job-*"], job_group

    invoke = [st for st in statements if "sagemaker:InvokeEndpoint" in as_list(st["Action"])]
    assert len(invoke) == 1 and arn("sagemaker", f"endpoint/frauddetect-{env}").match(render(invoke[0]["Resource"]))
    object_resources = {
        render(r)
        for st in statements
        if {"s3:PutObject", "s3:DeleteObject"} & set(as_list(st["Action"]))
        for r in as_list(st["Resource"])
    }
    assert {r.rsplit(">", 1)[1] for r in object_resources} == {"/lake/*", "/glue/*"}
    kms = [st for st in statements if any(a.startswith("kms:") for a in as_list(st["Action"]))]
    assert len(kms) == 1 and len(as_list(kms[0]["Resource"])) == 2  # the lake key and the job's key
    metric = next(st for st in statements if "cloudwatch:PutMetricData" in as_list(st["Action"]))
    assert metric["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Glue"}}
    # Tags only with Glue's own key, on the kinds of resource AWSGlueServiceRole names, in this account/region.
    tagging = [st for st in statements if {"ec2:CreateTags", "ec2:DeleteTags"} & set(as_list(st["Action"]))]
    assert len(tagging) == 1 and sorted(as_list(tagging[0]["Action"])) == ["ec2:CreateTags", "ec2:DeleteTags"]
    assert tagging[0]["Condition"] == {"ForAllValues:StringEquals": {"aws:TagKeys": ["aws-glue-service-resource"]}}
    resources = sorted(render(r) for r in as_list(tagging[0]["Resource"]))
    kinds = ("instance", "network-interface", "security-group")
    assert len(resources) == 3 and all(arn("ec2", f"{k}/\\*").match(r) for k, r in zip(kinds, resources)), resources


# Actions that have no resource-level permissions (Describe*, X-Ray, ECR's token, PutMetricData) or act on
# network interfaces that do not exist before the service creates them: the only ones a role of this app
# may hold on Resource "*". The cdk-nag suppressions of "Resource::*" (infra/nag.py) rely on this test.
NETWORK_INTERFACE_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterfacePermission",
}
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
ALLOWED_ON_STAR = {
    "alert handler": NETWORK_INTERFACE_ACTIONS | XRAY_ACTIONS,
    "label feedback": NETWORK_INTERFACE_ACTIONS | XRAY_ACTIONS,
    "SageMaker model": NETWORK_INTERFACE_ACTIONS | {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"},
    "Glue job": NETWORK_INTERFACE_ACTIONS | {"cloudwatch:PutMetricData"},
}
# PutMetricData on * only into the service's own namespaces.
METRIC_NAMESPACES = {
    "SageMaker model": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
    "Glue job": {"StringEquals": {"cloudwatch:namespace": "Glue"}},
}


def _roles(synth: Synth) -> dict[str, tuple[str, str]]:
    """``{role: (stack part, logical id)}`` of the roles with cdk-nag ``Resource::*`` suppressions."""
    _, alert_fn = _function(synth, "lambdas.alert_handler.app.handler")
    _, feedback_fn = _function(synth, "lambdas.label_feedback.app.handler")
    _, model = synth.only("AWS::SageMaker::Model", "Model")
    _, job = synth.only("AWS::Glue::Job", "Streaming")
    return {
        "alert handler": ("Alerting", alert_fn["Properties"]["Role"]["Fn::GetAtt"][0]),
        "label feedback": ("Alerting", feedback_fn["Properties"]["Role"]["Fn::GetAtt"][0]),
        "SageMaker model": ("Model", model["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]),
        "Glue job": ("Streaming", job["Properties"]["Role"]["Fn::GetAtt"][0]),
    }


def not_allowed_on_star(statements: list[dict], allowed: set[str]) -> set[str]:
    """Actions granted on Resource ``*`` that are neither in ``allowed`` nor an ``ec2:Describe...`` action."""
    return {
        action
        for st in statements
        if "*" in as_list(st["Resource"])
        for action in as_list(st["Action"])
        if action not in allowed and not re.fullmatch(r"ec2:Describe[A-Za-z]+", action)
    }


def test_roles_hold_on_resource_star_only_actions_without_resource_level_permissions(synth: Synth) -> None:
    for name, (part, role_id) in _roles(synth).items():
        role = synth.raw[part]["Resources"][role_id]
        assert role["Type"] == "AWS::IAM::Role"
        assert not role["Properties"].get("ManagedPolicyArns"), name
        statements = synth.statements(part, role_id)
        assert statements, name
        assert not [st for st in statements if "NotAction" in st or "NotResource" in st], name
        assert not_allowed_on_star(statements, ALLOWED_ON_STAR[name]) == set(), name
        if name in METRIC_NAMESPACES:
            (metric,) = [st for st in statements if "cloudwatch:PutMetricData" in as_list(st["Action"])]
            assert as_list(metric["Action"]) == ["cloudwatch:PutMetricData"], name
            assert metric["Condition"] == METRIC_NAMESPACES[name], name


def test_the_star_check_catches_a_new_grant_on_star() -> None:
    statements = [
        {"Effect": "Allow", "Action": ["ec2:DescribeSubnets", "xray:PutTraceSegments"], "Resource": "*"},
        {"Effect": "Allow", "Action": "sns:Publish", "Resource": ["arn:aws:sns:eu-west-1:1:topic", "*"]},
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*"},
    ]
    assert not_allowed_on_star(statements, ALLOWED_ON_STAR["alert handler"]) == {"sns:Publish", "ec2:CreateTags"}


def test_job_topics_are_the_topics_the_code_uses(synth: Synth) -> None:
    from frauddetect import config as names

    topics = synth.config.kafka.topics
    assert topics.all() == (names.TRANSACTIONS_TOPIC, names.LABELS_TOPIC, names.ALERTS_TOPIC, names.QUARANTINE_TOPIC)


# ---------------------------------------------------------------------------------------------------------
# Model endpoint
# ---------------------------------------------------------------------------------------------------------


def test_endpoint_serves_tf_serving_in_the_vpc_with_kms_and_data_capture(synth: Synth) -> None:
    settings = synth.config.model
    _, model = synth.only("AWS::SageMaker::Model", "Model")
    props = model["Properties"]
    assert props["EnableNetworkIsolation"] is True
    assert len(props["VpcConfig"]["Subnets"]) == synth.config.network.availability_zones
    expected = serving_image_uri(
        region="eu-west-1", version=settings.tf_serving_version, instance_type=settings.instance_type
    )
    assert expected.startswith("763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-inference:2.20-cpu")
    if synth.region:  # the SDK's answer for the target region, resolved at synth time
        assert props["PrimaryContainer"]["Image"] == expected
    else:  # the image of the deploy region, from a mapping of every region the SDK knows
        assert props["PrimaryContainer"]["Image"]["Fn::FindInMap"][1:] == [{"Ref": "AWS::Region"}, "uri"]
        mapping = next(iter(synth.raw["Model"]["Mappings"].values()))
        assert mapping["eu-west-1"]["uri"] == expected and len(mapping) > 20
    assert render(props["PrimaryContainer"]["ModelDataUrl"]).endswith(f"/{settings.model_data_key}")

    _, endpoint_config = synth.only("AWS::SageMaker::EndpointConfig", "Model")
    cfg = endpoint_config["Properties"]
    assert "KmsKeyId" in cfg
    capture = cfg["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and "KmsKeyId" in capture
    assert capture["InitialSamplingPercentage"] == settings.data_capture_percent
    assert render(capture["DestinationS3Uri"]).endswith("/datacapture")
    _, endpoint = synth.only("AWS::SageMaker::Endpoint", "Model")
    assert endpoint["Properties"]["EndpointName"] == synth.config.endpoint_name

    _, target = synth.only("AWS::ApplicationAutoScaling::ScalableTarget", "Model")
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (
        settings.min_instances,
        settings.max_instances,
    )
    assert target["Properties"]["ResourceId"] == f"endpoint/{synth.config.endpoint_name}/variant/AllTraffic"
    synth.template("Model").has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                    "TargetValue": settings.invocations_per_instance,
                }
            ),
        },
    )


# ---------------------------------------------------------------------------------------------------------
# Alerting and label feedback
# ---------------------------------------------------------------------------------------------------------


def _function(synth: Synth, handler: str) -> tuple[str, dict]:
    found = {
        i: f
        for i, f in synth.resources("AWS::Lambda::Function", "Alerting").items()
        if f["Properties"].get("Handler") == handler
    }
    assert len(found) == 1
    return next(iter(found.items()))


def test_alert_lambda_is_arm64_with_its_environment_and_reserved_concurrency(synth: Synth) -> None:
    topic_id = next(i for i, t in synth.resources("AWS::SNS::Topic", "Alerting").items())
    table_id, _ = synth.only("AWS::DynamoDB::Table", "Alerting")
    _, fn = _function(synth, "lambdas.alert_handler.app.handler")
    props = fn["Properties"]
    assert props["Architectures"] == ["arm64"]
    assert props["ReservedConcurrentExecutions"] == synth.config.alerting.reserved_concurrency
    env = props["Environment"]["Variables"]
    assert env["ALERTS_TOPIC_ARN"] == {"Ref": topic_id}
    assert env["IDEMPOTENCY_TABLE"] == {"Ref": table_id}
    runtime_tag = props["Runtime"].replace("python3.", "python3")  # python3.13 -> python313
    assert f"AWSLambdaPowertoolsPythonV3-{runtime_tag}-arm64" in str(props["Layers"])
    assert "VpcConfig" not in props  # the event source mapping, not the function, reaches the brokers


def test_alert_event_source_reads_fraud_alerts_with_retries_and_a_dlq(synth: Synth) -> None:
    settings = synth.config.alerting
    _, mapping = synth.only("AWS::Lambda::EventSourceMapping", "Alerting")
    props = mapping["Properties"]
    dlq_id, dlq = synth.only("AWS::SQS::Queue", "Alerting")
    assert "KafkaCluster" in render(props["EventSourceArn"])
    assert props["Topics"] == ["fraud-alerts"]
    assert props["StartingPosition"] == "TRIM_HORIZON"
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["MaximumRetryAttempts"] == settings.retry_attempts
    assert props["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": [dlq_id, "Arn"]}}}
    assert props["AmazonManagedKafkaEventSourceConfig"] == {
        "ConsumerGroupId": f"frauddetect-{synth.config.name}-alert-handler"
    }
    assert props["ProvisionedPollerConfig"] == {
        "MinimumPollers": settings.min_pollers,
        "MaximumPollers": settings.max_pollers,
    }
    assert "KmsMasterKeyId" in dlq["Properties"]


def test_alert_lambda_role_reads_only_fraud_alerts_without_managed_policies(synth: Synth) -> None:
    env = synth.config.name
    _, fn = _function(synth, "lambdas.alert_handler.app.handler")
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    assert not synth.raw["Alerting"]["Resources"][role_id]["Properties"].get("ManagedPolicyArns")
    statements = synth.statements("Alerting", role_id)
    kafka = _kafka_resources(statements, env)
    assert {_topic(r, env) for r in kafka["kafka-cluster:ReadData"]} == {"fraud-alerts"}
    assert "kafka-cluster:WriteData" not in kafka
    assert {g.rsplit("/", 1)[1] for g in kafka["kafka-cluster:AlterGroup"]} == {f"frauddetect-{env}-alert-handler"}
    actions = {a for st in statements for a in as_list(st["Action"])}
    assert {"sns:Publish", "dynamodb:PutItem", "sqs:SendMessage", "kafka:DescribeClusterV2"} <= actions


def test_idempotency_table_matches_powertools_schema(synth: Synth) -> None:
    synth.template("Alerting").has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
        },
    )


def test_topics_are_kms_encrypted_and_tls_only(synth: Synth) -> None:
    for part in ("Alerting", "Monitoring"):
        topic_id, topic = synth.only("AWS::SNS::Topic", part)
        assert "KmsMasterKeyId" in topic["Properties"]
        synth.template(part).has_resource_properties(
            "AWS::SNS::TopicPolicy",
            {
                "Topics": [{"Ref": topic_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                    )
                },
            },
        )


def test_alert_subscriptions_come_from_configuration(tmp_path: Path) -> None:
    from aws_cdk import CfnOutput, Stack

    from infra.alerting import Alerting
    from infra.config import KafkaTopics
    from infra.kafka import KafkaAccess

    config = replace(
        ENVIRONMENTS["dev"],
        alerting=replace(
            ENVIRONMENTS["dev"].alerting, email_subscribers=("fraud-team@example.com",), sms_subscribers=("+15550100",)
        ),
    )
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    stack = Stack(app, "Subscriptions")

    class _Kafka:  # what Alerting reads of a KafkaCluster
        cluster_arn = "arn:aws:kafka:eu-west-1:111122223333:cluster/frauddetect-dev/uuid-1"
        topics = KafkaTopics()
        access = KafkaAccess(
            cluster_arn=cluster_arn,
            cluster_name="frauddetect-dev",
            uuid_output=CfnOutput(stack, "Uuid", value="uuid-1"),
        )

    Alerting(stack, "Alerting", config=config, code_root=REPO_ROOT, kafka=_Kafka())  # type: ignore[arg-type]
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "fraud-team@example.com"}
    )
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "sms", "Endpoint": "+15550100"})


def test_label_feedback_lambda_runs_in_the_vpc_behind_an_iam_authorised_api(synth: Synth) -> None:
    env = synth.config.name
    table_id, _ = synth.only("AWS::DynamoDB::Table", "Alerting")
    function_id, fn = _function(synth, "lambdas.label_feedback.app.handler")
    props = fn["Properties"]
    assert props["Architectures"] == ["arm64"]
    assert len(props["VpcConfig"]["SubnetIds"]) == synth.config.network.availability_zones
    env_vars = props["Environment"]["Variables"]
    assert "BootstrapBrokerStringSaslIam" in render(env_vars["KAFKA_BOOTSTRAP_SERVERS"])
    assert env_vars["KAFKA_AUTH"] == "msk-iam"
    assert env_vars["LABELS_TOPIC"] == "labels"
    assert env_vars["IDEMPOTENCY_TABLE"] == {"Ref": table_id}  # shared with the alert handler, other key prefix
    _, alert_fn = _function(synth, "lambdas.alert_handler.app.handler")
    assert props["Code"] == alert_fn["Properties"]["Code"]  # same asset: one upload

    _, api = synth.only("AWS::ApiGatewayV2::Api", "Alerting")
    assert api["Properties"]["ProtocolType"] == "HTTP"
    _, route = synth.only("AWS::ApiGatewayV2::Route", "Alerting")
    assert route["Properties"]["RouteKey"] == "POST /verdicts"
    assert route["Properties"]["AuthorizationType"] == "AWS_IAM"
    _, stage = synth.only("AWS::ApiGatewayV2::Stage", "Alerting")
    assert stage["Properties"]["StageName"] == "$default"
    assert "DestinationArn" in stage["Properties"]["AccessLogSettings"]
    assert (
        stage["Properties"]["DefaultRouteSettings"]["ThrottlingRateLimit"]
        == synth.config.alerting.feedback_throttle_rps
    )
    _, integration = synth.only("AWS::ApiGatewayV2::Integration", "Alerting")
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0"
    assert function_id in str(integration["Properties"]["IntegrationUri"])

    role_id = props["Role"]["Fn::GetAtt"][0]
    statements = synth.statements("Alerting", role_id)
    kafka = _kafka_resources(statements, env)
    assert {_topic(r, env) for r in kafka["kafka-cluster:WriteData"]} == {"labels"}  # that topic only
    assert "kafka-cluster:ReadData" not in kafka
    assert "kafka-cluster:WriteDataIdempotently" in kafka
    actions = {a for st in statements for a in as_list(st["Action"])}
    assert "sns:Publish" not in actions


def test_lambda_asset_holds_only_the_handler_packages_and_the_job_package_only_frauddetect(synth: Synth) -> None:
    _, fn = _function(synth, "lambdas.alert_handler.app.handler")
    asset = synth.outdir / f"asset.{fn['Properties']['Code']['S3Key'].removesuffix('.zip')}"
    assert sorted(p.name for p in asset.iterdir()) == ["frauddetect", "lambdas"]
    assert (asset / "lambdas" / "alert_handler" / "app.py").is_file()
    assert not list(asset.rglob("__pycache__"))
    _, job = synth.only("AWS::Glue::Job", "Streaming")
    package = render(job["Properties"]["DefaultArguments"]["--extra-py-files"]).rsplit("/", 1)[1]
    package_dir = synth.outdir / f"asset.{package.removesuffix('.zip')}"
    assert sorted(p.name for p in package_dir.iterdir()) == ["frauddetect"]
    assert (package_dir / "frauddetect" / "stream" / "job.py").is_file()
    assert (package_dir / "frauddetect" / "stream" / "log4j2.properties").is_file()


# ---------------------------------------------------------------------------------------------------------
# Monitoring
# ---------------------------------------------------------------------------------------------------------


def test_alarms_cover_every_moving_part_and_notify_the_ops_topic(synth: Synth) -> None:
    ops_topic_id, _ = synth.only("AWS::SNS::Topic", "Monitoring")
    alarms = synth.resources("AWS::CloudWatch::Alarm", "Monitoring").values()
    metrics = {a["Properties"].get("MetricName") for a in alarms}
    assert {
        "Errors",
        "Throttles",
        "ApproximateNumberOfMessagesVisible",
        "TriggeredRules",
        "glue.driver.streaming.batchProcessingTimeInMs",
        "ModelLatency",
        "Invocation5XXErrors",
    } <= metrics
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": ops_topic_id}]
    anomaly = [a for a in alarms if "ThresholdMetricId" in a["Properties"]]
    assert len(anomaly) == 1
    expressions = [m.get("Expression", "") for m in anomaly[0]["Properties"]["Metrics"]]
    assert any(e.startswith("ANOMALY_DETECTION_BAND(") for e in expressions)
    published = next(m for m in anomaly[0]["Properties"]["Metrics"] if "MetricStat" in m)
    assert published["MetricStat"]["Metric"]["MetricName"] == "NumberOfMessagesPublished"
    synth.template("Monitoring").has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.glue"],
                "detail-type": ["Glue Job State Change"],
                "detail": {
                    "jobName": [f"frauddetect-{synth.config.name}-streaming"],
                    "state": Match.array_with(["FAILED"]),
                },
            },
            "Targets": [Match.object_like({"Arn": {"Ref": ops_topic_id}})],
        },
    )
    synth.template("Monitoring").resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_glue_batch_alarm_fires_when_the_job_reports_no_batches(synth: Synth) -> None:
    """A stalled or stopped job emits no batch metrics and no FAILED event: missing data must breach."""
    alarms = synth.resources("AWS::CloudWatch::Alarm", "Monitoring").values()
    batch_time = "glue.driver.streaming.batchProcessingTimeInMs"
    (batch,) = [a for a in alarms if a["Properties"].get("MetricName") == batch_time]
    assert batch["Properties"]["TreatMissingData"] == "breaching"
    assert batch["Properties"]["EvaluationPeriods"] == 3 and batch["Properties"]["Period"] == 60
    others = {a["Properties"].get("TreatMissingData") for a in alarms if a is not batch}
    assert others == {"notBreaching"}  # errors, throttles, DLQ depth, 5xx: no data is no failure


def test_granular_nag_suppressions_name_their_findings(synth: Synth) -> None:
    """IAM4/IAM5 and validation-failure suppressions always carry ``applies_to``: a new finding of the same
    rule on the same resource is reported, not silently covered."""
    suppressions = [
        (part, lid, rule)
        for part, template in synth.raw.items()
        for lid, resource in template["Resources"].items()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    assert suppressions
    granular_rules = ("AwsSolutions-IAM4", "AwsSolutions-IAM5", "CdkNagValidationFailure")
    blanket = [(p, lid) for p, lid, rule in suppressions if rule["id"] in granular_rules and not rule.get("applies_to")]
    assert not blanket, blanket
    validation = [rule for _, _, rule in suppressions if rule["id"] == "CdkNagValidationFailure"]
    assert validation and all(rule["applies_to"] == ["AwsSolutions-EC23"] for rule in validation)


def test_lake_keeps_what_the_job_needs_to_rebuild_its_state(synth: Synth) -> None:
    """A job started with --state-bootstrap lake reads the terminal retention plus the allowed lateness (+1 day)
    of scored transactions; the lake must not expire them sooner."""
    from frauddetect.features import TERMINAL_RETENTION_US
    from frauddetect.stream.config import JobConfig

    lateness_s = JobConfig.model_fields["allowed_lateness_seconds"].get_default()
    look_back_days = (TERMINAL_RETENTION_US / 1e6 + lateness_s) / 86_400 + 1
    expiry = synth.config.lake.expiration_days
    assert expiry is None or expiry >= look_back_days + 7, (expiry, look_back_days)
    lake_id = next(i for i in synth.resources("AWS::S3::Bucket", "Data") if "LakeBucket" in i)
    rules = synth.raw["Data"]["Resources"][lake_id]["Properties"]["LifecycleConfiguration"]["Rules"]
    expire = [r for r in rules if r["Id"] == "expire-objects"]
    assert [r["ExpirationInDays"] for r in expire] == ([] if expiry is None else [expiry])
