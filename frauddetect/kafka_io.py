"""Small Kafka helpers shared across the project (confluent-kafka / librdkafka).

Client settings: :func:`producer_config` and :func:`consumer_config` build the dicts that
``confluent_kafka.Producer`` / ``Consumer`` take, with defaults chosen for this project:

* ``fetch.wait.max.ms`` = 10: librdkafka's default (500 ms) lets the broker hold an empty fetch for half a
  second; on the embedded Tansu broker that made consumers ~20x slower, and it also sets the floor on how
  fast a reader notices that a partition is drained.
* ``isolation.level`` = ``read_uncommitted``: what Spark's Kafka source (the Java client) uses, so local
  readers see what the Glue job sees.

Authentication: :func:`auth_settings` is the one switch between PLAINTEXT (``none``: the embedded broker,
compose Kafka) and Amazon MSK IAM (``msk-iam``: :func:`msk_iam_settings`) for every confluent-kafka client
of the project; :func:`spark_source_auth_options` says the same to a Spark Kafka source as string options.

Topics: :func:`ensure_topics` creates topics idempotently.

One record, acknowledged or not at all: :func:`produce_confirmed` (request/response producers such as the
label feedback Lambda).

End offsets: :func:`end_offsets_via_fetch` reads high watermarks from Fetch responses. Do not use
ListOffsets(latest) (``Consumer.get_watermark_offsets(cached=False)``, ``OFFSET_END``) for "where does this
partition end": the embedded Tansu broker answers it with the base offset of the partition's last record
batch + 1, so after one batched produce of 104 records it reports 1. The high watermark inside Fetch
responses is right, and Amazon MSK / Apache Kafka answer both correctly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any, Literal, get_args

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from frauddetect.config import JOB_GROUP_PREFIX

__all__ = [
    "KAFKA_AUTH_MODES",
    "DeliveryFailed",
    "KafkaAuth",
    "auth_settings",
    "consumer_config",
    "end_offsets_via_fetch",
    "ensure_topics",
    "fetch_high_watermarks",
    "msk_iam_settings",
    "produce_confirmed",
    "producer_config",
    "spark_source_auth_options",
    "topic_partitions",
]

#: librdkafka's "no offset known" value (``RD_KAFKA_OFFSET_INVALID``).
OFFSET_INVALID = -1001


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Settings for a ``confluent_kafka.Producer``.

    Defaults: ``acks=all`` (a record counts as produced only once the broker stored it, which the
    project's ordering and exactly-once arguments rely on) and ``linger.ms=5`` (batches records without
    adding noticeable latency).

    :param bootstrap: ``host:port[,host:port...]``.
    :param overrides: librdkafka settings that replace or extend the defaults. Their names contain dots, so
        pass them unpacked from a dict: ``producer_config(bs, **{"enable.idempotence": True})``.
    :returns: a new dict.
    """
    return {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **overrides}


def msk_iam_settings(region: str) -> dict[str, Any]:
    """librdkafka settings for Amazon MSK IAM access control: SASL/OAUTHBEARER over TLS, with tokens signed
    by ``aws-msk-iam-sasl-signer-python`` from the process's AWS credentials (a Lambda's or Glue job's role).

    Merge them into :func:`producer_config` / :func:`consumer_config` overrides. The signer is imported on
    the first token request, so building the settings needs neither the package nor credentials.

    :param region: the cluster's AWS region (the token is signed for it).
    """

    def oauth_cb(_config: str) -> tuple[str, float]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return token, expiry_ms / 1000

    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "oauth_cb": oauth_cb}


#: How a client authenticates to Kafka: ``none`` (PLAINTEXT) or ``msk-iam`` (SASL/OAUTHBEARER over TLS).
KafkaAuth = Literal["none", "msk-iam"]
KAFKA_AUTH_MODES: tuple[str, ...] = get_args(KafkaAuth)

