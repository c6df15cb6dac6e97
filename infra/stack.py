"""The ``FraudDetect-<env>`` stack: every construct of one environment."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Environment, Stack, Tags
from constructs import Construct

from infra.alerting import Alerting
from infra.config import PROJECT, EnvironmentConfig
from infra.data_lake import DataLake
from infra.feedback import LabelFeedback

REPO_ROOT = Path(__file__).resolve().parent.parent


class FraudDetectStack(Stack):
    """Data lake, alerting and label feedback (more constructs follow: MSK, the Glue streaming job, SageMaker
    endpoint)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str | None = None,
        *,
        config: EnvironmentConfig,
        env: Environment | None = None,
        code_root: Path = REPO_ROOT,
    ) -> None:
        super().__init__(
            scope,
            construct_id or config.stack_name,
            stack_name=config.stack_name,
            env=env,
            description=f"frauddetect ({config.name}): real-time card-fraud detection",
            termination_protection=config.termination_protection,
        )
        self.config = config
        Tags.of(self).add("project", PROJECT)
        Tags.of(self).add("environment", config.name)

        self.lake = DataLake(self, "DataLake", config=config)
        self.alerting = Alerting(self, "Alerting", config=config, code_root=code_root)
        self.feedback = LabelFeedback(
            self, "LabelFeedback", config=config, code_root=code_root, idempotency_table=self.alerting.table
        )

        CfnOutput(self, "LakeBucketName", value=self.lake.bucket.bucket_name)
        CfnOutput(self, "GlueDatabaseName", value=self.lake.database_name)
