"""Label feedback: an IAM-authorised HTTP API in front of the label feedback Lambda (``lambdas/label_feedback``).

``POST /verdicts`` -> the Lambda (in the VPC, next to the brokers) -> Kafka topic ``labels`` over IAM/TLS.
Callers sign requests with SigV4; an analyst's role needs ``execute-api:Invoke`` on the ``VerdictsRouteArn``
output.

Third-party code: the Powertools layer does not carry ``confluent-kafka`` or the MSK IAM token signer, and
Docker bundling is not available where this is built. ``make lambda-deps`` downloads their arm64 wheels into
``build/lambda-deps/python`` (:data:`LAMBDA_DEPS`); when that folder exists it becomes a layer of the
function. Without it the app still synthesizes, with a warning on the function: deployed so, the function
fails at import.
"""

from __future__ import annotations

from pathlib import Path

import jsii
from aws_cdk import Annotations, CfnOutput
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.kafka import KafkaCluster
from infra.network import Network
from infra.python_function import RUNTIME, PowertoolsFunction

FEEDBACK_HANDLER = "lambdas.label_feedback.app.handler"
VERDICTS_PATH = "/verdicts"
LAMBDA_DEPS = Path("build") / "lambda-deps"
"""Relative to the code root; holds ``python/`` (a layer's layout), made by ``make lambda-deps``."""

KAFKA_DELIVERY_TIMEOUT_MS = 10_000
# Above the Kafka delivery timeout plus the handler's flush margin (5 s) and the DynamoDB calls, below
# API Gateway's 30 s integration timeout, so a slow broker ends in the handler's 503, not a gateway 504.
FEEDBACK_TIMEOUT_SECONDS = 25


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogs:
    """JSON access logs of the API stage into ``log_group`` (requester, route, status, latency; no bodies)."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigwv2.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw.AccessLogFormat:
        return apigw.AccessLogFormat.json_with_standard_fields(
            caller=True,
            http_method=True,
            ip=True,
            protocol=True,
            request_time=True,
            resource_path=True,
            response_length=True,
            status=True,
            user=True,
        )


class LabelFeedback(Construct):
    """The label feedback Lambda behind ``POST /verdicts`` of an IAM-authorised HTTP API.

    Attributes:
        function: the label feedback handler.
        api: the HTTP API (``$default`` stage, auto-deployed, throttled, access-logged).
        verdicts_route_arn: ``execute-api`` ARN to grant analysts ``execute-api:Invoke`` on.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        code_root: Path,
        idempotency_table: dynamodb.ITable,
        network: Network,
        kafka: KafkaCluster,
    ) -> None:
        super().__init__(scope, construct_id)
        settings = config.alerting

        deps = code_root / LAMBDA_DEPS
        layers = []
        if (deps / "python").is_dir():
            layers.append(
                lambda_.LayerVersion(
                    self,
                    "KafkaDependencies",
                    code=lambda_.Code.from_asset(str(deps)),
                    compatible_runtimes=[RUNTIME],
                    compatible_architectures=[lambda_.Architecture.ARM_64],
                    description="confluent-kafka and aws-msk-iam-sasl-signer-python (make lambda-deps)",
                )
            )

        self.function = PowertoolsFunction(
            self,
            "LabelFeedbackHandler",
            config=config,
            code_root=code_root,
            handler=FEEDBACK_HANDLER,
            description=f"frauddetect {config.name}: analyst verdicts -> Kafka labels topic",
            memory_mb=settings.feedback_memory_mb,
            timeout_seconds=FEEDBACK_TIMEOUT_SECONDS,
            layers=layers,
            vpc=network.vpc,
            security_groups=[network.kafka_client_security_group],
            environment={
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_brokers,
                "KAFKA_AUTH": "msk-iam",
                "LABELS_TOPIC": kafka.topics.labels,
                "KAFKA_DELIVERY_TIMEOUT_MS": str(KAFKA_DELIVERY_TIMEOUT_MS),
                # Shared with the alert handler: its records are prefixed "label-feedback#", no clash.
                "IDEMPOTENCY_TABLE": idempotency_table.table_name,
                "IDEMPOTENCY_TTL_SECONDS": str(settings.idempotency_ttl_seconds),
                "POWERTOOLS_SERVICE_NAME": "label-feedback",
            },
        ).function
        if not layers:
            Annotations.of(self.function).add_warning_v2(
                "frauddetect:feedback-kafka-deps",
                f"{deps / 'python'} not found: the label feedback Lambda is synthesized without confluent-kafka "
                "and the MSK IAM signer and fails at import when deployed; run `make lambda-deps` first.",
            )
        idempotency_table.grant_read_write_data(self.function)  # includes the table key's KMS permissions
        kafka.access.grant(self.function, write=[kafka.topics.labels], idempotent_producer=True)

        self.api = apigwv2.HttpApi(
            self,
            "FeedbackApi",
            api_name=f"{config.resource_prefix}-label-feedback",
            description=f"frauddetect {config.name}: analyst verdicts on alerts",
            create_default_stage=False,
        )
        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=config.log_retention, removal_policy=config.removal_policy
        )
        apigwv2.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            access_log_settings=_AccessLogs(access_logs),
            throttle=apigwv2.ThrottleSettings(
                rate_limit=settings.feedback_throttle_rps, burst_limit=2 * settings.feedback_throttle_rps
            ),
        )
        self.api.add_routes(
            path=VERDICTS_PATH,
            methods=[apigwv2.HttpMethod.POST],
            integration=integrations.HttpLambdaIntegration(
                "VerdictsIntegration",
                self.function,
                payload_format_version=apigwv2.PayloadFormatVersion.VERSION_2_0,
            ),
            authorizer=authorizers.HttpIamAuthorizer(),
        )
        self.verdicts_route_arn = self.api.arn_for_execute_api("POST", VERDICTS_PATH)

        CfnOutput(self, "FeedbackApiUrl", value=self.api.api_endpoint)
        CfnOutput(self, "VerdictsRouteArn", value=self.verdicts_route_arn)
        CfnOutput(self, "LabelFeedbackHandlerName", value=self.function.function_name)
