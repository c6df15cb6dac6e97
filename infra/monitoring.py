"""Operations: an ops SNS topic (KMS), CloudWatch alarms on every moving part, and one dashboard.

Alarms (all notify the ops topic, on ALARM and back to OK):

- Lambdas (alert handler, label feedback): any error, any throttle in 5 minutes.
- DLQ: any message waiting (an alert that was never published).
- Glue job: a run ended FAILED/TIMEOUT/ERROR/STOPPED (EventBridge rule, which also sends the event itself to
  the ops topic), and micro-batches slower than ``batch_lag_alarm_seconds`` for 3 minutes, or no batch
  metrics at all for 3 minutes (missing data breaches: a job that is not running, hangs, or receives
  nothing emits none, and no state change event tells of a hang).
- Endpoint: p99 ``ModelLatency`` above ``latency_alarm_ms`` in 3 of 5 minutes; any ``Invocation5XXErrors``.
- Alert volume: published alerts outside CloudWatch's anomaly-detection band (a silent or a flooding model).
"""

from __future__ import annotations

from aws_cdk import Annotations, CfnOutput, Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.alerting import Alerting
from infra.config import EnvironmentConfig
from infra.feedback import LabelFeedback
from infra.keys import environment_key
from infra.model_endpoint import ModelEndpoint
from infra.streaming_job import StreamingJob

FIVE_MINUTES = Duration.minutes(5)
ONE_MINUTE = Duration.minutes(1)
GLUE_FAILED_STATES = ["FAILED", "TIMEOUT", "ERROR", "STOPPED"]


