"""StatusReporter writes the gateway's live state: node heartbeat, line states, coalesced.

Trial tests: the reporter's time is a ``Clock``; the store is real (SQLite in a temporary
directory, and PostgreSQL in a fresh schema), its units run on the store's thread pool. The
tcp-client line is a real ReconnectingClient on an endpoint whose attempts the test fails;
the tcp-server line is an ObservedFactory connected to a StringTransport. No network.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from lisgw.services.status import StatusReporter
from lisgw.store import migrate
from lisgw.store.database import make_engine
from lisgw.store.runner import Store
from lisgw.store.schema import connection_status, nodes
from lisgw.transports.tcp import ReconnectingClient, ReconnectPolicy
from tests.pgschema import fresh_pg_schema

NOW = 1_767_268_800.0
PEER = IPv4Address("TCP", "10.0.0.9", 4000)


class FailingEndpoint:
    """Each connect() waits until the test fails it (the analyzer is not there)."""

    def __init__(self) -> None:
        self.attempts: list[Deferred[IProtocol]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        attempt: Deferred[IProtocol] = Deferred()
        self.attempts.append(attempt)
        return attempt


def read(conn: sa.Connection) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    node = {row.name: row._asdict() for row in conn.execute(sa.select(nodes))}
    lines = {row.name: row._asdict() for row in conn.execute(sa.select(connection_status))}
    return node, lines


class ReporterCases:
    """The cases, run on each backend by the subclasses below."""

    store: Store

    def make_store(self) -> Store:
        raise NotImplementedError

    def setUp(self) -> None:
        self.store = self.make_store()
        migrate.upgrade(self.store.engine)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.reporter = StatusReporter(self.store, clock=self.clock, node="gw-1", pid=7)
        self.endpoint = FailingEndpoint()
        self.client = ReconnectingClient(
            self.endpoint,  # type: ignore[arg-type]
            Factory.forProtocol(Protocol),
            clock=self.clock,
            policy=ReconnectPolicy(initial_delay=2.0, jitter=0.0),
            name="xn-2",
        )
        self.reporter.track_server("xn-1")
        self.reporter.track_client("xn-2", self.client)
        self.messages = [0]
        self.reporter.watch_messages("xn-1", lambda: self.messages[0])

    async def tick(self) -> None:
        """One second on: the reporter's tick, and its write awaited."""
        self.clock.advance(1.0)
        writing = self.reporter._writing
        if writing is not None:
            await writing

    async def test_start_writes_node_and_lines(self) -> None:
        await self.reporter.startService()
        node, lines = self.store.run_sync(read)
        case: Any = self
        case.assertEqual(node["gw-1"]["pid"], 7)
        case.assertEqual(node["gw-1"]["heartbeat_at"], NOW)
        case.assertIsNone(node["gw-1"]["stopped_at"])
        case.assertEqual(lines["xn-1"]["state"], "listening")
        case.assertEqual(lines["xn-2"]["state"], "stopped")
        case.assertEqual(lines["xn-1"]["node"], "gw-1")
        await self.reporter.stopService()

    async def test_client_states_reconnects_and_errors(self) -> None:
        case: Any = self
        await self.reporter.startService()
        self.client.startService()
        self.endpoint.attempts[0].errback(Failure(ConnectionLost("no route to host")))
        await self.tick()
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-2"]["state"], "down")
        case.assertEqual(lines["xn-2"]["errors"], 1)
        case.assertIn("no route to host", lines["xn-2"]["last_error"])
        case.assertEqual(lines["xn-2"]["reconnects"], 0)
        self.clock.advance(2.0)  # the backoff: a new attempt
        case.assertEqual(len(self.endpoint.attempts), 2)
        await self.tick()
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-2"]["state"], "connecting")
        case.assertEqual(lines["xn-2"]["reconnects"], 1)
        await self.client.stopService()
        await self.reporter.stopService()

    async def test_server_lines_messages_and_coalescing(self) -> None:
        case: Any = self
        await self.reporter.startService()
        writes = self.reporter.writes
        factory = self.reporter.line_factory("xn-1", Factory.forProtocol(Protocol))
        protocol = factory.buildProtocol(PEER)
        protocol.makeConnection(StringTransport(peerAddress=PEER))
        self.messages[0] = 3  # the ingest stored transfers
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-1"]["state"], "listening")  # not written before the tick
        await self.tick()
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-1"]["state"], "connected")
        case.assertEqual(lines["xn-1"]["peer"], "10.0.0.9:4000")
        case.assertEqual(lines["xn-1"]["last_message_at"], NOW + 1.0)
        case.assertEqual(self.reporter.writes, writes + 1)
        # Lost and back within one tick: one write, the last state wins.
        protocol.connectionLost(Failure(ConnectionLost("reset by peer")))
        again = factory.buildProtocol(PEER)
        again.makeConnection(StringTransport(peerAddress=PEER))
        await self.tick()
        _, lines = self.store.run_sync(read)
        case.assertEqual(self.reporter.writes, writes + 2)
        case.assertEqual(lines["xn-1"]["state"], "connected")
        case.assertEqual(lines["xn-1"]["errors"], 1)
        case.assertIn("reset by peer", lines["xn-1"]["last_error"])
        await self.tick()  # nothing changed, no heartbeat due: no write
        case.assertEqual(self.reporter.writes, writes + 2)
        again.connectionLost(Failure(ConnectionLost("closed")))
        await self.tick()
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-1"]["state"], "listening")
        await self.reporter.stopService()

    async def test_heartbeat_and_stop(self) -> None:
        case: Any = self
        await self.reporter.startService()
        for _ in range(5):
            await self.tick()
        node, _ = self.store.run_sync(read)
        case.assertEqual(node["gw-1"]["heartbeat_at"], NOW + 5.0)
        await self.reporter.stopService()
        node, lines = self.store.run_sync(read)
        case.assertEqual(node["gw-1"]["stopped_at"], NOW + 5.0)
        case.assertEqual({line["state"] for line in lines.values()}, {"stopped"})

    async def test_last_message_at_at_most_every_message_refresh(self) -> None:
        case: Any = self
        await self.reporter.startService()
        self.messages[0] = 1
        await self.tick()  # NOW + 1: first message noted at once
        writes = self.reporter.writes
        for second in range(2, 6):  # NOW + 2 … + 5: new messages every second, not written
            self.messages[0] = second
            await self.tick()
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-1"]["last_message_at"], NOW + 1.0)
        case.assertEqual(self.reporter.writes, writes + 1)  # the heartbeat at NOW + 5 only
        self.messages[0] = 6
        await self.tick()  # NOW + 6: MESSAGE_REFRESH (5 s) since the last one
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-1"]["last_message_at"], NOW + 6.0)
        self.messages[0] = 7
        await self.tick()
        await self.reporter.stopService()  # at stop: noted whatever the refresh
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-1"]["last_message_at"], NOW + 7.0)
        case.assertEqual(lines["xn-1"]["state"], "stopped")

    async def test_many_lines_written_in_one_tick(self) -> None:
        case: Any = self
        for n in range(3, 13):
            self.reporter.track_server(f"xn-{n}")
        await self.reporter.startService()
        for n in range(3, 13, 2):
            self.reporter.line_opened(f"xn-{n}", f"10.0.0.{n}:4000")
        await self.tick()
        _, lines = self.store.run_sync(read)
        case.assertEqual(len(lines), 12)
        for n in range(3, 13):
            opened = n % 2 == 1
            case.assertEqual(lines[f"xn-{n}"]["state"], "connected" if opened else "listening")
            case.assertEqual(lines[f"xn-{n}"]["peer"], f"10.0.0.{n}:4000" if opened else "")
        await self.reporter.stopService()

    async def test_store_failure_is_retried_at_the_next_tick(self) -> None:
        case: Any = self
        await self.reporter.startService()
        self.reporter.line_opened("xn-1", "10.0.0.9:4000")
        self.store.run_sync(lambda conn: conn.execute(sa.delete(connection_status)))
        real_run = self.store.run
        self.store.run = lambda *a, **k: real_run(_broken)  # type: ignore[method-assign]
        await self.tick()
        self.flushLoggedErrors()  # type: ignore[attr-defined]
        self.store.run = real_run  # type: ignore[method-assign]
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines, {})
        await self.tick()
        _, lines = self.store.run_sync(read)
        case.assertEqual(lines["xn-1"]["state"], "connected")
        await self.reporter.stopService()


def _broken(conn: sa.Connection) -> None:
    conn.execute(sa.text("SELECT * FROM no_such_table"))


class SqliteReporterTest(ReporterCases, unittest.TestCase):
    def make_store(self) -> Store:
        directory = Path(tempfile.mkdtemp(prefix="lisgw-status-"))
        self.addCleanup(shutil.rmtree, directory, True)
        engine = make_engine(f"sqlite:///{directory / 'lisgw.sqlite'}")
        store = Store(engine, reactor=global_reactor)  # type: ignore[arg-type]
        self.addCleanup(store.close)
        return store


class PostgresReporterTest(ReporterCases, unittest.TestCase):
    def make_store(self) -> Store:
        url = fresh_pg_schema(self, "lisgw_status")
        store = Store(make_engine(url), reactor=global_reactor)  # type: ignore[arg-type]
        self.addCleanup(store.close)
        return store
