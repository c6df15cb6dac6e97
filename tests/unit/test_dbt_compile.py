"""The dbt project offline: it parses and compiles for the ``athena`` target with no AWS call, the compiled
SQL uses no Athena reserved word as a bare identifier, every model is documented with its grain and has a
tested primary key, and the project agrees with the pipeline's lake schema.

No warehouse is touched: ``dbt compile --no-populate-cache --vars '{frauddetect_offline: true}'`` skips
the Glue listing and every ``run_query``/``is_incremental`` call (see ``dbt/macros/cross_db.sql``); a second
compile renders the incremental branches and two days of the Card Precision@100 unrolling.
About 20 s (three dbt invocations, each parsing the project).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from frauddetect import analytics
from frauddetect.features import FEATURE_COLUMNS
from frauddetect.stream.lake import QUARANTINE_LAKE_COLUMNS as QUARANTINE_COLUMNS
from frauddetect.stream.lake import SCORED_LAKE_COLUMNS as SCORED_COLUMNS

pytestmark = pytest.mark.unit

# Athena's reserved keywords (docs.aws.amazon.com/athena/latest/ug/reserved-words.html): the DDL list and
# the SELECT (Trino) list. None may be a bare identifier (column, alias, CTE or model name).
ATHENA_DDL_RESERVED = """
ALL ALTER AND ARRAY AS AUTHORIZATION BETWEEN BIGINT BINARY BOOLEAN BOTH BY CASE CASHE CAST CHAR COLUMN CONF
CONSTRAINT COMMIT CREATE CROSS CUBE CURRENT CURRENT_DATE CURRENT_TIMESTAMP CURSOR DATABASE DATE DAYOFWEEK
DECIMAL DELETE DESCRIBE DISTINCT DIV DOUBLE DROP ELSE END EXCHANGE EXISTS EXTENDED EXTERNAL EXTRACT FALSE
FETCH FLOAT FLOOR FOLLOWING FOR FOREIGN FROM FULL FUNCTION GRANT GROUP GROUPING HAVING IF IMPORT IN INNER
INSERT INT INTEGER INTERSECT INTERVAL INTO IS JOIN LATERAL LEFT LESS LIKE LOCAL MACRO MAP MORE NONE NOT NULL
NUMERIC OF ON ONLY OR ORDER OUT OUTER OVER PARTIALSCAN PARTITION PERCENT PRECEDING PRECISION PRESERVE
PRIMARY PROCEDURE RANGE READS REDUCE REGEXP REFERENCES REVOKE RIGHT RLIKE ROLLBACK ROLLUP ROW ROWS SELECT
SET SMALLINT START TABLE TABLESAMPLE THEN TIME TIMESTAMP TO TRANSFORM TRIGGER TRUE TRUNCATE UNBOUNDED UNION
UNIQUEJOIN UPDATE USER USING UTC_TMESTAMP VALUES VARCHAR VIEWS WHEN WHERE WINDOW WITH
"""
ATHENA_SELECT_RESERVED = """
ALTER AND AS BETWEEN BY CASE CAST CONSTRAINT CREATE CROSS CUBE CURRENT_CATALOG CURRENT_DATE CURRENT_PATH
CURRENT_ROLE CURRENT_SCHEMA CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DEALLOCATE DELETE DESCRIBE DISTINCT
DROP ELSE END ESCAPE EXCEPT EXECUTE EXISTS EXTRACT FALSE FIRST FOR FROM FULL GROUP GROUPING HAVING IN INNER
INSERT INTERSECT INTO IS JOIN JSON_ARRAY JSON_EXISTS JSON_OBJECT JSON_QUERY JSON_TABLE JSON_VALUE LAST LEFT
LIKE LISTAGG LOCALTIME LOCALTIMESTAMP NATURAL NORMALIZE NOT NULL OF ON OR ORDER OUTER PREPARE RECURSIVE
RIGHT ROLLUP SELECT SKIP TABLE THEN TRIM TRUE UESCAPE UNION UNNEST USING VALUES WHEN WHERE WITH
"""
RESERVED = {w.lower() for w in (ATHENA_DDL_RESERVED + ATHENA_SELECT_RESERVED).split()}

OFFLINE_ENV = {
    "FRAUDDETECT_ATHENA_S3_STAGING_DIR": "s3://offline-check/athena-results/",
    "FRAUDDETECT_LAKE_DATABASE": "frauddetect_ci",
    "FRAUDDETECT_ATHENA_SCHEMA": "frauddetect_analytics_ci",
    "AWS_REGION": "eu-west-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
OFFLINE_DAYS = ["2018-08-15", "2018-08-16"]


def _compile_athena(workdir: Path, **offline_vars) -> tuple[object, Path]:
    vars_ = {"frauddetect_offline": True, **offline_vars}
    result = analytics.run_dbt(
        ["compile", "--no-populate-cache", "--quiet", "--vars", json.dumps(vars_)], workdir, target="athena"
    )
    return result, analytics.analytics_paths(workdir).target


@pytest.fixture(scope="module")
def offline_env():
    with pytest.MonkeyPatch.context() as mp:
        for k, v in OFFLINE_ENV.items():
            mp.setenv(k, v)
        yield


@pytest.fixture(scope="module")
def athena_full(tmp_path_factory, offline_env):
    """Compile for Athena as a first (full) run: (result, target dir)."""
    return _compile_athena(tmp_path_factory.mktemp("athena_full"))


@pytest.fixture(scope="module")
def athena_incremental(tmp_path_factory, offline_env):
    """Compile for Athena as an incremental run ranking two Card Precision days."""
    return _compile_athena(tmp_path_factory.mktemp("athena_incr"), frauddetect_offline_incremental=True,
                           frauddetect_offline_days=OFFLINE_DAYS)


@pytest.fixture(scope="module")
def manifest(athena_full) -> dict:
    return json.loads((athena_full[1] / "manifest.json").read_text())


def _models(manifest: dict) -> dict[str, dict]:
    return {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}


def _compiled_sql(target: Path) -> dict[str, str]:
    root = target / "compiled" / "frauddetect"
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.sql"))}


_TOKEN = re.compile(
    r"""(?P<comment>--[^\n]*|/\*.*?\*/)|(?P<string>'(?:[^']|'')*')|(?P<quoted>"(?:[^"]|"")*"|`[^`]*`)"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)|(?P<punct>[(),;])|(?P<other>\S)""",
    re.DOTALL,
)


