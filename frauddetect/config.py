"""Names shared by every part of the system (topics); endpoints come from the environment or the CLI."""

TRANSACTIONS_TOPIC = "transactions"
LABELS_TOPIC = "labels"
ALERTS_TOPIC = "fraud-alerts"
QUARANTINE_TOPIC = "quarantine"

JOB_GROUP_PREFIX = "frauddetect-job-"
"""Prefix of the throw-away consumer groups of the job's own readers (``kafka_io.consumer_config`` without a
group id). Distinct from ``frauddetect-<env>-...``, the long-lived groups (the alert Lambda's), so the Glue
role's grant on ``frauddetect-job-*`` cannot touch their offsets."""
