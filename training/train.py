"""SageMaker script-mode training entry point (thin: the workflow is ``frauddetect.training``).

SageMaker runs ``python train.py --train-start 2018-08-01 ...`` (or ``--deploy-start``) with the training channel mounted at
``SM_CHANNEL_TRAIN`` (Parquet/CSV files in the handbook's raw schema) and uploads ``SM_MODEL_DIR`` as
``model.tar.gz``; the exported SavedModel there is in TF Serving layout (``<version>/saved_model.pb``).
"""

import argparse
import os
from pathlib import Path

import pandas as pd

from frauddetect.data import canonical, read_raw
from frauddetect.model import ModelConfig
from frauddetect.training import train_and_export


def _days(tokens: list[str]) -> tuple[int, ...]:
    """["0,0,14,14"] or ["0 0", "14", "14"] -> (0, 0, 14, 14); ValueError on a non-integer."""
    return tuple(int(v) for token in tokens for v in token.replace(",", " ").split())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="frauddetect SageMaker training")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--train-start", help="first training day (YYYY-MM-DD)")
    when.add_argument("--deploy-start", help="first day the model will score (YYYY-MM-DD); training ends "
                                             "train-days + 7 label-delay days before it")
    p.add_argument("--train-days", type=int, default=7)
    p.add_argument("--alerts-per-day", type=float, default=100)
    p.add_argument("--seed", type=int, default=0)
    # SageMaker passes each hyperparameter as ONE string ("0,0,14,14" or "0 0 14 14"); a shell user may
    # pass several tokens. Both parse.
    p.add_argument("--extra-history-days", nargs="+", default=[str(d) for d in ModelConfig().extra_history_days],
                   help="per ensemble member: labelled days before the training window it also learns from")
    p.add_argument("--epochs", type=int, default=ModelConfig().epochs)
    p.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "data"))
    p.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    a = p.parse_args(argv)
    # rglob: a channel may hold a partitioned prefix (e.g. event_date=.../part-0.parquet)
    files = sorted(f for f in Path(a.train).rglob("*") if f.is_file() and f.suffix.lower() in (".parquet", ".csv"))
    if not files:
        raise SystemExit(f"no .parquet or .csv file in {a.train}")
    tx = pd.concat([canonical(read_raw(f)) for f in files], ignore_index=True)
    result = train_and_export(tx, a.model_dir, train_start=a.train_start, deploy_start=a.deploy_start,
                              train_days=a.train_days, alerts_per_day=a.alerts_per_day, seed=a.seed,
                              config=ModelConfig(extra_history_days=_days(a.extra_history_days), epochs=a.epochs))
    # SageMaker tars SM_MODEL_DIR into the job's own model.tar.gz, whose layout then equals this archive's
    # (<version>/..., metadata.json); keeping ours inside would ship the model twice.
    result.exported.archive_path.unlink()
    print(f"model {result.exported.version}: {result.metrics}, threshold {result.threshold:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
