{#-
  Athena: register the lake's tables in the Glue database the `lake` source reads
  (FRAUDDETECT_LAKE_DATABASE), with partition projection on event_date, so that new partitions need no
  MSCK REPAIR / crawler. Columns and types come from the source declarations in _sources.yml.

    dbt run-operation create_lake_tables --target athena --args '{lake_uri: "s3://BUCKET/lake"}'
  (lake_uri defaults to FRAUDDETECT_LAKE_S3_URI). Existing tables are left as they are.
-#}
{% macro create_lake_tables(lake_uri=none, database=none, first_date='2018-01-01') %}
  {% if target.type != 'athena' %}
    {{ exceptions.raise_compiler_error("create_lake_tables is for the athena target (got " ~ target.type ~ ")") }}
  {% endif %}
  {% for ddl in fd_lake_table_ddls(lake_uri, database, first_date) %}
    {% do log(ddl.split('(')[0] | trim, info=true) %}
    {% do run_query(ddl) %}
  {% endfor %}
{% endmacro %}

{#- The CREATE EXTERNAL TABLE statements of create_lake_tables, one string per lake table. -#}
{% macro fd_lake_table_ddls(lake_uri=none, database=none, first_date='2018-01-01') %}
  {% set lake_uri = (lake_uri or env_var('FRAUDDETECT_LAKE_S3_URI', '')) | trim %}
  {% if not lake_uri.startswith('s3://') %}
    {{ exceptions.raise_compiler_error("create_lake_tables needs lake_uri (or FRAUDDETECT_LAKE_S3_URI) = s3://...") }}
  {% endif %}
  {% set lake_uri = lake_uri.rstrip('/') %}
  {% set database = database or env_var('FRAUDDETECT_LAKE_DATABASE', 'frauddetect_dev') %}
  {% set ddl_types = {'varchar': 'string', 'integer': 'int'} %}
  {% set statements = [] %}
  {% for node in graph.sources.values() | sort(attribute='name') if node.source_name == 'lake' %}
    {% set ddl %}
create external table if not exists `{{ database }}`.`{{ node.name }}` (
{%- for column in node.columns.values() if column.name != 'event_date' %}
    `{{ column.name }}` {{ ddl_types.get(column.data_type, column.data_type) }}{{ "," if not loop.last }}
{%- endfor %}
)
partitioned by (`event_date` string)
stored as parquet
location '{{ lake_uri }}/{{ node.name }}/'
tblproperties (
    'projection.enabled' = 'true',
    'projection.event_date.type' = 'date',
    'projection.event_date.format' = 'yyyy-MM-dd',
    'projection.event_date.range' = '{{ first_date }},NOW',
    'projection.event_date.interval' = '1',
    'projection.event_date.interval.unit' = 'DAYS',
    'storage.location.template' = '{{ lake_uri }}/{{ node.name }}/event_date=${event_date}'
)
    {%- endset %}
    {% do statements.append(ddl | trim) %}
  {% endfor %}
  {{ return(statements) }}
{% endmacro %}
