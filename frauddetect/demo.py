"""``frauddetect demo``: the whole system on an embedded stack (no Docker, no AWS account).

Steps: input (a handbook-schema file, or the simulator) -> bootstrap history and, without ``--model``, a
trained Keras model -> embedded Tansu broker + moto server -> the Spark streaming job (``glue_jobs/``, a
child process, ``local[2]``) -> replay producer -> the real alert Lambda handler behind a local MSK poller
-> SNS topic -> SQS queue (proof of delivery) -> summary from what landed in the lake and the queue.
Everything the run writes lives in ``--workdir``. Progress and the readable summary go to stderr; with
``--json`` the last line of stdout is one JSON object.

``--stack compose`` runs the same steps against Apache Kafka and LocalStack from ``local/docker-compose.yml``
instead of the embedded broker and moto (:mod:`frauddetect.stacks`); nothing else changes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from confluent_kafka import Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from frauddetect import kafka_io
from frauddetect.config import TRANSACTIONS_TOPIC
from frauddetect.data import canonical, parse_raw_times, read_raw, valid_rows
from frauddetect.local_stack import DEFAULT_SPARK_MASTER, EmbeddedStack, SqsDrain
from frauddetect.features import LABEL_DELAY_DAYS
from frauddetect.replay import plan_replay, produce_replay
from frauddetect.stacks import StackSettings
from frauddetect.stream.config import JobConfig

log = logging.getLogger("frauddetect.demo")
console = Console(stderr=True)

BOOTSTRAP_DAYS = 38  # 30-day windows + 7-day label delay + the allowed lateness, rounded up


@dataclass
class DemoOptions:
    """Options of one demo run (see ``frauddetect demo --help``)."""

    workdir: Path
    input: Path | None = None
    start: str | None = None
    end: str | None = None
    model: Path | None = None
    rate: float | None = None
    seed: int = 0
    alerts_per_day: float = 100
    timeout_s: float = 900
    max_offsets_per_trigger: int | None = JobConfig.model_fields["max_offsets_per_trigger"].default
    spark_master: str = DEFAULT_SPARK_MASTER
    dbt: bool = True
    stack: StackSettings | None = None  # where Kafka and the AWS APIs are; None: the embedded stack


def _setup_logging(workdir: Path) -> None:
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(workdir / "logs" / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


RUN_OUTPUTS = ("lake", "checkpoints", "analytics", "bootstrap", "model", "logs")


def _clear_previous_run(workdir: Path, keep_model: bool) -> None:
    """Remove what an earlier demo run left in ``workdir``: its checkpoints would make Spark resume at old
    offsets on the new, empty broker, and its lake would be counted again. Only the run's own folders go."""
    import shutil

    found = [name for name in RUN_OUTPUTS if (workdir / name).exists() and not (keep_model and name == "model")]
    if found:
        console.print(f"replacing the previous run in {workdir} ({', '.join(found)})")
        for name in found:
            shutil.rmtree(workdir / name)


def _load_input(opts: DemoOptions) -> tuple[pd.DataFrame, str, str]:
    """Raw-schema table and the replay window; the simulator when no input is given."""
    if opts.input is None:
        from frauddetect.simulator import simulate_transactions

        raw = simulate_transactions(seed=opts.seed)
        days = pd.to_datetime(raw["TX_DATETIME"]).dt.normalize()
        first, last = days.min(), days.max()
        # two weeks: labels (7 days late) of the first week arrive in the second, so the KPIs have labels
        start = opts.start or (last - pd.Timedelta(days=13)).strftime("%Y-%m-%d")
        end = opts.end or last.strftime("%Y-%m-%d")
        if (pd.Timestamp(start) - first).days < BOOTSTRAP_DAYS:
            log.warning("simulated history before %s is shorter than %s days", start, BOOTSTRAP_DAYS)
        return raw, start, end
    if not (opts.start and opts.end):
        raise ValueError("--input needs --start and --end")
    try:
        first, last = pd.Timestamp(opts.start), pd.Timestamp(opts.end)
    except ValueError as exc:
        raise ValueError(f"--start/--end must be dates (YYYY-MM-DD): {exc}") from exc
    if first > last:
        raise ValueError(f"--start {opts.start} is after --end {opts.end}")
    return read_raw(opts.input), opts.start, opts.end


def _history(raw: pd.DataFrame, start: str) -> pd.DataFrame:
    """Clean rows before ``start`` in canonical form, for the state bootstrap and training.

    Bad rows there are left out and counted (rows whose time does not parse are replayed instead, see
    ``frauddetect.replay``, and quarantined by the stream).
    """
    before = raw[(parse_raw_times(raw["TX_DATETIME"]) < pd.Timestamp(start, tz="UTC")).to_numpy()]
    ok = valid_rows(before)
    if (~ok).sum():
        console.print(f"history: {int((~ok).sum())} bad row(s) before {start} left out of bootstrap and training")
        log.warning("history: %s bad rows before %s skipped", int((~ok).sum()), start)
    return canonical(before[ok.to_numpy()])


