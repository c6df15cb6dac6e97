"""Fixtures for every test folder.

Generic infrastructure fixtures (each started once per test session, on first use):

* ``embedded_broker`` - a real Tansu Kafka-protocol broker (:class:`frauddetect.embedded.EmbeddedBroker`).
  Tests share it, so each test uses its own topic names (see ``unique_topic``).
* ``spark`` - a local SparkSession sized for a 2-core machine.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Helpers shared by the tiers (stream_harness) are imported by name from this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# ---------------------------------------------------------------------------------------------------------
# Embedded broker and Spark (generic; shared by functional and e2e tests)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory):
    """A running :class:`~frauddetect.embedded.EmbeddedBroker` for the whole session.

    Use ``embedded_broker.bootstrap_servers``. Its log is ``embedded_broker.log_path`` (kept in pytest's
    temp folder for post-mortems).
    """
    from frauddetect.embedded import EmbeddedBroker

    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker


@pytest.fixture
def unique_topic() -> Callable[[str], str]:
    """``unique_topic(prefix)``: a topic name no other test uses (tests share one broker)."""
    return lambda prefix="t": f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def spark() -> Iterator["pyspark.sql.SparkSession"]:  # noqa: F821 - pyspark is imported lazily
    """A local SparkSession (``local[2]``, 2 shuffle partitions, no UI, 1 GiB driver, UTC session time).

    Python data sources and UDFs run in worker processes: ``PYSPARK_PYTHON`` is set to this interpreter
    (the project's virtualenv) or workers fail with "Python worker failed to connect back".
    """
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("frauddetect-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    yield session
    session.stop()
