"""The SageMaker real-time endpoint serving the fraud model (TF Serving container, ``model.tar.gz``).

The image is the SageMaker TensorFlow Serving image of :attr:`~infra.config.ModelSettings.tf_serving_version`,
resolved at synth time with the ``sagemaker`` SDK (its bundled image tables: no network). An
environment-agnostic stack does not know its region at synth time, so it gets a mapping region -> image and
CloudFormation picks the row at deploy time.

Rolling out a model: upload the new ``model.tar.gz`` under a new key and point
``ModelSettings.model_data_key`` at it; the model and endpoint configuration are replaced and SageMaker
moves the endpoint to them without downtime.
"""

from __future__ import annotations

import functools
import warnings

from aws_cdk import Aws, CfnMapping, CfnOutput, Duration, Fn, Stack, Token
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.config import EnvironmentConfig, ModelSettings
from infra.data_lake import DATA_CAPTURE_PREFIX, DataLake
from infra.network import Network
from infra.policies import log_group_arn, network_interface_statement

FRAMEWORK = "tensorflow"
REPOSITORY = "tensorflow-inference"
VARIANT = "AllTraffic"
SAGEMAKER_METRIC_NAMESPACES = "/aws/sagemaker/*"


def _image_uris():
    """``sagemaker.core.image_uris``, imported on first use (seconds) and without its compile-time warnings
    (invalid escape sequences in its docstrings, not ours to fix)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        from sagemaker.core import image_uris
    return image_uris


@functools.cache
def serving_image_uri(*, region: str, version: str, instance_type: str) -> str:
    """ECR URI of the SageMaker TF Serving image for ``region`` (``sagemaker.core.image_uris.retrieve``).

    Raises:
        ValueError: the SDK knows no such image (unknown version or region).
    """
    return _image_uris().retrieve(
        FRAMEWORK, region=region, version=version, instance_type=instance_type, image_scope="inference"
    )


@functools.cache
def serving_image_uris(*, version: str, instance_type: str) -> dict[str, str]:
    """``{region: image URI}`` for every region the SDK lists for this serving image version."""
    versions = _image_uris().config_for_framework(FRAMEWORK)["inference"]
    full = versions.get("version_aliases", {}).get(version, version)
    regions = sorted(versions["versions"][full]["registries"])
    return {r: serving_image_uri(region=r, version=version, instance_type=instance_type) for r in regions}


class ModelEndpoint(Construct):
    """``AWS::SageMaker::Model`` (in the VPC, network-isolated), an endpoint configuration (KMS, data capture
    of requests and responses) and the endpoint ``frauddetect-<env>``, autoscaled on invocations per instance.

    Attributes:
        endpoint_name: the endpoint's name.
        model_data_url: ``s3://<artifacts>/<model_data_key>``.
        image_uri: the serving image (a token in an environment-agnostic stack).
        variant_name: the production variant (``AllTraffic``).
        execution_role: the model's execution role.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, network: Network, lake: DataLake
    ) -> None:
        super().__init__(scope, construct_id)
        settings = config.model
        self.endpoint_name = config.endpoint_name
        self.variant_name = VARIANT
        self.image_uri = self._image_uri(settings)
        self.model_data_url = lake.artifacts_bucket.s3_url_for_object(settings.model_data_key)
        capture_uri = lake.artifacts_bucket.s3_url_for_object(DATA_CAPTURE_PREFIX)

        self.execution_role = role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"frauddetect {config.name}: SageMaker model execution",
        )
        self._grant(role, lake=lake, settings=settings)

        security_group = ec2.SecurityGroup(
            self, "ModelSecurityGroup", vpc=network.vpc, description="SageMaker model containers (no ingress)"
        )
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=self.image_uri, model_data_url=self.model_data_url
            ),
            vpc_config=sagemaker.CfnModel.VpcConfigProperty(
                security_group_ids=[security_group.security_group_id], subnets=network.private_subnet_ids
            ),
            # The container needs nothing but its model; SageMaker itself fetches the artifact.
            enable_network_isolation=True,
        )
        model.node.add_dependency(role.node.find_child("DefaultPolicy"))  # CreateModel checks the role's permissions

        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            kms_key_id=lake.key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=model.attr_model_name,
                    instance_type=settings.instance_type,
                    initial_instance_count=settings.initial_instance_count,
                    initial_variant_weight=1.0,
                )
            ],
            data_capture_config=sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
                enable_capture=True,
                initial_sampling_percentage=settings.data_capture_percent,
                destination_s3_uri=capture_uri,
                kms_key_id=lake.key.key_arn,
                capture_options=[
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
                ],
                capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                    json_content_types=["application/json"]
                ),
            ),
        )
        endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
        )

        scaling = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=settings.min_instances,
            max_capacity=settings.max_instances,
            # Application Auto Scaling's own service-linked role for SageMaker (created on first use).
            role=iam.Role.from_role_arn(
                self,
                "ScalingRole",
                f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/aws-service-role/"
                "sagemaker.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
            ),
        )
        scaling.node.add_dependency(endpoint)
        scaling.scale_to_track_metric(
            "InvocationsPerInstance",
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            target_value=settings.invocations_per_instance,
            scale_out_cooldown=Duration.minutes(1),
            scale_in_cooldown=Duration.minutes(10),
        )

        CfnOutput(self, "EndpointName", value=self.endpoint_name)
        CfnOutput(self, "ModelDataUrl", value=self.model_data_url)

    def _image_uri(self, settings: ModelSettings) -> str:
        region = Stack.of(self).region
        if not Token.is_unresolved(region):
            return serving_image_uri(
                region=region, version=settings.tf_serving_version, instance_type=settings.instance_type
            )
        uris = serving_image_uris(version=settings.tf_serving_version, instance_type=settings.instance_type)
        mapping = CfnMapping(self, "ServingImage", mapping={r: {"uri": uri} for r, uri in uris.items()})
        return mapping.find_in_map(Aws.REGION, "uri")

    def _grant(self, role: iam.Role, *, lake: DataLake, settings: ModelSettings) -> None:
        """The CreateModel execution-role permissions, each on its own resource where the API allows it."""
        add = role.add_to_policy
        add(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[lake.artifacts_bucket.arn_for_objects(settings.model_data_key)]
            )
        )
        add(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[lake.artifacts_bucket.arn_for_objects(f"{DATA_CAPTURE_PREFIX}/*")],
            )
        )
        add(iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[lake.key.key_arn]))
        # The registry account is the image URI's first label (AWS's Deep Learning Containers account).
        registry = Fn.select(0, Fn.split(".", self.image_uri))
        add(
            iam.PolicyStatement(
                actions=["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                resources=[f"arn:{Aws.PARTITION}:ecr:{Aws.REGION}:{registry}:repository/{REPOSITORY}"],
            )
        )
        log_group = f"/aws/sagemaker/Endpoints/{self.endpoint_name}"
        add(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_group_arn(self, log_group), log_group_arn(self, f"{log_group}:log-stream:*")],
            )
        )
        # Neither has resource-level permissions.
        add(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        add(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                # SageMaker's endpoint namespaces (/aws/sagemaker/Endpoints, .../Endpoints/data-metrics), no other.
                conditions={"StringLike": {"cloudwatch:namespace": SAGEMAKER_METRIC_NAMESPACES}},
            )
        )
        add(
            network_interface_statement(  # the model's VPC config
                "ec2:CreateNetworkInterfacePermission",
                "ec2:DeleteNetworkInterfacePermission",
                "ec2:DescribeDhcpOptions",
            )
        )
