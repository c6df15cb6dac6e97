"""Amazon MSK: the cluster (provisioned or Serverless, per environment), its topics, its IAM-auth brokers,
and :class:`KafkaAccess`, the one place that writes ``kafka-cluster:*`` IAM statements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aws_cdk import Aws, CfnOutput, Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_msk as msk
from aws_cdk import custom_resources as cr
from constructs import Construct, IConstruct

from infra.config import EnvironmentConfig, KafkaTopics, MskMode
from infra.keys import environment_key
from infra.network import Network


class KafkaAccess:
    """IAM statements for Kafka data-plane actions, scoped to one cluster's own ARNs.

    MSK IAM access control names topics and groups ``arn:...:topic/<cluster name>/<cluster uuid>/<topic>``;
    the uuid is taken from the cluster ARN, so a statement can never match another cluster of the same name.
    The cluster's stack splits the uuid out of the ARN and publishes it as an output (``uuid_output``); other
    stacks read that output, because a split of a cross-stack value is beyond what cfn-lint can type-check.
    """

    def __init__(self, *, cluster_arn: str, cluster_name: str, uuid_output: CfnOutput) -> None:
        self.cluster_arn = cluster_arn
        self.cluster_name = cluster_name
        self._uuid_output = uuid_output

    def _uuid(self, scope: IConstruct) -> str:
        producer = Stack.of(self._uuid_output)
        if Stack.of(scope).node.path == producer.node.path:
            return self._uuid_output.value
        return Fn.get_stack_output(producer.stack_name, producer.resolve(self._uuid_output.logical_id))

    def _arn(self, scope: IConstruct, kind: str, name: str) -> str:
        uuid = self._uuid(scope)
        return f"arn:{Aws.PARTITION}:kafka:{Aws.REGION}:{Aws.ACCOUNT_ID}:{kind}/{self.cluster_name}/{uuid}/{name}"

    def topic_arn(self, scope: IConstruct, topic: str) -> str:
        """ARN of ``topic`` on this cluster, for use in ``scope``'s stack."""
        return self._arn(scope, "topic", topic)

    def group_arn(self, scope: IConstruct, group: str) -> str:
        """ARN of consumer group ``group`` (may end in ``*`` for a prefix), for use in ``scope``'s stack."""
        return self._arn(scope, "group", group)

    def grant(
        self,
        grantee: iam.IRole | lambda_.IFunction,
        *,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
        groups: Sequence[str] = (),
        idempotent_producer: bool = False,
    ) -> None:
        """Let ``grantee`` connect, read ``read`` topics, write ``write`` topics and use consumer ``groups``.

        ``idempotent_producer`` adds ``WriteDataIdempotently`` on the cluster (librdkafka's
        ``enable.idempotence``, which every producer of this project sets).
        """
        statements = self.statements(
            grantee, read=read, write=write, groups=groups, idempotent_producer=idempotent_producer
        )
        for statement in statements:
            grantee.grant_principal.add_to_principal_policy(statement)

    def statements(
        self,
        scope: IConstruct,
        *,
        read: Iterable[str] = (),
        write: Iterable[str] = (),
        groups: Iterable[str] = (),
        idempotent_producer: bool = False,
    ) -> list[iam.PolicyStatement]:
        """The statements :meth:`grant` adds, with ARNs usable in ``scope``'s stack."""
        cluster_actions = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
        if idempotent_producer:
            cluster_actions.append("kafka-cluster:WriteDataIdempotently")
        out = [iam.PolicyStatement(actions=cluster_actions, resources=[self.cluster_arn])]
        read, write, groups = list(read), list(write), list(groups)
        if read:
            out.append(
                iam.PolicyStatement(
                    actions=["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"],
                    resources=[self.topic_arn(scope, t) for t in read],
                )
            )
        if write:
            out.append(
                iam.PolicyStatement(
                    actions=["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"],
                    resources=[self.topic_arn(scope, t) for t in write],
                )
            )
        if groups:
            out.append(
                iam.PolicyStatement(
                    actions=["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"],
                    resources=[self.group_arn(scope, g) for g in groups],
                )
            )
        return out


