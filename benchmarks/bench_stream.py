"""Streaming benchmark (run by hand, not a test): the Spark job's sustained throughput, paced latency, state
written per micro-batch and the driver's share of the CPU, on the handbook data, side by side with the
handbook's own reference feature method.

    .venv/bin/python benchmarks/bench_stream.py --input ../shared/data/handbook/transactions.parquet

1. throughput: ``frauddetect demo`` streams 2018-08-01..2018-09-04 (~335k transactions, state seeded from the
   days before) on ``--spark-master`` (default ``local-cluster[2,1,1024]``: two executor JVMs) as fast as
   possible. Reported: end to end (transactions / (last scored - first produced)) and the job's own rate
   (transactions / summed micro-batch durations, the first micro-batch left out: it loads the initial state
   and starts the Python workers). Every process of the run is sampled (psutil, 0.5 s): CPU seconds of the
   driver (the job's Python process and its JVM), of the executors (executor JVMs and their Python workers)
   and of the rest (broker, moto, producer, Lambda pollers). Spark's checkpoint is then read for the bytes
   each micro-batch wrote to the state store (RocksDB changelog files) against the state's size (RocksDB
   SST files, from the query's progress);
2. latency: the same stack paced at ``--rate`` (1,000 tx/s) over ``--paced-days`` days; produce -> SNS
   publish p50/p99 of the alerts;
3. scaling: the handbook week 2018-08-15..21 on ``local-cluster`` with 1 and with 2 executors;
4. features offline on the same rows as 1. (window + history): the handbook's method (pandas group-by
   rolling, ``handbook_reference.py``) against ``frauddetect.features.offline_features``.
Prints one JSON object (and writes it to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handbook_reference import handbook_features  # noqa: E402

from frauddetect.data import canonical  # noqa: E402
from frauddetect.features import offline_features  # noqa: E402

KEYS = ("transactions", "scored", "quarantined", "alerts", "sns_messages", "throughput_tps", "latency_ms_p50",
        "latency_ms_p99", "micro_batches", "state_rows", "state_store", "spark_master", "auc",
        "average_precision", "card_precision_at_100", "duplicate_transaction_ids_in_lake")
JOB_ENTRIES = ("streaming_job.py", "frauddetect.stream.job")


def role(proc: psutil.Process, roles: dict[int, str]) -> str:
    """``driver`` (the job's Python process, its JVM and, under ``local[N]``, the JVM's Python workers),
    ``executor`` (an executor JVM and its Python workers) or ``stack`` (everything else of the run)."""
    try:
        cmd = " ".join(proc.cmdline())
        parent = proc.ppid()
    except psutil.Error:
        return "stack"
    if "CoarseGrainedExecutorBackend" in cmd:
        return "executor"
    if any(entry in cmd for entry in JOB_ENTRIES):
        return "driver"
    return roles.get(parent, "stack")


class CpuSampler:
    """CPU seconds (user + system) of a process tree by :func:`role`, sampled every ``interval`` s until
    :meth:`stop`; a process's last sample counts (one that lives under ``interval`` is missed)."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.root, self.interval = psutil.Process(pid), interval
        self.cpu: dict[tuple[int, float], tuple[str, float]] = {}
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            for p in sorted(procs, key=lambda p: p.pid if p.pid else 0):
                try:
                    r = self.roles.setdefault(p.pid, role(p, self.roles))
                    t = p.cpu_times()
                    self.cpu[(p.pid, p.create_time())] = (r, t.user + t.system)
                except psutil.Error:
                    continue
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        by_role: dict[str, float] = defaultdict(float)
        for r, seconds in self.cpu.values():
            by_role[r] += seconds
        total = sum(by_role.values())
        spark = by_role["driver"] + by_role["executor"]
        return {"cpu_s": {k: round(v, 1) for k, v in sorted(by_role.items())},
                "driver_share_of_spark_cpu": round(by_role["driver"] / spark, 3) if spark else None,
                "driver_share_of_all_cpu": round(by_role["driver"] / total, 3) if total else None}


def run_demo(workdir: Path, *args: str, timeout: float = 7200) -> tuple[dict, dict]:
    """One ``frauddetect demo --json`` run in its own process, as a user runs it; returns (its summary, the
    CPU by role)."""
    cmd = [sys.executable, "-m", "frauddetect", "demo", "--workdir", str(workdir), "--no-dbt", "--json",
           "--timeout", str(timeout), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    sampler = CpuSampler(proc.pid)
    out, _ = proc.communicate()
    cpu = sampler.stop()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), cpu


def query_events(workdir: Path) -> list[dict]:
    path = workdir / "checkpoints" / "query_progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def job_rate(events: list[dict]) -> dict:
    """The job's own transaction rate: transactions read / summed micro-batch durations, batch 0 left out."""
    def tx_rows(e):
        return int(e["sources"][0]["numInputRows"])  # the transactions source is first in the plan

    later = [e for e in events if e["batchId"] > 0 and tx_rows(e) > 0]
    seconds = sum(e["durationMs"]["triggerExecution"] for e in later) / 1000
    durations = [e["durationMs"]["triggerExecution"] / 1000 for e in later]
    first = [e for e in events if e["batchId"] == 0]
    return {"job_tps_after_batch_0": round(sum(tx_rows(e) for e in later) / seconds, 1) if seconds else None,
            "batch_0_s": round(first[0]["durationMs"]["triggerExecution"] / 1000, 1) if first else None,
            "batch_s_p50": round(float(np.median(durations)), 2) if durations else None,
            "batch_s_max": round(max(durations), 2) if durations else None,
            "transactions_per_batch_p50": int(np.median([tx_rows(e) for e in later])) if later else None}


