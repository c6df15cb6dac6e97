"""The lake's Glue Data Catalog database and tables, and the Athena workgroup that queries them.

The tables' columns are read from the dbt ``lake`` source declarations (``dbt/models/staging/_sources.yml``)
at synth time, so the catalog, dbt and the job's writer have one schema. Partitions use projection on
``event_date`` (as ``dbt run-operation create_lake_tables`` declares them): new days need no crawler or
``MSCK REPAIR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.data_lake import DataLake

DBT_SOURCES = Path(__file__).resolve().parent.parent / "dbt" / "models" / "staging" / "_sources.yml"
PARTITION_COLUMN = "event_date"
# dbt's portable type names -> Hive DDL types (as the create_lake_tables macro maps them).
HIVE_TYPES = {"varchar": "string", "integer": "int"}
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"


@dataclass(frozen=True)
class LakeTable:
    """One lake table: name, description and ``(column, hive type, description)`` without the partition."""

    name: str
    description: str
    columns: tuple[tuple[str, str, str], ...]


def lake_tables(path: Path = DBT_SOURCES) -> list[LakeTable]:
    """The tables of the dbt source ``lake`` in ``path``, in file order.

    Raises:
        ValueError: no ``lake`` source, or a table without columns or without the ``event_date`` partition.
    """
    sources = yaml.safe_load(path.read_text(encoding="utf-8"))["sources"]
    lake = next((s for s in sources if s["name"] == "lake"), None)
    if lake is None:
        raise ValueError(f"{path}: no source named 'lake'")
    tables = []
    for table in lake["tables"]:
        names = [c["name"] for c in table.get("columns", [])]
        if PARTITION_COLUMN not in names:
            raise ValueError(f"{path}: table {table['name']} has no {PARTITION_COLUMN} column")
        columns = tuple(
            (c["name"], HIVE_TYPES.get(c["data_type"], c["data_type"]), c.get("description", ""))
            for c in table["columns"]
            if c["name"] != PARTITION_COLUMN
        )
        tables.append(LakeTable(table["name"], " ".join(table.get("description", "").split()), columns))
    return tables


class LakeCatalog(Construct):
    """Glue database ``frauddetect_<env>``, one projected Parquet table per lake table, Athena workgroup.

    Attributes:
        database_name: the Glue/Athena database name.
        database: the ``AWS::Glue::Database``.
        tables: ``{table name: AWS::Glue::Table}``.
        workgroup_name: the Athena workgroup (results encrypted with the lake key, settings enforced).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, lake: DataLake) -> None:
        super().__init__(scope, construct_id)
        account = Stack.of(self).account

        self.database_name = config.database_name
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description=f"frauddetect {config.name}: scored transactions, labels, alerts, quarantine",
                location_uri=lake.lake_uri,
            ),
        )

        self.tables: dict[str, glue.CfnTable] = {}
        for table in lake_tables():
            location = f"{lake.lake_uri}/{table.name}/"
            self.tables[table.name] = resource = glue.CfnTable(
                self,
                f"Table-{table.name}",
                catalog_id=account,
                database_name=self.database_name,
                table_input=glue.CfnTable.TableInputProperty(
                    name=table.name,
                    description=table.description[:2048],
                    table_type="EXTERNAL_TABLE",
                    partition_keys=[
                        glue.CfnTable.ColumnProperty(
                            name=PARTITION_COLUMN, type="string", comment="UTC date, yyyy-MM-dd"
                        )
                    ],
                    parameters={
                        "classification": "parquet",
                        "EXTERNAL": "TRUE",
                        "projection.enabled": "true",
                        f"projection.{PARTITION_COLUMN}.type": "date",
                        f"projection.{PARTITION_COLUMN}.format": "yyyy-MM-dd",
                        f"projection.{PARTITION_COLUMN}.range": f"{config.lake.projection_start_date},NOW",
                        f"projection.{PARTITION_COLUMN}.interval": "1",
                        f"projection.{PARTITION_COLUMN}.interval.unit": "DAYS",
                        "storage.location.template": f"{location}{PARTITION_COLUMN}=${{{PARTITION_COLUMN}}}",
                    },
                    storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                        location=location,
                        input_format=PARQUET_INPUT,
                        output_format=PARQUET_OUTPUT,
                        serde_info=glue.CfnTable.SerdeInfoProperty(serialization_library=PARQUET_SERDE),
                        columns=[
                            glue.CfnTable.ColumnProperty(name=name, type=type_, comment=comment[:255])
                            for name, type_, comment in table.columns
                        ],
                    ),
                ),
            )
            resource.add_resource_dependency(self.database)

        self.workgroup_name = config.resource_prefix
        workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=self.workgroup_name,
            description=f"frauddetect {config.name}: analysts and dbt (encrypted results, enforced settings)",
            recursive_delete_option=config.termination_protection is False,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=config.lake.athena_bytes_scanned_cutoff,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version="Athena engine version 3"
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=lake.athena_results_bucket.s3_url_for_object("results/"),
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=lake.key.key_arn
                    ),
                ),
            ),
        )
        CfnOutput(self, "GlueDatabaseName", value=self.database_name)
        CfnOutput(self, "AthenaWorkGroupName", value=workgroup.name)
