"""cdk-nag: the AwsSolutions findings this app accepts, each on its own resource, with its reason.

Rules: a suppression names one resource (or a CDK-internal singleton by path), lists the exact findings
(``applies_to``) wherever the rule is granular (IAM4, IAM5), and says why the finding is acceptable. Nothing
is suppressed stack-wide. Each stack applies the functions for its constructs (:mod:`infra.stacks`); the list
with reasons is also in the README ("Security review").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aws_cdk import CfnElement, Stack
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

from infra.alerting import Alerting
from infra.data_lake import DATA_CAPTURE_PREFIX, GLUE_PREFIX, LAKE_PREFIX, DataLake
from infra.feedback import LabelFeedback
from infra.model_endpoint import ModelEndpoint
from infra.network import Network
from infra.streaming_job import (
    CONSUMER_GROUPS,
    GLUE_LOG_GROUPS,
    GLUE_TAGGED_RESOURCES,
    StreamingJob,
)

AWS_CUSTOM_RESOURCE_PROVIDER = "AWS679f53fac002430cb0da5b7982bd2287"  # CDK's AwsCustomResource singleton
KMS_GRANT_WILDCARDS = ["Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"]
# How partition, region and account appear in a finding: as pseudo parameters in an environment-agnostic
# stack, as literals once CDK_DEFAULT_REGION/ACCOUNT are known (the CDK CLI sets them from the profile).
_PARTITION = r"(<AWS::Partition>|aws[a-z-]*)"
_REGION = r"(<AWS::Region>|[a-z]{2}(-[a-z]+)+-\d)"
_ACCOUNT = r"(<AWS::AccountId>|\d{12})"


def _arn(prefix: str, service: str, rest: str, *, tail: str = "") -> dict[str, str]:
    """``applies_to`` regex for ``<prefix>::arn:<partition>:<service>:<region>:<account>:<rest><tail>``:
    ``rest`` is literal (a ``*`` in it is the wildcard the finding is about), ``tail`` a regex."""
    parts = [_PARTITION, re.escape(service), _REGION, _ACCOUNT, re.escape(rest) + tail]
    return {"regex": f"/^{re.escape(prefix)}::arn:{':'.join(parts)}$/"}


BASIC_EXECUTION_ROLE = {
    "regex": f"/^Policy::arn:{_PARTITION}:iam::aws:policy\\/service-role\\/AWSLambdaBasicExecutionRole$/"
}


def _suppress(construct: IConstruct, rule: str, reason: str, applies_to: Sequence[str | dict] | None = None) -> None:
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=rule, reason=reason, applies_to=list(applies_to) if applies_to else None)],
        apply_to_children=True,
    )


def _arn_of(bucket: s3.IBucket) -> str:
    """How cdk-nag writes the bucket's ARN in a finding: ``<LogicalId.Arn>``."""
    cfn = bucket.node.default_child
    assert isinstance(cfn, CfnElement)
    return f"<{Stack.of(cfn).resolve(cfn.logical_id)}.Arn>"


def suppress_lambda_findings(alerting: Alerting, feedback: LabelFeedback) -> None:
    """The alert and label feedback Lambdas, their roles and the DLQ."""
    runtime_reason = (
        "Python 3.13 on purpose: the Lambdas share the frauddetect package with the Glue 6.0 job, which runs "
        "Python 3.13, and the Powertools layer is pinned to the python313 build; move both together."
    )
    for function in (alerting.function, feedback.function):
        _suppress(function, "AwsSolutions-L1", runtime_reason)
        _suppress(
            function.role,
            "AwsSolutions-IAM5",
            "CDK's grants for the one customer-managed key of the table/topic/DLQ (resource = that key's ARN); "
            "KMS names the data-key and re-encrypt variants with a wildcard.",
            KMS_GRANT_WILDCARDS,
        )
    _suppress(
        alerting.function.role,
        "AwsSolutions-IAM5",
        "Resource * only for xray:PutTraceSegments/PutTelemetryRecords (active tracing) and the MSK event "
        "poller's network-interface actions (ec2:Describe* have no resource-level permissions).",
        ["Resource::*"],
    )
    _suppress(
        feedback.function.role,
        "AwsSolutions-IAM5",
        "Resource * only for xray:PutTraceSegments/PutTelemetryRecords (active tracing) and the VPC function's "
        "network-interface actions (ec2:Describe* have no resource-level permissions).",
        ["Resource::*"],
    )
    _suppress(
        alerting.dead_letter_queue,
        "AwsSolutions-SQS3",
        "This queue is the dead-letter queue: the on-failure destination of the alert Lambda's MSK event source.",
    )


