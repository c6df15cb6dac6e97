"""The model's prequential estimate over several seeds, on the handbook data (run by hand; README "Model").

For each seed, runs :func:`frauddetect.training.prequential_estimate` (what ``frauddetect evaluate`` runs)
on the handbook's test folds (training starts 2018-08-15, 08-08, 08-01, 07-25) and, with
``--validation``, on its model-selection folds (2018-07-11, 07-04, 06-27, 06-20). Prints, per seed, the
mean over folds of AUC ROC, average precision and Card Precision@100, then the mean and std of those means
over seeds next to the best published values, and the slowest fold's training time.

    .venv/bin/python benchmarks/bench_model.py --seeds 0 1 2 [--validation] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from frauddetect.data import load_transactions
from frauddetect.model import ModelConfig
from frauddetect.training import (
    METRICS,
    PUBLISHED_BEST,
    handbook_selection_start,
    prequential_estimate,
)

HANDBOOK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "handbook" / "transactions.parquet"
TEST_START = "2018-08-15"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", default=str(HANDBOOK))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--validation", action="store_true", help="also the model-selection folds")
    p.add_argument("--extra-history-days", type=int, nargs="+", default=list(ModelConfig().extra_history_days))
    p.add_argument("--json", help="write every fold's figures here")
    a = p.parse_args(argv)
    console = Console(stderr=True)
    tx = load_transactions(a.input)
    config = ModelConfig(extra_history_days=tuple(a.extra_history_days))
    starts = {"test": TEST_START}
    if a.validation:
        starts["validation"] = handbook_selection_start(TEST_START).date().isoformat()
    rows = []
    for kind, start in starts.items():
        for seed in a.seeds:
            est = prequential_estimate(tx, start, seed=seed, config=config)
            folds = est.folds.assign(kind=kind, seed=seed)
            rows.append(folds)
            console.print(f"{kind} seed {seed}: " + "  ".join(f"{m} {folds[m].mean():.4f}" for m in METRICS)
                          + f"  (slowest fold {folds['train_seconds'].max():.0f} s)")
    allf = pd.concat(rows, ignore_index=True)
    if a.json:
        Path(a.json).write_text(allf.to_json(orient="records", indent=1))
    for kind in starts:
        per_seed = allf[allf["kind"] == kind].groupby("seed")[list(METRICS)].mean()
        table = Table(title=f"{kind} folds from {starts[kind]}: mean over 4 folds, then over {len(per_seed)} seeds")
        for col in ("metric", "mean over seeds", "std over seeds", "min seed", "published best"):
            table.add_column(col)
        for m in METRICS:
            table.add_row(m, f"{per_seed[m].mean():.4f}", f"{per_seed[m].std(ddof=0):.4f}",
                          f"{per_seed[m].min():.4f}", f"{PUBLISHED_BEST[m][0]:.3f} ({PUBLISHED_BEST[m][1]})")
        Console(width=140).print(table)
    print(json.dumps({"slowest_fold_train_seconds": float(allf["train_seconds"].max())}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
