"""The running parts of the local system, for the demo and the end-to-end tests.

:class:`EmbeddedStack` starts the embedded Tansu broker and a moto server, creates topics and AWS resources,
runs the Spark streaming job as a child process (``glue_jobs/streaming_job.py``), the real alert Lambda
behind the local MSK poller, and drains the SNS proof-of-delivery queue. Everything is stopped on exit,
also on an exception or Ctrl-C.

Given the ``compose`` stack's settings (:mod:`frauddetect.stacks`), it starts neither broker nor moto: it
connects to the running Apache Kafka and LocalStack instead, and everything else (topic and resource
creation, job, Lambda, poller, drain) is the same code.
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
from pathlib import Path

import boto3

from frauddetect import kafka_io
from frauddetect.config import ALERTS_TOPIC, LABELS_TOPIC, QUARANTINE_TOPIC, TRANSACTIONS_TOPIC
from frauddetect.embedded import EmbeddedBroker, MotoServer, die_with_parent
from frauddetect.stacks import StackNotSupported, StackSettings, check_reachable

log = logging.getLogger("frauddetect.local_stack")
REPO_ROOT = Path(__file__).resolve().parents[1]

TOPIC_PARTITIONS = {TRANSACTIONS_TOPIC: 4, LABELS_TOPIC: 2, ALERTS_TOPIC: 2, QUARANTINE_TOPIC: 2}
"""Partitions of the topics the local stacks create: several, so the job's sources read on several executors."""
DEFAULT_SPARK_MASTER = "local[2]"


class SqsDrain(threading.Thread):
    """Receives every SNS envelope delivered to the proof-of-delivery queue (by SNS ``MessageId``)."""

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

    def finish(self) -> None:
        """Stop the thread, then collect whatever is still queued."""
        self.stop_event.set()
        self.join(5)
        while self.poll_once(wait=0):
            pass


