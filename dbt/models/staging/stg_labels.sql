-- One row per label event: renamed (source -> label_source, event_date -> labeled_date) and typed only.
with lake as (
    select * from {{ fd_lake_source('labels') }}
)

select
    cast(transaction_id as varchar) as transaction_id,
    cast(tx_fraud as integer) as tx_fraud,
    {{ fd_utc_timestamp('labeled_at') }} as labeled_at,
    cast(source as varchar) as label_source,
    cast(event_date as date) as labeled_date
from lake
