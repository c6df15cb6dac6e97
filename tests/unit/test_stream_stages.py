"""The streaming job's stages as logic: validation, late and future-dated events, duplicates, labels (applied,
waiting, expired, duplicate, superseded), scores and alerts, and that micro-batches give the offline features.

Driven through the real stage functions and operators by ``stream_harness.LocalJob`` (no Spark)."""

import json

import numpy as np
import pandas as pd
import pytest
from stream_harness import AmountScorer, LocalJob, kafka_records, label, transaction

from frauddetect.features import FEATURE_COLUMNS, NO_LABEL, offline_features, to_epoch_us
from frauddetect.schemas import parse_labels, parse_transactions
from frauddetect.stream.parse import parse_transaction_records
from frauddetect.stream.records import LABEL, QUARANTINE, TRANSACTION

pytestmark = pytest.mark.unit

DAY_MS = 86_400_000


def ms(iso: str) -> int:
    return int(pd.Timestamp(iso).value // 1_000_000)


def tx_batch(rows, start_offset=0, partition=0):
    """Transactions records from (tid, iso time, amount, customer, terminal); Kafka timestamp = event time."""
    values = [transaction(t, w, a, c, m) for t, w, a, c, m in rows]
    return kafka_records(values, "transactions", partition, start_offset, [ms(w) for _, w, *_ in rows])


def kinds(result, kind):
    rows = result["rows"]
    return rows[rows["kind"] == kind]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (json.dumps({"transaction_id": "x", "tx_datetime": "2018-08-01T00:00:00Z", "customer_id": "c",
                     "terminal_id": "t"}).encode(), "tx_amount: Field required"),
        (transaction("x", "2018-08-01T00:00:00Z", amount="twelve"), "tx_amount: Input should be a valid decimal"),
        (transaction("x", "2018-08-01T00:00:00Z", amount=-1), "tx_amount: Input should be greater than or equal to 0"),
        (b'{"transaction_id":"x","tx_datetime":"2018-08-01T00:00:00Z","customer_id":"c","terminal_id":"t",'
         b'"tx_amount":NaN}', "tx_amount: Input should be a finite number"),
        (transaction("x", "2018-08-01T00:00:00+02:00"), "timestamp must be in UTC"),
        (transaction("x", "2018-08-01T00:00:00"), "tx_datetime: Input should have timezone info"),
        (transaction("x", "yesterday"), "tx_datetime: Input should be a valid datetime"),
        (transaction(12345, "2018-08-01T00:00:00Z"), "transaction_id: Input should be a valid string"),
        (transaction("x", "2018-08-01T00:00:00Z", amount="1" * 40), "tx_amount: Decimal input should have no more than 38"),
        (None, "empty value (tombstone)"),
        # the state packs ids joined by a control character: one inside an id would split it in two
        (transaction("a\x1fb", "2018-08-01T00:00:00Z"), "transaction_id: Value error, must not contain control"),
    ],
)
def test_bad_transactions_are_rejected_with_a_reason(value, reason):
    valid, rejected = parse_transactions([value])
    assert valid.empty
    assert len(rejected) == 1 and reason in rejected[0][1]


def test_extra_fields_are_ignored_and_values_converted():
    valid, rejected = parse_transactions([transaction("a", "2018-08-01T12:00:00.5Z", amount="85.64999999999999",
                                                      mcc="5411")])
    assert rejected == []
    row = valid.iloc[0]
    assert row["time_us"] == pd.Timestamp("2018-08-01T12:00:00.5Z").value // 1000
    assert row["tx_amount"] == 85.64999999999999


def test_labels_need_utc_binary_verdicts_and_their_terminal_and_card():
    valid, rejected = parse_labels([
        label("a", 1, "2018-08-08T00:00:00Z"),
        label("a", 1, "2018-08-08T00:00:00"),
        label("a", 2, "2018-08-08T00:00:00Z"),
        json.dumps({"transaction_id": "a", "tx_fraud": 1, "labeled_at": "2018-08-08T00:00:00Z",
                    "source": "analyst"}).encode(),
    ])
    assert valid[["transaction_id", "terminal_id", "customer_id"]].values.tolist() == [["a", "t1", "c1"]]
    assert len(rejected) == 3
    assert "terminal_id: Field required" in rejected[2][1] and "customer_id: Field required" in rejected[2][1]


