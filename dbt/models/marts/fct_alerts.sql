-- One row per fraud alert (alerted transaction), with the transaction's final label when known.
with alerts as (
    select
        a.*,
        row_number() over (partition by transaction_id order by scored_at) as alert_rank
    from {{ ref('stg_alerts') }} as a
)

select
    alerts.transaction_id,
    alerts.tx_datetime,
    alerts.customer_id,
    alerts.terminal_id,
    alerts.tx_amount,
    alerts.score,
    alerts.alert_threshold,
    alerts.model_version,
    alerts.scored_at,
    alerts.produced_at,
    {{ dbt.datediff('alerts.produced_at', 'alerts.scored_at', 'millisecond') }} as scoring_latency_ms,
    transactions.tx_fraud,
    coalesce(transactions.is_label_known, false) as is_label_known,
    case when transactions.is_label_known then transactions.tx_fraud = 1 end as is_true_positive,
    alerts.event_date
from alerts
left join {{ ref('fct_transactions') }} as transactions
    on transactions.transaction_id = alerts.transaction_id
where alerts.alert_rank = 1