def state_writes(workdir: Path, events: list[dict]) -> dict:
    """Bytes each micro-batch wrote to the state store (its RocksDB changelog files, all operators and
    partitions: version v is batch v - 1) against the state's size after it (RocksDB SST files of all
    operators, from the query's progress); snapshot files (written in the background) are totalled apart."""
    state_dir = workdir / "checkpoints" / "spark" / "state"
    changelog: dict[int, int] = defaultdict(int)
    snapshot_bytes = 0
    for f in state_dir.rglob("*"):
        if f.is_file() and f.suffix == ".changelog" and f.stem.isdigit():
            changelog[int(f.stem) - 1] += f.stat().st_size
        elif f.is_file() and (f.suffix in (".zip", ".sst")):
            snapshot_bytes += f.stat().st_size
    size = {e["batchId"]: sum(int(op.get("customMetrics", {}).get("rocksdbSstFileSize", 0))
                              for op in e.get("stateOperators", [])) for e in events}
    ratios = [changelog[b] / size[b] for b in sorted(changelog) if b > 0 and size.get(b)]
    last = max(size) if size else None
    return {"changelog_bytes_per_batch_p50": int(np.median([changelog[b] for b in changelog if b > 0]))
            if len(changelog) > 1 else None,
            "changelog_bytes_batch_0": changelog.get(0),
            "state_sst_bytes_at_end": size.get(last) if last is not None else None,
            "state_rows_at_end": sum(int(op.get("numRowsTotal", 0)) for op in events[-1].get("stateOperators", []))
            if events else None,
            "written_share_of_state_p50": round(float(np.median(ratios)), 4) if ratios else None,
            "written_share_of_state_max": round(max(ratios), 4) if ratios else None,
            "snapshot_and_sst_bytes_retained": snapshot_bytes}


def days_after(day: str, days: int) -> str:
    return (pd.Timestamp(day) + pd.Timedelta(days=days)).strftime("%Y-%m-%d")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--start", default="2018-08-01")
    ap.add_argument("--end", default="2018-09-04")
    ap.add_argument("--spark-master", default="local-cluster[2,1,1024]")
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--paced-days", type=int, default=2)
    ap.add_argument("--scaling-start", default="2018-08-15")
    ap.add_argument("--scaling-end", default="2018-08-21")
    ap.add_argument("--model", help="an exported model to use (default: the throughput run trains one)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "latency", "scaling", "reference"])
    ap.add_argument("--workdir", help="where the runs go (default: a new temporary folder)")
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-stream-"))
    report: dict = {"window": f"{args.start}..{args.end}", "cpus": psutil.cpu_count()}

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))

    model = [] if not args.model else ["--model", args.model]
    if "throughput" not in args.skip:
        run = work / "throughput"
        s, cpu = run_demo(run, "--input", args.input, "--start", args.start, "--end", args.end,
                          "--spark-master", args.spark_master, *model)
        events = query_events(run)
        report["throughput_run"] = {**{k: s.get(k) for k in KEYS}, **job_rate(events), **cpu,
                                    "state": state_writes(run, events)}
        model = model or ["--model", str(run / "model")]
        save()
    if "latency" not in args.skip:
        s, cpu = run_demo(work / "latency", "--input", args.input, "--start", args.start,
                          "--end", days_after(args.start, args.paced_days - 1), "--rate", str(args.rate),
                          "--spark-master", args.spark_master, *model)
        report["paced_run"] = {"rate_tps": args.rate, **{k: s.get(k) for k in KEYS},
                               **job_rate(query_events(work / "latency")), **cpu}
        model = model or ["--model", str(work / "latency" / "model")]
        save()
    if "scaling" not in args.skip:
        report["scaling"] = {}
        for executors in (1, 2):
            run = work / f"scaling-{executors}"
            master = f"local-cluster[{executors},1,1024]"
            s, cpu = run_demo(run, "--input", args.input, "--start", args.scaling_start, "--end", args.scaling_end,
                              "--spark-master", master, *model)
            report["scaling"][master] = {**{k: s.get(k) for k in ("transactions", "scored", "throughput_tps",
                                                                  "micro_batches")},
                                         **job_rate(query_events(run)), **cpu}
            model = model or ["--model", str(run / "model")]
            save()
    if "reference" not in args.skip:
        raw = pd.read_parquet(args.input)
        raw = raw[(raw["TX_DATETIME"] >= pd.Timestamp(args.start) - pd.Timedelta(days=38))
                  & (raw["TX_DATETIME"] < pd.Timestamp(args.end) + pd.Timedelta(days=1))]
        t0 = time.perf_counter()
        handbook_features(raw)
        t_ref = time.perf_counter() - t0
        tx = canonical(raw)
        t0 = time.perf_counter()
        offline_features(tx)
        t_ours = time.perf_counter() - t0
        report["offline_features_same_rows"] = {
            "rows": len(raw),
            "handbook_pandas_rolling_s": round(t_ref, 1), "handbook_pandas_rolling_tps": round(len(raw) / t_ref),
            "frauddetect_offline_s": round(t_ours, 1), "frauddetect_offline_tps": round(len(raw) / t_ours),
        }
    print(json.dumps(report), flush=True)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
