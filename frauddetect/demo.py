"""``frauddetect demo``: the whole system on an embedded stack (no Docker, no AWS account).

Steps: input (a handbook-schema file, or the simulator) -> bootstrap history and, without ``--model``, a
trained Keras model -> embedded Tansu broker + moto server -> the Spark streaming job (``glue_jobs/``, a
child process, ``local[2]``) -> replay producer -> the real alert Lambda handler behind a local MSK poller
-> SNS topic -> SQS queue (proof of delivery) -> summary from what landed in the lake and the queue.
Everything the run writes lives in ``--workdir``. Progress and the readable summary go to stderr; with
``--json`` the last line of stdout is one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from confluent_kafka import Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from frauddetect import kafka_io
from frauddetect.config import ALERTS_TOPIC, LABELS_TOPIC, QUARANTINE_TOPIC, TRANSACTIONS_TOPIC
from frauddetect.data import canonical, read_raw
from frauddetect.embedded import EmbeddedBroker, MotoServer, die_with_parent
from frauddetect.features import LABEL_DELAY_DAYS
from frauddetect.replay import plan_replay, produce_replay

log = logging.getLogger("frauddetect.demo")
console = Console(stderr=True)

BOOTSTRAP_DAYS = 38  # 30-day windows + 7-day label delay + the allowed lateness, rounded up
REPO_ROOT = Path(__file__).resolve().parents[1]


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
    max_offsets_per_trigger: int = 50_000


def _setup_logging(workdir: Path) -> None:
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(workdir / "logs" / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _load_input(opts: DemoOptions) -> tuple[pd.DataFrame, str, str]:
    """Raw-schema table and the replay window; the simulator when no input is given."""
    if opts.input is None:
        from frauddetect.simulator import simulate_transactions

        raw = simulate_transactions(seed=opts.seed)
        days = pd.to_datetime(raw["TX_DATETIME"]).dt.normalize()
        first, last = days.min(), days.max()
        start = opts.start or (last - pd.Timedelta(days=6)).strftime("%Y-%m-%d")
        end = opts.end or last.strftime("%Y-%m-%d")
        if (pd.Timestamp(start) - first).days < BOOTSTRAP_DAYS:
            log.warning("simulated history before %s is shorter than %s days", start, BOOTSTRAP_DAYS)
        return raw, start, end
    if not (opts.start and opts.end):
        raise ValueError("--input needs --start and --end")
    return read_raw(opts.input), opts.start, opts.end


def _history(raw: pd.DataFrame, start: str) -> pd.DataFrame:
    """Clean rows before ``start`` in canonical form (bad rows there are skipped and counted in the log)."""
    times = pd.to_datetime(raw["TX_DATETIME"], errors="coerce", utc=True)
    before = raw[(times < pd.Timestamp(start, tz="UTC")).to_numpy()]
    amount = pd.to_numeric(before["TX_AMOUNT"], errors="coerce")
    ok = amount.notna() & pd.to_datetime(before["TX_DATETIME"], errors="coerce").notna()
    if (~ok).sum():
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


def _latest_progress(checkpoint: Path) -> dict | None:
    files = sorted((checkpoint / "state").glob("progress-*.json"))
    return json.loads(files[-1].read_text()) if files else None


class _SqsDrain(threading.Thread):
    """Receives every SNS envelope delivered to the proof-of-delivery queue (counts and publish times)."""

    def __init__(self, queue_url: str, endpoint_url: str, region: str):
        super().__init__(daemon=True, name="sqs-drain")
        self.sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name=region,
                                aws_access_key_id="testing", aws_secret_access_key="testing")
        self.queue_url = queue_url
        self.messages: dict[str, dict] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.poll_once(wait=1)

    def poll_once(self, wait: int = 0) -> int:
        """One receive call; returns how many new messages arrived."""
        resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        new = 0
        entries = []
        for m in resp.get("Messages", []):
            body = json.loads(m["Body"])
            if body["MessageId"] not in self.messages:
                self.messages[body["MessageId"]] = body
                new += 1
            entries.append({"Id": str(len(entries)), "ReceiptHandle": m["ReceiptHandle"]})
        if entries:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return new


def _start_job(opts: DemoOptions, broker: str, model_dir: Path, bootstrap: Path) -> subprocess.Popen:
    script = REPO_ROOT / "glue_jobs" / "streaming_job.py"
    entry = [str(script)] if script.exists() else ["-m", "frauddetect.streaming"]
    cmd = [
        sys.executable, *entry,
        "--bootstrap-servers", broker,
        "--lake-uri", str(opts.workdir / "lake"),
        "--checkpoint-uri", str(opts.workdir / "checkpoints"),
        "--model-dir", str(model_dir),
        "--state-bootstrap", str(bootstrap),
        "--max-offsets-per-trigger", str(opts.max_offsets_per_trigger),
    ]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    log_file = open(opts.workdir / "logs" / "streaming_job.log", "ab")  # noqa: SIM115 - owned by the child
    # Own session: Ctrl-C reaches only the demo, which stops the job gracefully; PDEATHSIG covers a demo
    # that is killed outright, so a job never outlives it.
    in_main = threading.current_thread() is threading.main_thread()
    return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=die_with_parent if in_main else None)


def _stop_job(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait(predicate, timeout: float, what: str, job: subprocess.Popen | None = None, log_path: Path | None = None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if job is not None and job.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"the streaming job exited ({job.returncode}) while waiting for {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _read_table(lake: Path, name: str) -> pd.DataFrame:
    path = lake / name
    if not path.exists():
        return pd.DataFrame()
    return pads.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas()


def run_demo(opts: DemoOptions) -> dict:
    """Run the main job end to end; returns the summary dict (keys as in ``--json``)."""
    from frauddetect.msk_poller import MskPoller
    from frauddetect.resources import ensure_local_resources

    opts.workdir.mkdir(parents=True, exist_ok=True)
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
            result = train_and_export(history, start, str(opts.workdir / "model"),
                                      alerts_per_day=opts.alerts_per_day, seed=opts.seed)
        model_dir = opts.workdir / "model"
        console.print(f"model {result.exported.version}: validation AUC {result.metrics['validation_auc']:.3f}, "
                      f"threshold {result.threshold:.4f} ({opts.alerts_per_day:g} alerts/day budget)")
    else:
        model_dir = opts.model
    plan = plan_replay(raw, start, end)
    console.print(f"replay: {plan.n_transactions:,} transactions, {plan.n_labels:,} labels")

    with EmbeddedBroker(log_path=opts.workdir / "logs" / "broker.log") as broker, MotoServer() as moto:
        kafka_io.ensure_topics(broker.bootstrap_servers, [TRANSACTIONS_TOPIC, LABELS_TOPIC, ALERTS_TOPIC,
                                                          QUARANTINE_TOPIC])
        resources = ensure_local_resources(moto.endpoint_url)
        os.environ.update(resources.lambda_environment())
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "fraud-alerts")
        os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon locally
        console.print(f"embedded stack: Kafka {broker.bootstrap_servers}, AWS APIs (moto) {moto.endpoint_url}")
        drain = _SqsDrain(resources.alerts_queue_url, moto.endpoint_url, resources.region)
        drain.start()
        job = _start_job(opts, broker.bootstrap_servers, model_dir, bootstrap)
        job_log = opts.workdir / "logs" / "streaming_job.log"
        poller = None
        lambda_log = open(opts.workdir / "logs" / "alert_lambda.log", "a")  # noqa: SIM115 - closed below
        stack = contextlib.ExitStack()
        try:
            with console.status("starting the Spark streaming job"):
                _wait(lambda: (opts.workdir / "checkpoints" / "ready.json").exists(), 300, "the job to start",
                      job, job_log)
            from frauddetect.alerts import explain_msk_record

            # The handler's Powertools Logger and EMF metrics write to stdout, as on Lambda; here they go to
            # a log file so that stdout stays the summary's. Imported under the redirect on purpose: the
            # log handler binds the stream it sees at import.
            stack.enter_context(contextlib.redirect_stdout(lambda_log))
            from lambdas.alert_handler import app as alert_app

            poller = MskPoller(
                bootstrap_servers=broker.bootstrap_servers,
                handler=alert_app.handler,
                explain=explain_msk_record,
                dead_letter=resources.alerts_dlq_url,
            )
            poller.start()
            producer = Producer(kafka_io.producer_config(broker.bootstrap_servers, **{"linger.ms": 5}))
            with _progress() as progress:
                task = progress.add_task("producing transactions", total=plan.n_transactions)
                stats = produce_replay(plan, producer, rate=opts.rate,
                                       on_progress=lambda n: progress.advance(task, n))
                scored_task = progress.add_task("scored or quarantined", total=plan.n_transactions)

                def done() -> bool:
                    p = _latest_progress(opts.workdir / "checkpoints")
                    seen = p["counts"]["transactions"] if p else 0
                    progress.update(scored_task, completed=seen)
                    return seen >= stats.transactions

                _wait(done, opts.timeout_s, "the stream to score every transaction", job, job_log)
                final = _latest_progress(opts.workdir / "checkpoints")
                n_alerts = final["counts"]["alerts"]
                sns_task = progress.add_task("alerts delivered through SNS", total=n_alerts)

                def delivered() -> bool:
                    progress.update(sns_task, completed=len(drain.messages))
                    return len(drain.messages) >= n_alerts and poller.stats.records_seen >= n_alerts

                _wait(delivered, 120, "every alert to reach SNS")
        finally:
            if poller is not None:
                poller.stop()
            stack.close()
            lambda_log.close()
            _stop_job(job)
            drain.stop_event.set()
            drain.join(5)
        while drain.poll_once(wait=0):  # anything that arrived late (a duplicate would show here)
            pass
        summary = _summary(opts, raw, stats, drain, final)
    return summary


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def _summary(opts: DemoOptions, raw: pd.DataFrame, stats, drain: _SqsDrain, final: dict) -> dict:
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
    produced = scored.set_index("transaction_id")["produced_at"]
    lat = []
    for m in drain.messages.values():
        tid = (m.get("MessageAttributes", {}).get("transaction_id") or {}).get("Value")
        if tid in produced.index:
            lat.append((pd.Timestamp(m["Timestamp"]) - produced[tid]).total_seconds() * 1000)
    summary = {
        "transactions": int(stats.transactions),
        "scored": int(len(scored)),
        "quarantined": int(len(q_tx)),
        "alerts": int(len(alerts)),
        "sns_messages": int(len(drain.messages)),
        "throughput_tps": round(stats.transactions / elapsed, 1),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if lat else None,
        "auc": round(float(roc_auc_score(y, ev["score"])), 4) if both else None,
        "average_precision": round(float(average_precision_score(y, ev["score"])), 4) if both else None,
        "card_precision_at_100": round(float(cp), 4) if both else None,
        "model_version": str(scored["model_version"].iloc[0]) if len(scored) else None,
        "lake_uri": (lake.resolve()).as_uri(),
    }
    summary["labels_quarantined"] = int(final["counts"]["labels_quarantined"])
    summary["state_rows"] = int(final["state_rows"])
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
