{#-
  Model drift: the population stability index (PSI) of the score and of each feature, per event date,
  against the reference window of int_drift_reference_edges:
      PSI = sum over bins of (actual - expected) * ln(actual / expected)
  with actual/expected the day's/reference's share of transactions in the bin, floored at
  drift_share_floor so that empty bins stay finite. Usual reading: < 0.1 stable, 0.1-0.25 moderate shift,
  >= 0.25 significant shift. Features that are a function of the calendar day (tx_during_weekend: every
  value of a Saturday is 1) shift with the weekday by construction: their drift_level is 'calendar'.
-#}
{%- set bins = var('drift_bins') | int %}
{%- set floor = var('drift_share_floor') %}
with counts as (
    select event_date, feature_name, bin_number, transactions
    from {{ ref('int_drift_bin_counts') }}
),

bounds as (
    select distinct feature_name, reference_start, reference_end
    from {{ ref('int_drift_reference_edges') }}
),

bin_numbers as (
    {%- for i in range(1, bins + 1) %}
    select {{ i }} as bin_number{{ "\n    union all" if not loop.last }}
    {%- endfor %}
),

day_totals as (
    select event_date, feature_name, sum(transactions) as transactions
    from counts
    group by event_date, feature_name
),

reference_counts as (
    select counts.feature_name, counts.bin_number, sum(counts.transactions) as transactions
    from counts
    inner join bounds
        on bounds.feature_name = counts.feature_name
        and counts.event_date between bounds.reference_start and bounds.reference_end
    group by counts.feature_name, counts.bin_number
),

reference_totals as (
    select feature_name, sum(transactions) as transactions
    from reference_counts
    group by feature_name
),

shares as (
    select
        day_totals.event_date,
        day_totals.feature_name,
        bin_numbers.bin_number,
        day_totals.transactions as day_transactions,
        greatest(
            cast(coalesce(counts.transactions, 0) as double) / day_totals.transactions, {{ floor }}
        ) as actual_share,
        greatest(
            cast(coalesce(reference_counts.transactions, 0) as double) / reference_totals.transactions, {{ floor }}
        ) as expected_share
    from day_totals
    cross join bin_numbers
    inner join reference_totals
        on reference_totals.feature_name = day_totals.feature_name
    left join counts
        on counts.event_date = day_totals.event_date
        and counts.feature_name = day_totals.feature_name
        and counts.bin_number = bin_numbers.bin_number
    left join reference_counts
        on reference_counts.feature_name = day_totals.feature_name
        and reference_counts.bin_number = bin_numbers.bin_number
),

psi as (
    select
        event_date,
        feature_name,
        max(day_transactions) as transactions,
        sum((actual_share - expected_share) * ln(actual_share / expected_share)) as psi
    from shares
    group by event_date, feature_name
)

select
    psi.event_date,
    psi.feature_name,
    psi.transactions,
    round(psi.psi, 6) as psi,
    case
        {%- if var('drift_calendar_features') %}
        when psi.feature_name in ('{{ var("drift_calendar_features") | join("', '") }}') then 'calendar'
        {%- endif %}
        when psi.psi < 0.1 then 'stable'
        when psi.psi < 0.25 then 'moderate'
        else 'significant'
    end as drift_level,
    psi.event_date between bounds.reference_start and bounds.reference_end as is_reference_day,
    bounds.reference_start,
    bounds.reference_end
from psi
inner join bounds
    on bounds.feature_name = psi.feature_name