def test_a_future_dated_transaction_is_quarantined_and_never_counts_for_the_watermark():
    records = tx_batch([("ok", "2018-08-01T10:00:00Z", 10.0, "c1", "t1")])
    bogus = kafka_records([transaction("f", "2030-01-01T00:00:00Z")], "transactions", 0, 1,
                          [ms("2018-08-01T10:00:05Z")])
    parsed = parse_transaction_records(pd.concat([records, bogus], ignore_index=True), 300 * 1_000_000)
    bad = parsed[parsed["kind"] == QUARANTINE].iloc[0]
    assert bad["kafka_offset"] == 1
    assert bad["reason"].startswith("tx_datetime: 2030-01-01T00:00:00Z is ") and \
        "ahead of the record's Kafka timestamp 2018-08-01T10:00:05Z (allowed clock skew 300 s)" in bad["reason"]
    assert pd.isna(bad["event_time"])  # withWatermark skips it
    assert parsed.loc[parsed["kind"] == TRANSACTION, "event_time"].notna().all()


def test_future_dated_transactions_do_not_make_the_next_ones_late():
    job = LocalJob(allowed_lateness_s=3600)
    bogus = kafka_records([transaction("f", "2030-01-01T00:00:00Z")], "transactions", 0, 0,
                          [ms("2018-08-01T10:00:00Z")])
    first = job.run(pd.concat([bogus, tx_batch([("a", "2018-08-01T10:00:00Z", 10.0, "c1", "t1")], 1)],
                              ignore_index=True))
    second = job.run(tx_batch([("b", "2018-08-01T10:05:00Z", 10.0, "c2", "t2")], 2))
    assert kinds(first, QUARANTINE)["reason"].str.contains("ahead of the record's Kafka timestamp").tolist() == [True]
    assert kinds(second, TRANSACTION)["transaction_id"].tolist() == ["b"]  # scored, not late
    assert job.watermark_ms() == ms("2018-08-01T09:05:00Z")


def test_records_without_a_kafka_timestamp_are_not_checked_for_the_future():
    records = kafka_records([transaction("x", "2030-01-01T00:00:00Z")], "transactions")
    records["timestampType"] = -1
    parsed = parse_transaction_records(records, 0)
    assert parsed["kind"].tolist() == [TRANSACTION]


def test_bad_records_are_quarantined_and_the_batch_goes_on():
    job = LocalJob()
    records = kafka_records([transaction("a", "2018-08-01T00:00:00Z", 150.0), b"garbage",
                             transaction("b", "2018-08-01T00:01:00Z")], "transactions",
                            timestamps_ms=[ms("2018-08-01T00:00:00Z")] * 3)
    result = job.run(records)
    scored = result["lake"]["scored_transactions"].set_index("transaction_id")
    assert sorted(scored.index) == ["a", "b"]
    q = result["lake"]["quarantine"].iloc[0]
    assert q["value"] == "garbage" and q["kafka_offset"] == 1 and "Invalid JSON" in q["reason"]
    assert q["event_date"] == "2018-08-01"  # from the record's Kafka timestamp: a replay writes the same partition
    assert bool(scored.loc["a", "alert"]) and not bool(scored.loc["b", "alert"])  # 150 -> 0.99, 10 -> 0.0001
    alert = result["lake"]["alerts"].iloc[0]
    assert alert["transaction_id"] == "a" and alert["threshold"] == 0.5
    assert alert["tx_datetime"].startswith("2018-08-01T00:00:00")


def test_duplicates_on_the_same_card_are_quarantined_within_and_across_batches():
    job = LocalJob()
    first = job.run(tx_batch([("a", "2018-08-01T00:00:00Z", 10.0, "c1", "t1"),
                              ("a", "2018-08-01T00:00:05Z", 10.0, "c1", "t1"),
                              ("a", "2018-08-01T00:00:07Z", 10.0, "c2", "t1")]))
    second = job.run(tx_batch([("a", "2018-08-01T00:10:00Z", 10.0, "c1", "t1")], 3))
    assert kinds(first, TRANSACTION)["customer_id"].tolist() == ["c1", "c2"]  # another card's "a" is another one
    assert kinds(first, QUARANTINE)["reason"].tolist() == ["duplicate transaction_id"]
    assert kinds(second, QUARANTINE)["reason"].tolist() == ["duplicate transaction_id"]
    q = kinds(second, QUARANTINE).iloc[0]
    assert json.loads(q["raw_value"])["tx_datetime"] == "2018-08-01T00:10:00.000000Z"


