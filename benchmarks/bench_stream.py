"""Streaming benchmark (run by hand, not a test): sustained throughput and paced latency of the embedded
stack on the handbook window, side by side with the handbook's own reference feature method.

    .venv/bin/python benchmarks/bench_stream.py --input ../shared/data/handbook/transactions.parquet

1. throughput: ``frauddetect demo`` streams 2018-08-01..2018-09-04 (~335k transactions, state seeded from
   the 38 days before) as fast as possible; transactions / (last scored - first produced);
2. latency: the same stack paced at ``--rate`` (1,000 tx/s) over ``--paced-days`` days; produce -> SNS
   publish p50/p99 of the alerts;
3. features offline on the same rows (window + history): the handbook's method (pandas group-by rolling,
   ``handbook_reference.py``) against ``frauddetect.features.offline_features``.
Prints one JSON object (and writes it to ``--out`` if given).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handbook_reference import handbook_features  # noqa: E402

from frauddetect.data import canonical  # noqa: E402
from frauddetect.features import offline_features  # noqa: E402

KEYS = ("transactions", "scored", "quarantined", "alerts", "sns_messages", "throughput_tps", "latency_ms_p50",
        "latency_ms_p99", "state_rows", "auc", "average_precision", "card_precision_at_100")


def run_demo(workdir: Path, *args: str) -> dict:
    """One ``frauddetect demo --json`` run in its own process (as a user runs it: the alert Lambda's
    module-level AWS clients bind the endpoints of the process's first stack)."""
    cmd = [sys.executable, "-m", "frauddetect", "demo", "--workdir", str(workdir), "--no-dbt", "--json", *args]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--start", default="2018-08-01")
    ap.add_argument("--end", default="2018-09-04")
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--paced-days", type=int, default=2)
    ap.add_argument("--max-offsets-per-trigger", type=int, default=100_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "latency", "reference"])
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    report: dict = {"window": f"{args.start}..{args.end}"}

    model = None
    if "throughput" not in args.skip:
        s = run_demo(work / "throughput", "--input", args.input, "--start", args.start, "--end", args.end,
                     "--max-offsets-per-trigger", str(args.max_offsets_per_trigger))
        report["throughput_run"] = {k: s.get(k) for k in KEYS}
        model = work / "throughput" / "model"
    if "latency" not in args.skip:
        end = (pd.Timestamp(args.start) + pd.Timedelta(days=args.paced_days - 1)).strftime("%Y-%m-%d")
        s = run_demo(work / "latency", "--input", args.input, "--start", args.start, "--end", end,
                     "--rate", str(args.rate), "--max-offsets-per-trigger", str(args.max_offsets_per_trigger),
                     *(["--model", str(model)] if model else []))
        report["paced_run"] = {"rate_tps": args.rate, **{k: s.get(k) for k in KEYS}}
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
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
