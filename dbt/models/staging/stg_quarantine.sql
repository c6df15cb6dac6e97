-- One row per quarantined Kafka record: key/value -> record_key/record_value, event_date -> record_date.
with lake as (
    select * from {{ fd_lake_source('quarantine') }}
)

select
    cast(source_topic as varchar) as source_topic,
    cast(kafka_partition as integer) as kafka_partition,
    cast(kafka_offset as bigint) as kafka_offset,
    cast(key as varchar) as record_key,
    cast(value as varchar) as record_value,
    cast(reason as varchar) as reason,
    {{ fd_utc_timestamp('quarantined_at') }} as quarantined_at,
    cast(event_date as date) as record_date
from lake
