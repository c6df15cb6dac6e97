"""Label feedback: an HTTP API (IAM-authorised) in front of the label feedback Lambda (``lambdas/label_feedback``).

``POST /verdicts`` -> the Lambda -> Kafka topic ``labels``. Callers sign requests with SigV4; an analyst's role
needs ``execute-api:Invoke`` on the ``VerdictsRouteArn`` output.

Not here yet (the MSK issue, which brings the cluster): the function's VPC placement next to the brokers,
``KAFKA_BOOTSTRAP_SERVERS`` from the cluster (until then the ``KafkaBootstrapServers`` parameter), the
SASL/OAUTHBEARER signer in ``lambdas.label_feedback.app.kafka_overrides``, and the confluent-kafka package
for arm64 (a layer or bundled asset: the Powertools layer does not carry it and Docker bundling is not
available where this is built). The IAM permissions for the ``labels`` topic are already granted, scoped
to the cluster name the MSK issue will use.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, CfnOutput, CfnParameter, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.python_function import PowertoolsFunction

FEEDBACK_HANDLER = "lambdas.label_feedback.app.handler"
LABELS_TOPIC = "labels"
VERDICTS_PATH = "/verdicts"
KAFKA_DELIVERY_TIMEOUT_MS = 10_000
# Above the Kafka delivery timeout plus the handler's flush margin (5 s) and the DynamoDB calls, below
# API Gateway's 30 s integration timeout, so a slow broker ends in the handler's 503, not a gateway 504.
FEEDBACK_TIMEOUT_SECONDS = 25


class LabelFeedback(Construct):
    """The label feedback Lambda behind ``POST /verdicts`` of an IAM-authorised HTTP API.

    Attributes:
        function: the label feedback handler.
        api: the HTTP API (``$default`` stage, auto-deployed).
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
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        bootstrap = CfnParameter(
            stack,
            "KafkaBootstrapServers",
            type="String",
            default="",
            description="Kafka bootstrap servers (host:port,...) of the cluster holding the labels topic; "
            "replaced by the MSK cluster's brokers when the stack creates the cluster",
        )

        self.function = PowertoolsFunction(
            self,
            "LabelFeedbackHandler",
            config=config,
            code_root=code_root,
            handler=FEEDBACK_HANDLER,
            description=f"frauddetect {config.name}: analyst verdicts -> Kafka labels topic",
            memory_mb=256,
            timeout_seconds=FEEDBACK_TIMEOUT_SECONDS,
            environment={
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap.value_as_string,
                "LABELS_TOPIC": LABELS_TOPIC,
                "KAFKA_DELIVERY_TIMEOUT_MS": str(KAFKA_DELIVERY_TIMEOUT_MS),
                # Shared with the alert handler: its records are prefixed "label-feedback#", no clash.
                "IDEMPOTENCY_TABLE": idempotency_table.table_name,
                "IDEMPOTENCY_TTL_SECONDS": str(config.idempotency_ttl_seconds),
                "POWERTOOLS_SERVICE_NAME": "label-feedback",
            },
        ).function
        idempotency_table.grant_read_write_data(self.function)  # includes the table key's KMS permissions

        # MSK IAM access control: connect to the cluster, write (and describe) the labels topic only.
        cluster = config.msk_cluster_name
        kafka_arn = f"arn:{Aws.PARTITION}:kafka:{Aws.REGION}:{Aws.ACCOUNT_ID}"
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kafka-cluster:Connect"],
                resources=[f"{kafka_arn}:cluster/{cluster}/*"],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"],
                resources=[f"{kafka_arn}:topic/{cluster}/*/{LABELS_TOPIC}"],
            )
        )

        self.api = apigwv2.HttpApi(
            self,
            "FeedbackApi",
            api_name=f"{config.resource_prefix}-label-feedback",
            description=f"frauddetect {config.name}: analyst verdicts on alerts",
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

        CfnOutput(self, "FeedbackApiUrl", value=self.api.url or "")
        CfnOutput(self, "VerdictsRouteArn", value=self.verdicts_route_arn)
        CfnOutput(self, "LabelFeedbackHandlerName", value=self.function.function_name)