#: Options of the ``kafka_confluent`` Spark source (frauddetect.stream.source) that carry the auth mode and
#: region. Strings, because Spark ships source options to other processes as strings: each process builds
#: its own :func:`auth_settings` (with its oauth callback) from them.
SOURCE_AUTH_OPTION = "auth"
SOURCE_AUTH_REGION_OPTION = "authRegion"

#: Spark's own Kafka source (the Java client, on Glue) speaks MSK IAM through the ``aws-msk-iam-auth``
#: library's SASL mechanism, with the credentials of the process (the Glue job's role).
SPARK_MSK_IAM_OPTIONS = {
    "kafka.security.protocol": "SASL_SSL",
    "kafka.sasl.mechanism": "AWS_MSK_IAM",
    "kafka.sasl.jaas.config": "software.amazon.msk.auth.iam.IAMLoginModule required;",
    "kafka.sasl.client.callback.handler.class": "software.amazon.msk.auth.iam.IAMClientCallbackHandler",
}


def auth_settings(auth: str, region: str | None = None) -> dict[str, Any]:
    """librdkafka settings for an authentication mode, to merge into any client's configuration.

    ``none``: ``{}`` (PLAINTEXT: the embedded broker and compose Kafka speak it). ``msk-iam``:
    :func:`msk_iam_settings` for ``region``. Every confluent-kafka client of the project takes its security
    settings from here, so a mode means the same thing for the streaming job's source and sinks and the
    feedback Lambda.

    With ``msk-iam``, use confluent-kafka >= 2.13: older versions call the token callback only from
    ``poll()``, so a client whose first call is ``list_topics``/``get_watermark_offsets`` (the source's
    readers, the sinks' checks) times out waiting for a token.

    :param auth: one of :data:`KAFKA_AUTH_MODES`.
    :param region: the cluster's AWS region; required for ``msk-iam``.
    :raises ValueError: for an unknown mode, or ``msk-iam`` without a region.
    """
    if auth == "none":
        return {}
    if auth == "msk-iam":
        if not region:
            raise ValueError("Kafka auth 'msk-iam' needs the cluster's AWS region")
        return msk_iam_settings(region)
    raise ValueError(f"unknown Kafka auth {auth!r}: expected one of {', '.join(KAFKA_AUTH_MODES)}")


