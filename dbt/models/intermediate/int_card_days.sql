{{ config(materialized='table') }}
-- One row per card and event date: the card's highest score that day and whether any of its transactions
-- that day is a known fraud (Card Precision@k works on cards, handbook ch. 4). max_tx_fraud is NULL unless
-- every transaction of the card that day is labelled.
select
    event_date,
    customer_id,
    count(*) as transactions,
    max(score) as max_score,
    case
        when sum(case when is_label_known then 1 else 0 end) = count(*) then max(tx_fraud)
    end as max_tx_fraud
from {{ ref('fct_transactions') }}
group by event_date, customer_id
