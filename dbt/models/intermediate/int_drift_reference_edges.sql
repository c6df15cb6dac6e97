{{ config(materialized='table') }}
{#-
  Bin edges of the score and of each feature over the drift reference window: the upper value of each of
  the first drift_bins - 1 quantile bins (ntile over the reference rows); the last bin is open-ended.
  Reference window: vars drift_reference_start/drift_reference_end (set them to the model's training
  window), else the first drift_reference_days event dates in the lake.
-#}
{%- set bins = var('drift_bins') | int %}
with bounds as (
    select
        {%- if var('drift_reference_start') %}
        date '{{ var("drift_reference_start") }}' as reference_start,
        {%- else %}
        min(event_date) as reference_start,
        {%- endif %}
        {%- if var('drift_reference_end') %}
        date '{{ var("drift_reference_end") }}' as reference_end
        {%- else %}
        cast({{ dbt.dateadd('day', var('drift_reference_days') | int - 1, 'min(event_date)') }} as date)
            as reference_end
        {%- endif %}
    from {{ ref('fct_transactions') }}
),

reference_values as (
    {%- for name in fd_drift_variables() %}
    select '{{ name }}' as feature_name, cast(t.{{ name }} as double) as feature_value
    from {{ ref('fct_transactions') }} as t
    cross join bounds
    where t.event_date between bounds.reference_start and bounds.reference_end
    {{- "\n    union all" if not loop.last }}
    {%- endfor %}
),

tiles as (
    select
        feature_name,
        feature_value,
        ntile({{ bins }}) over (partition by feature_name order by feature_value) as tile
    from reference_values
),

tile_tops as (
    select feature_name, tile, max(feature_value) as tile_top
    from tiles
    group by feature_name, tile
)

select
    tile_tops.feature_name,
    bounds.reference_start,
    bounds.reference_end,
    {%- for i in range(1, bins) %}
    max(case when tile_tops.tile = {{ i }} then tile_tops.tile_top end) as edge_{{ i }}{{ "," if not loop.last }}
    {%- endfor %}
from tile_tops
cross join bounds
group by tile_tops.feature_name, bounds.reference_start, bounds.reference_end
