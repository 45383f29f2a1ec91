"""Harness for the system tests: ``lisgw run`` as a subprocess, simulators in the test process.

The system tests (tests/system/test_run.py, test_kill9.py) are ``twisted.trial`` test cases
with ``async def`` methods: the HIS simulator (lisgw.sim.his) and the analyzer simulator
(lisgw.sim.analyzer) run in the test's reactor, the gateway in its own process, started with
``python -m lisgw run --config FILE`` (the ``lisgw run`` command) and a configuration
written to a fresh directory (``tempfile.mkdtemp``; removed afterwards).

* Ports: each is found by binding port 0 on 127.0.0.1 and closing the socket, then passed in
  the configuration (the gateway binds them itself).
* Readiness: the gateway's sd_notify datagrams come to a Unix datagram socket the test binds
  (``$NOTIFY_SOCKET``), so a test waits for READY=1 exactly as systemd does.
* PostgreSQL: a fresh database per gateway (``fresh_pg_database``), dropped afterwards, on the
  server named by LISGW_TEST_PG_URL (default: the CI service). When the server cannot be
  reached the PostgreSQL tests FAIL, as the store tests do (tests/integration/store).
* Every wait is bounded (``within``); every process is killed in cleanup if still running.

Corpus captures are read from ../shared/corpus at test time, never copied here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import (
    DatagramProtocol,
    Factory,
    ProcessProtocol,
    Protocol,
    connectionDone,
)
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from lisgw.astm import frames as fr
from lisgw.errors import StoreError
from lisgw.sim.analyzer import AnalyzerSimulator
from lisgw.sim.his import HisSimulator
from lisgw.store.database import describe, make_engine
from lisgw.transports.astm import MessageOutcome
from lisgw.transports.mllp import MllpClientProtocol, connect_mllp

REACTOR: Any = global_reactor
HOST: Final = "127.0.0.1"
REPO: Final = Path(__file__).resolve().parents[2]
CORPUS: Final = (REPO / ".." / "shared" / "corpus").resolve()
PG_URL: Final = os.environ.get(
    "LISGW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ENQ, ACK, EOT = b"\x05", b"\x06", b"\x04"


def corpus_file(relative: str) -> bytes:
    path = CORPUS / relative
    if not path.is_file():
        raise AssertionError(f"the shared corpus is missing {path}")
    return path.read_bytes()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def within(
    waiting: Deferred[Any] | Coroutine[Any, Any, Any], seconds: float, what: str
) -> Deferred[Any]:
    """``waiting`` (a Deferred or a coroutine), failing with a message naming ``what`` after
    ``seconds``."""

    def timed_out(failure: Failure) -> Failure:
        if isinstance(failure.value, TimeoutError | defer.TimeoutError):
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        return failure

    return ensureDeferred(waiting).addTimeout(seconds, REACTOR).addErrback(timed_out)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(REACTOR, seconds, lambda: None)


async def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` every 50 ms until it holds; AssertionError after ``seconds``."""
    deadline = REACTOR.seconds() + seconds
    while not check():
        if REACTOR.seconds() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await sleep(0.05)


# -- directories and databases ---------------------------------------------------------------


class Workdir:
    """A fresh directory for one test (tempfile.mkdtemp), removed by ``remove``."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="lisgw-system-"))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class PgDatabase:
    """A fresh PostgreSQL database (``url``) for one gateway; ``drop`` removes it."""

    def __init__(self) -> None:
        try:
            self.admin = make_engine(
                PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
            )
        except StoreError as error:
            raise AssertionError(
                f"PostgreSQL is unreachable at {describe(PG_URL)} (set LISGW_TEST_PG_URL to a "
                f"server the tests may create databases on): {error}"
            ) from error
        self.name = f"lisgw_system_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        self.url = make_url(PG_URL).set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.dispose()


def workdir_and_store(case: Any, backend: str) -> tuple[Workdir, str | None]:
    """A working directory and, on PostgreSQL, a fresh database, both removed after
    ``case``; the store URL (None: the SQLite default in the working directory)."""
    workdir = Workdir()
    case.addCleanup(workdir.remove)
    if backend != "postgresql":
        return workdir, None
    database = PgDatabase()
    case.addCleanup(database.drop)
    return workdir, database.url


def query_store(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one query on the gateway's store (after the gateway stopped)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


# -- the configuration -----------------------------------------------------------------------


def write_config(
    workdir: Path,
    *,
    his_results_port: int,
    his_orders_port: int,
    analyzer_port: int,
    store_url: str | None = None,
    send_unsolicited: bool = False,
    driver: str = "sysmex-xn",
    name: str = "xn-550",
    extra_connections: Sequence[dict[str, Any]] = (),
) -> Path:
    """A gateway configuration: one ASTM analyzer listening on ``analyzer_port``, the HIS
    link to the simulator (short timeouts and backoff: tests, not an overnight outage)."""
    data: dict[str, Any] = {
        "data_dir": str(workdir / "data"),
        "time_zone": "Europe/Paris",
        "test_codes": str(REPO / "config" / "test-codes.example.yaml"),
        "routing": {"send_unsolicited": send_unsolicited},
        "his": {
            "profile": "hl7-v251",
            "results": {
                "host": HOST,
                "port": his_results_port,
                "ack_timeout": "5s",
                "connect_timeout": "2s",
                "backoff": {"base": "200ms", "cap": "1s"},
            },
            "orders": {"host": HOST, "port": his_orders_port},
        },
        "connections": [
            {
                "name": name,
                "protocol": "astm",
                "driver": driver,
                "transport": "tcp-server",
                "host": HOST,
                "port": analyzer_port,
                "peers": [HOST],
                "limits": {"max_connections": 4},
            },
            *extra_connections,
        ],
    }
    if store_url is not None:
        data["store"] = {"url": store_url}
    path = workdir / "lisgw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def store_url_of(workdir: Path, store_url: str | None) -> str:
    """The URL the gateway uses: the given one, else its default SQLite file."""
    return store_url or f"sqlite:///{workdir / 'data' / 'lisgw.sqlite'}"


# -- systemd notifications -------------------------------------------------------------------


class NotifySocket(DatagramProtocol):
    """The test's ``$NOTIFY_SOCKET``: records every sd_notify assignment received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.assignments: list[str] = []
        self._port = REACTOR.listenUNIXDatagram(str(path), self)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.assignments.extend(datagram.decode("utf-8", "replace").split("\n"))

    def count(self, assignment: str) -> int:
        return self.assignments.count(assignment)

    def close(self) -> Deferred[None]:
        stopped: Deferred[None] = Deferred()
        result = self._port.stopListening()
        if isinstance(result, Deferred):
            return result
        stopped.callback(None)
        return stopped


