"""Glue 6.0 / local entry point of the streaming job (thin: the job is ``frauddetect.stream``).

Locally (``frauddetect demo`` runs this file): ``python glue_jobs/streaming_job.py --bootstrap-servers ...
--master local-cluster[2,1,1024]``. On AWS Glue the job arguments arrive in the same ``--name value`` form,
plus Glue's own (``--JOB_NAME`` ...) which are dropped here; the sources there are Spark's ``kafka`` format
reading MSK (``--source-format kafka``, ``--kafka-auth msk-iam``).

On Glue a GlueContext is created on the job's SparkContext: Glue publishes its job metrics
(``glue.driver.*``, which the batch-time alarm watches) only once a script initializes one, and the job
itself works with plain DataFrames.
"""

import sys

from frauddetect.stream.job import main

# Glue's own arguments: what Glue adds to every run, and the special parameters the job definition sets
# (infra/streaming_job.py; a unit test keeps the two in step).
GLUE_ONLY = {
    "--JOB_NAME",
    "--JOB_ID",
    "--JOB_RUN_ID",
    "--TempDir",
    "--job-bookmark-option",
    "--job-language",
    "--enable-metrics",
    "--enable-observability-metrics",
    "--enable-continuous-cloudwatch-log",
    "--extra-py-files",
    "--additional-python-modules",
    "--conf",
}

# Kept referenced for the life of the job (its metrics are the reason it exists).
_glue_context = None


def _job_args(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in GLUE_ONLY:
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        out.append(arg)
    return out


def start_glue_metrics(spark) -> bool:
    """Create a GlueContext on ``spark``'s SparkContext when ``awsglue`` is importable (on Glue), so Glue
    emits its job metrics. Returns whether it did; locally (no ``awsglue``) it does nothing."""
    global _glue_context
    try:
        from awsglue.context import GlueContext
    except ImportError:
        return False
    _glue_context = GlueContext(spark.sparkContext)
    return True


if __name__ == "__main__":
    on_glue = any(a == "--JOB_NAME" for a in sys.argv)
    raise SystemExit(
        main(_job_args(sys.argv[1:]), master=None if on_glue else "local[2]", on_session=start_glue_metrics)
    )
