"""Names shared by every part of the system (topics); endpoints come from the environment or the CLI."""

TRANSACTIONS_TOPIC = "transactions"
LABELS_TOPIC = "labels"
ALERTS_TOPIC = "fraud-alerts"
QUARANTINE_TOPIC = "quarantine"
