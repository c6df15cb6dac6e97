-- One row per scored transaction as the lake holds it: renamed (alert -> is_alert) and typed only.
with lake as (
    select * from {{ fd_lake_source('scored_transactions') }}
)

select
    cast(transaction_id as varchar) as transaction_id,
    {{ fd_utc_timestamp('tx_datetime') }} as tx_datetime,
    cast(customer_id as varchar) as customer_id,
    cast(terminal_id as varchar) as terminal_id,
    {%- for feature in var('features') %}
    cast({{ feature }} as double) as {{ feature }},
    {%- endfor %}
    cast(score as double) as score,
    cast(alert as boolean) as is_alert,
    cast(model_version as varchar) as model_version,
    {{ fd_utc_timestamp('scored_at') }} as scored_at,
    {{ fd_utc_timestamp('produced_at') }} as produced_at,
    cast(kafka_partition as integer) as kafka_partition,
    cast(kafka_offset as bigint) as kafka_offset,
    cast(event_date as date) as event_date
from lake
