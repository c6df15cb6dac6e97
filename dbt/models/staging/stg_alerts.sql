-- One row per alert payload: ISO-8601 strings parsed to UTC timestamps, threshold -> alert_threshold.
with lake as (
    select * from {{ fd_lake_source('alerts') }}
)

select
    cast(transaction_id as varchar) as transaction_id,
    {{ fd_parse_iso_timestamp('tx_datetime') }} as tx_datetime,
    cast(customer_id as varchar) as customer_id,
    cast(terminal_id as varchar) as terminal_id,
    cast(tx_amount as double) as tx_amount,
    cast(score as double) as score,
    cast(threshold as double) as alert_threshold,
    cast(model_version as varchar) as model_version,
    {{ fd_parse_iso_timestamp('scored_at') }} as scored_at,
    {{ fd_parse_iso_timestamp('produced_at') }} as produced_at,
    cast(event_date as date) as event_date
from lake
