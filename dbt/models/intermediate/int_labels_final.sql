-- The final label of each labelled transaction: the latest label event (by labeled_at; ties broken by
-- source, then fraud first), with how many label events it had and whether they disagreed.
with ranked as (
    select
        transaction_id,
        tx_fraud,
        labeled_at,
        label_source,
        row_number() over (
            partition by transaction_id
            order by labeled_at desc, label_source desc, tx_fraud desc
        ) as label_rank,
        count(*) over (partition by transaction_id) as label_events,
        min(labeled_at) over (partition by transaction_id) as first_labeled_at,
        min(tx_fraud) over (partition by transaction_id) as min_tx_fraud,
        max(tx_fraud) over (partition by transaction_id) as max_tx_fraud
    from {{ ref('stg_labels') }}
)

select
    transaction_id,
    tx_fraud,
    labeled_at,
    label_source,
    first_labeled_at,
    label_events,
    min_tx_fraud <> max_tx_fraud as has_conflicting_labels
from ranked
where label_rank = 1