def spark_source_auth_options(source_format: str, auth: str, region: str | None = None) -> dict[str, str]:
    """Spark Kafka source options that authenticate the source's consumers like :func:`auth_settings`.

    ``kafka_confluent`` (this project's Python source) gets the mode and region as plain options and builds
    :func:`auth_settings` wherever it opens a consumer; Spark's own ``kafka`` source gets the
    ``aws-msk-iam-auth`` settings of :data:`SPARK_MSK_IAM_OPTIONS`. ``none`` gives ``{}`` for both, so
    the local configuration stays as it was.

    :raises ValueError: as :func:`auth_settings` does.
    """
    auth_settings(auth, region)  # fail here, on the driver, not in a consumer later
    if auth == "none":
        return {}
    if source_format == "kafka":
        return dict(SPARK_MSK_IAM_OPTIONS)
    return {SOURCE_AUTH_OPTION: auth, SOURCE_AUTH_REGION_OPTION: str(region)}


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a record (error, or no answer in time); it will not be sent later."""


def produce_confirmed(
    producer: Any,
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    timeout: float,
    headers: list[tuple[str, bytes]] | None = None,
) -> tuple[int, int]:
    """Produce one record and wait until the broker acknowledged it; returns ``(partition, offset)``.

    For a request/response caller that must answer "stored" or "not stored". Give the producer a
    ``message.timeout.ms`` below ``timeout``: librdkafka then fails the record itself (delivery report with
    an error) before this function gives up. If ``flush`` still returns with the record pending, the
    producer's queues are purged so a long-lived producer (a warm Lambda) cannot deliver it later behind
    the caller's back.

    One ambiguity no client can remove remains: a record whose acknowledgement was lost after the broker
    stored it is reported as failed, so a retry can store it a second time. Callers whose records are
    idempotent by content (labels: last one per transaction wins) accept that.

    :raises DeliveryFailed: the record was rejected, timed out, or could not be queued.
    """
    outcome: dict[str, Any] = {}

    def on_delivery(err, msg) -> None:
        outcome["error"] = err
        outcome["message"] = msg

    try:
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
    except (BufferError, KafkaException) as exc:
        raise DeliveryFailed(f"record not queued: {exc}") from exc
    remaining = producer.flush(timeout)
    if remaining or "message" not in outcome:
        producer.purge(in_queue=True, in_flight=True)
        producer.poll(0)  # serve the purge's delivery reports
        raise DeliveryFailed(f"no acknowledgement within {timeout} s; the record was purged")
    if outcome["error"] is not None:
        raise DeliveryFailed(f"broker did not store the record: {outcome['error']}")
    message = outcome["message"]
    return int(message.partition()), int(message.offset())


def consumer_config(bootstrap: str, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Settings for a ``confluent_kafka.Consumer``.

    Defaults: ``fetch.wait.max.ms=10`` and ``isolation.level=read_uncommitted`` (see the module doc),
    ``auto.offset.reset=earliest``, ``enable.partition.eof=False`` (set it to ``True`` to get a
    ``KafkaError._PARTITION_EOF`` event each time a partition is drained).

    :param bootstrap: ``host:port[,host:port...]``.
    :param group_id: consumer group. ``None`` gives a unique throw-away group (``frauddetect-job-<random>``,
        :data:`~frauddetect.config.JOB_GROUP_PREFIX`) and turns offset commits off:
        for readers that ``assign()`` partitions themselves (librdkafka requires a ``group.id`` even then).
    :param overrides: librdkafka settings, passed as ``**{"max.poll.interval.ms": 600000}``.
    :returns: a new dict.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id or f"{JOB_GROUP_PREFIX}{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
        "isolation.level": "read_uncommitted",
        "enable.partition.eof": False,
    }
    if group_id is None:
        config["enable.auto.commit"] = False
        config["enable.auto.offset.store"] = False
    config.update(overrides)
    return config


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    timeout: float = 30.0,
    replication_factor: int = 1,
    **admin_overrides: Any,
) -> list[str]:
    """Create the topics that do not exist yet and wait until metadata lists all of them.

    Idempotent: a topic that already exists is left as it is (its partition count is not changed).

    :param bootstrap: ``host:port[,host:port...]``.
    :param names: topic names.
    :param partitions: partition count for topics created now.
    :param timeout: seconds for the whole call.
    :param replication_factor: 1 for the embedded broker; 3 is usual on MSK.
    :param admin_overrides: extra AdminClient settings (security, ...), as ``**{"security.protocol": ...}``.
    :returns: the names that this call created, in the given order.
    :raises KafkaException: if the broker refuses a creation for another reason than "already exists".
    :raises TimeoutError: if a topic is not in the metadata within ``timeout`` seconds.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap, **admin_overrides})
    futures = admin.create_topics(
        [NewTopic(name, partitions, replication_factor) for name in wanted],
        request_timeout=timeout,
        operation_timeout=timeout,
    )
    created = []
    try:
        for name in wanted:
            try:
                futures[name].result(timeout=max(deadline - time.monotonic(), 0.1))
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    finally:
        # A failed future keeps its exception, whose traceback holds this frame: a reference cycle that
        # would keep the AdminClient (and its broker connection) alive until the next GC run.
        futures = None
    # A created topic can take a moment to show up in every broker's metadata (not on Tansu, but on a
    # multi-broker cluster); producers that race it get UNKNOWN_TOPIC_OR_PART.
    missing = set(wanted)
    while True:
        metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1))
        missing = {n for n in missing if n not in metadata.topics or metadata.topics[n].error is not None}
        if not missing:
            return created
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not in the broker's metadata after {timeout} s: {sorted(missing)}")
        time.sleep(0.05)


