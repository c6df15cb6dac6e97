"""Options and micro-batch planning of the local Kafka source (:mod:`frauddetect.stream.source`).

The options are named as in Spark's own Kafka source (case-insensitive):

``kafka.bootstrap.servers`` (required)
    ``host:port[,host:port...]``.
``subscribe`` (required)
    Comma-separated topics. ``assign`` and ``subscribePattern`` are rejected, not ignored.
``startingOffsets`` (default ``latest``, as in Spark)
    ``earliest``, ``latest`` or Spark's JSON (``{"transactions": {"0": 42, "1": -2}}``; -2 = earliest, -1 =
    latest; partitions left out start at earliest). Only for a new query; a restarted query continues from
    its checkpoint. Partitions that appear while the query runs start at earliest.
``maxOffsetsPerTrigger`` (optional)
    At most this many records per micro-batch, spread over the topic-partitions in proportion to how far
    each lags behind its end, as Spark's Kafka source spreads it (:func:`rate_limit`).
``failOnDataLoss`` (default ``true``)
    ``true``: fail when a planned offset is no longer in the broker. ``false``: continue from the earliest.
``kafkaConsumer.pollTimeoutMs`` (default 120000)
    How long a planning or read step may wait for the broker.
``auth`` (default ``none``) and ``authRegion``
    ``msk-iam``: SASL/OAUTHBEARER over TLS with Amazon MSK IAM tokens signed for ``authRegion``. Strings,
    because Spark ships options to other processes as strings; each process builds its own token callback
    (:func:`frauddetect.kafka_io.auth_settings`).
``plannedOffsetsPath`` (optional, this source's own)
    A file where the driver keeps the end offsets it planned last (one per source and checkpoint). Spark 4.1's
    Python source API has no admission control: ``latestOffset()`` is not told where the next micro-batch
    starts, and Spark calls it before ``initialOffset()`` on a new query. With this file the cap holds from
    the first micro-batch of a new query and across restarts; without it the first micro-batch of a query
    (new or restarted) is not capped.
``kafka.*``
    Passed to librdkafka without the prefix. As in Spark, ``kafka.auto.offset.reset``,
    ``kafka.enable.auto.commit``, ``kafka.key.deserializer``, ``kafka.value.deserializer`` and
    ``kafka.interceptor.classes`` are rejected; so is ``includeHeaders=true`` (no ``headers`` column).

Offsets are Spark's JSON: ``{"topic": {"partition": next_offset_to_read}}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from frauddetect import kafka_io

SOURCE_NAME = "kafka_confluent"
EARLIEST = -2  # Spark's JSON sentinels in startingOffsets
LATEST = -1
_FORBIDDEN_KAFKA_OPTIONS = (
    "auto.offset.reset",
    "enable.auto.commit",
    "key.deserializer",
    "value.deserializer",
    "interceptor.classes",
)


@dataclass(frozen=True)
class KafkaSourceOptions:
    """The source's options, parsed and checked (the module doc gives their meaning).

    ``starting_offsets`` is ``"earliest"``, ``"latest"`` or ``{topic: {partition: offset}}`` with Spark's
    -2/-1 sentinels; ``poll_timeout_s`` is in seconds; ``consumer_overrides`` are librdkafka settings.
    """

    bootstrap_servers: str
    topics: tuple[str, ...]
    starting_offsets: str | dict[str, dict[int, int]] = "latest"
    max_offsets_per_trigger: int | None = None
    fail_on_data_loss: bool = True
    poll_timeout_s: float = 120.0
    consumer_overrides: dict[str, str] = field(default_factory=dict)
    auth: str = "none"
    auth_region: str | None = None
    planned_offsets_path: str | None = None

    def client_key(self) -> tuple:
        """What identifies a consumer configuration (for reusing consumers within a process)."""
        return (self.bootstrap_servers, self.auth, self.auth_region, self.fail_on_data_loss,
                tuple(sorted(self.consumer_overrides.items())))

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> "KafkaSourceOptions":
        """Parse Spark-style string options. Raises ValueError naming a missing, malformed or unsupported one."""
        opts = {str(k).lower(): str(v) for k, v in options.items()}
        for unsupported in ("assign", "subscribepattern"):
            if unsupported in opts:
                raise ValueError(f"{SOURCE_NAME}: option '{unsupported}' is not supported, use 'subscribe'")
        if opts.get("includeheaders", "false").strip().lower() == "true":
            raise ValueError(f"{SOURCE_NAME}: includeHeaders=true is not supported (no 'headers' column)")
        bootstrap = opts.get("kafka.bootstrap.servers", "").strip()
        if not bootstrap:
            raise ValueError(f"{SOURCE_NAME}: option 'kafka.bootstrap.servers' is required")
        topics = tuple(dict.fromkeys(t.strip() for t in opts.get("subscribe", "").split(",") if t.strip()))
        if not topics:
            raise ValueError(f"{SOURCE_NAME}: option 'subscribe' (comma-separated topics) is required")
        overrides = {}
        for key, value in opts.items():
            if key.startswith("kafka.") and key != "kafka.bootstrap.servers":
                name = key[len("kafka."):]
                if name in _FORBIDDEN_KAFKA_OPTIONS:
                    raise ValueError(f"{SOURCE_NAME}: option '{key}' is not supported (the source sets it)")
                overrides[name] = value
        auth = opts.get(kafka_io.SOURCE_AUTH_OPTION.lower(), "none").strip().lower()
        auth_region = opts.get(kafka_io.SOURCE_AUTH_REGION_OPTION.lower(), "").strip() or None
        try:
            kafka_io.auth_settings(auth, auth_region)
        except ValueError as exc:
            raise ValueError(f"{SOURCE_NAME}: options 'auth'/'authRegion': {exc}") from None
        return cls(
            bootstrap_servers=bootstrap,
            topics=topics,
            starting_offsets=_parse_starting_offsets(opts.get("startingoffsets", "latest"), topics),
            max_offsets_per_trigger=_parse_positive_int(opts, "maxOffsetsPerTrigger"),
            fail_on_data_loss=_parse_bool(opts.get("failondataloss", "true"), "failOnDataLoss"),
            poll_timeout_s=(_parse_positive_int(opts, "kafkaConsumer.pollTimeoutMs") or 120_000) / 1000.0,
            consumer_overrides=overrides,
            auth=auth,
            auth_region=auth_region,
            planned_offsets_path=opts.get("plannedoffsetspath") or None,
        )

    def consumer_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings for the source's consumers (no group membership, nothing committed, EOF
        events on), with the security settings of ``auth`` built in this process."""
        return kafka_io.consumer_config(
            self.bootstrap_servers,
            self.consumer_overrides.get("group.id"),
            **{
                # "error" makes librdkafka report an out-of-range offset instead of silently jumping
                "auto.offset.reset": "error" if self.fail_on_data_loss else "earliest",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                **kafka_io.auth_settings(self.auth, self.auth_region),
                **self.consumer_overrides,
                "enable.partition.eof": True,
                **extra,
            },
        )


