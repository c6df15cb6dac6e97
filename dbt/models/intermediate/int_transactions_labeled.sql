-- Scored transactions (one row per transaction_id, the first scoring kept should the lake ever hold a
-- repeat) with their final label when one is known.
with scored as (
    select
        s.*,
        row_number() over (partition by transaction_id order by scored_at, kafka_partition, kafka_offset) as scoring_rank
    from {{ ref('stg_scored_transactions') }} as s
)

select
    scored.transaction_id,
    scored.tx_datetime,
    scored.customer_id,
    scored.terminal_id,
    {%- for feature in var('features') %}
    scored.{{ feature }},
    {%- endfor %}
    scored.score,
    scored.is_alert,
    scored.model_version,
    scored.scored_at,
    scored.produced_at,
    scored.kafka_partition,
    scored.kafka_offset,
    labels.tx_fraud,
    labels.tx_fraud is not null as is_label_known,
    labels.labeled_at,
    labels.label_source,
    scored.event_date
from scored
left join {{ ref('int_labels_final') }} as labels
    on labels.transaction_id = scored.transaction_id
where scored.scoring_rank = 1
