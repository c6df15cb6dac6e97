-- One row per card (customer) seen in the lake, with its activity, alerts and known frauds.
select
    customer_id,
    min(tx_datetime) as first_tx_at,
    max(tx_datetime) as last_tx_at,
    count(*) as transactions,
    sum(case when is_alert then 1 else 0 end) as alerts,
    sum(case when is_label_known then 1 else 0 end) as labeled_transactions,
    sum(case when tx_fraud = 1 then 1 else 0 end) as known_frauds,
    sum(case when tx_fraud = 1 then 1 else 0 end) > 0 as has_known_fraud,
    min(case when tx_fraud = 1 then tx_datetime end) as first_known_fraud_at,
    round(sum(tx_amount), 2) as amount_total,
    max(score) as max_score
from {{ ref('fct_transactions') }}
group by customer_id
