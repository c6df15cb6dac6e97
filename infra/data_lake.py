"""The S3 data lake: a KMS key, the lake bucket and its Glue Data Catalog database.

The Spark job writes scored transactions, labels, alerts and quarantine as Parquet under one prefix each
(partitioned by event date); Athena/dbt read them through the Glue database. Tables are added by the
streaming job and dbt, not here.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import EnvironmentConfig


class DataLake(Construct):
    """KMS key (rotated), TLS-only versioned private lake bucket with lifecycle rules, Glue database.

    Attributes:
        key: the customer-managed key encrypting the lake (SSE-KMS with S3 Bucket Keys).
        bucket: the lake bucket.
        database_name: the Glue/Athena database name, ``frauddetect_<env>``.
        database: the ``AWS::Glue::Database`` resource.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        self.key = kms.Key(
            self,
            "LakeKey",
            alias=f"alias/{config.resource_prefix}-lake",
            description=f"frauddetect {config.name}: S3 data lake encryption",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )

        self.bucket = s3.Bucket(
            self,
            "LakeBucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,  # far fewer KMS requests for many small Parquet files
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,  # bucket policy: Deny s3:* when aws:SecureTransport is false
            minimum_tls_version=1.2,
            versioned=True,
            lifecycle_rules=self._lifecycle_rules(config),
            removal_policy=config.removal_policy,
            # A destroyable dev lake must be emptied first; prod keeps (RETAIN) bucket and data.
            auto_delete_objects=config.removal_policy == RemovalPolicy.DESTROY,
        )

        # Glue/Athena names: lowercase letters, digits and underscores only.
        self.database_name = f"frauddetect_{config.name}"
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=stack.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description=f"frauddetect {config.name}: scored transactions, labels, alerts, quarantine",
                location_uri=self.bucket.s3_url_for_object(),
            ),
        )

    @staticmethod
    def _lifecycle_rules(config: EnvironmentConfig) -> list[s3.LifecycleRule]:
        rules = [
            s3.LifecycleRule(
                id="abort-incomplete-multipart-uploads",
                abort_incomplete_multipart_upload_after=Duration.days(7),
            ),
            s3.LifecycleRule(
                id="expire-noncurrent-versions",
                noncurrent_version_expiration=Duration.days(config.lake_noncurrent_version_days),
                expired_object_delete_marker=True,
            ),
        ]
        if config.lake_intelligent_tiering_days is not None:
            rules.append(
                s3.LifecycleRule(
                    id="intelligent-tiering",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INTELLIGENT_TIERING,
                            transition_after=Duration.days(config.lake_intelligent_tiering_days),
                        )
                    ],
                )
            )
        if config.lake_expiration_days is not None:
            rules.append(
                s3.LifecycleRule(id="expire-objects", expiration=Duration.days(config.lake_expiration_days))
            )
        return rules
