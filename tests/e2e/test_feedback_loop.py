"""The feedback loop closed: analyst verdicts, sent through the real label feedback Lambda handler, reach the
``labels`` topic and change the terminal risk features the streaming job computes for later transactions.

One embedded stack (Tansu, moto, the Spark streaming job with a model trained on simulated history, state
seeded from that history). Phase 1 streams a few transactions on two real terminals of the history; analysts
send verdicts on them as API Gateway HTTP API events to ``lambdas.label_feedback.app.handler`` (in-process,
env pointing at the stack's broker and DynamoDB (moto)); phase 2 streams later transactions on the same
terminals. Their ``terminal_id_risk_{1,7,30}day_window`` in the lake must equal the definition computed here
by hand: frauds among the terminal's transactions with time in (t - 7 - w, t - 7] days whose fraud label
has ``labeled_at`` <= t, over their count (the history's labels, known 7 days after each transaction as
the bootstrap says, plus the verdicts; for a transaction judged twice, the later ``labeled_at`` wins). A
verdict on a transaction the stream never saw waits for it, and is quarantined once the watermark passes its
``labeled_at``.
"""

from __future__ import annotations

import copy
import importlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Producer

from frauddetect import kafka_io
from frauddetect.config import TRANSACTIONS_TOPIC
from frauddetect.data import canonical
from frauddetect.demo import _write_bootstrap
from frauddetect.local_stack import EmbeddedStack, wait_for
from frauddetect.model import ModelConfig
from frauddetect.msk_poller import LocalLambdaContext
from frauddetect.simulator import simulate_transactions
from frauddetect.training import train_and_export

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENT = REPO_ROOT / "tests" / "events" / "apigw_http_verdict_event.json"
APP_MODULE = "lambdas.label_feedback.app"
START = "2018-05-06"  # first streamed day; the simulated history covers 2018-04-01 .. 05-05
DAY = pd.Timedelta(days=1)
DELAY = 7 * DAY
WINDOWS = (1, 7, 30)

# Phase 1, on START: transaction id -> (terminal slot, time of day).
PHASE1 = {
    "fb-a1": ("A", "10:00"), "fb-a2": ("A", "11:00"), "fb-a3": ("A", "12:00"), "fb-a4": ("A", "13:00"),
    "fb-b1": ("B", "10:30"), "fb-b2": ("B", "11:30"), "fb-b3": ("B", "12:30"),
}
# Verdicts, in the order sent: (transaction id, verdict, analyst, labeled_at, times sent).
VERDICTS = [
    ("fb-a1", "fraud", "a.moreau", "2018-05-07T09:00:00Z", 1),
    ("fb-a2", "genuine", "a.moreau", "2018-05-07T09:05:00Z", 1),
    ("fb-a3", "fraud", "j.okafor", "2018-05-13T14:00:00Z", 1),  # later than 7 days: counts from 05-13 14:00
    ("fb-b1", "fraud", "a.moreau", "2018-05-08T10:00:00Z", 3),  # retried: one label
    ("fb-b2", "fraud", "a.moreau", "2018-05-08T10:05:00Z", 1),
    ("fb-b2", "genuine", "j.okafor", "2018-05-09T16:00:00Z", 1),  # a second analyst overturns it
    ("fb-unknown", "fraud", "a.moreau", "2018-05-08T11:00:00Z", 1),  # no such transaction: quarantined
]
# Phase 2: transaction id -> (terminal slot, time). The 1-day window (t - 8 days, t - 7 days] of each holds
# every phase-1 transaction of its terminal; fb-qa1 comes before fb-a3's verdict, fb-qa2 after it.
PHASE2 = {
    "fb-qb1": ("B", "2018-05-13T13:00:00Z"), "fb-qa1": ("A", "2018-05-13T13:30:00Z"),
    "fb-qa2": ("A", "2018-05-13T14:30:00Z"), "fb-qb2": ("B", "2018-05-14T09:00:00Z"),
}
# Known frauds in those 1-day windows (history labels there are not known yet: they come 7 days after
# their transactions, i.e. after START): fb-a1, plus fb-a3 once its late verdict is in; on B only fb-b1,
# since fb-b2's fraud verdict was overturned and fb-a2 was judged genuine.
FRAUDS_1DAY = {"fb-qa1": 1, "fb-qa2": 2, "fb-qb1": 1, "fb-qb2": 1}