def test_ids_that_join_to_the_same_string_are_different_transactions():
    # card "63" + transaction "4307" and card "6" + transaction "34307" spell the same string: a real pair
    # in a simulated month, where the second was once quarantined as a duplicate of the first
    job = LocalJob(card_shards=1, terminal_shards=1)
    job.run(tx_batch([("4307", "2018-08-01T00:00:00Z", 10.0, "63", "12")]))
    result = job.run(tx_batch([("34307", "2018-08-01T01:00:00Z", 10.0, "6", "1"),
                               ("4308", "2018-08-01T01:00:01Z", 10.0, "63", "12")], 1))  # both cards read
    assert sorted(kinds(result, TRANSACTION)["transaction_id"]) == ["34307", "4308"]
    assert kinds(result, QUARANTINE).empty
    # terminal "1" + transaction "23" is not terminal "12" + transaction "3": the label waits for its own
    job.run(tx_batch([("3", "2018-08-01T02:00:00Z", 10.0, "c9", "12")], 3))
    labelled = job.run(labels=kafka_records([label("23", 1, "2018-08-08T00:00:00Z", terminal="1", customer="c9")],
                                            "labels"))
    assert kinds(labelled, LABEL).empty and kinds(labelled, QUARANTINE).empty


def test_transactions_older_than_the_watermark_are_quarantined_as_late():
    job = LocalJob(allowed_lateness_s=3600)
    job.run(tx_batch([("a", "2018-08-02T12:00:00Z", 10.0, "c1", "t1")]))
    result = job.run(tx_batch([("b", "2018-08-02T11:30:00Z", 10.0, "c2", "t1"),
                               ("c", "2018-08-02T10:59:59Z", 10.0, "c3", "t1")], 1))
    assert kinds(result, TRANSACTION)["transaction_id"].tolist() == ["b"]  # 30 min behind: within the hour
    reason = kinds(result, QUARANTINE)["reason"].iloc[0]
    assert reason.startswith("late event: older than the watermark 2018-08-02T11:00:00Z")


def test_a_label_is_applied_to_the_transaction_its_terminal_holds_and_written_to_the_lake():
    job = LocalJob()
    job.run(tx_batch([("a", "2018-08-01T00:00:00Z", 10.0, "c1", "t1")]))
    result = job.run(labels=kafka_records([label("a", 1, "2018-08-08T00:00:00Z"),
                                           label("a", 1, "2018-08-08T00:00:00Z", terminal="t2")], "labels"))
    lake = result["lake"]["labels"]
    assert lake[["transaction_id", "tx_fraud", "source"]].values.tolist() == [["a", 1, "chargeback"]]
    assert lake["event_date"].tolist() == ["2018-08-08"]
    # the one routed to the wrong terminal waits: its transaction could still come


def test_a_label_that_arrives_before_its_transaction_waits_and_then_counts():
    job = LocalJob()
    first = job.run(labels=kafka_records([label("a", 1, "2018-08-08T00:00:00Z")], "labels"))
    assert kinds(first, LABEL).empty and kinds(first, QUARANTINE).empty
    job.run(tx_batch([("a", "2018-08-01T00:00:00Z", 10.0, "c1", "t1")]))  # now applied (written to the lake)
    result = job.run(tx_batch([("q", "2018-08-08T06:00:00Z", 10.0, "c2", "t1")], 1))
    q = kinds(result, TRANSACTION).iloc[0]
    assert q["terminal_id_nb_tx_1day_window"] == 1 and q["terminal_id_risk_1day_window"] == 1.0


def test_a_waiting_label_is_quarantined_once_the_watermark_passes_its_labeled_at():
    job = LocalJob(allowed_lateness_s=3600)
    job.run(tx_batch([("a", "2018-08-01T00:00:00Z", 10.0, "c1", "t1")]),
            labels=kafka_records([label("nope", 1, "2018-08-01T03:00:00Z")], "labels"))
    # watermarks of the next batches: 07-31 23:00, 08-01 02:30 (newest event of earlier batches minus 1 h)
    for i, when in enumerate(("2018-08-01T03:30:00Z", "2018-08-01T05:00:00Z"), start=1):
        assert kinds(job.run(tx_batch([(f"b{i}", when, 10.0, f"c{i + 1}", "t1")], i)), QUARANTINE).empty
    gone = job.run(tx_batch([("d", "2018-08-01T05:01:00Z", 10.0, "c9", "t1")], 3))  # watermark 04:00
    assert kinds(gone, QUARANTINE)["reason"].tolist() == [
        "label for an unknown transaction: no such transaction on this terminal in the last 37 days, "
        "and the watermark has passed the label's labeled_at"]
    assert json.loads(kinds(gone, QUARANTINE)["raw_value"].iloc[0])["transaction_id"] == "nope"


