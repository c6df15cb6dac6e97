{{ config(**fd_incremental_by_event_date()) }}
{#-
  One row per scored transaction with its score, alert flag and final label when known.
  Incremental by event date: a run rebuilds every event date whose source rows differ from the table's -
  a date not built yet, a different number of transactions or of labelled transactions (new data, late
  labels, a batch read half-written), a later scored_at (a replayed micro-batch) or a later labeled_at (a
  corrected label). Whole dates are rebuilt (Athena insert_overwrite of the partitions, DuckDB
  delete+insert), so re-runs never duplicate rows.
-#}
with transactions as (
    select * from {{ ref('int_transactions_labeled') }}
)
{%- if fd_is_incremental() %},

source_dates as (
    select
        event_date,
        count(*) as transactions,
        count(tx_fraud) as labeled_transactions,
        max(scored_at) as last_scored_at,
        coalesce(max(labeled_at), timestamp '1970-01-01 00:00:00') as last_labeled_at
    from transactions
    group by event_date
),

built_dates as (
    select
        event_date,
        count(*) as transactions,
        count(tx_fraud) as labeled_transactions,
        max(scored_at) as last_scored_at,
        coalesce(max(labeled_at), timestamp '1970-01-01 00:00:00') as last_labeled_at
    from {{ this }}
    group by event_date
),

dates_to_build as (
    select source_dates.event_date
    from source_dates
    left join built_dates
        on built_dates.event_date = source_dates.event_date
    where built_dates.event_date is null
        or source_dates.transactions <> built_dates.transactions
        or source_dates.labeled_transactions <> built_dates.labeled_transactions
        or source_dates.last_scored_at > built_dates.last_scored_at
        or source_dates.last_labeled_at > built_dates.last_labeled_at
)
{%- endif %}

select
    transaction_id,
    tx_datetime,
    customer_id,
    terminal_id,
    {%- for feature in var('features') %}
    {{ feature }},
    {%- endfor %}
    score,
    is_alert,
    model_version,
    scored_at,
    produced_at,
    {{ dbt.datediff('produced_at', 'scored_at', 'millisecond') }} as scoring_latency_ms,
    kafka_partition,
    kafka_offset,
    tx_fraud,
    is_label_known,
    labeled_at,
    label_source,
    event_date
from transactions
{%- if fd_is_incremental() %}
where event_date in (select event_date from dates_to_build)
{%- endif %}
