{#- Rows where `expression` is false fail the test (NULL passes: a KPI that is unknown is not wrong). -#}
{% test expression_is_true(model, expression, column_name=none) %}
select *
from {{ model }}
where not ({{ expression }})
{% endtest %}
