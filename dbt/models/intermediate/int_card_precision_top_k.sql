-- depends_on: {{ ref('int_card_days') }}
-- depends_on: {{ ref('int_daily_label_status') }}
{{ config(**fd_incremental_by_event_date()) }}
{#-
  The daily investigation list behind Card Precision@100: one row per event date and listed card (the
  100 highest-scoring cards not detected before). Incremental: a run appends the label-complete days after
  the last day it holds, carrying the cards detected so far from the table itself.
-#}
{%- set k = fd_card_precision_k() %}
{%- set days = fd_card_precision_days() %}
with state_0 as (
{%- if fd_is_incremental() %}
    select {{ fd_card_precision_columns() }}
    from {{ this }}
    where is_detected
{%- else %}
    select
        cast(null as varchar) as customer_id,
        cast(null as bigint) as card_rank,
        cast(null as double) as max_score,
        cast(null as integer) as max_tx_fraud,
        cast(null as boolean) as is_detected,
        cast(null as date) as event_date
    from {{ fd_no_rows() }}
    where 1 = 0
{%- endif %}
)
{%- for day in days %},

state_{{ loop.index }} as (
    -- {{ day }}
    {{ fd_card_precision_step('state_' ~ loop.index0, day, k) }}
)
{%- endfor %}

select {{ fd_card_precision_columns() }}
from state_{{ days | length }}
where {% if days %}event_date >= date '{{ days[0] }}'{% else %}1 = 0{% endif %}
