-- A card detected by Card Precision@100 leaves every later list, so it is detected at most once, and a
-- day lists at most 100 cards.
select 'detected twice' as problem, customer_id as detail
from {{ ref('int_card_precision_top_k') }}
where is_detected
group by customer_id
having count(*) > 1
union all
select 'more than k cards listed' as problem, cast(event_date as varchar) as detail
from {{ ref('int_card_precision_top_k') }}
group by event_date
having count(*) > {{ fd_card_precision_k() }}