def bare_identifiers_defined(sql: str) -> list[str]:
    """Names the SQL defines without quotes: aliases after AS (not the type in CAST(x AS type)) and CTE
    names (``name AS (``)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(sql) if m.lastgroup != "comment"]
    names, parens = [], []  # parens: is each open parenthesis a CAST/TRY_CAST call?
    for i, (kind, text) in enumerate(tokens):
        if text == "(":
            prev = tokens[i - 1][1].lower() if i else ""
            parens.append(prev in ("cast", "try_cast"))
        elif text == ")":
            if parens:
                parens.pop()
        elif kind == "word" and text.lower() == "as" and not (parens and parens[-1]):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
            if nxt[0] == "word":
                names.append(nxt[1])
            elif nxt[1] == "(" and i > 0 and tokens[i - 1][0] == "word":
                names.append(tokens[i - 1][1])  # WITH name AS (
    return names


def test_bare_identifier_scanner_sees_aliases_and_ctes_but_not_cast_types():
    sql = 'with a as (select cast(x as date) as "date", y as user from t) select z as ok from a -- as date'
    assert bare_identifiers_defined(sql) == ["a", "user", "ok"]


def test_athena_compile_succeeds_offline(athena_full, athena_incremental):
    for result, target in (athena_full, athena_incremental):
        assert result.success, result.exception
        compiled = _compiled_sql(target)
        models = {Path(p).stem for p in compiled if p.startswith("models/")}
        assert {"fct_transactions", "rpt_daily_kpis", "rpt_model_drift", "int_card_precision_top_k"} <= models


def test_compiled_athena_sql_reads_the_glue_lake_tables(athena_full):
    sql = _compiled_sql(athena_full[1])["models/staging/stg_scored_transactions.sql"]
    assert '"awsdatacatalog"."frauddetect_ci"."scored_transactions"' in sql
    assert "read_parquet" not in sql


def test_incremental_branches_compile_for_athena(athena_incremental):
    compiled = _compiled_sql(athena_incremental[1])
    fct = compiled["models/marts/fct_transactions.sql"]
    assert "dates_to_build" in fct and '"awsdatacatalog"."frauddetect_analytics_ci"."fct_transactions"' in fct
    top_k = compiled["models/intermediate/int_card_precision_top_k.sql"]
    for day in OFFLINE_DAYS:
        assert f"date '{day}'" in top_k
    assert "state_2" in top_k and top_k.count("from state_1") == 1  # each step reads the previous once


def test_compiled_sql_uses_no_reserved_word_as_bare_identifier(athena_full, athena_incremental, manifest):
    offenders = {}
    for _, target in (athena_full, athena_incremental):
        for path, sql in _compiled_sql(target).items():
            bad = sorted({n for n in bare_identifiers_defined(sql) if n.lower() in RESERVED})
            if bad:
                offenders[path] = bad
    for model in _models(manifest).values():
        bad = [c for c in [model["name"], *model["columns"]] if c.lower() in RESERVED]
        if bad:
            offenders[model["name"]] = bad
    for source in manifest["sources"].values():
        bad = [c for c in source["columns"] if c.lower() in RESERVED]
        if bad:
            offenders[source["name"]] = bad
    assert not offenders, offenders


def test_every_model_is_documented_with_its_grain(manifest):
    for name, model in _models(manifest).items():
        assert "grain" in model["description"].lower(), f"{name}: description must state the grain"
        assert model["columns"], f"{name}: no documented columns"
        for col, spec in model["columns"].items():
            assert spec["description"].strip(), f"{name}.{col} has no description"


def test_every_model_has_a_tested_primary_key(manifest):
    tests: dict[str, list[tuple[str, str | None, dict]]] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] == "test" and node.get("test_metadata") and node.get("attached_node"):
            meta = node["test_metadata"]
            tests.setdefault(node["attached_node"], []).append(
                (meta["name"], node.get("column_name"), meta.get("kwargs", {}))
            )
    for uid, model in manifest["nodes"].items():
        if model["resource_type"] != "model":
            continue
        attached = tests.get(uid, [])
        not_null = {col for name, col, _ in attached if name == "not_null"}
        keys = [[col] for name, col, _ in attached if name == "unique"]
        keys += [kw["combination_of_columns"] for name, _, kw in attached if name == "unique_combination_of_columns"]
        assert keys, f"{model['name']}: no unique test on a primary key"
        assert any(set(k) <= not_null for k in keys), f"{model['name']}: primary key columns need not_null"


def test_kpi_logic_has_dbt_unit_tests(manifest):
    tested = {u["model"] for u in manifest["unit_tests"].values()}
    assert {"rpt_daily_kpis", "rpt_model_drift"} <= tested


def test_feature_list_matches_the_pipeline():
    project = yaml.safe_load((analytics.DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert tuple(project["vars"]["features"]) == tuple(FEATURE_COLUMNS)


def test_lake_sources_declare_the_pipeline_columns(manifest):
    from frauddetect.alerts import AlertEvent

    sources = {s["name"]: list(s["columns"]) for s in manifest["sources"].values() if s["source_name"] == "lake"}
    assert sources["scored_transactions"] == list(SCORED_COLUMNS)
    assert sources["quarantine"] == list(QUARANTINE_COLUMNS)
    assert sources["labels"] == ["transaction_id", "tx_fraud", "labeled_at", "source", "event_date"]
    alert_fields = [f for f in AlertEvent.model_fields if f != "features"]
    assert sources["alerts"] == [*alert_fields, "event_date"]


def test_create_lake_tables_renders_athena_ddl(offline_env, tmp_path):
    result = analytics.run_dbt(
        ["compile", "--no-populate-cache", "--quiet", "--vars", '{"frauddetect_offline": true}', "--inline",
         "{% for s in fd_lake_table_ddls('s3://lake-bucket/lake/', 'lake_db') %}{{ s }};\n{% endfor %}"],
        tmp_path, target="athena",
    )
    assert result.success, result.exception
    ddl = result.result.results[0].node.compiled_code
    statements = [s.strip() for s in ddl.split(";") if s.strip()]
    assert len(statements) == 4
    scored = next(s for s in statements if "`scored_transactions`" in s)
    assert "`tx_datetime` timestamp," in scored and "`customer_id` string," in scored
    assert "`alert` boolean," in scored and "`kafka_partition` int," in scored
    assert "partitioned by (`event_date` string)" in scored
    assert "location 's3://lake-bucket/lake/scored_transactions/'" in scored
    assert "'projection.event_date.type' = 'date'" in scored
