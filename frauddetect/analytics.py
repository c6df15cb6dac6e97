"""Analytics on the lake: the dbt project (``dbt/``) run in-process, and the Python reference of its KPIs.

``dbt_build(workdir)`` runs ``dbt build`` with the project's shipped profile (``dbt/profiles.yml``): target
``local`` reads the Parquet lake ``<workdir>/lake`` with DuckDB and writes the models into
``<workdir>/analytics/frauddetect.duckdb``; dbt's ``target/`` and ``logs/`` go to ``<workdir>/analytics/``
too, so a run leaves nothing in the repository. Target ``athena`` takes its settings from the environment
(``FRAUDDETECT_ATHENA_*``, ``FRAUDDETECT_LAKE_DATABASE``, AWS credentials; see ``dbt/README.md``).
:func:`run_dbt` passes any dbt command the same way (``frauddetect dbt --workdir DIR ...``).

:func:`reference_daily_kpis` computes the label-dependent daily KPIs of ``rpt_daily_kpis`` (fraud counts,
true alerts, Card Precision@100) from the same lake in pandas, with the same rules, and Card Precision@100
with :func:`frauddetect.evaluation.card_precision_top_k`: the two must agree (tests).

Label rules, shared by both (``dbt/README.md``): a transaction's label is its latest label event; a day is
*label-complete* when every scored transaction of the day has a label; label-dependent KPIs are NULL/NaN
for days that are not; Card Precision@100 is computed for the label-complete days from the lake's first day
up to the first day that is not (each day's ranking depends on the cards detected on earlier days).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt"
KPI_MODEL = "rpt_daily_kpis"
CARD_PRECISION_K = 100

#: rpt_daily_kpis columns the demo prints, with their short headers (the table fits 80 columns).
KPI_DISPLAY_COLUMNS: dict[str, str] = {
    "event_date": "date",
    "transactions": "tx",
    "label_coverage": "lab.",
    "frauds": "fraud",
    "alerts": "alert",
    "true_alerts": "TP",
    "alert_precision": "prec.",
    "recall": "rec.",
    "card_precision_at_100": "CP@100",
    "amount_flagged": "flagged",
    "amount_missed_fraud": "missed",
}


@dataclass(frozen=True)
class AnalyticsPaths:
    """Where a workdir's analytics live: the lake read, the DuckDB file and dbt's target/log folders."""

    workdir: Path
    lake: Path
    duckdb: Path
    target: Path
    logs: Path


def analytics_paths(workdir: Path | str) -> AnalyticsPaths:
    """Paths of the analytics of run folder ``workdir`` (absolute; nothing is created)."""
    workdir = Path(workdir).resolve()
    base = workdir / "analytics"
    return AnalyticsPaths(workdir, workdir / "lake", base / "frauddetect.duckdb", base / "target", base / "logs")


def dbt_environment(workdir: Path | str) -> dict[str, str]:
    """Environment variables the shipped profile and sources read for ``workdir`` (local target)."""
    paths = analytics_paths(workdir)
    return {
        "FRAUDDETECT_LAKE_PATH": paths.lake.as_posix(),
        "FRAUDDETECT_DUCKDB_PATH": paths.duckdb.as_posix(),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


@contextlib.contextmanager
def _environ(overrides: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _has_option(args: Sequence[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in args for n in names)


def run_dbt(args: Sequence[str], workdir: Path | str, *, target: str = "local"):
    """Run one dbt command in-process (``dbtRunner``) on ``workdir``'s lake with the shipped profile.

    ``args``: the dbt command line without ``dbt``, e.g. ``["build"]``, ``["show", "--select", "x"]``,
    ``["source", "freshness"]``. Project and profiles dir (``dbt/``), ``--target``, ``--target-path`` and
    ``--log-path`` (under ``<workdir>/analytics/``) are added unless ``args`` sets them. Returns dbt's
    ``dbtRunnerResult`` (``.success``, ``.result``, ``.exception``); dbt's own output goes to stdout.
    """
    from dbt.cli.main import dbtRunner

    args = list(args)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise ValueError("run_dbt needs a dbt command, e.g. ['build']")
    paths = analytics_paths(workdir)
    paths.duckdb.parent.mkdir(parents=True, exist_ok=True)
    cli = list(args)
    defaults = {
        ("--project-dir",): str(DBT_PROJECT_DIR),
        ("--profiles-dir",): str(DBT_PROJECT_DIR),
        ("--target", "-t"): target,
        ("--target-path",): str(paths.target),
        ("--log-path",): str(paths.logs),
    }
    if cli[0] == "debug":  # the one command without --target-path
        del defaults[("--target-path",)]
    for names, value in defaults.items():
        if not _has_option(cli, *names):
            cli += [names[0], value]
    with _environ(dbt_environment(workdir)):
        try:
            return dbtRunner().invoke(cli)
        finally:
            _release_duckdb()


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after an invocation.

    dbt-duckdb holds one database handle per process between invocations (``DuckDBConnectionManager._ENV``);
    while it is open, DuckDB refuses a read-only connection to the same file ("different configuration").
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a dependency
        return
    with DuckDBConnectionManager._LOCK:
        env, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
    if env is not None:
        env.close()


def dbt_build(workdir: Path | str, *, target: str = "local", args: Sequence[str] = ()):
    """``dbt build`` (models, unit tests, data tests) on ``workdir``'s lake; see :func:`run_dbt`.

    ``args``: extra dbt options, e.g. ``("--select", "+rpt_daily_kpis")`` or ``("--full-refresh",)``.
    Returns dbt's ``dbtRunnerResult``; ``result.success`` is False if any model or test failed.
    """
    return run_dbt(["build", *args], workdir, target=target)


def failed_nodes(result) -> list[str]:
    """``"node: status: message"`` for each node of a dbt result that did not pass (empty when all did)."""
    out = []
    for r in getattr(result.result, "results", None) or []:
        status = str(getattr(r.status, "value", r.status))
        if status not in ("success", "pass"):
            out.append(f"{r.node.name}: {status}: {r.message}")
    return out


def read_model(workdir: Path | str, model: str, *, order_by: str | None = None) -> pd.DataFrame:
    """A model of the local target as a DataFrame (read-only connection to the run's DuckDB file)."""
    import duckdb

    if not model.isidentifier():
        raise ValueError(f"not a model name: {model!r}")
    path = analytics_paths(workdir).duckdb
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run dbt build first")
    with duckdb.connect(str(path), read_only=True) as con:
        sql = f"select * from main.{model}" + (f" order by {order_by}" if order_by else "")
        return con.sql(sql).df()


def daily_kpis(workdir: Path | str) -> pd.DataFrame:
    """``rpt_daily_kpis`` of the run in ``workdir``, one row per event date, oldest first."""
    return read_model(workdir, KPI_MODEL, order_by="event_date")


def kpi_table(kpis: pd.DataFrame, last_days: int = 7):
    """A ``rich`` table of the last ``last_days`` days of ``rpt_daily_kpis`` (blank = labels not complete)."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"{KPI_MODEL}, last {min(last_days, len(kpis))} days",
        caption="lab. = labelled share, TP = alerts on frauds, prec./rec. = alert precision/recall, amounts "
                "flagged and of missed frauds; blank = labels not complete yet (they come 7 days later)",
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0, 0, 1), caption_justify="left",
    )
    for header in KPI_DISPLAY_COLUMNS.values():
        table.add_column(header, justify="right", no_wrap=True)
    for row in kpis.tail(last_days).itertuples(index=False):
        cells = []
        for col in KPI_DISPLAY_COLUMNS:
            v = getattr(row, col)
            if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
                cells.append("")
            elif col == "event_date":
                cells.append(str(v)[:10])
            elif col == "card_precision_at_100":
                cells.append(f"{float(v):.2f}")
            elif col in ("label_coverage", "alert_precision", "recall"):
                cells.append(f"{float(v):.0%}")
            else:  # counts and amounts
                cells.append(f"{float(v):,.0f}")
        table.add_row(*cells)
    return table


# ---------------------------------------------------------------------------------------------------------
# Python reference of the label-dependent KPIs (same rules as the dbt models)
# ---------------------------------------------------------------------------------------------------------


def _read_lake_table(lake: Path, name: str, columns: list[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.dataset as pads

    path = Path(lake) / name
    if not path.exists() or not any(path.glob("*/*.parquet")):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    part = pads.partitioning(pa.schema([("event_date", pa.string())]), flavor="hive")
    return pads.dataset(path, format="parquet", partitioning=part).to_table(columns=columns).to_pandas()


def labeled_transactions(lake: Path | str) -> pd.DataFrame:
    """Scored transactions of the lake (first scoring per id) with their final label (NaN = unknown).

    Final label = the latest label event (``labeled_at``; ties: source descending, then fraud first), as in
    ``int_labels_final``. Columns: ``transaction_id, tx_datetime, customer_id, tx_amount, score, alert,
    scored_at, event_date`` (str ``YYYY-MM-DD``), ``tx_fraud`` (float, NaN when unknown).
    """
    lake = Path(lake)
    scored = _read_lake_table(
        lake, "scored_transactions",
        ["transaction_id", "tx_datetime", "customer_id", "tx_amount", "score", "alert", "scored_at",
         "kafka_partition", "kafka_offset", "event_date"],
    )
    scored = (scored.sort_values(["scored_at", "kafka_partition", "kafka_offset"], kind="stable")
              .drop_duplicates("transaction_id", keep="first"))
    labels = _read_lake_table(lake, "labels", ["transaction_id", "tx_fraud", "labeled_at", "source"])
    final = (labels.sort_values(["labeled_at", "source", "tx_fraud"], ascending=False, kind="stable")
             .drop_duplicates("transaction_id", keep="first"))
    out = scored.merge(final[["transaction_id", "tx_fraud"]], on="transaction_id", how="left")
    out["tx_fraud"] = pd.to_numeric(out["tx_fraud"]).astype("float64")
    out["event_date"] = out["event_date"].astype(str)
    return out.drop(columns=["kafka_partition", "kafka_offset"]).reset_index(drop=True)


def reference_daily_kpis(lake: Path | str, k: int = CARD_PRECISION_K) -> pd.DataFrame:
    """Daily fraud counts and Card Precision@k of the lake, computed in pandas (the dbt models' reference).

    One row per event date (index ``event_date``, str), columns: ``transactions``, ``labeled_transactions``,
    ``is_label_complete``, ``known_frauds`` (labelled frauds so far), ``frauds`` (NaN unless complete),
    ``alerts``, ``true_alerts`` (NaN unless complete), ``card_precision_at_100`` (NaN for days after the
    label-complete prefix; from :func:`frauddetect.evaluation.card_precision_top_k` over the prefix days),
    ``amount_flagged``, ``amount_missed_fraud`` (NaN unless complete).
    """
    from frauddetect.evaluation import card_precision_top_k

    tx = labeled_transactions(lake)
    known = tx["tx_fraud"].notna()
    fraud = tx["tx_fraud"] == 1
    alert = tx["alert"].astype(bool)
    grouped = pd.DataFrame({
        "event_date": tx["event_date"],
        "transactions": 1,
        "labeled_transactions": known.astype(int),
        "known_frauds": fraud.astype(int),
        "alerts": alert.astype(int),
        "known_true_alerts": (alert & fraud).astype(int),
        "amount_flagged": tx["tx_amount"].where(alert, 0.0),
        "known_amount_missed_fraud": tx["tx_amount"].where(fraud & ~alert, 0.0),
    }).groupby("event_date", sort=True).sum()
    daily = grouped[["transactions", "labeled_transactions", "known_frauds", "alerts"]].copy()
    complete = daily["labeled_transactions"] == daily["transactions"]
    daily.insert(2, "is_label_complete", complete)
    daily["frauds"] = daily["known_frauds"].where(complete)
    daily["true_alerts"] = grouped["known_true_alerts"].where(complete)
    daily["amount_flagged"] = grouped["amount_flagged"].round(2)
    daily["amount_missed_fraud"] = grouped["known_amount_missed_fraud"].where(complete).round(2)

    # Card Precision@k over the label-complete prefix of days
    prefix = []
    for day, ok in complete.items():
        if not ok:
            break
        prefix.append(day)
    daily["card_precision_at_100"] = np.nan
    if prefix:
        rows = tx[tx["event_date"].isin(prefix)]
        cp = card_precision_top_k(
            pd.DataFrame({"customer_id": rows["customer_id"], "tx_fraud": rows["tx_fraud"].astype(int),
                          "score": rows["score"], "event_date": rows["event_date"]}),
            k, day_col="event_date",
        )
        daily.loc[prefix, "card_precision_at_100"] = cp.per_day
    return daily
