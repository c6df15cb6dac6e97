"""The embedded local stack: the Tansu broker process and the moto server, started for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest
from confluent_kafka import Producer

from frauddetect import kafka_io
from frauddetect.embedded import BrokerStartError, EmbeddedBroker, MotoServer, free_port

pytestmark = pytest.mark.functional

#: Safety net for waiting on a process to go away; never an assertion on speed.
GONE_TIMEOUT_S = 30


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536


def test_broker_serves_kafka_and_stop_leaves_no_process(tmp_path):
    log = tmp_path / "logs" / "broker.log"
    broker = EmbeddedBroker(log_path=log)
    with broker:
        pid, port = broker.pid, broker.port
        assert broker.bootstrap_servers == f"127.0.0.1:{port}"
        assert _alive(pid)
        bootstrap = broker.bootstrap_servers
        assert kafka_io.ensure_topics(bootstrap, ["roundtrip"], partitions=2) == ["roundtrip"]
        assert kafka_io.ensure_topics(bootstrap, ["roundtrip"]) == []  # idempotent
        producer = Producer(kafka_io.producer_config(bootstrap, **{"linger.ms": 20}))
        for i in range(104):
            producer.produce("roundtrip", value=b"x", partition=i % 2)
        assert producer.flush(30) == 0
        del producer
        # Fetch-based ends count every record, also after a batched produce.
        assert kafka_io.end_offsets_via_fetch(bootstrap, ["roundtrip", "absent"]) == {
            "roundtrip": {0: 52, 1: 52},
            "absent": {},
        }
    assert not _alive(pid)
    assert _refuses_connections(port)
    assert "listening on" in log.read_text()
    broker.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError, match="not running"):
        broker.bootstrap_servers


def test_broker_that_fails_to_start_raises_with_its_log(tmp_path):
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'error: storage engine exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log", binary=str(fake), start_timeout=10)
    with pytest.raises(BrokerStartError, match=r"(?s)code 3.*storage engine exploded"):
        broker.start()
    assert broker.pid is None


def test_broker_on_a_taken_port_raises(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(log_path=tmp_path / "broker.log", port=port, start_timeout=10)
        with pytest.raises(BrokerStartError, match=f"port {port} was taken"):
            broker.start()
    assert "Address in use" in (tmp_path / "broker.log").read_text()


def test_broker_that_never_answers_times_out_and_is_stopped(tmp_path):
    marker = tmp_path / "pid"
    fake = tmp_path / "silent-tansu"
    fake.write_text(f"#!/bin/sh\necho $$ > {marker}\necho 'warming up'\nexec sleep 60\n")
    fake.chmod(0o755)
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log", binary=str(fake), start_timeout=1.0)
    with pytest.raises(BrokerStartError, match=r"(?s)within 1.0 s.*warming up"):
        broker.start()
    assert _wait_gone(int(marker.read_text()))


@pytest.mark.parametrize("ending", ["exception", "exception-broker-started-in-thread", "sigkill"])
def test_broker_dies_with_its_parent(tmp_path, ending):
    """A parent that dies by an uncaught exception or SIGKILL takes the broker along. Started from a
    worker thread, only atexit can do it (the parent-death signal is tied to the starting thread)."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, threading, time
            from frauddetect.embedded import EmbeddedBroker
            log = {str(tmp_path / "broker.log")!r}
            brokers = []
            if {ending!r} == "exception-broker-started-in-thread":
                starter = threading.Thread(target=lambda: brokers.append(EmbeddedBroker(log).start()))
                starter.start()
                starter.join()
            else:
                brokers.append(EmbeddedBroker(log).start())
            print(brokers[0].pid, flush=True)
            if {ending!r} != "sigkill":
                raise RuntimeError("parent crashed")
            time.sleep(120)
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        broker_pid = int(parent.stdout.readline())
        if ending == "sigkill":
            assert _alive(broker_pid)
            os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=GONE_TIMEOUT_S)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert _wait_gone(broker_pid), f"broker {broker_pid} outlived its parent ({ending})"


def test_moto_server_answers_s3_and_stops(tmp_path: Path):
    with MotoServer() as aws:
        port = aws.port
        assert aws.endpoint_url == f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=aws.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="lake")
        s3.put_object(Bucket="lake", Key="scored/dt=2018-04-01/part-0.json", Body=b'{"tx": 1}')
        listed = s3.list_objects_v2(Bucket="lake")["Contents"]
        body = s3.get_object(Bucket="lake", Key="scored/dt=2018-04-01/part-0.json")["Body"].read()
    assert [o["Key"] for o in listed] == ["scored/dt=2018-04-01/part-0.json"]
    assert body == b'{"tx": 1}'
    assert _refuses_connections(port)
    aws.stop()  # a second stop is harmless


def test_moto_server_on_a_taken_port_fails_instead_of_hanging():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            MotoServer(port=taken.getsockname()[1]).start()