def test_a_repeated_label_is_quarantined_as_a_duplicate_and_a_later_one_replaces_it():
    job = LocalJob()
    job.run(tx_batch([("a", "2018-08-01T00:00:00Z", 10.0, "c1", "t1")]))
    first = job.run(labels=kafka_records([label("a", 1, "2018-08-08T00:00:00Z")], "labels"))
    again = job.run(labels=kafka_records([label("a", 1, "2018-08-08T00:00:00Z"),
                                          label("a", 0, "2018-08-08T06:00:00Z", source="analyst:x"),
                                          label("a", 1, "2018-08-08T03:00:00Z", source="late feed")],
                                         "labels", start_offset=1))
    assert len(first["lake"]["labels"]) == 1
    assert kinds(again, QUARANTINE)["reason"].tolist() == ["duplicate label: the transaction already has this label"]
    assert sorted(again["lake"]["labels"]["source"]) == ["analyst:x", "late feed"]  # both are label events
    # the verdict of 06:00 is the transaction's label from then on: not a fraud for a row at 07:00 ...
    late = job.run(tx_batch([("q", "2018-08-08T07:00:00Z", 10.0, "c2", "t1")], 1))
    assert kinds(late, TRANSACTION).iloc[0]["terminal_id_risk_1day_window"] == 0.0


def test_a_scoring_failure_fails_the_batch_instead_of_scoring_not_fraud():
    class Broken(AmountScorer):
        def score(self, x):
            raise RuntimeError("endpoint unavailable")

    with pytest.raises(RuntimeError, match="endpoint unavailable"):
        LocalJob(scorer=Broken()).run(tx_batch([("a", "2018-08-01T00:00:00Z", 10.0, "c1", "t1")]))


def test_a_recovered_scoring_failure_is_retried_and_counted(caplog):
    from frauddetect.stream.score import score_rows

    class Flaky(AmountScorer):
        calls = 0

        def score(self, x):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("endpoint throttled")
            return super().score(x)

    job = LocalJob()
    rows = job.run(tx_batch([("a", "2018-08-01T00:00:00Z", 150.0, "c1", "t1")]))["rows"]
    rescored = score_rows(rows[rows["kind"] == TRANSACTION].drop(columns=["score", "alert"]), Flaky(), 0.5, retries=2)
    assert rescored.loc[rescored["kind"] == "stats"].set_index("stat")["stat_value"].get("scoring_retries") == 1
    assert rescored.loc[rescored["kind"] == TRANSACTION, "score"].iloc[0] == pytest.approx(1 / (1 + np.exp(-5)))
    assert "scoring 1 rows failed (attempt 1 of 3): endpoint throttled" in caplog.text


