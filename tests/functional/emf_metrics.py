"""Reading Powertools EMF metric blobs out of captured stdout (shared by the Lambda tests)."""

import json


def emf_metric_totals(stdout: str) -> dict[str, float]:
    """Sum of every value of each metric in the EMF blobs (JSON lines with ``_aws``) of ``stdout``."""
    totals: dict[str, float] = {}
    for line in stdout.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                values = blob[metric["Name"]]
                values = values if isinstance(values, list) else [values]
                totals[metric["Name"]] = totals.get(metric["Name"], 0.0) + sum(values)
    return totals
