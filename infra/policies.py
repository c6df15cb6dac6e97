"""IAM statement builders shared by the constructs (one definition of each recurring permission set)."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

NETWORK_INTERFACE_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
)


def network_interface_statement(*extra_actions: str) -> iam.PolicyStatement:
    """ENI management for a service that runs in our subnets on a role's behalf (Lambda in a VPC, the MSK
    event poller, Glue connections, SageMaker models). Resource ``*``: ``Describe*`` has no resource-level
    permissions and the ENIs do not exist before the service creates them."""
    return iam.PolicyStatement(actions=[*NETWORK_INTERFACE_ACTIONS, *extra_actions], resources=["*"])


def log_group_arn(scope: Construct, name: str) -> str:
    """ARN of log group ``name`` (which may end in ``*``) in ``scope``'s account and region."""
    return Stack.of(scope).format_arn(
        service="logs", resource="log-group", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
    )
