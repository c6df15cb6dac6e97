"""The Glue 6.0 streaming job: ``glue_jobs/streaming_job.py`` with the ``frauddetect`` package, in the VPC.

It reads ``transactions`` and ``labels`` from MSK (Spark's ``kafka`` source, IAM auth), keeps the card and
terminal feature state in Spark's RocksDB state store (checkpointed to S3), scores through the SageMaker
endpoint, writes the lake and the ``fraud-alerts``/``quarantine`` topics; every stage runs on the executors. CloudFormation creates
the job; it does not start it (``aws glue start-job-run``: README, "Infrastructure").
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Annotations, Aws, CfnOutput, IgnoreMode, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from frauddetect.config import JOB_GROUP_PREFIX
from frauddetect.stream.config import SPARK_STATE_CONF, JobConfig
from infra.config import EnvironmentConfig
from infra.data_lake import GLUE_PREFIX, LAKE_PREFIX, DataLake
from infra.kafka import KafkaCluster
from infra.keys import environment_key
from infra.network import Network
from infra.policies import log_group_arn, network_interface_statement

GLUE_VERSION = "6.0"
SCRIPT = Path("glue_jobs") / "streaming_job.py"
# The package asset is the repository root filtered to frauddetect/ (dockerignore syntax, as for the
# Lambdas): CDK zips it at synth time, no Docker, and `--extra-py-files` takes the zip as is.
PACKAGE_EXCLUDES = ["*", "!frauddetect/", "**/__pycache__", "**/*.pyc"]
# Spark's Kafka source names its consumer groups spark-kafka-source-<uuid>...; the job's own readers
# (exactly-once sink checks) use frauddetect-job-<random> (frauddetect.kafka_io.consumer_config). Not
# frauddetect-*: that would cover frauddetect-<env>-alert-handler, the alert Lambda's group and offsets.
CONSUMER_GROUPS = ("spark-kafka-source-*", f"{JOB_GROUP_PREFIX}*")
GLUE_LOG_GROUPS = "/aws-glue/*"
# What Glue tags (key aws-glue-service-resource) for a NETWORK connection; the resource types and the
# condition are those of AWS's managed policy AWSGlueServiceRole (v5) and of the Glue guide's "Create an
# IAM policy for the AWS Glue service" (docs.aws.amazon.com/glue/latest/dg/create-service-policy.html).
GLUE_TAG_KEY = "aws-glue-service-resource"
GLUE_TAGGED_RESOURCES = ("network-interface", "security-group", "instance")


def job_arguments(**settings) -> dict[str, str]:
    """Glue ``DefaultArguments`` for the job's settings (:class:`~frauddetect.stream.config.JobConfig` fields),
    as the job parses them. Raises pydantic.ValidationError on a setting the job would refuse, ValueError on
    ``kafka_options`` (a repeated argument, which Glue's argument map cannot hold)."""
    if settings.get("kafka_options"):
        raise ValueError("kafka_options cannot be Glue job arguments (one --kafka-option per option)")
    argv = JobConfig(**settings).to_argv()
    return dict(zip(argv[::2], argv[1::2]))


class StreamingJob(Construct):
    """``AWS::Glue::Job`` (``gluestreaming``, Glue 6.0) with its NETWORK connection, security configuration
    (KMS for logs and bookmarks) and a role limited to its topics, bucket prefixes, endpoint and keys.

    Attributes:
        job_name: ``frauddetect-<env>-streaming``.
        role: the job's IAM role.
        checkpoint_uri: ``s3://<artifacts>/glue/checkpoints/streaming``.
        default_arguments: the job's arguments (what ``glue_jobs/streaming_job.py`` receives).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        lake: DataLake,
        kafka: KafkaCluster,
        endpoint_name: str,
        code_root: Path,
    ) -> None:
        super().__init__(scope, construct_id)
        settings = config.streaming
        stack = Stack.of(self)
        self.job_name = f"{config.resource_prefix}-streaming"

        script = s3_assets.Asset(self, "Script", path=str(code_root / SCRIPT))
        package = s3_assets.Asset(
            self, "Package", path=str(code_root), exclude=PACKAGE_EXCLUDES, ignore_mode=IgnoreMode.DOCKER
        )

        # Logs and job bookmarks: their own key, so log readers need not be able to read the lake.
        key = environment_key(
            self, "JobKey", config=config, name="glue", purpose="Glue streaming job logs and bookmarks"
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:{GLUE_LOG_GROUPS}"
                        )
                    }
                },
            )
        )
        security_configuration = glue.CfnSecurityConfiguration(
            self,
            "SecurityConfiguration",
            name=self.job_name,
            encryption_configuration=glue.CfnSecurityConfiguration.EncryptionConfigurationProperty(
                cloud_watch_encryption=glue.CfnSecurityConfiguration.CloudWatchEncryptionProperty(
                    cloud_watch_encryption_mode="SSE-KMS", kms_key_arn=key.key_arn
                ),
                job_bookmarks_encryption=glue.CfnSecurityConfiguration.JobBookmarksEncryptionProperty(
                    job_bookmarks_encryption_mode="CSE-KMS", kms_key_arn=key.key_arn
                ),
                s3_encryptions=[
                    glue.CfnSecurityConfiguration.S3EncryptionProperty(
                        s3_encryption_mode="SSE-KMS", kms_key_arn=lake.key.key_arn
                    )
                ],
            ),
        )

        # A Glue connection takes exactly one subnet, so the job runs in one zone (the first private subnet):
        # if that zone fails, point the connection at another subnet and restart the job (README, "Settings").
        subnet = network.vpc.select_subnets(subnet_type=network.private_subnets.subnet_type).subnets[0]
        connection_name = f"{config.resource_prefix}-vpc"
        connection = glue.CfnConnection(
            self,
            "Connection",
            catalog_id=stack.account,
            connection_input=glue.CfnConnection.ConnectionInputProperty(
                name=connection_name,
                description="Private subnet and security groups of the streaming job (MSK, endpoint, S3)",
                connection_type="NETWORK",
                connection_properties={},
                physical_connection_requirements=glue.CfnConnection.PhysicalConnectionRequirementsProperty(
                    availability_zone=subnet.availability_zone,
                    subnet_id=subnet.subnet_id,
                    security_group_id_list=[
                        network.glue_security_group.security_group_id,
                        network.kafka_client_security_group.security_group_id,
                    ],
                ),
            ),
        )

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("glue.amazonaws.com"),
            description=f"frauddetect {config.name}: Glue streaming job",
        )
        self.checkpoint_uri = lake.artifacts_bucket.s3_url_for_object(f"{GLUE_PREFIX}/checkpoints/streaming")
        self._grant(
            config=config,
            lake=lake,
            kafka=kafka,
            key=key,
            assets=[script, package],
            endpoint_name=endpoint_name,
            connection_name=connection_name,
        )

        self.default_arguments = {
            # Glue's own settings (glue_jobs/streaming_job.py drops them before the job's parser).
            "--job-language": "python",
            "--enable-metrics": "true",
            "--enable-observability-metrics": "true",
            "--enable-continuous-cloudwatch-log": "true",
            "--TempDir": lake.artifacts_bucket.s3_url_for_object(f"{GLUE_PREFIX}/temp/"),
            "--extra-py-files": package.s3_object_url,
            "--additional-python-modules": ",".join(settings.additional_python_modules),
            # Spark settings of the stateful operators (RocksDB state store, changelog checkpointing); the job
            # sets them on its session too, this makes them hold from the session's start. Glue takes several
            # in one --conf value.
            "--conf": " --conf ".join(f"{k}={v}" for k, v in SPARK_STATE_CONF.items()),
            # The job's own (frauddetect.stream.config.JobConfig, only what differs from its defaults).
            **job_arguments(
                bootstrap_servers=kafka.bootstrap_brokers,
                source_format="kafka",
                # MSK accepts IAM auth over TLS only: every Kafka client of the job (Spark's source, the sinks'
                # confluent-kafka producer and consumers) authenticates with the role, tokens signed for this
                # region.
                kafka_auth="msk-iam",
                kafka_region=Aws.REGION,
                lake_uri=lake.lake_uri,
                # Spark's checkpoint (offsets, both operators' RocksDB state) is <checkpoint_uri>/spark on S3
                checkpoint_uri=self.checkpoint_uri,
                endpoint_name=endpoint_name,
                endpoint_region=Aws.REGION,
                threshold=config.alert_threshold(),
                **settings.job_settings(),
            ),
        }
        job = glue.CfnJob(
            self,
            "Job",
            name=self.job_name,
            description=f"frauddetect {config.name}: featurize and score card transactions from MSK",
            role=self.role.role_arn,
            glue_version=GLUE_VERSION,
            command=glue.CfnJob.JobCommandProperty(
                name="gluestreaming", python_version="3", script_location=script.s3_object_url
            ),
            worker_type=settings.worker_type,
            number_of_workers=settings.number_of_workers,
            max_retries=settings.max_retries,
            # One writer: the exactly-once Kafka sinks assume the job is the only producer of its topics.
            execution_property=glue.CfnJob.ExecutionPropertyProperty(max_concurrent_runs=1),
            connections=glue.CfnJob.ConnectionsListProperty(connections=[connection_name]),
            security_configuration=security_configuration.name,
            default_arguments=self.default_arguments,
        )
        if config.model.alert_threshold is None:
            Annotations.of(job).add_warning_v2(
                "frauddetect:placeholder-alert-threshold",
                f"{config.name}: ModelSettings.alert_threshold is not set; the job alerts at the placeholder "
                f"{config.alert_threshold()}. Use the `threshold` of the deployed model's metadata.json (written "
                "by `frauddetect train`): infra/config.py or -c alert_threshold=<value>.",
            )
        job.add_resource_dependency(connection)
        job.add_resource_dependency(security_configuration)
        CfnOutput(self, "StreamingJobName", value=self.job_name)

    def _grant(
        self,
        *,
        config: EnvironmentConfig,
        lake: DataLake,
        kafka: KafkaCluster,
        key: kms.IKey,
        assets: list[s3_assets.Asset],
        endpoint_name: str,
        connection_name: str,
    ) -> None:
        """Exactly what the job touches; each statement names its resources (wildcards only where the
        service names them at run time: Glue's log groups, Spark's consumer groups, ENIs)."""
        stack = Stack.of(self)
        add = self.role.add_to_policy
        topics = kafka.topics
        kafka.access.grant(
            self.role,
            read=topics.all(),  # alerts and quarantine too: the sinks check what a crashed attempt produced
            write=[topics.alerts, topics.quarantine],
            groups=CONSUMER_GROUPS,
            idempotent_producer=True,
        )
        add(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[a.bucket.arn_for_objects(a.s3_object_key) for a in assets],
            )
        )
        for bucket, prefix in ((lake.bucket, LAKE_PREFIX), (lake.artifacts_bucket, GLUE_PREFIX)):
            add(iam.PolicyStatement(actions=["s3:ListBucket", "s3:GetBucketLocation"], resources=[bucket.bucket_arn]))
            add(
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    resources=[bucket.arn_for_objects(f"{prefix}/*")],
                )
            )
        add(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"], resources=[lake.key.key_arn, key.key_arn]
            )
        )
        add(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint"],
                resources=[stack.format_arn(service="sagemaker", resource="endpoint", resource_name=endpoint_name)],
            )
        )
        add(
            iam.PolicyStatement(
                actions=["glue:GetConnection"],
                resources=[
                    stack.format_arn(service="glue", resource="catalog"),
                    stack.format_arn(service="glue", resource="connection", resource_name=connection_name),
                ],
            )
        )
        add(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:AssociateKmsKey"],
                resources=[log_group_arn(self, GLUE_LOG_GROUPS)],
            )
        )
        add(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData has no resource-level permissions
                conditions={"StringEquals": {"cloudwatch:namespace": "Glue"}},
            )
        )
        add(
            network_interface_statement(  # the NETWORK connection's
                "ec2:DescribeVpcEndpoints",
                "ec2:DescribeRouteTables",
                "ec2:DescribeVpcAttribute",
            )
        )
        add(
            iam.PolicyStatement(  # Glue's own tag on what it creates for the connection, and no other tag
                actions=["ec2:CreateTags", "ec2:DeleteTags"],
                resources=[
                    stack.format_arn(service="ec2", resource=kind, resource_name="*") for kind in GLUE_TAGGED_RESOURCES
                ],
                conditions={"ForAllValues:StringEquals": {"aws:TagKeys": [GLUE_TAG_KEY]}},
            )
        )
