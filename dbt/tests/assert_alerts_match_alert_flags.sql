-- Every alert in the lake's alerts table is a transaction flagged is_alert in fct_transactions, and back:
-- the job writes both in the same micro-batch. Returns the transactions present on one side only.
select coalesce(flagged.transaction_id, alerts.transaction_id) as transaction_id
from (select transaction_id from {{ ref('fct_transactions') }} where is_alert) as flagged
full outer join {{ ref('fct_alerts') }} as alerts
    on alerts.transaction_id = flagged.transaction_id
where flagged.transaction_id is null or alerts.transaction_id is null