def wait_for(predicate, timeout: float, what: str, job: subprocess.Popen | None = None,
             log_path: Path | None = None, interval: float = 0.2) -> None:
    """Poll ``predicate`` until true; raise TimeoutError after ``timeout`` s, RuntimeError if ``job`` exits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if job is not None and job.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"the streaming job exited ({job.returncode}) while waiting for {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class EmbeddedStack(contextlib.AbstractContextManager):
    """Broker, AWS APIs, streaming job, alert Lambda and delivery proof for one ``workdir``.

    Layout under ``workdir``: ``lake/``, ``checkpoints/`` (Spark's and the job's), ``logs/``.

    ``stack``: where Kafka and the AWS APIs are (:func:`frauddetect.stacks.resolve_stack`); default
    ``embedded`` (started here, on free ports). For ``compose`` the services must be running already;
    entering checks that they answer and names those that do not. Endpoints in use:
    :attr:`bootstrap_servers`, :attr:`aws_endpoint_url`.
    """

    def __init__(self, workdir: Path, stack: StackSettings | None = None):
        self.settings = stack or StackSettings("embedded")
        if self.settings.name not in ("embedded", "compose"):
            raise StackNotSupported(
                f"the local stack runs on the embedded or the compose stack, not on {self.settings.name!r}")
        self.broker: EmbeddedBroker | None = None
        self.moto: MotoServer | None = None
        self.bootstrap_servers: str | None = None
        self.aws_endpoint_url: str | None = None
        self.workdir = Path(workdir)
        self.logs = self.workdir / "logs"
        self.checkpoints = self.workdir / "checkpoints"
        self._exit = contextlib.ExitStack()
        self.job: subprocess.Popen | None = None
        self.poller = None
        self.drain: SqsDrain | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> "EmbeddedStack":
        from frauddetect.resources import ensure_local_resources

        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            if self.settings.starts_services:
                self.broker = self._exit.enter_context(EmbeddedBroker(log_path=self.logs / "broker.log"))
                self.moto = self._exit.enter_context(MotoServer())
                self.bootstrap_servers, self.aws_endpoint_url = self.broker.bootstrap_servers, self.moto.endpoint_url
            else:
                check_reachable(self.settings)  # fails in seconds, naming the service that is missing
                self.bootstrap_servers = self.settings.bootstrap_servers
                self.aws_endpoint_url = self.settings.aws_endpoint_url
            for partitions in sorted(set(TOPIC_PARTITIONS.values())):
                kafka_io.ensure_topics(self.bootstrap_servers,
                                       [t for t, n in TOPIC_PARTITIONS.items() if n == partitions], partitions=partitions)
            self.resources = ensure_local_resources(self.aws_endpoint_url, region=self.settings.region)
            os.environ.update(self.resources.lambda_environment())
            if self.settings.starts_services:
                os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            else:
                # LocalStack derives the account from the access key: the Lambda must use the same dummy
                # credentials that created the resources, never a developer's real ones.
                os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
                os.environ.pop("AWS_SESSION_TOKEN", None)
            os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "fraud-alerts")
            os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon locally
            self.drain = SqsDrain(self.resources.alerts_queue_url, self.aws_endpoint_url, self.resources.region)
            self.drain.start()
            self._exit.callback(self.drain.finish)
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.poller is not None:
                self.poller.stop()
            self.stop_job()
        finally:
            self._exit.close()

    # -- streaming job -----------------------------------------------------------------------------------
    @property
    def job_log(self) -> Path:
        return self.logs / "streaming_job.log"

    def start_job(self, model_dir: Path, *, state_bootstrap: str | Path | None = None,
                  spark_master: str = DEFAULT_SPARK_MASTER, wait_ready: float = 300, **settings) -> subprocess.Popen:
        """Start (or restart, from its checkpoint) the streaming job on ``spark_master``; wait until its query
        runs. ``settings``: further :class:`~frauddetect.stream.config.JobConfig` fields
        (``max_offsets_per_trigger``, ...). Raises RuntimeError if the job exits first."""
        from frauddetect.stream.config import JobConfig

        ready = self.checkpoints / "ready.json"
        ready.unlink(missing_ok=True)
        config = JobConfig(bootstrap_servers=self.bootstrap_servers, lake_uri=str(self.workdir / "lake"),
                           checkpoint_uri=str(self.checkpoints), model_dir=str(model_dir),
                           state_bootstrap=str(state_bootstrap) if state_bootstrap else None, **settings)
        script = REPO_ROOT / "glue_jobs" / "streaming_job.py"
        entry = [str(script)] if script.exists() else ["-m", "frauddetect.stream.job"]
        cmd = [sys.executable, *entry, *config.to_argv(), "--master", spark_master]
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
               "SPARK_LOCAL_IP": "127.0.0.1"}
        # Own session: Ctrl-C reaches only this process, which stops the job gracefully, and a kill of the
        # job's process group takes its JVMs and workers with it; PDEATHSIG covers a parent killed outright.
        in_main = threading.current_thread() is threading.main_thread()
        with open(self.job_log, "ab") as out:
            self.job = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                        preexec_fn=die_with_parent if in_main else None)
        wait_for(ready.exists, wait_ready, "the streaming job to start", self.job, self.job_log)
        return self.job

    def stop_job(self, timeout: float = 180) -> None:
        """Stop the job gracefully (SIGTERM: the current micro-batch completes), SIGKILL after ``timeout``."""
        job = self.job
        if job is None or job.poll() is not None:
            return
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_job()

    def kill_job(self) -> None:
        """SIGKILL the job's whole process group (driver, JVM, Python workers): a crash, no clean-up."""
        if self.job is not None and self.job.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.job.pid, signal.SIGKILL)
            self.job.wait(30)

    def progress(self) -> dict | None:
        """The job's cumulative progress after its newest completed micro-batch (None before the first)."""
        files = sorted((self.checkpoints / "progress").glob("batch-*.json"))
        for f in reversed(files):
            with contextlib.suppress(json.JSONDecodeError, FileNotFoundError):
                return json.loads(f.read_text())
        return None

    def query_progress(self) -> list[dict]:
        """Spark's progress events of the job's query, oldest first (every run of the job in this workdir)."""
        path = self.checkpoints / "query_progress.jsonl"
        if not path.exists():
            return []
        events = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
        return events

    def state_summary(self) -> dict | None:
        """What the job read from its state with Spark's State Data Source when it stopped (None before)."""
        path = self.checkpoints / "state_summary.json"
        return json.loads(path.read_text()) if path.exists() else None

    def wait_processed(self, n_transactions: int, timeout: float, on_poll=None) -> dict:
        """Wait until the job has consumed ``n_transactions`` transaction records; returns its progress."""
        def done() -> bool:
            p = self.progress()
            seen = p["counts"]["transactions"] if p else 0
            if on_poll:
                on_poll(seen)
            return seen >= n_transactions

        wait_for(done, timeout, "the stream to score every transaction", self.job, self.job_log)
        return self.progress()

    # -- alert Lambda ------------------------------------------------------------------------------------
    def start_alert_lambda(self):
        """The real alert handler behind a local MSK poller on ``fraud-alerts``; returns the poller."""
        from frauddetect.alerts import explain_msk_record
        from frauddetect.msk_poller import MskPoller

        lambda_log = self._exit.enter_context(open(self.logs / "alert_lambda.log", "a"))  # noqa: SIM115
        # The handler's Powertools Logger and EMF metrics write to stdout, as on Lambda; here they go to a
        # log file so that stdout stays the caller's. Imported under the redirect on purpose: the log handler
        # binds the stream it sees at import.
        self._exit.enter_context(contextlib.redirect_stdout(lambda_log))
        from lambdas.alert_handler import app as alert_app

        self.poller = MskPoller(
            bootstrap_servers=self.bootstrap_servers,
            handler=alert_app.handler,
            explain=explain_msk_record,
            dead_letter=self.resources.alerts_dlq_url,
        )
        self.poller.start()
        return self.poller

    def wait_delivered(self, n_alerts: int, timeout: float = 300, on_poll=None) -> None:
        """Wait until ``n_alerts`` alert records went through the Lambda and as many SNS messages arrived."""
        def delivered() -> bool:
            if on_poll:
                on_poll(len(self.drain.messages))
            return len(self.drain.messages) >= n_alerts and self.poller.stats.records_seen >= n_alerts

        wait_for(delivered, timeout, "every alert to reach SNS")