def _write_bootstrap(history: pd.DataFrame, start: str, path: Path) -> int:
    """The last BOOTSTRAP_DAYS of history with the labels known at ``start`` (older than the delay)."""
    start_ts = pd.Timestamp(start, tz="UTC")
    recent = history[history["tx_datetime"] >= start_ts - pd.Timedelta(days=BOOTSTRAP_DAYS)].copy()
    labeled_at = recent["tx_datetime"] + pd.Timedelta(days=LABEL_DELAY_DAYS)
    recent["labeled_at"] = labeled_at.where(labeled_at <= start_ts)
    path.parent.mkdir(parents=True, exist_ok=True)
    recent.to_parquet(path, index=False)
    return len(recent)


def _read_table(lake: Path, name: str) -> pd.DataFrame:
    path = lake / name
    if not path.exists():
        return pd.DataFrame()
    return pads.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas()


def run_demo(opts: DemoOptions) -> dict:
    """Run the main job end to end; returns the summary dict (keys as in ``--json``).

    With ``opts.stack`` other than embedded, call :func:`frauddetect.stacks.check_demo_stack` first (the CLI
    does, before this module is even imported) so that a stack that is down or holds an earlier run's data
    is reported in seconds rather than after training.
    """
    opts.workdir.mkdir(parents=True, exist_ok=True)
    _clear_previous_run(opts.workdir, keep_model=opts.model is not None)
    _setup_logging(opts.workdir)
    console.print(f"[bold]frauddetect demo[/] workdir: {opts.workdir}")
    raw, start, end = _load_input(opts)
    console.print(f"input: {'simulator' if opts.input is None else opts.input} ({len(raw):,} rows), "
                  f"streaming {start} .. {end}")
    history = _history(raw, start)
    bootstrap = opts.workdir / "bootstrap" / "history.parquet"
    n_boot = _write_bootstrap(history, start, bootstrap)
    console.print(f"feature state bootstrap: {n_boot:,} transactions before {start}")

    if opts.model is None:
        from frauddetect.training import train_and_export

        with console.status("training the Keras model on the history before the stream"):
            result = train_and_export(history, str(opts.workdir / "model"), deploy_start=start,
                                      alerts_per_day=opts.alerts_per_day, seed=opts.seed)
        model_dir = opts.workdir / "model"
        auc = result.metrics["validation_auc"]
        console.print(f"model {result.exported.version}: validation AUC {'n/a' if auc is None else f'{auc:.3f}'}, "
                      f"threshold {result.threshold:.4f} ({opts.alerts_per_day:g} alerts/day budget)")
    else:
        model_dir = opts.model
    plan = plan_replay(raw, start, end)
    console.print(f"replay: {plan.n_transactions:,} transactions, {plan.n_labels:,} labels")

    with EmbeddedStack(opts.workdir, opts.stack) as stack:
        if stack.settings.starts_services:
            console.print(f"embedded stack: Kafka {stack.bootstrap_servers}, "
                          f"AWS APIs (moto) {stack.aws_endpoint_url}")
        else:
            console.print(stack.settings.describe())
        with console.status(f"starting the Spark streaming job on {opts.spark_master}"):
            stack.start_job(model_dir, state_bootstrap=bootstrap, spark_master=opts.spark_master,
                            max_offsets_per_trigger=opts.max_offsets_per_trigger)
        stack.start_alert_lambda()
        producer = Producer(kafka_io.producer_config(stack.bootstrap_servers, **{"linger.ms": 5}))
        with _progress() as progress:
            task = progress.add_task("producing transactions", total=plan.n_transactions)
            stats = produce_replay(plan, producer, rate=opts.rate, on_progress=lambda n: progress.advance(task, n))
            del producer  # flushed; dropping it now stops librdkafka reconnecting once the broker is gone
            scored = progress.add_task("scored or quarantined", total=plan.n_transactions)
            final = stack.wait_processed(stats.transactions, opts.timeout_s,
                                         on_poll=lambda n: progress.update(scored, completed=n))
            n_alerts = final["counts"]["alerts"]
            sns = progress.add_task("alerts delivered through SNS", total=n_alerts)
            stack.wait_delivered(n_alerts, on_poll=lambda n: progress.update(sns, completed=n))
    summary = _summary(opts, raw, plan, stats, stack, final)
    if opts.dbt:
        summary.update(_dbt_step(opts.workdir))
    return summary