def suppress_streaming_job_findings(job: StreamingJob, lake: DataLake, cluster_name: str) -> None:
    """The Glue job's role."""
    _suppress(
        job.role,
        "AwsSolutions-IAM5",
        "Prefix wildcards the services name at run time: the lake's table prefix and the job's checkpoint/temp "
        "prefix (objects are per micro-batch), Glue's log groups under /aws-glue/ (named per security "
        "configuration and role), Spark's and the job's generated Kafka consumer group names on this cluster "
        "only, the network interfaces, security groups and instances Glue tags for the NETWORK connection "
        "(only with its own tag key aws-glue-service-resource, as in AWSGlueServiceRole); Resource * only for "
        "cloudwatch:PutMetricData (conditioned on namespace Glue) and the connection's network-interface "
        "actions (ec2:Describe* have no resource-level permissions).",
        [
            f"Resource::{_arn_of(lake.bucket)}/{LAKE_PREFIX}/*",
            f"Resource::{_arn_of(lake.artifacts_bucket)}/{GLUE_PREFIX}/*",
            _arn("Resource", "logs", f"log-group:{GLUE_LOG_GROUPS}"),
            *(
                # The cluster uuid between name and group is a reference (Fn::GetStackOutput) in the finding.
                _arn("Resource", "kafka", f"group/{cluster_name}/", tail=f".+/{re.escape(group)}")
                for group in CONSUMER_GROUPS
            ),
            *(_arn("Resource", "ec2", f"{kind}/*") for kind in GLUE_TAGGED_RESOURCES),
            "Resource::*",
        ],
    )


def suppress_model_findings(model: ModelEndpoint, lake: DataLake) -> None:
    """The SageMaker model's execution role."""
    _suppress(
        model.execution_role,
        "AwsSolutions-IAM5",
        "SageMaker writes data-capture objects under one prefix and log streams it names per instance in the "
        "endpoint's own log group; Resource * only for ecr:GetAuthorizationToken and cloudwatch:PutMetricData "
        "(no resource-level permissions; the latter only in SageMaker's /aws/sagemaker/ namespaces) and the "
        "model's VPC network-interface actions.",
        [
            f"Resource::{_arn_of(lake.artifacts_bucket)}/{DATA_CAPTURE_PREFIX}/*",
            _arn("Resource", "logs", f"log-group:/aws/sagemaker/Endpoints/{model.endpoint_name}:log-stream:*"),
            "Resource::*",
        ],
    )


def suppress_kafka_findings(stack: Stack) -> None:
    """CDK's AwsCustomResource provider in the Kafka stack (it reads the bootstrap brokers)."""
    NagSuppressions.add_resource_suppressions_by_path(
        stack,
        f"/{stack.stack_name}/{AWS_CUSTOM_RESOURCE_PROVIDER}/ServiceRole/Resource",
        [
            NagPackSuppression(
                id="AwsSolutions-IAM4",
                reason="CDK-internal AwsCustomResource provider (reads the cluster's bootstrap brokers at deploy "
                "time); its role's only managed policy is the basic Lambda logging policy, set by CDK.",
                applies_to=[BASIC_EXECUTION_ROLE],  # type: ignore[list-item]
            )
        ],
    )


def suppress_network_findings(network: Network) -> None:
    """The interface endpoints' security groups."""
    for endpoint in network.interface_endpoints.values():
        for group in endpoint.connections.security_groups:
            _suppress(
                group,
                "CdkNagValidationFailure",
                "EC23 cannot evaluate the ingress source, which is the VPC's own CIDR (Fn::GetAtt CidrBlock, "
                "HTTPS only), not 0.0.0.0/0.",
                ["AwsSolutions-EC23"],  # only that rule's validation failure
            )
