"""The ``frauddetect`` command line (also ``python -m frauddetect``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from frauddetect.local_endpoint import add_serve_arguments, serve_from_args
from frauddetect.local_stack import DEFAULT_SPARK_MASTER
from frauddetect.stacks import StackError, check_demo_stack, resolve_stack
from frauddetect.stream.config import JobConfig


def _cmd_demo(args: argparse.Namespace) -> int:
    stack = resolve_stack(args.stack, bootstrap_servers=args.bootstrap_servers,
                          aws_endpoint_url=args.aws_endpoint_url)
    check_demo_stack(stack)  # before importing the data stack: a missing compose service fails in seconds

    from frauddetect.demo import DemoOptions, run_demo

    workdir = Path(args.workdir) if args.workdir else Path.cwd() / time.strftime("demo-%Y%m%d-%H%M%S")
    summary = run_demo(
        DemoOptions(
            workdir=workdir,
            input=Path(args.input) if args.input else None,
            start=args.start,
            end=args.end,
            model=Path(args.model) if args.model else None,
            rate=args.rate,
            seed=args.seed,
            alerts_per_day=args.alerts_per_day,
            timeout_s=args.timeout,
            max_offsets_per_trigger=args.max_offsets_per_trigger,
            spark_master=args.spark_master,
            dbt=args.dbt,
            stack=stack,
        )
    )
    if args.json:
        print(json.dumps(summary), flush=True)
    return 1 if summary.get("dbt_build") == "failed" else 0


def _cmd_dbt(args: argparse.Namespace) -> int:
    from frauddetect.analytics import run_dbt

    if not args.dbt_args:
        raise ValueError("missing the dbt command, e.g. frauddetect dbt --workdir runs/demo build")
    result = run_dbt(args.dbt_args, Path(args.workdir), target=args.target)
    return 0 if result.success else (2 if result.exception is not None else 1)


def _cmd_features(args: argparse.Namespace) -> int:
    import pandas as pd

    from frauddetect.data import load_transactions
    from frauddetect.features import offline_features

    tx = load_transactions(args.input)
    feats = offline_features(tx)
    if args.start or args.end:
        keep = pd.Series(True, index=tx.index)
        if args.start:
            keep &= tx["tx_datetime"] >= pd.Timestamp(args.start, tz="UTC")
        if args.end:
            keep &= tx["tx_datetime"] < pd.Timestamp(args.end, tz="UTC") + pd.Timedelta(days=1)
        feats = feats[keep]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    feats.to_parquet(args.output, index=False)
    print(f"{len(feats):,} rows x {feats.shape[1] - 1} features -> {args.output}", file=sys.stderr)
    return 0


def _model_config(args: argparse.Namespace):
    from frauddetect.model import ModelConfig

    return ModelConfig(extra_history_days=tuple(args.extra_history_days), epochs=args.epochs)


def _cmd_train(args: argparse.Namespace) -> int:
    from frauddetect.data import load_transactions
    from frauddetect.training import train_and_export

    tx = load_transactions(args.input)
    result = train_and_export(tx, args.model_dir, train_start=args.train_start, train_days=args.train_days,
                              alerts_per_day=args.alerts_per_day, seed=args.seed, config=_model_config(args))
    summary = {
        "model_dir": str(result.exported.model_dir),
        "version": result.exported.version,
        "saved_model": str(result.exported.saved_model_dir),
        "archive": str(result.exported.archive_path),
        "threshold": result.threshold,
        "train_rows": result.train_rows,
        "validation_rows": result.val_rows,
        "train_seconds": round(result.train_seconds, 1),
        **result.metrics,
    }
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from frauddetect.data import load_transactions
    from frauddetect.training import prequential_estimate

    console = Console(stderr=True)
    tx = load_transactions(args.input)
    on_fold = lambda row: console.print(
        f"fold {row['fold']} (training from {row['train_start']}, {row['train_seconds']:.0f} s): "
        f"AUC {row['auc_roc']:.3f}  AP {row['average_precision']:.3f}  CP@100 {row['card_precision@100']:.3f}")
    estimate = prequential_estimate(tx, args.test_start, n_folds=args.folds, seed=args.seed,
                                    config=_model_config(args), on_fold=on_fold)
    if args.predictions_out:
        out = Path(args.predictions_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            estimate.predictions.to_csv(out, index=False)
        else:
            estimate.predictions.to_parquet(out, index=False)
        console.print(f"{len(estimate.predictions):,} test predictions -> {out}")
    summary = estimate.summary()
    report = {"test_start": args.test_start, "folds": args.folds, "seed": args.seed,
              "metrics": summary, "per_fold": estimate.folds.to_dict(orient="records")}
    if args.json:
        print(json.dumps(report))
    else:
        for name, m in summary.items():
            console.print(f"{name}: {m['mean']:.3f} +/- {m['std']:.3f}  (published best {m['published_best']:.3f}, "
                          f"{m['published_model']}){'  beaten' if m['beats'] else ''}")
    return 0


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from frauddetect.model import ModelConfig

    parser.add_argument("--seed", type=int, default=0, help="random seed (member i of the ensemble: 1000 seed + i)")
    parser.add_argument("--extra-history-days", type=int, nargs="+", default=list(ModelConfig().extra_history_days),
                        metavar="DAYS", help="one value per network of the ensemble: labelled days before the "
                                             "training window it also learns from (default: 0 0 14 14)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per network (default 20)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands ``demo``, ``dbt``, ``features``, ``train``, ``evaluate``)."""
    parser = argparse.ArgumentParser(prog="frauddetect", description="Real-time card-fraud detection")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole system on a local stack (embedded: no Docker, no AWS)")
    demo.add_argument("--stack", default="embedded", choices=["embedded", "compose", "aws"],
                      help="where Kafka and the AWS APIs are: embedded (default, started by the demo), compose "
                           "(Apache Kafka + LocalStack from local/docker-compose.yml, already up), aws (refused: "
                           "deploy with cdk)")
    demo.add_argument("--bootstrap-servers", help="Kafka for --stack compose/aws (default compose: 127.0.0.1:9092; "
                                                  "env FRAUDDETECT_BOOTSTRAP_SERVERS)")
    demo.add_argument("--aws-endpoint-url", help="AWS-API endpoint for --stack compose (default "
                                                 "http://127.0.0.1:4566; env FRAUDDETECT_AWS_ENDPOINT_URL)")
    demo.add_argument("--input", help="Parquet/CSV in the handbook's raw schema (default: the simulator)")
    demo.add_argument("--start", help="first day streamed (YYYY-MM-DD); earlier rows bootstrap and train")
    demo.add_argument("--end", help="last day streamed (inclusive)")
    demo.add_argument("--model", help="exported model directory to use instead of training one")
    demo.add_argument("--workdir", help="where the run writes lake, checkpoints, model, logs")
    demo.add_argument("--rate", type=float, help="transactions per second (default: as fast as possible)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--alerts-per-day", type=float, default=100, help="daily alert budget for the threshold")
    demo.add_argument("--max-offsets-per-trigger", type=int,
                      default=JobConfig.model_fields["max_offsets_per_trigger"].default,
                      help="at most this many transactions per micro-batch (default %(default)s)")
    demo.add_argument("--spark-master", default=DEFAULT_SPARK_MASTER,
                      help="Spark master of the streaming job (default %(default)s), e.g. local-cluster[2,1,1024] "
                           "for two executor JVMs")
    demo.add_argument("--timeout", type=float, default=900, help="seconds to wait for the stream to finish")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON on the last stdout line")
    demo.add_argument("--no-dbt", dest="dbt", action="store_false", help="skip dbt build on the lake at the end")
    demo.set_defaults(func=_cmd_demo)

    dbt = sub.add_parser(
        "dbt", help="run a dbt command on a run's lake with the project's profile",
        description="Runs dbt with dbt/ as project and profiles dir. Target local reads WORKDIR/lake with DuckDB "
                    "into WORKDIR/analytics/frauddetect.duckdb (dbt's target/ and logs/ go there too); target "
                    "athena reads its settings from the environment (dbt/README.md). "
                    "Example: frauddetect dbt --workdir runs/demo build --select +rpt_daily_kpis")
    dbt.add_argument("--workdir", required=True, help="run folder holding lake/ (e.g. runs/demo)")
    dbt.add_argument("--target", default="local", choices=["local", "athena"], help="dbt target (default local)")
    dbt.add_argument("dbt_args", nargs=argparse.REMAINDER, help="the dbt command and its options")
    dbt.set_defaults(func=_cmd_dbt)

    feats = sub.add_parser("features", help="compute the model features offline (batch): the handbook's 15 + 4 terminal sequence features")
    feats.add_argument("--input", required=True, help="Parquet/CSV in the handbook's raw schema")
    feats.add_argument("--output", required=True, help="output Parquet: transaction_id + the 19 model features")
    feats.add_argument("--start", help="keep rows from this day (features still use earlier history)")
    feats.add_argument("--end", help="keep rows up to this day (inclusive)")
    feats.set_defaults(func=_cmd_features)

    train = sub.add_parser("train", help="train the Keras model and export it for TF Serving / SageMaker")
    train.add_argument("--input", required=True, help="Parquet/CSV in the handbook's raw schema, with TX_FRAUD")
    train.add_argument("--train-start", required=True, help="first training day (YYYY-MM-DD, UTC)")
    train.add_argument("--train-days", type=int, default=7, help="training days (default 7); the 7 days after "
                                                                   "them choose the alert threshold")
    train.add_argument("--model-dir", required=True, help="export here: <version>/saved_model.pb, "
                                                          "model.tar.gz, metadata.json")
    train.add_argument("--alerts-per-day", type=float, default=100, help="daily alert budget for the threshold")
    _add_model_options(train)
    train.add_argument("--json", action="store_true", help="print the result as one JSON line")
    train.set_defaults(func=_cmd_train)

    serve = sub.add_parser("serve", help="local SageMaker endpoint (InvokeEndpoint + TF Serving JSON) on an "
                                         "exported model")
    add_serve_arguments(serve)
    serve.set_defaults(func=serve_from_args)

    ev = sub.add_parser("evaluate", help="the handbook's prequential test estimate of the model",
                        description="Trains the model on each prequential fold (7 training days, 7 days of label "
                                    "delay, 7 test days without the known compromised cards) and reports AUC ROC, "
                                    "average precision and Card Precision@100: mean and std over folds, next to "
                                    "the best published values (handbook).")
    ev.add_argument("--input", required=True, help="Parquet/CSV in the handbook's raw schema, with TX_FRAUD")
    ev.add_argument("--test-start", required=True, help="training start of the newest fold (handbook: 2018-08-15); "
                                                        "fold f starts 7 f days earlier")
    ev.add_argument("--folds", type=int, default=4)
    ev.add_argument("--predictions-out", help="write transaction_id, fold, score of every test row "
                                              "(.parquet, or .csv)")
    _add_model_options(ev)
    ev.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, StackError) as exc:  # bad input, options or stack: a message
        print(f"frauddetect {args.command}: error: {exc}", file=sys.stderr)
        return 2
