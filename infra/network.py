"""The VPC every private component runs in: MSK brokers, the Glue job, the SageMaker model, the feedback Lambda."""

from __future__ import annotations

from aws_cdk import Fn
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import EnvironmentConfig

KAFKA_IAM_PORT = 9098
"""Brokers' port for IAM-authenticated TLS clients inside the VPC (provisioned and Serverless)."""

INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,  # the job's InvokeEndpoint
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,  # the MSK event source's on-failure destination needs it
    "Glue": ec2.InterfaceVpcEndpointAwsService.GLUE,
    "CloudWatchMonitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "CloudWatchLogs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
}


class Network(Construct):
    """VPC with public (NAT only) and private subnets, flow logs, gateway endpoints for S3 and DynamoDB,
    interface endpoints for :data:`INTERFACE_ENDPOINTS`, and the security groups of the Kafka data path.

    Attributes:
        vpc: the VPC.
        private_subnets: where everything runs (``PRIVATE_WITH_EGRESS``, one per zone).
        private_subnet_ids: their ids, in zone order.
        broker_security_group: the MSK brokers' group; admits :data:`KAFKA_IAM_PORT` from
            ``kafka_client_security_group`` and from itself (the Lambda MSK event poller uses the cluster's
            groups for its network interfaces).
        kafka_client_security_group: for everything that talks to Kafka (Glue job, feedback Lambda).
        glue_security_group: the Glue connection's group (Glue requires a self-referencing rule).
        interface_endpoints: the interface endpoints by name.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        settings = config.network

        # Zones as GetAZs tokens: an account/region-specific stack would otherwise look them up (a network
        # call at synth), and an environment-agnostic one would get only two.
        zones = [Fn.select(i, Fn.get_azs()) for i in range(settings.availability_zones)]
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(settings.cidr),
            availability_zones=zones,
            nat_gateways=settings.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
            ],
            restrict_default_security_group=True,
        )
        self.private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.private_subnet_ids: list[str] = self.vpc.select_subnets(
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
        ).subnet_ids

        flow_log_group = logs.LogGroup(
            self, "FlowLogs", retention=config.log_retention, removal_policy=config.removal_policy
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                flow_log_group,
                iam.Role(self, "FlowLogRole", assumed_by=iam.ServicePrincipal("vpc-flow-logs.amazonaws.com")),
            ),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)
        # CDK's default endpoint security group admits HTTPS from the VPC's CIDR only.
        self.interface_endpoints = {
            name: self.vpc.add_interface_endpoint(
                name, service=service, subnets=self.private_subnets, private_dns_enabled=True
            )
            for name, service in INTERFACE_ENDPOINTS.items()
        }

        self.kafka_client_security_group = ec2.SecurityGroup(
            self, "KafkaClients", vpc=self.vpc, description="Kafka clients: Glue job, label feedback Lambda"
        )
        self.broker_security_group = ec2.SecurityGroup(
            self, "KafkaBrokers", vpc=self.vpc, description="MSK brokers: IAM/TLS port from clients and itself"
        )
        self.broker_security_group.add_ingress_rule(
            self.kafka_client_security_group, ec2.Port.tcp(KAFKA_IAM_PORT), "Kafka clients (IAM, TLS)"
        )
        self.broker_security_group.add_ingress_rule(
            self.broker_security_group, ec2.Port.tcp(KAFKA_IAM_PORT), "Lambda MSK event poller (IAM, TLS)"
        )
        self.glue_security_group = ec2.SecurityGroup(
            self, "GlueConnection", vpc=self.vpc, description="Glue streaming job workers"
        )
        self.glue_security_group.add_ingress_rule(
            self.glue_security_group, ec2.Port.all_tcp(), "Glue workers talk to each other (Glue requirement)"
        )