class KafkaCluster(Construct):
    """The environment's MSK cluster: IAM access control only, TLS only, in the private subnets.

    Provisioned (``MskMode.PROVISIONED``): KMS-encrypted broker volumes (own key), broker logs to CloudWatch,
    per-broker monitoring, a configuration without topic auto-creation, and the topics as
    ``AWS::MSK::Topic``. Serverless: the cluster only (see :class:`~infra.config.MskMode`).

    Attributes:
        cluster_name: ``frauddetect-<env>``.
        cluster_arn: the cluster's ARN.
        bootstrap_brokers: ``host:9098,...`` for IAM-authenticated clients (``kafka:GetBootstrapBrokers`` at
            deploy time: CloudFormation does not return it).
        topics: the topic names.
        access: :class:`KafkaAccess` for this cluster.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, network: Network) -> None:
        super().__init__(scope, construct_id)
        settings = config.kafka
        self.cluster_name = config.msk_cluster_name
        self.topics: KafkaTopics = settings.topics
        subnet_ids = network.private_subnet_ids
        security_groups = [network.broker_security_group.security_group_id]

        if settings.mode is MskMode.SERVERLESS:
            cluster = msk.CfnServerlessCluster(
                self,
                "Cluster",
                cluster_name=self.cluster_name,
                client_authentication=msk.CfnServerlessCluster.ClientAuthenticationProperty(
                    sasl=msk.CfnServerlessCluster.SaslProperty(iam=msk.CfnServerlessCluster.IamProperty(enabled=True))
                ),
                vpc_configs=[
                    msk.CfnServerlessCluster.VpcConfigProperty(subnet_ids=subnet_ids, security_groups=security_groups)
                ],
            )
            self.cluster_arn = cluster.attr_arn
        else:
            self.cluster_arn = self._provisioned(config, subnet_ids, security_groups)
            for topic in self.topics.all():
                msk.CfnTopic(
                    self,
                    f"Topic-{topic}",
                    cluster_arn=self.cluster_arn,
                    topic_name=topic,
                    partition_count=settings.partitions,
                    replication_factor=settings.replication_factor,
                )
        uuid_output = CfnOutput(
            self, "ClusterUuid", value=Fn.select(2, Fn.split("/", self.cluster_arn)), description="MSK cluster uuid"
        )
        uuid_output.override_logical_id("KafkaClusterUuid")
        self.access = KafkaAccess(cluster_arn=self.cluster_arn, cluster_name=self.cluster_name, uuid_output=uuid_output)

        brokers = cr.AwsCustomResource(
            self,
            "BootstrapBrokers",
            on_update=cr.AwsSdkCall(  # also runs on create
                service="Kafka",
                action="getBootstrapBrokers",
                parameters={"ClusterArn": self.cluster_arn},
                physical_resource_id=cr.PhysicalResourceId.of(self.cluster_arn),
                output_paths=["BootstrapBrokerStringSaslIam"],
            ),
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=[self.cluster_arn]),
            install_latest_aws_sdk=False,
            log_group=logs.LogGroup(
                self, "BootstrapBrokersLogs", retention=config.log_retention, removal_policy=config.removal_policy
            ),
        )
        self.bootstrap_brokers = brokers.get_response_field("BootstrapBrokerStringSaslIam")

    def _provisioned(self, config: EnvironmentConfig, subnet_ids: list[str], security_groups: list[str]) -> str:
        settings = config.kafka
        key = environment_key(self, "BrokerKey", config=config, name="msk", purpose="MSK broker volume encryption")
        broker_logs = logs.LogGroup(
            self, "BrokerLogs", retention=config.log_retention, removal_policy=config.removal_policy
        )
        server_properties = "\n".join(
            [
                "auto.create.topics.enable=false",  # topics are declared, a typo must not create one
                f"default.replication.factor={settings.replication_factor}",
                f"min.insync.replicas={settings.min_insync_replicas}",
                f"log.retention.hours={settings.retention_hours}",
                "unclean.leader.election.enable=false",
            ]
        )
        configuration = msk.CfnConfiguration(
            self,
            "Configuration",
            name=f"{config.resource_prefix}-brokers",
            kafka_versions_list=[settings.kafka_version],
            server_properties=server_properties,
        )
        cluster = msk.CfnCluster(
            self,
            "Cluster",
            cluster_name=self.cluster_name,
            kafka_version=settings.kafka_version,
            number_of_broker_nodes=len(subnet_ids) * settings.brokers_per_az,
            broker_node_group_info=msk.CfnCluster.BrokerNodeGroupInfoProperty(
                client_subnets=subnet_ids,
                instance_type=settings.broker_instance_type,
                security_groups=security_groups,
                storage_info=msk.CfnCluster.StorageInfoProperty(
                    ebs_storage_info=msk.CfnCluster.EBSStorageInfoProperty(volume_size=settings.broker_volume_gb)
                ),
            ),
            client_authentication=msk.CfnCluster.ClientAuthenticationProperty(
                sasl=msk.CfnCluster.SaslProperty(iam=msk.CfnCluster.IamProperty(enabled=True)),
                unauthenticated=msk.CfnCluster.UnauthenticatedProperty(enabled=False),
            ),
            encryption_info=msk.CfnCluster.EncryptionInfoProperty(
                encryption_at_rest=msk.CfnCluster.EncryptionAtRestProperty(data_volume_kms_key_id=key.key_arn),
                encryption_in_transit=msk.CfnCluster.EncryptionInTransitProperty(client_broker="TLS", in_cluster=True),
            ),
            logging_info=msk.CfnCluster.LoggingInfoProperty(
                broker_logs=msk.CfnCluster.BrokerLogsProperty(
                    cloud_watch_logs=msk.CfnCluster.CloudWatchLogsProperty(
                        enabled=True, log_group=broker_logs.log_group_name
                    )
                )
            ),
            enhanced_monitoring="PER_BROKER",
            configuration_info=msk.CfnCluster.ConfigurationInfoProperty(
                arn=configuration.attr_arn, revision=configuration.attr_latest_revision_revision
            ),
        )
        cluster.apply_removal_policy(config.removal_policy)
        return cluster.attr_arn
