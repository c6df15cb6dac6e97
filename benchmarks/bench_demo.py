"""Benchmark (run by hand, not a test): the demo on a handbook window, with peak memory of all processes.

    .venv/bin/python benchmarks/bench_demo.py --input ../shared/data/handbook/transactions.parquet \
        [--start 2018-08-15 --end 2018-08-21] [--rate N]

Runs ``frauddetect demo --json`` in a child process, samples the resident memory (RSS) of it and of every
descendant (Spark's JVM, Python workers, the Tansu broker) every 0.25 s with psutil, and prints one JSON
line: the demo's summary plus ``peak_rss_mib_all_processes``, ``wall_s`` and the machine's core count.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of ``proc`` and all its descendants (processes that vanish mid-sample are skipped)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--start", default="2018-08-15")
    ap.add_argument("--end", default="2018-08-21")
    ap.add_argument("--rate", type=float)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-demo-")
    cmd = [sys.executable, "-m", "frauddetect", "demo", "--input", args.input, "--start", args.start,
           "--end", args.end, "--workdir", workdir, "--json"]
    if args.rate:
        cmd += ["--rate", str(args.rate)]
    t0 = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        ps = psutil.Process(child.pid)
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(ps))
            except psutil.Error:
                return
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    done.set()
    sampler.join()
    if child.returncode != 0:
        print(f"demo failed with exit code {child.returncode}; logs in {workdir}/logs", file=sys.stderr)
        return child.returncode
    summary = json.loads(out.strip().splitlines()[-1])
    summary.update(
        peak_rss_mib_all_processes=round(peak / 2**20, 1),
        wall_s=round(time.monotonic() - t0, 1),
        cores=os.cpu_count(),
        window=f"{args.start}..{args.end}",
        rate=args.rate,
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