def topic_partitions(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of ``topic`` from a metadata request, sorted; ``[]`` if the topic does not exist.

    :raises KafkaException: if the metadata request fails (e.g. the broker is unreachable for ``timeout`` s).
    """
    metadata = consumer.list_topics(topic, timeout=timeout)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        return []
    return sorted(info.partitions)


def fetch_high_watermarks(
    consumer: Consumer, partitions: Iterable[tuple[str, int]], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """High watermarks (offset of the next record to be written) of partitions, taken from Fetch responses.

    ListOffsets(latest) is only used as a starting point: it is exact on Apache Kafka / MSK and a lower
    bound on Tansu (see the module doc). The consumer fetches from there, and the high watermark carried
    by the first Fetch response is the answer, so at most the partition's last record batch is
    transferred. Records it receives are discarded.

    The consumer must have ``enable.partition.eof=True`` (an empty partition answers with an EOF event
    only then). Its assignment is replaced by ``partitions`` and left so; use a consumer dedicated to this.

    :param consumer: a ``confluent_kafka.Consumer``.
    :param partitions: ``(topic, partition)`` pairs.
    :param timeout: seconds for the whole call.
    :returns: ``{(topic, partition): high_watermark}``.
    :raises TimeoutError: if some partition gets no Fetch response within ``timeout`` seconds.
    :raises KafkaException: on a non-retriable error for a partition.
    """
    wanted = list(dict.fromkeys(partitions))
    if not wanted:
        return {}
    deadline = time.monotonic() + timeout
    starts = []
    for topic, partition in wanted:
        tp = TopicPartition(topic, partition)
        low, listed = consumer.get_watermark_offsets(tp, timeout=max(deadline - time.monotonic(), 0.1))
        starts.append(TopicPartition(topic, partition, max(low, listed)))
    consumer.assign(starts)
    result: dict[tuple[str, int], int] = {}
    while len(result) < len(wanted):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"no Fetch response within {timeout} s for {sorted(set(wanted) - set(result))}"
            )
        msg = consumer.poll(min(remaining, 0.5))
        if msg is None:
            continue
        key = (msg.topic(), msg.partition())
        err = msg.error()
        if err is not None and err.code() != KafkaError._PARTITION_EOF:
            if err.retriable():
                continue
            raise KafkaException(err)
        if key in result:
            continue
        # librdkafka stores the Fetch response's high watermark before it hands out the response's
        # records or EOF event, so the cached value is at least as new as this message.
        _, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
        floor = msg.offset() if err is not None else msg.offset() + 1
        result[key] = max(high, floor)
    return result


def end_offsets_via_fetch(
    bootstrap: str, topics: Iterable[str], timeout: float = 10.0, **overrides: Any
) -> dict[str, dict[int, int]]:
    """End offsets (high watermarks) of every partition of ``topics``, taken from Fetch responses.

    Use this, not ListOffsets, to ask "how many records are in this topic" (see the module doc): with
    offsets starting at 0 and no deletions, ``sum(end_offsets_via_fetch(bs, [t])[t].values())`` is the
    number of records ever produced to ``t``.

    :param bootstrap: ``host:port[,host:port...]``.
    :param topics: topic names; a topic that does not exist maps to ``{}``.
    :param timeout: seconds for the whole call.
    :param overrides: extra consumer settings (security, ...).
    :returns: ``{topic: {partition: end_offset}}``.
    :raises TimeoutError: if a partition's leader does not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True, **overrides}))
    try:
        result: dict[str, dict[int, int]] = {}
        wanted = []
        for topic in dict.fromkeys(topics):
            result[topic] = {}
            for partition in topic_partitions(consumer, topic, max(deadline - time.monotonic(), 0.1)):
                wanted.append((topic, partition))
        marks = fetch_high_watermarks(consumer, wanted, max(deadline - time.monotonic(), 0.1))
        for (topic, partition), high in sorted(marks.items()):
            result[topic][partition] = high
        return result
    finally:
        consumer.close()

