-- fct_transactions holds every scored transaction of the lake once (incremental runs included).
select lake.transactions, fct.transactions
from (select count(distinct transaction_id) as transactions from {{ ref('stg_scored_transactions') }}) as lake
cross join (select count(*) as transactions from {{ ref('fct_transactions') }}) as fct
where lake.transactions <> fct.transactions
