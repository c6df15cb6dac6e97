{#-
  Engine differences, in one place. Each fd_* macro dispatches on the adapter (duckdb__ / athena__ /
  default__); everything else in the models is SQL that DuckDB and Athena (Trino) both accept, plus dbt's
  own cross-database macros (dbt.dateadd, dbt.datediff).
-#}

{#- The lake's UTC timestamps (Parquet, adjusted to UTC) as a naive UTC `timestamp`. -#}
{% macro fd_utc_timestamp(column) -%}
  {{ return(adapter.dispatch('fd_utc_timestamp', 'frauddetect')(column)) }}
{%- endmacro %}

{% macro default__fd_utc_timestamp(column) -%}
  cast({{ column }} as timestamp)
{%- endmacro %}

{% macro duckdb__fd_utc_timestamp(column) -%}
  {#- DuckDB reads UTC-adjusted Parquet timestamps as timestamptz: take the UTC wall time -#}
  cast(timezone('UTC', {{ column }}) as timestamp)
{%- endmacro %}

{#- An ISO-8601 string with a zone ("2018-08-15T00:01:02.000000Z") as a naive UTC `timestamp`. -#}
{% macro fd_parse_iso_timestamp(column) -%}
  {{ return(adapter.dispatch('fd_parse_iso_timestamp', 'frauddetect')(column)) }}
{%- endmacro %}

{% macro default__fd_parse_iso_timestamp(column) -%}
  cast(from_iso8601_timestamp({{ column }}) at time zone 'UTC' as timestamp)
{%- endmacro %}

{% macro duckdb__fd_parse_iso_timestamp(column) -%}
  cast(timezone('UTC', cast({{ column }} as timestamptz)) as timestamp)
{%- endmacro %}

{#- `x / y` as double, NULL when y is 0 or NULL. -#}
{% macro fd_ratio(numerator, denominator) -%}
  (cast({{ numerator }} as double) / nullif({{ denominator }}, 0))
{%- endmacro %}

{#- A relation with no rows (usable in FROM); both engines accept VALUES with column aliases. -#}
{% macro fd_no_rows() -%}
  (values (1)) as no_rows (one)
{%- endmacro %}

{#-
  is_incremental(), except in the offline compile check (which must not call AWS): there it is
  var('frauddetect_offline_incremental'), so that both branches of a model can be compiled offline.
-#}
{% macro fd_is_incremental() -%}
  {% if var('frauddetect_offline', false) %}
    {{ return(var('frauddetect_offline_incremental', false)) }}
  {% endif %}
  {{ return(is_incremental()) }}
{%- endmacro %}

{#- Whether this render may query the warehouse (run_query): at execution, and not offline. -#}
{% macro fd_can_query() -%}
  {{ return(execute and not var('frauddetect_offline', false)) }}
{%- endmacro %}

{#-
  Config of an incremental model partitioned by event_date, rebuilt a whole event date at a time, so a
  re-run never duplicates rows: Athena (Hive tables) insert_overwrite replaces the partitions the run
  produces; DuckDB delete+insert on event_date deletes those dates first.
-#}
{% macro fd_incremental_by_event_date() -%}
  {% if target.type == 'athena' %}
    {{ return({'materialized': 'incremental', 'incremental_strategy': 'insert_overwrite',
               'partitioned_by': ['event_date'], 'on_schema_change': 'fail'}) }}
  {% else %}
    {{ return({'materialized': 'incremental', 'incremental_strategy': 'delete+insert',
               'unique_key': 'event_date', 'on_schema_change': 'fail'}) }}
  {% endif %}
{%- endmacro %}

{#-
  A lake table. Athena: the Glue table. DuckDB: read_parquet over the table's prefix, or an empty relation
  with the declared columns when the prefix holds no files yet (a clean run writes no quarantine files).
-#}
{% macro fd_lake_source(table_name) -%}
  {{ return(adapter.dispatch('fd_lake_source', 'frauddetect')(table_name)) }}
{%- endmacro %}

{% macro default__fd_lake_source(table_name) -%}
  {{ return(source('lake', table_name)) }}
{%- endmacro %}

{% macro duckdb__fd_lake_source(table_name) -%}
  {% set relation = source('lake', table_name) %}
  {% if fd_can_query() %}
    {% set lake = env_var('FRAUDDETECT_LAKE_PATH', '../runs/demo/lake') %}
    {% set pattern = lake ~ '/' ~ table_name ~ '/*/*.parquet' %}
    {% set found = run_query("select count(*) from glob('" ~ pattern | replace("'", "''") ~ "')") %}
    {% if found.columns[0].values()[0] == 0 %}
      {{ log("lake table " ~ table_name ~ " has no files under " ~ lake ~ ": read as empty", info=false) }}
      {{ return('(' ~ fd_empty_source_select(table_name) ~ ')') }}
    {% endif %}
  {% endif %}
  {{ return(relation) }}
{%- endmacro %}

{#- select of typed NULLs named after a lake source's declared columns, with no rows (DuckDB types). -#}
{% macro fd_empty_source_select(table_name) -%}
  {% set node = graph.sources['source.frauddetect.lake.' ~ table_name] %}
  {% set duckdb_types = {'timestamp': 'timestamptz'} %}
  select
  {%- for name, column in node.columns.items() %}
    cast(null as {{ duckdb_types.get(column.data_type, column.data_type) }}) as {{ name }}{{ "," if not loop.last }}
  {%- endfor %}
  from {{ fd_no_rows() }}
  where 1 = 0
{%- endmacro %}

{#- What rpt_model_drift watches: the model's score and its 15 input features. -#}
{% macro fd_drift_variables() -%}
  {{ return(['score'] + var('features')) }}
{%- endmacro %}
