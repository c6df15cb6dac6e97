{#-
  Card Precision@k (Fraud Detection Handbook ch. 4, `card_precision_top_k`), in SQL that Athena and DuckDB
  both run. For each day in order: drop the cards already detected on an earlier day; rank the remaining
  cards by their highest score of the day; the k best are the day's investigation list; the listed cards
  with a fraud that day are "detected" and leave all later days; CP@k of the day = detected / k.

  The days depend on each other, so the model unrolls one CTE per day (Athena caps recursive CTEs at 10
  levels). Each CTE reads the previous one exactly once (no exponential inlining on Trino): it unions the
  rows carried so far with the day's cards, flags cards detected before with a window, ranks the others.
-#}

{% macro fd_card_precision_k() -%}
  {{ return(100) }}
{%- endmacro %}

{#- Columns of int_card_precision_top_k, in order (event_date last: the Athena partition). -#}
{% macro fd_card_precision_columns() -%}
  customer_id, card_rank, max_score, max_tx_fraud, is_detected, event_date
{%- endmacro %}

{% macro fd_card_precision_step(previous, day, k) -%}
    select {{ fd_card_precision_columns() }}
    from (
        select
            customer_id,
            case
                when is_carried = 1 then card_rank
                else row_number() over (
                    partition by is_carried, detected_before order by max_score desc, customer_id
                )
            end as card_rank,
            max_score,
            max_tx_fraud,
            case when is_carried = 1 then is_detected else max_tx_fraud = 1 end as is_detected,
            event_date,
            is_carried,
            detected_before
        from (
            select
                candidates.*,
                max(case when candidates.is_carried = 1 and candidates.is_detected then 1 else 0 end)
                    over (partition by candidates.customer_id) as detected_before
            from (
                select {{ fd_card_precision_columns() }}, 1 as is_carried
                from {{ previous }}
                union all
                select
                    customer_id,
                    cast(null as bigint) as card_rank,
                    max_score,
                    max_tx_fraud,
                    cast(null as boolean) as is_detected,
                    event_date,
                    0 as is_carried
                from {{ ref('int_card_days') }}
                where event_date = date '{{ day }}'
            ) as candidates
        ) as flagged
    ) as ranked
    where is_carried = 1 or (detected_before = 0 and card_rank <= {{ k }})
{%- endmacro %}

{#-
  The event dates this run ranks, as 'YYYY-MM-DD' strings: the label-complete days after the last day
  already in the model, in order, stopping at the first day that is not label-complete (a later day's list
  depends on every earlier day's detections), at most card_precision_max_days_per_run of them.
-#}
{% macro fd_card_precision_days() -%}
  {% if var('frauddetect_offline', false) %}
    {{ return(var('frauddetect_offline_days', [])) }}
  {% endif %}
  {% if not execute %}
    {{ return([]) }}
  {% endif %}
  {% set after = none %}
  {% if fd_is_incremental() %}
    {% set last = run_query('select max(event_date) from ' ~ this).columns[0].values()[0] %}
    {% if last is not none %}
      {% set after = (last | string)[:10] %}
    {% endif %}
  {% endif %}
  {% set query %}
    select event_date, is_label_complete
    from {{ ref('int_daily_label_status') }}
    {% if after %}where event_date > date '{{ after }}'{% endif %}
    order by event_date
  {% endset %}
  {% set state = namespace(days=[], open=true) %}
  {% for row in run_query(query).rows %}
    {% if state.open and row[1] and state.days | length < var('card_precision_max_days_per_run') | int %}
      {% do state.days.append((row[0] | string)[:10]) %}
    {% else %}
      {% set state.open = false %}
    {% endif %}
  {% endfor %}
  {{ return(state.days) }}
{%- endmacro %}
