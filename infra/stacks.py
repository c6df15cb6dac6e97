"""The stacks of one environment, ``FraudDetect-<env>-<part>``, composed from the constructs in ``infra/``.

Deploy order (CloudFormation dependencies, ``cdk deploy --all`` follows them)::

    Network ──► Data ──► Model ─┐
        └──────► Kafka ─────────┼──► Streaming ──► Monitoring
                    └──► Alerting ──────────────────┘

Split by lifecycle: Network, Data and Kafka hold state and change rarely; Model changes with every model
version; Streaming, Alerting and Monitoring are code and change often. Cross-stack values travel as stack
outputs (``@aws-cdk/core:defaultCrossStackReferences: weak`` in cdk.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import App, Environment, Stack, Tags
from constructs import Construct

from infra.alerting import Alerting
from infra.catalog import LakeCatalog
from infra.config import PROJECT, EnvironmentConfig
from infra.data_lake import DataLake
from infra.feedback import LabelFeedback
from infra.kafka import KafkaCluster
from infra.model_endpoint import ModelEndpoint
from infra.monitoring import Monitoring
from infra.nag import (
    suppress_kafka_findings,
    suppress_lambda_findings,
    suppress_model_findings,
    suppress_network_findings,
    suppress_streaming_job_findings,
)
from infra.network import Network
from infra.streaming_job import StreamingJob

REPO_ROOT = Path(__file__).resolve().parent.parent


class FraudDetectStack(Stack):
    """A stack of one environment: named ``FraudDetect-<env>-<part>``, tagged, protected as configured.

    Each stack adds the cdk-nag suppressions of its constructs (:mod:`infra.nag`); ``AwsSolutionsChecks``
    itself is applied to the whole app (:func:`infra.app.build_app`)."""

    def __init__(
        self, scope: Construct, part: str, *, config: EnvironmentConfig, env: Environment | None, description: str
    ) -> None:
        super().__init__(
            scope,
            config.stack_name(part),
            stack_name=config.stack_name(part),
            env=env,
            description=f"frauddetect ({config.name}): {description}",
            termination_protection=config.termination_protection,
        )
        self.config = config
        Tags.of(self).add("project", PROJECT)
        Tags.of(self).add("environment", config.name)


class NetworkStack(FraudDetectStack):
    """VPC, flow logs, endpoints, security groups (:class:`~infra.network.Network`)."""

    def __init__(self, scope: Construct, *, config: EnvironmentConfig, env: Environment | None) -> None:
        super().__init__(scope, "Network", config=config, env=env, description="VPC, endpoints, security groups")
        self.network = Network(self, "Network", config=config)
        suppress_network_findings(self.network)


class DataStack(FraudDetectStack):
    """Lake key and buckets, Glue database and tables, Athena workgroup."""

    def __init__(self, scope: Construct, *, config: EnvironmentConfig, env: Environment | None) -> None:
        super().__init__(scope, "Data", config=config, env=env, description="S3 data lake, Glue catalog, Athena")
        self.lake = DataLake(self, "DataLake", config=config)
        self.catalog = LakeCatalog(self, "Catalog", config=config, lake=self.lake)


class KafkaStack(FraudDetectStack):
    """The MSK cluster and its topics."""

    def __init__(
        self, scope: Construct, *, config: EnvironmentConfig, env: Environment | None, network: Network
    ) -> None:
        super().__init__(scope, "Kafka", config=config, env=env, description="Amazon MSK cluster and topics")
        self.kafka = KafkaCluster(self, "Kafka", config=config, network=network)
        suppress_kafka_findings(self)


class ModelStack(FraudDetectStack):
    """The SageMaker model, endpoint configuration, endpoint and its autoscaling."""

    def __init__(
        self, scope: Construct, *, config: EnvironmentConfig, env: Environment | None, network: Network, lake: DataLake
    ) -> None:
        super().__init__(scope, "Model", config=config, env=env, description="SageMaker endpoint of the fraud model")
        self.model = ModelEndpoint(self, "Model", config=config, network=network, lake=lake)
        suppress_model_findings(self.model, lake)


class StreamingStack(FraudDetectStack):
    """The Glue streaming job."""

    def __init__(
        self,
        scope: Construct,
        *,
        config: EnvironmentConfig,
        env: Environment | None,
        network: Network,
        lake: DataLake,
        kafka: KafkaCluster,
        model: ModelEndpoint,
        code_root: Path,
    ) -> None:
        super().__init__(scope, "Streaming", config=config, env=env, description="Glue streaming job")
        self.job = StreamingJob(
            self,
            "StreamingJob",
            config=config,
            network=network,
            lake=lake,
            kafka=kafka,
            endpoint_name=model.endpoint_name,
            code_root=code_root,
        )
        suppress_streaming_job_findings(self.job, lake, kafka.cluster_name)


class AlertingStack(FraudDetectStack):
    """The alert Lambda with its event source, table, topic and DLQ; the label feedback API."""

    def __init__(
        self,
        scope: Construct,
        *,
        config: EnvironmentConfig,
        env: Environment | None,
        network: Network,
        kafka: KafkaCluster,
        code_root: Path,
    ) -> None:
        super().__init__(scope, "Alerting", config=config, env=env, description="alert and label feedback Lambdas")
        self.alerting = Alerting(self, "Alerting", config=config, code_root=code_root, kafka=kafka)
        self.feedback = LabelFeedback(
            self,
            "LabelFeedback",
            config=config,
            code_root=code_root,
            idempotency_table=self.alerting.table,
            network=network,
            kafka=kafka,
        )
        suppress_lambda_findings(self.alerting, self.feedback)


class MonitoringStack(FraudDetectStack):
    """Ops topic, alarms, dashboard."""

    def __init__(
        self,
        scope: Construct,
        *,
        config: EnvironmentConfig,
        env: Environment | None,
        alerting: AlertingStack,
        streaming: StreamingJob,
        model: ModelEndpoint,
    ) -> None:
        super().__init__(scope, "Monitoring", config=config, env=env, description="alarms and dashboard")
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            alerting=alerting.alerting,
            feedback=alerting.feedback,
            streaming=streaming,
            model=model,
        )


@dataclass(frozen=True)
class EnvironmentStacks:
    """The stacks of one environment, by part."""

    network: NetworkStack
    data: DataStack
    kafka: KafkaStack
    model: ModelStack
    streaming: StreamingStack
    alerting: AlertingStack
    monitoring: MonitoringStack

    def all(self) -> list[FraudDetectStack]:
        """Every stack, in deploy order."""
        return [self.network, self.data, self.kafka, self.model, self.streaming, self.alerting, self.monitoring]


def add_environment(
    app: App, *, config: EnvironmentConfig, env: Environment | None = None, code_root: Path = REPO_ROOT
) -> EnvironmentStacks:
    """Add the stacks of ``config``'s environment to ``app``."""
    network = NetworkStack(app, config=config, env=env)
    data = DataStack(app, config=config, env=env)
    kafka = KafkaStack(app, config=config, env=env, network=network.network)
    model = ModelStack(app, config=config, env=env, network=network.network, lake=data.lake)
    streaming = StreamingStack(
        app,
        config=config,
        env=env,
        network=network.network,
        lake=data.lake,
        kafka=kafka.kafka,
        model=model.model,
        code_root=code_root,
    )
    # The job scores through the endpoint from its first batch: deploy (and roll back) the endpoint first.
    streaming.add_stack_dependency(model)
    alerting = AlertingStack(
        app, config=config, env=env, network=network.network, kafka=kafka.kafka, code_root=code_root
    )
    monitoring = MonitoringStack(
        app, config=config, env=env, alerting=alerting, streaming=streaming.job, model=model.model
    )
    return EnvironmentStacks(network, data, kafka, model, streaming, alerting, monitoring)
