-- Per event date: how many scored transactions have a known label. A day is label-complete when all of
-- them have one; the label-dependent KPIs and Card Precision@100 are only computed for complete days.
select
    event_date,
    count(*) as transactions,
    sum(case when is_label_known then 1 else 0 end) as labeled_transactions,
    count(*) = sum(case when is_label_known then 1 else 0 end) as is_label_complete
from {{ ref('fct_transactions') }}
group by event_date
