-- rpt_daily_kpis adds up to fct_transactions (transactions, alerts, known frauds).
select kpis.transactions, fct.transactions
from (
    select sum(transactions) as transactions, sum(alerts) as alerts, sum(known_frauds) as known_frauds
    from {{ ref('rpt_daily_kpis') }}
) as kpis
cross join (
    select
        count(*) as transactions,
        sum(case when is_alert then 1 else 0 end) as alerts,
        sum(case when tx_fraud = 1 then 1 else 0 end) as known_frauds
    from {{ ref('fct_transactions') }}
) as fct
where kpis.transactions <> fct.transactions
    or kpis.alerts <> fct.alerts
    or kpis.known_frauds <> fct.known_frauds