def _dbt_step(workdir: Path) -> dict:
    """``dbt build --target local`` on the lake this run wrote (DuckDB file in ``workdir/analytics``), then
    the last days of ``rpt_daily_kpis``. dbt's output goes to stderr with the rest of the progress."""
    from frauddetect import analytics

    t0 = time.monotonic()
    with console.status("dbt build --target local on the lake"), contextlib.redirect_stdout(sys.stderr):
        result = analytics.dbt_build(workdir, args=("--quiet",))
    elapsed = round(time.monotonic() - t0, 1)
    if not result.success:
        for problem in analytics.failed_nodes(result) or [repr(result.exception)]:
            console.print(f"[red]dbt:[/] {problem}")
        console.print(f"dbt logs: {analytics.analytics_paths(workdir).logs}")
        return {"dbt_build": "failed", "dbt_build_s": elapsed}
    console.print(analytics.kpi_table(analytics.daily_kpis(workdir), last_days=14))
    return {"dbt_build": "passed", "dbt_build_s": elapsed,
            "analytics_duckdb": str(analytics.analytics_paths(workdir).duckdb)}


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def _summary(opts: DemoOptions, raw: pd.DataFrame, plan, stats, stack: EmbeddedStack, final: dict) -> dict:
    from frauddetect.evaluation import card_precision_top_k
    from sklearn.metrics import average_precision_score, roc_auc_score

    lake = opts.workdir / "lake"
    scored = _read_table(lake, "scored_transactions")
    quarantine = _read_table(lake, "quarantine")
    alerts = _read_table(lake, "alerts")
    q_tx = quarantine[quarantine["source_topic"] == TRANSACTIONS_TOPIC] if len(quarantine) else quarantine
    truth = pd.DataFrame({"transaction_id": raw["TRANSACTION_ID"].astype(str),
                          "tx_fraud": pd.to_numeric(raw.get("TX_FRAUD"), errors="coerce")})
    ev = scored.merge(truth, on="transaction_id", how="left").dropna(subset=["tx_fraud"])
    y = ev["tx_fraud"].astype(int).to_numpy()
    both = len(np.unique(y)) == 2
    cp, _ = card_precision_top_k(
        ev.assign(tx_fraud=y)[["customer_id", "tx_datetime", "tx_fraud", "score"]], k=100
    ) if both else (float("nan"), [])
    first = pd.Timestamp(stats.first_produced_at, unit="s", tz="UTC")
    last_scored = scored["scored_at"].max() if len(scored) else first
    elapsed = max((last_scored - first).total_seconds(), 1e-9)
    # The records' Kafka timestamps are event times: latency starts at the producer's own clock.
    tx_ids = plan.events.loc[plan.events["kind"] == "transaction", "transaction_id"].to_numpy()
    produced = pd.Series(stats.produced_at, index=tx_ids)
    produced = produced[~produced.index.duplicated()]
    lat = []
    for m in stack.drain.messages.values():
        tid = (m.get("MessageAttributes", {}).get("transaction_id") or {}).get("Value")
        if tid in produced.index:
            lat.append((pd.Timestamp(m["Timestamp"]).timestamp() - produced[tid]) * 1000)
    state = stack.state_summary() or {}
    events = stack.query_progress()
    summary = {
        "transactions": int(stats.transactions),
        "scored": int(len(scored)),
        "quarantined": int(len(q_tx)),
        "alerts": int(len(alerts)),
        "sns_messages": int(len(stack.drain.messages)),
        "throughput_tps": round(stats.transactions / elapsed, 1),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if lat else None,
        "auc": round(float(roc_auc_score(y, ev["score"])), 4) if both else None,
        "average_precision": round(float(average_precision_score(y, ev["score"])), 4) if both else None,
        "card_precision_at_100": round(float(cp), 4) if both else None,
        "model_version": str(scored["model_version"].iloc[0]) if len(scored) else None,
        "lake_uri": (lake.resolve()).as_uri(),
        "spark_master": opts.spark_master,
        "state_store": state.get("provider"),
        "micro_batches": len({e["batchId"] for e in events}),
        "state_rows": (state.get("card_rows", 0) + state.get("terminal_rows", 0)) if state else None,
        "state_rows_by_operator": {k: state[k] for k in ("card_rows", "terminal_rows", "card_keys", "terminal_keys")
                                   if k in state},
    }
    summary["labels_quarantined"] = int(final["counts"]["labels_quarantined"])
    summary["labels_waiting"] = int(final["counts"]["labels_waiting"])
    summary["duplicate_transaction_ids_in_lake"] = int(scored["transaction_id"].duplicated().sum())
    _print_summary(summary, q_tx)
    return summary


def _print_summary(summary: dict, quarantine: pd.DataFrame) -> None:
    table = Table(title="frauddetect demo: summary", show_header=False)
    for k, v in summary.items():
        table.add_row(k, str(v))
    console.print(table)
    if len(quarantine):
        console.print("quarantine reasons:")
        for reason, n in quarantine["reason"].value_counts().items():
            console.print(f"  {n:>6}  {reason}")