def transaction_json(tx_id: str, when: pd.Timestamp, customer: str, terminal: str, amount: float) -> str:
    return json.dumps({"transaction_id": tx_id, "tx_datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "customer_id": customer, "terminal_id": terminal, "tx_amount": amount})


def produce(bootstrap: str, records: list[tuple[str, str]]) -> None:
    producer = Producer(kafka_io.producer_config(bootstrap))
    for key, value in records:
        producer.produce(TRANSACTIONS_TOPIC, key=key, value=value)
    assert producer.flush(30) == 0


def verdict_event(template: dict, tx_id: str, verdict: str, analyst: str, labeled_at: str,
                  alert: tuple[str, str]) -> dict:
    """The API Gateway event of a verdict; ``alert``: the (terminal id, customer id) the alert carried."""
    event = copy.deepcopy(template)
    event["body"] = json.dumps({"transaction_id": tx_id, "terminal_id": alert[0], "customer_id": alert[1],
                                "verdict": verdict, "analyst_id": analyst,
                                "note": "reviewed in the feedback-loop test", "labeled_at": labeled_at})
    return event


def expected_window(history: pd.DataFrame, t: pd.Timestamp, w: int) -> tuple[int, float]:
    """The definition, row by row: (count, risk) of the w-day terminal window of a transaction at ``t``.

    ``history``: one terminal's transactions (``tx_datetime``, ``tx_fraud``, ``labeled_at`` NaT when no
    label has arrived)."""
    lo, hi = t - DELAY - w * DAY, t - DELAY
    count = frauds = 0
    for row in history.itertuples():
        if lo < row.tx_datetime <= hi:
            count += 1
            frauds += row.tx_fraud == 1 and pd.notna(row.labeled_at) and row.labeled_at <= t
    return count, (frauds / count if count else 0.0)


def test_verdicts_change_the_terminal_risk_of_later_transactions(tmp_path, monkeypatch):
    raw = simulate_transactions(n_customers=150, n_terminals=300, n_days=35, seed=7)
    history = canonical(raw)
    bootstrap = tmp_path / "history.parquet"
    _write_bootstrap(history, START, bootstrap)
    model_dir = tmp_path / "model"
    train_and_export(history, str(model_dir), deploy_start=START, alerts_per_day=20, train_days=7,
                     config=ModelConfig(extra_history_days=(0,)))

    # Two busy terminals of the history: their 7- and 30-day windows mix history labels with the verdicts.
    busy = history[history["tx_datetime"] >= pd.Timestamp(START, tz="UTC") - 30 * DAY]["terminal_id"]
    terminal = dict(zip("AB", busy.value_counts().index[:2]))
    start = pd.Timestamp(START, tz="UTC")
    phase1 = {tx: (terminal[slot], start + pd.Timedelta(f"{hhmm}:00")) for tx, (slot, hhmm) in PHASE1.items()}
    phase1_order = sorted(phase1, key=lambda tx: phase1[tx][1])
    customer = {tx: f"fb-cust-{i}" for i, tx in enumerate(phase1_order)}
    # what the alerts of phase 1 tell the analysts; the unknown transaction's "alert" names terminal A
    alert_ids = {tx: (phase1[tx][0], customer[tx]) for tx in phase1} | {"fb-unknown": (terminal["A"], "fb-cust-x")}
    phase2 = {tx: (terminal[slot], pd.Timestamp(when)) for tx, (slot, when) in PHASE2.items()}
    template = json.loads(EVENT.read_text())

    with EmbeddedStack(tmp_path / "run") as stack:
        bootstrap_servers = stack.bootstrap_servers
        stack.start_job(model_dir, state_bootstrap=bootstrap)
        produce(bootstrap_servers, [
            (customer[tx], transaction_json(tx, phase1[tx][1], customer[tx], phase1[tx][0], 25.0 + i))
            for i, tx in enumerate(phase1_order)
        ])
        stack.wait_processed(len(phase1), 300)

        # The real handler, configured as its Lambda would be against the embedded stack.
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers)
        monkeypatch.setenv("IDEMPOTENCY_TABLE", stack.resources.idempotency_table)
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "label-feedback")
        monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
        monkeypatch.delitem(sys.modules, APP_MODULE, raising=False)
        app = importlib.import_module(APP_MODULE)
        try:
            answers = []
            for tx, verdict, analyst, labeled_at, times in VERDICTS:
                for _ in range(times):
                    response = app.handler(verdict_event(template, tx, verdict, analyst, labeled_at, alert_ids[tx]),
                                           LocalLambdaContext("label-feedback"))
                    answers.append((tx, response["statusCode"], json.loads(response["body"])))
            # The same analyst changing their verdict is refused, and publishes nothing.
            conflict = app.handler(verdict_event(template, "fb-b1", "genuine", "a.moreau", "2018-05-09T08:00:00Z",
                                                 alert_ids["fb-b1"]), LocalLambdaContext("label-feedback"))
        finally:
            if app._producer is not None:
                app._producer.flush(10)
                app._producer = None  # no reconnect attempts once the broker is gone
            sys.modules.pop(APP_MODULE, None)
        assert all(status == 202 for _, status, _ in answers), answers
        assert [a["duplicate"] for tx, _, a in answers if tx == "fb-b1"] == [False, True, True]
        assert conflict["statusCode"] == 409
        published = len(VERDICTS)  # one label per verdict: the retries and the conflict published nothing

        wait_for(lambda: (stack.progress() or {}).get("counts", {}).get("labels", 0) >= published, 120,
                 "the stream to read every label", stack.job, stack.job_log)
        counts = stack.progress()["counts"]
        # the label for a transaction the stream has not seen waits: its transaction may still come
        assert (counts["labels"], counts["labels_applied"], counts["labels_quarantined"],
                counts["labels_waiting"]) == (published, 6, 0, 1)

        produce(bootstrap_servers, [
            (f"fb-cust-q{i}", transaction_json(tx, when, f"fb-cust-q{i}", term, 40.0 + i))
            for i, (tx, (term, when)) in enumerate(sorted(phase2.items(), key=lambda kv: kv[1][1]))
        ])
        stack.wait_processed(len(phase1) + len(phase2), 300)
        # a later transaction on terminal A moves the watermark past the unknown label's labeled_at (the newest
        # event time, 05-14 09:00, minus the allowed lateness): only then is it quarantined
        produce(bootstrap_servers, [("fb-cust-late", transaction_json("fb-late", pd.Timestamp("2018-05-14T10:00:00Z"),
                                                                      "fb-cust-late", terminal["A"], 12.0))])
        stack.wait_processed(len(phase1) + len(phase2) + 1, 300)
        counts = stack.progress()["counts"]
        assert (counts["labels_applied"], counts["labels_quarantined"], counts["labels_waiting"]) == (6, 1, 0)
        lake = pd.read_parquet(tmp_path / "run" / "lake" / "scored_transactions")
        quarantine = pd.read_parquet(tmp_path / "run" / "lake" / "quarantine")
        lake_labels = pd.read_parquet(tmp_path / "run" / "lake" / "labels")

    assert sorted(lake_labels["source"]) == sorted(f"analyst:{a}" for tx, _, a, _, _ in VERDICTS
                                                   if tx != "fb-unknown")
    (unknown,) = quarantine[quarantine["source_topic"] == "labels"].to_dict("records")
    assert '"fb-unknown"' in unknown["value"] and unknown["reason"].startswith("label for an unknown transaction")

    # Every transaction of the two terminals with the label the stream should know, by hand.
    boot = pd.read_parquet(bootstrap)
    known = pd.concat([
        boot[["transaction_id", "terminal_id", "tx_datetime", "tx_fraud", "labeled_at"]],
        pd.DataFrame({"transaction_id": list(phase1) + list(phase2),
                      "terminal_id": [t for t, _ in phase1.values()] + [t for t, _ in phase2.values()],
                      "tx_datetime": [w for _, w in phase1.values()] + [w for _, w in phase2.values()]}),
    ], ignore_index=True)
    known["tx_datetime"] = pd.to_datetime(known["tx_datetime"], utc=True)
    known["labeled_at"] = pd.to_datetime(known["labeled_at"], utc=True)
    without_verdicts = known.copy()
    latest: dict[str, tuple[pd.Timestamp, int]] = {}
    for tx, verdict, _, labeled_at, _ in VERDICTS:
        at = pd.Timestamp(labeled_at)
        if tx in phase1 and (tx not in latest or at >= latest[tx][0]):
            latest[tx] = (at, 1 if verdict == "fraud" else 0)
    for tx, (at, fraud) in latest.items():
        known.loc[known["transaction_id"] == tx, ["labeled_at", "tx_fraud"]] = [at, fraud]

    rows = lake.set_index("transaction_id").loc[list(phase2)]
    changed = 0
    for tx, (term, t) in phase2.items():
        for w in WINDOWS:
            count, risk = expected_window(known[known["terminal_id"] == term], t, w)
            assert rows.loc[tx, f"terminal_id_nb_tx_{w}day_window"] == count, (tx, w)
            assert rows.loc[tx, f"terminal_id_risk_{w}day_window"] == pytest.approx(risk, abs=1e-12), (tx, w)
            changed += risk != expected_window(without_verdicts[without_verdicts["terminal_id"] == term], t, w)[1]
    # The 1-day windows hold exactly the verdicts' story (see FRAUDS_1DAY) ...
    frauds = (rows["terminal_id_risk_1day_window"] * rows["terminal_id_nb_tx_1day_window"]).round().astype(int)
    assert frauds.to_dict() == FRAUDS_1DAY
    # ... and every phase-2 row's 1-day risk differs from what the stream computes without the verdicts.
    assert changed >= len(phase2)