def rate_limit(limit: int, start: dict[tuple[str, int], int], end: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Spread a cap of ``limit`` records over topic-partitions in proportion to their lag, as Spark's Kafka
    source does (``KafkaMicroBatchStream.rateLimit``): each partition advances by
    ``limit * lag / total_lag`` records, rounded down, but by at least one while it lags.

    ``start``/``end``: offsets per ``(topic, partition)``; a partition missing from ``start`` starts at 0.
    Returns the capped end offsets (never past ``end``, never before ``start``).
    """
    sizes = {tp: max(e - start.get(tp, 0), 0) for tp, e in end.items()}
    total = float(sum(sizes.values()))
    if total < 1:
        return dict(end)
    out = {}
    for tp, e in end.items():
        begin = start.get(tp, 0)
        prorate = limit * (sizes[tp] / total)
        step = math.ceil(prorate) if prorate < 1 else math.floor(prorate)
        out[tp] = min(e, begin + step) if sizes[tp] else max(e, begin)
    return out


def _parse_starting_offsets(raw: str, topics: tuple[str, ...]) -> str | dict[str, dict[int, int]]:
    text = raw.strip()
    if text.lower() in ("earliest", "latest"):
        return text.lower()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{SOURCE_NAME}: startingOffsets must be 'earliest', 'latest' or JSON like "
                         f'{{"topic": {{"0": 42}}}}, got {raw!r}') from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"{SOURCE_NAME}: startingOffsets JSON must be an object, got {raw!r}")
    result: dict[str, dict[int, int]] = {}
    for topic, partitions in parsed.items():
        if topic not in topics:
            raise ValueError(f"{SOURCE_NAME}: startingOffsets names {topic!r}, which is not subscribed")
        if not isinstance(partitions, dict):
            raise ValueError(f"{SOURCE_NAME}: startingOffsets[{topic!r}] must be an object")
        result[topic] = {}
        for partition, offset in partitions.items():
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < EARLIEST:
                raise ValueError(f"{SOURCE_NAME}: startingOffsets[{topic!r}][{partition!r}] must be an int >= -2")
            result[topic][int(partition)] = offset
    return result


def _parse_positive_int(opts: Mapping[str, str], name: str) -> int | None:
    key = name.lower()
    if key not in opts:
        return None
    try:
        value = int(opts[key])
    except ValueError:
        raise ValueError(f"{SOURCE_NAME}: {name} must be a positive integer, got {opts[key]!r}") from None
    if value <= 0:
        raise ValueError(f"{SOURCE_NAME}: {name} must be a positive integer, got {value}")
    return value


def _parse_bool(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"{SOURCE_NAME}: {name} must be 'true' or 'false', got {raw!r}")
    return value == "true"