def random_stream(n=3000, days=60, seed=7):
    rng = np.random.default_rng(seed)
    times = pd.Timestamp("2018-08-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, days * 86400, n)), unit="s")
    return pd.DataFrame({
        "transaction_id": [f"id{i}" for i in range(n)],
        "tx_datetime": times,
        "customer_id": rng.integers(0, 40, n).astype(str),
        "terminal_id": rng.integers(0, 60, n).astype(str),
        "tx_amount": rng.gamma(2, 30, n).round(2),
        "tx_fraud": (rng.random(n) < 0.05).astype(int),
    })


def replay(tx: pd.DataFrame, job: LocalJob, batch: int, label_lead: int = 0) -> pd.DataFrame:
    """Micro-batches of ``batch`` transactions, each with the labels released (7 days after their
    transaction) by its newest transaction plus ``label_lead`` more transactions: labels run ahead of the
    transactions they are for, as when a capped source reads them faster. Returns the lake's scored rows."""
    iso = tx["tx_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time_us = to_epoch_us(tx["tx_datetime"])
    release = time_us + 7 * 86_400_000_000
    order = np.argsort(release, kind="stable")
    sent_labels, scored = 0, []
    for lo in range(0, len(tx), batch):
        part = tx.iloc[lo:lo + batch]
        horizon = time_us[min(lo + batch + label_lead, len(tx)) - 1]
        upto = int(np.searchsorted(release[order], horizon, side="right"))
        lab = tx.iloc[order[sent_labels:upto]]
        sent_labels = max(sent_labels, upto)
        values = [transaction(t, w, a, c, m) for t, w, a, c, m in zip(part["transaction_id"], iso.iloc[lo:lo + batch],
                                                                      part["tx_amount"], part["customer_id"],
                                                                      part["terminal_id"])]
        records = kafka_records(values, "transactions", 0, lo, [ms(w) for w in iso.iloc[lo:lo + batch]])
        lab_iso = (lab["tx_datetime"] + pd.Timedelta(days=7)).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        labels = kafka_records([label(t, int(f), w, m, c) for t, f, w, m, c in zip(
            lab["transaction_id"], lab["tx_fraud"], lab_iso, lab["terminal_id"], lab["customer_id"])], "labels", 0,
            sent_labels, [ms(w) for w in lab_iso]) if len(lab) else None
        lake = job.run(records, labels)["lake"]
        if "scored_transactions" in lake:
            scored.append(lake["scored_transactions"])
    return pd.concat(scored, ignore_index=True)


@pytest.mark.parametrize(("batch", "label_lead"), [(250, 0), (97, 400)])
def test_micro_batches_give_the_offline_features(batch, label_lead):
    tx = random_stream()
    expected = offline_features(tx).set_index("transaction_id")
    job = LocalJob(allowed_lateness_s=3600)
    got = replay(tx, job, batch, label_lead).set_index("transaction_id")
    assert len(got) == len(tx)
    np.testing.assert_allclose(got[list(FEATURE_COLUMNS)].to_numpy(dtype=float),
                               expected.loc[got.index, list(FEATURE_COLUMNS)].to_numpy(), atol=1e-9)
    held = job.held_rows()
    assert held["card"] < len(tx) and held["terminal"] < len(tx)  # bounded: rows past the watermark are dropped


def test_a_job_seeded_from_history_computes_what_a_continuous_job_computes():
    tx = random_stream(n=2000, days=70, seed=3)
    cut = pd.Timestamp("2018-09-15", tz="UTC")
    continuous = replay(tx, LocalJob(allowed_lateness_s=3600), 200).set_index("transaction_id")
    before = tx[tx["tx_datetime"] < cut]
    known = before["tx_datetime"] + pd.Timedelta(days=7) <= cut
    history = pd.DataFrame({
        "transaction_id": before["transaction_id"], "customer_id": before["customer_id"],
        "terminal_id": before["terminal_id"], "time_us": to_epoch_us(before["tx_datetime"]),
        "tx_amount": before["tx_amount"].astype(float),
        "tx_fraud": np.where(known, before["tx_fraud"], 0).astype(np.int8),
        "labeled_at_us": np.where(known, to_epoch_us(before["tx_datetime"]) + 7 * 86_400_000_000, NO_LABEL),
        "label_source": np.where(known, "bootstrap", None),
    })
    after = tx[tx["tx_datetime"] >= cut].reset_index(drop=True)
    seeded = LocalJob(allowed_lateness_s=3600, history=history)
    # the labels of the history's last week arrive in the stream, as they would after a restart
    pending = before[~known]
    got = replay(pd.concat([pending, after], ignore_index=True), seeded, 200)
    got = got[got["transaction_id"].isin(after["transaction_id"])].set_index("transaction_id")
    assert len(got) == len(after) > 300
    np.testing.assert_allclose(got[list(FEATURE_COLUMNS)].to_numpy(dtype=float),
                               continuous.loc[got.index, list(FEATURE_COLUMNS)].to_numpy(dtype=float), atol=1e-9)


def test_a_steady_stream_writes_a_small_share_of_the_state_per_micro_batch():
    """Appends go to small deltas; a card's history is rewritten only when its delta is merged. Micro-batches
    of a tenth of a day of traffic (what a live stream sees at one micro-batch per second and more)."""
    tx = random_stream(n=6000, days=60, seed=11)  # 100 transactions a day
    job = LocalJob(allowed_lateness_s=3600)
    replay(tx.iloc[:5000], job, 400)

    def entries():
        return {k: v for h in job.card_handles.values() for m in h.maps.values() for k, v in m.data.items()}

    shares = []
    for lo in range(5000, 5200, 10):
        before = entries()
        replay(tx.iloc[lo:lo + 10], job, 10)
        after = entries()
        written = sum(len(v[2]) for k, v in after.items() if before.get(k) != v)
        shares.append(written / sum(len(v[2]) for v in after.values()))
    assert max(shares) < 0.10 and np.mean(shares) < 0.05, shares
