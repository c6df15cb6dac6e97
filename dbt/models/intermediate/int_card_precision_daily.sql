-- Card Precision@100 per event date: detected cards / 100 for every day int_card_precision_top_k has
-- ranked (up to its last day; a ranked day whose cards were all detected before has no rows and CP 0);
-- NULL for days not ranked yet (labels incomplete).
with ranked_days as (
    select max(event_date) as last_ranked_date
    from {{ ref('int_card_precision_top_k') }}
),

lists as (
    select
        event_date,
        count(*) as listed_cards,
        sum(case when is_detected then 1 else 0 end) as detected_cards
    from {{ ref('int_card_precision_top_k') }}
    group by event_date
)

select
    status.event_date,
    coalesce(status.event_date <= ranked_days.last_ranked_date, false) as is_ranked,
    case when status.event_date <= ranked_days.last_ranked_date then coalesce(lists.listed_cards, 0) end
        as listed_cards,
    case when status.event_date <= ranked_days.last_ranked_date then coalesce(lists.detected_cards, 0) end
        as detected_cards,
    case
        when status.event_date <= ranked_days.last_ranked_date
            then cast(coalesce(lists.detected_cards, 0) as double) / {{ fd_card_precision_k() }}
    end as card_precision_at_100
from {{ ref('int_daily_label_status') }} as status
cross join ranked_days
left join lists
    on lists.event_date = status.event_date