class Monitoring(Construct):
    """Ops topic, alarms and the ``frauddetect-<env>`` dashboard.

    Attributes:
        topic: the ops topic (alarm and Glue job state notifications).
        alarms: every alarm, by construct id.
        dashboard: the CloudWatch dashboard.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        alerting: Alerting,
        feedback: LabelFeedback,
        streaming: StreamingJob,
        model: ModelEndpoint,
    ) -> None:
        super().__init__(scope, construct_id)
        key = environment_key(self, "OpsKey", config=config, name="ops", purpose="ops notifications topic encryption")
        # CloudWatch alarms and EventBridge publish to the encrypted topic with their service principals.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                principals=[
                    iam.ServicePrincipal("cloudwatch.amazonaws.com"),
                    iam.ServicePrincipal("events.amazonaws.com"),
                ],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        self.topic = sns.Topic(
            self, "OpsTopic", display_name=f"frauddetect {config.name} operations", master_key=key, enforce_ssl=True
        )
        for address in config.monitoring.ops_email_subscribers:
            self.topic.add_subscription(subscriptions.EmailSubscription(address))
        if not config.monitoring.ops_email_subscribers:
            Annotations.of(self.topic).add_warning_v2(
                "frauddetect:ops-topic-no-subscriber",
                f"{config.name}: MonitoringSettings.ops_email_subscribers is empty, so every alarm notifies an "
                "ops topic nobody reads. Add addresses in infra/config.py (each confirms once) or subscribe the "
                "OpsTopicArn output to your paging tool.",
            )
        self._action = actions.SnsAction(self.topic)
        self._prefix = config.resource_prefix
        self.alarms: dict[str, cloudwatch.Alarm | cloudwatch.AnomalyDetectionAlarm] = {}

        lambda_widgets = []
        for name, function in (("AlertHandler", alerting.function), ("LabelFeedback", feedback.function)):
            errors = function.metric_errors(period=FIVE_MINUTES, statistic="Sum")
            throttles = function.metric_throttles(period=FIVE_MINUTES, statistic="Sum")
            self._alarm(f"{name}Errors", errors, 1, f"{name} Lambda invocations failed")
            self._alarm(f"{name}Throttles", throttles, 1, f"{name} Lambda invocations were throttled")
            lambda_widgets.append(
                cloudwatch.GraphWidget(
                    title=f"{name} Lambda",
                    left=[function.metric_invocations(period=FIVE_MINUTES, statistic="Sum"), errors, throttles],
                    right=[function.metric_duration(period=FIVE_MINUTES, statistic="p99")],
                    width=12,
                )
            )

        dlq_depth = alerting.dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=ONE_MINUTE, statistic="Maximum"
        )
        self._alarm("AlertsDlqDepth", dlq_depth, 1, "Alert records failed after retries and wait in the DLQ")

        failed_runs = events.Rule(
            self,
            "GlueJobFailed",
            description=f"{streaming.job_name}: a run ended {'/'.join(GLUE_FAILED_STATES)}",
            event_pattern=events.EventPattern(
                source=["aws.glue"],
                detail_type=["Glue Job State Change"],
                detail={"jobName": [streaming.job_name], "state": GLUE_FAILED_STATES},
            ),
            targets=[targets.SnsTopic(self.topic)],
        )
        self._alarm(
            "GlueJobFailure",
            cloudwatch.Metric(
                namespace="AWS/Events",
                metric_name="TriggeredRules",
                dimensions_map={"RuleName": failed_runs.rule_name},
                period=FIVE_MINUTES,
                statistic="Sum",
            ),
            1,
            f"The streaming job {streaming.job_name} stopped: nothing is scored until it is restarted",
        )
        batch_time = self._glue_metric(streaming.job_name, "glue.driver.streaming.batchProcessingTimeInMs", "Maximum")
        records = self._glue_metric(streaming.job_name, "glue.driver.streaming.numRecords", "Sum")
        self._alarm(
            "GlueBatchLag",
            batch_time,
            config.streaming.batch_lag_alarm_seconds * 1000,
            "Streaming micro-batches take longer than the lag budget (scoring falls behind), or the job reported "
            "no batch for 3 minutes (not running, stuck, or no records arrive)",
            periods=3,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            missing_data=cloudwatch.TreatMissingData.BREACHING,
        )

        endpoint_dims = {"EndpointName": model.endpoint_name, "VariantName": model.variant_name}

        def endpoint_metric(name: str, period: Duration, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name=name,
                dimensions_map=endpoint_dims,
                period=period,
                statistic=statistic,
            )

        latency = endpoint_metric("ModelLatency", ONE_MINUTE, "p99")  # microseconds
        errors_5xx = endpoint_metric("Invocation5XXErrors", FIVE_MINUTES, "Sum")
        invocations = endpoint_metric("Invocations", FIVE_MINUTES, "Sum")
        self._alarm(
            "EndpointLatency",
            latency,
            config.model.latency_alarm_ms * 1000,
            f"p99 model latency above {config.model.latency_alarm_ms} ms",
            periods=5,
            datapoints=3,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        self._alarm("Endpoint5xx", errors_5xx, 1, "The endpoint answered 5xx: the job retries, then fails batches")

        published = alerting.topic.metric_number_of_messages_published(period=FIVE_MINUTES, statistic="Sum")
        self.alarms["AlertVolumeAnomaly"] = cloudwatch.AnomalyDetectionAlarm(
            self,
            "AlertVolumeAnomaly",
            alarm_name=f"{self._prefix}-AlertVolumeAnomaly",
            alarm_description="Published fraud alerts outside the expected band: a flood or a silent model",
            metric=published,
            std_devs=config.monitoring.alert_anomaly_band_std_devs,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_LOWER_OR_GREATER_THAN_UPPER_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._notify(self.alarms["AlertVolumeAnomaly"])

        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=self._prefix, default_interval=Duration.hours(6)
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24, height=4)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Streaming job: records per batch", left=[records], width=12),
            cloudwatch.GraphWidget(title="Streaming job: batch time (ms)", left=[batch_time], width=12),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Endpoint: invocations and 5xx", left=[invocations, errors_5xx], width=12),
            cloudwatch.GraphWidget(title="Endpoint: p99 model latency (us)", left=[latency], width=12),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Alerts published (SNS)", left=[published], width=12),
            cloudwatch.GraphWidget(title="Alerts DLQ depth", left=[dlq_depth], width=12),
        )
        self.dashboard.add_widgets(*lambda_widgets)
        CfnOutput(self, "OpsTopicArn", value=self.topic.topic_arn)

    @staticmethod
    def _glue_metric(job_name: str, metric_name: str, statistic: str) -> cloudwatch.Metric:
        """A Glue job metric aggregated over the job's runs (``JobRunId=ALL``)."""
        return cloudwatch.Metric(
            namespace="Glue",
            metric_name=metric_name,
            dimensions_map={"JobName": job_name, "JobRunId": "ALL", "Type": "gauge" if statistic != "Sum" else "count"},
            period=ONE_MINUTE,
            statistic=statistic,
        )

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        *,
        periods: int = 1,
        datapoints: int | None = None,
        comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """An alarm on ``metric`` to the ops topic. Missing data is not breaching by default: no errors, no
        throttles, no traffic are no failure; a metric whose absence is the failure passes ``missing_data``."""
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=f"{self._prefix}-{construct_id}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=periods,
            datapoints_to_alarm=datapoints,
            comparison_operator=comparison,
            treat_missing_data=missing_data,
        )
        self._notify(alarm)
        self.alarms[construct_id] = alarm
        return alarm

    def _notify(self, alarm: cloudwatch.AlarmBase) -> None:
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
