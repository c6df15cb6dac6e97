"""SageMaker script-mode training entry point (thin: the workflow is ``frauddetect.training``).

SageMaker runs ``python train.py --deploy-start 2018-08-15 ...`` with the training channel mounted at
``SM_CHANNEL_TRAIN`` (Parquet/CSV files in the handbook's raw schema) and uploads ``SM_MODEL_DIR`` as
``model.tar.gz``; the exported SavedModel there is in TF Serving layout (``<version>/saved_model.pb``).
"""

import argparse
import os
from pathlib import Path

import pandas as pd

from frauddetect.data import canonical, read_raw
from frauddetect.training import train_and_export


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="frauddetect SageMaker training")
    p.add_argument("--deploy-start", required=True, help="first day the model will score (YYYY-MM-DD)")
    p.add_argument("--train-days", type=int, default=14)
    p.add_argument("--val-days", type=int, default=7)
    p.add_argument("--alerts-per-day", type=float, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "data"))
    p.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    a = p.parse_args(argv)
    files = sorted(f for f in Path(a.train).iterdir() if f.suffix.lower() in (".parquet", ".csv"))
    if not files:
        raise SystemExit(f"no .parquet or .csv file in {a.train}")
    tx = pd.concat([canonical(read_raw(f)) for f in files], ignore_index=True)
    result = train_and_export(tx, a.deploy_start, a.model_dir, train_days=a.train_days, val_days=a.val_days,
                              alerts_per_day=a.alerts_per_day, seed=a.seed)
    print(f"model {result.exported.version}: {result.metrics}, threshold {result.threshold:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
