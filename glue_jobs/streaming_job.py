"""Glue 6.0 / local entry point of the streaming job (thin: all logic is in ``frauddetect.streaming``).

Locally (``frauddetect demo`` runs this file): ``python glue_jobs/streaming_job.py --bootstrap-servers ...``.
On AWS Glue the job arguments arrive in the same ``--name value`` form, plus Glue's own (``--JOB_NAME`` ...)
which are dropped here; the source there is Spark's ``kafka`` format reading MSK (``--source-format kafka``).
"""

import sys

from frauddetect.streaming import main

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
}


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


if __name__ == "__main__":
    on_glue = any(a == "--JOB_NAME" for a in sys.argv)
    raise SystemExit(main(_job_args(sys.argv[1:]), master=None if on_glue else "local[2]"))
