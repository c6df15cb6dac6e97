{#-
  Daily KPIs, one row per event date (UTC date of the transaction).

  Labels arrive days after a transaction (7 in the handbook's protocol), so the newest days have no or
  only some labels. Rule: a KPI that needs labels is computed only for a label-complete day (every scored
  transaction of the day has a label) and is NULL otherwise; `labeled_transactions`, `label_coverage` and
  the `known_*` counts show what is known so far on any day. Rates on a partly labelled day would be biased
  (labels come in time order, so they cover only the day's first hours).
-#}
with daily as (
    select
        event_date,
        count(*) as transactions,
        sum(case when is_label_known then 1 else 0 end) as labeled_transactions,
        sum(case when tx_fraud = 1 then 1 else 0 end) as known_frauds,
        sum(case when is_alert then 1 else 0 end) as alerts,
        sum(case when is_alert and tx_fraud = 1 then 1 else 0 end) as known_true_alerts,
        sum(tx_amount) as amount_total,
        sum(case when is_alert then tx_amount else 0 end) as amount_flagged,
        sum(case when tx_fraud = 1 then tx_amount else 0 end) as known_amount_fraud,
        sum(case when tx_fraud = 1 and not is_alert then tx_amount else 0 end) as known_amount_missed_fraud
    from {{ ref('fct_transactions') }}
    group by event_date
),

complete as (
    select
        daily.*,
        labeled_transactions = transactions as is_label_complete
    from daily
)

select
    complete.event_date,
    complete.transactions,
    complete.labeled_transactions,
    {{ fd_ratio('complete.labeled_transactions', 'complete.transactions') }} as label_coverage,
    complete.is_label_complete,
    complete.known_frauds,
    case when complete.is_label_complete then complete.known_frauds end as frauds,
    case when complete.is_label_complete
        then {{ fd_ratio('complete.known_frauds', 'complete.transactions') }} end as fraud_rate,
    complete.alerts,
    {{ fd_ratio('complete.alerts', 'complete.transactions') }} as alert_rate,
    case when complete.is_label_complete then complete.known_true_alerts end as true_alerts,
    case when complete.is_label_complete
        then {{ fd_ratio('complete.known_true_alerts', 'complete.alerts') }} end as alert_precision,
    case when complete.is_label_complete
        then complete.known_frauds - complete.known_true_alerts end as missed_frauds,
    case when complete.is_label_complete
        then {{ fd_ratio('complete.known_true_alerts', 'complete.known_frauds') }} end as recall,
    cp.card_precision_at_100,
    round(complete.amount_total, 2) as amount_total,
    round(complete.amount_flagged, 2) as amount_flagged,
    case when complete.is_label_complete then round(complete.known_amount_fraud, 2) end as amount_fraud,
    case when complete.is_label_complete
        then round(complete.known_amount_missed_fraud, 2) end as amount_missed_fraud
from complete
left join {{ ref('int_card_precision_daily') }} as cp
    on cp.event_date = complete.event_date