# -- the gateway process ---------------------------------------------------------------------


class _Exit(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[int | None] = Deferred()
        self.running = True

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        value = reason.value
        code = value.exitCode if isinstance(value, ProcessDone | ProcessTerminated) else None
        self.ended.callback(code)


class GatewayProcess:
    """``lisgw run --config FILE`` in a subprocess: stdout and stderr to ``log_path``."""

    def __init__(
        self,
        config: Path,
        notify: NotifySocket,
        log_path: Path,
        *,
        log_format: str = "text",
        watchdog_usec: int | None = None,
    ) -> None:
        self.config = config
        self.notify = notify
        self.log_path = log_path
        self.log_format = log_format
        self.watchdog_usec = watchdog_usec
        self._protocol: _Exit | None = None
        self._process: Any = None
        self.exit_codes: list[int | None] = []

    @property
    def running(self) -> bool:
        return self._protocol is not None and self._protocol.running

    def start(self) -> None:
        env = dict(os.environ)
        env.update(NOTIFY_SOCKET=str(self.notify.path), PYTHONUNBUFFERED="1")
        env.pop("WATCHDOG_PID", None)
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        else:
            env.pop("WATCHDOG_USEC", None)
        args = [sys.executable, "-m", "lisgw", "run", "--config", str(self.config)]
        args += ["--log-format", self.log_format]
        self._protocol = _Exit()
        with self.log_path.open("ab") as log:
            self._process = REACTOR.spawnProcess(
                self._protocol,
                sys.executable,
                args,
                env=env,
                path=str(REPO),
                childFDs={1: log.fileno(), 2: log.fileno()},
            )

    async def start_and_wait_ready(self, seconds: float = 30.0) -> None:
        ready = self.notify.count("READY=1") + 1
        self.start()
        await eventually(
            lambda: self.notify.count("READY=1") >= ready or not self.running,
            seconds,
            "the gateway's READY=1",
        )
        if not self.running:
            raise AssertionError(f"the gateway exited before READY=1:\n{self.log_tail()}")

    def signal(self, name: str) -> None:
        if self.running:
            self._process.signalProcess(name)

    async def wait_exit(self, seconds: float) -> int | None:
        if self._protocol is None:
            return None
        code: int | None = await within(self._protocol.ended, seconds, "the gateway to exit")
        self.exit_codes.append(code)
        return code

    async def kill9(self) -> None:
        """SIGKILL, and wait until it is gone."""
        if self.running:
            self.signal("KILL")
            await self.wait_exit(10)

    async def terminate(self, seconds: float = 30.0) -> int | None:
        """SIGTERM (systemctl stop); the exit status."""
        self.signal("TERM")
        return await self.wait_exit(seconds)

    def cleanup(self) -> Deferred[None]:
        """Kill the process if it is still running (test cleanup)."""
        if not self.running or self._protocol is None:
            return succeed(None)
        self._process.signalProcess(signal.SIGKILL)
        return self._protocol.ended.addBoth(lambda _: None)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# -- the HIS side ----------------------------------------------------------------------------


async def send_to_gateway(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send one HL7 message to the gateway's order listener (as the HIS does); its ACK."""
    endpoint = TCP4ClientEndpoint(REACTOR, HOST, port, timeout=5)
    client: MllpClientProtocol = await connect_mllp(endpoint, clock=REACTOR)
    try:
        reply = await client.request(payload, timeout=timeout)
    finally:
        await client.close()
    return reply.payload


# -- the analyzer side -----------------------------------------------------------------------


class ResendingAnalyzer:
    """An analyzer simulator (lisgw.sim.analyzer) as a real instrument behaves towards a host
    that restarts: it connects (retrying while nobody listens), sends each message in its own
    ENQ…EOT session, and sends again from the start a message not fully acknowledged when
    the line dropped. ``acked`` lists the messages whose every frame was acknowledged."""

    def __init__(self, port: int, *, name: str = "SIM") -> None:
        self.port = port
        self.simulator = AnalyzerSimulator(clock=REACTOR, name=name)
        self.acked: list[int] = []
        self.attempts = 0

    async def connect(self, seconds: float = 30.0) -> None:
        deadline = REACTOR.seconds() + seconds
        while True:
            protocol = self.simulator.protocol
            if protocol is not None and protocol.transport is not None and not protocol.lost:
                return
            endpoint = TCP4ClientEndpoint(REACTOR, HOST, self.port, timeout=2)
            try:
                await endpoint.connect(self.simulator.factory())
                await within(self.simulator.when_connected(), 5, "the analyzer's line")
                return
            except (ConnectionError, OSError) as error:
                if REACTOR.seconds() > deadline:
                    raise AssertionError(f"no gateway on port {self.port}: {error}") from error
            except Exception as error:  # twisted.internet.error.ConnectError and friends
                if REACTOR.seconds() > deadline:
                    raise AssertionError(f"no gateway on port {self.port}: {error}") from error
            await sleep(0.05)

    async def send(self, index: int, records: Sequence[bytes], seconds: float = 60.0) -> None:
        """Send one message until it is fully acknowledged."""
        deadline = REACTOR.seconds() + seconds
        while True:
            await self.connect()
            self.attempts += 1
            outcome: MessageOutcome = await self.simulator.send_message(records)
            if outcome.delivered:
                self.acked.append(index)
                return
            if REACTOR.seconds() > deadline:
                raise AssertionError(f"message {index} never acknowledged: {outcome.reason}")
            await sleep(0.05)

    async def close(self) -> None:
        await self.simulator.close()


class PartialInstrument(Protocol):
    """An instrument that gives up mid-message: ENQ, some frames (each waiting for its ACK),
    then nothing more: no EOT, and the line is cut or left open."""

    def __init__(self) -> None:
        self._waiters: list[Deferred[bytes]] = []
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        for byte in data:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(bytes((byte,)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(reason)
        self.closed.callback(None)

    def _reply(self) -> Deferred[bytes]:
        waiter: Deferred[bytes] = Deferred()
        self._waiters.append(waiter)
        return within(waiter, 5, "the gateway's reply")

    async def send(self, frames: Sequence[bytes]) -> int:
        """ENQ, then ``frames`` one by one; how many were acknowledged."""
        assert self.transport is not None
        self.transport.write(ENQ)
        if await self._reply() != ACK:
            return 0
        acked = 0
        for frame in frames:
            self.transport.write(frame)
            if await self._reply() != ACK:
                break
            acked += 1
        return acked

    def abort(self) -> Deferred[None]:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        return self.closed


def partial_frames(records: Sequence[bytes], count: int) -> list[bytes]:
    """The first ``count`` E1381 frames of a message made of ``records``."""
    return fr.build_frames(b"".join(record + b"\r" for record in records))[:count]


async def connect_partial(port: int) -> PartialInstrument:
    endpoint = TCP4ClientEndpoint(REACTOR, HOST, port, timeout=2)
    protocol = await endpoint.connect(Factory.forProtocol(PartialInstrument))
    assert isinstance(protocol, PartialInstrument)
    return protocol


async def send_partial(port: int, records: Sequence[bytes], frames_to_send: int) -> int:
    """Send the first frames of a message (``records`` hold no L record) and cut the line
    without EOT; the frames acknowledged (0 when the gateway was down)."""
    try:
        instrument = await connect_partial(port)
    except Exception:  # the gateway is down (being killed): nothing was sent
        return 0
    try:
        return await instrument.send(partial_frames(records, frames_to_send))
    except Exception:  # the line dropped (gateway killed): what was ACKed stays ACKed
        return 0
    finally:
        await within(instrument.abort(), 5, "the partial line to close")


async def start_his(case: Any) -> tuple[HisSimulator, int]:
    """A HIS simulator on a free loopback port, stopped when the test ends."""
    his = HisSimulator(REACTOR, clock=REACTOR, host=HOST)
    port = await his.start()
    case.addCleanup(his.stop)
    return his, port


async def start_gateway(
    case: Any, config: Path, workdir: Workdir, **options: Any
) -> GatewayProcess:
    """``lisgw run`` for ``config`` with a notify socket, both cleaned up; returns after
    READY=1. ``options`` go to GatewayProcess (log_format, watchdog_usec)."""
    notify = NotifySocket(workdir.path / "notify.sock")
    case.addCleanup(notify.close)
    gateway = GatewayProcess(config, notify, workdir.path / "gateway.log", **options)
    case.addCleanup(gateway.cleanup)
    await gateway.start_and_wait_ready()
    return gateway
