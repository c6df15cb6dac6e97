{{ config(materialized='table') }}
-- Transactions per event date, variable (score and each feature) and reference bin_number (1..drift_bins): bin_number b
-- holds the values above edge_(b-1) and up to edge_b of int_drift_reference_edges.
{%- set bins = var('drift_bins') | int %}
with long_values as (
    {%- for name in fd_drift_variables() %}
    select event_date, '{{ name }}' as feature_name, cast({{ name }} as double) as feature_value
    from {{ ref('fct_transactions') }}
    {{- "\n    union all" if not loop.last }}
    {%- endfor %}
)

select
    long_values.event_date,
    long_values.feature_name,
    case
        {%- for i in range(1, bins) %}
        when long_values.feature_value <= edges.edge_{{ i }} then {{ i }}
        {%- endfor %}
        else {{ bins }}
    end as bin_number,
    count(*) as transactions
from long_values
inner join {{ ref('int_drift_reference_edges') }} as edges
    on edges.feature_name = long_values.feature_name
group by 1, 2, 3
