"""The S3 side of the data lake: a KMS key and four buckets (lake, Athena results, artifacts, access logs).

The Spark job writes scored transactions, labels, alerts and quarantine as Parquet under
``s3://<lake bucket>/lake/<table>/event_date=YYYY-MM-DD/`` (:data:`LAKE_PREFIX`); the catalog construct
(:mod:`infra.catalog`) declares those tables for Athena/dbt. The artifacts bucket holds the model
(``models/``), SageMaker data capture (``datacapture/``) and the Glue job's checkpoints and temp files
(``glue/``).
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.keys import environment_key

LAKE_PREFIX = "lake"
MODELS_PREFIX = "models"
DATA_CAPTURE_PREFIX = "datacapture"
GLUE_PREFIX = "glue"


class DataLake(Construct):
    """KMS key (rotated) and TLS-only, versioned, private buckets with lifecycle rules and access logging.

    Attributes:
        key: the customer-managed key of the lake, Athena results and artifacts (SSE-KMS, S3 Bucket Keys).
        bucket: the lake bucket (Parquet tables under :data:`LAKE_PREFIX`).
        athena_results_bucket: Athena query results (the workgroup's enforced output location).
        artifacts_bucket: model artifact, SageMaker data capture, Glue checkpoints and temp files.
        access_logs_bucket: S3 server access logs of the three others (SSE-S3: log delivery cannot use KMS).
        lake_uri: ``s3://<lake bucket>/lake``, the streaming job's ``--lake-uri``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        lake = config.lake

        self.key = environment_key(
            self, "LakeKey", config=config, name="lake", purpose="data lake, Athena results and artifacts encryption"
        )

        self.access_logs_bucket = self._bucket(
            "AccessLogsBucket",
            encryption_key=None,
            access_logs=None,  # it would log into itself
            rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(lake.access_log_days))],
        )
        lake_rules = []
        if lake.intelligent_tiering_days is not None:
            lake_rules.append(
                s3.LifecycleRule(
                    id="intelligent-tiering",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INTELLIGENT_TIERING,
                            transition_after=Duration.days(lake.intelligent_tiering_days),
                        )
                    ],
                )
            )
        if lake.expiration_days is not None:
            lake_rules.append(s3.LifecycleRule(id="expire-objects", expiration=Duration.days(lake.expiration_days)))
        self.bucket = self._bucket(
            "LakeBucket", encryption_key=self.key, access_logs=self.access_logs_bucket, rules=lake_rules
        )
        self.athena_results_bucket = self._bucket(
            "AthenaResultsBucket",
            encryption_key=self.key,
            access_logs=self.access_logs_bucket,
            rules=[s3.LifecycleRule(id="expire-results", expiration=Duration.days(lake.athena_results_days))],
        )
        self.artifacts_bucket = self._bucket(
            "ArtifactsBucket",
            encryption_key=self.key,
            access_logs=self.access_logs_bucket,
            rules=[
                # Spark's scratch space; checkpoints (glue/checkpoints/) are kept.
                s3.LifecycleRule(id="expire-glue-temp", prefix=f"{GLUE_PREFIX}/temp/", expiration=Duration.days(7)),
                s3.LifecycleRule(
                    id="expire-data-capture",
                    prefix=f"{DATA_CAPTURE_PREFIX}/",
                    expiration=Duration.days(lake.expiration_days or 365),
                ),
            ],
        )
        self.lake_uri = self.bucket.s3_url_for_object(LAKE_PREFIX)

        CfnOutput(self, "LakeBucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "ArtifactsBucketName", value=self.artifacts_bucket.bucket_name)
        CfnOutput(self, "AthenaResultsBucketName", value=self.athena_results_bucket.bucket_name)

    def _bucket(
        self,
        construct_id: str,
        *,
        encryption_key: kms.IKey | None,
        access_logs: s3.IBucket | None,
        rules: list[s3.LifecycleRule],
    ) -> s3.Bucket:
        """A private, TLS-only, versioned bucket with ``rules`` plus the common ones: SSE-KMS with
        ``encryption_key`` (else SSE-S3), server access logs to ``access_logs`` under ``<construct_id>/``."""
        config = self._config
        base_rules = [
            s3.LifecycleRule(
                id="abort-incomplete-multipart-uploads",
                abort_incomplete_multipart_upload_after=Duration.days(7),
            ),
            s3.LifecycleRule(
                id="expire-noncurrent-versions",
                noncurrent_version_expiration=Duration.days(config.lake.noncurrent_version_days),
                expired_object_delete_marker=True,
            ),
        ]
        kms_args = (
            {"encryption": s3.BucketEncryption.KMS, "encryption_key": encryption_key, "bucket_key_enabled": True}
            if encryption_key is not None
            else {"encryption": s3.BucketEncryption.S3_MANAGED}
        )
        logging_args = (
            {"server_access_logs_bucket": access_logs, "server_access_logs_prefix": f"{construct_id}/"}
            if access_logs is not None
            else {}
        )
        return s3.Bucket(
            self,
            construct_id,
            **kms_args,
            **logging_args,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,  # bucket policy: Deny s3:* when aws:SecureTransport is false
            minimum_tls_version=1.2,
            versioned=True,
            lifecycle_rules=base_rules + rules,
            removal_policy=config.removal_policy,
            # A destroyable dev bucket must be emptied first; prod keeps (RETAIN) buckets and data.
            auto_delete_objects=config.removal_policy == RemovalPolicy.DESTROY,
        )
