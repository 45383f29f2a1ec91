"""Orders out over a real E1381 line: host-query replies and batch downloads.

The gateway side is an ``AnalyzerIngest`` line (lisgw.services.ingest) listening on
127.0.0.1 port 0, with a ``HostQueryResponder`` (lisgw.services.responder) or an
``OrderDownloader`` (lisgw.services.download); the analyzer is the ``AnalyzerSimulator``
(lisgw.sim.analyzer) connecting to it, speaking real E1381 in the instrument role. The
reactor is the real one (loopback sockets, the store's thread pool); every wait is bounded.
Orders, patients and codes are invented. Each test runs on SQLite and again on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.trial import unittest

from lisgw.astm.events import FrameReceived
from lisgw.config_schema import (
    ConnectionConfig,
    OrderMode,
    TcpEndpoint,
    TransportKind,
    WireProtocol,
)
from lisgw.drivers import default_catalogue
from lisgw.his.profile import HisProfile
from lisgw.his.types import HisOrder, OrderedTest
from lisgw.routing import RoutingConfig
from lisgw.services.backoff import BackoffPolicy
from lisgw.services.download import OrderDownloader
from lisgw.services.ingest import AnalyzerIngest
from lisgw.services.journal import FrameJournal
from lisgw.services.responder import HostQueryResponder
from lisgw.sim.analyzer import AnalyzerSimulator, host_query_records
from lisgw.store import work
from lisgw.store.records import QueueTarget
from lisgw.store.schema import messages, order_queue, queries, replies
from lisgw.transports.astm import AstmLinkFactory, AstmLinkProtocol
from tests.integration.test_journal import make_store

NOW = 1_767_268_800.0
ROUTES = {
    "HEM-WBC": (QueueTarget("xn", "WBC"),),
    "HEM-RBC": (QueueTarget("xn", "RBC"),),
}
WAIT = 10.0  # seconds any one wait may take before the test fails


def order(placer: str, sample_id: str, *codes: str) -> HisOrder:
    return HisOrder(
        control="new",
        placer=placer,
        filler="",
        sample_id=sample_id,
        patient_id=f"PAT-{placer}",
        patient_name="TEST^PATIENT",
        priority="S",
        tests=tuple(OrderedTest(code, code.lower()) for code in codes),
    )


def analyzer(mode: OrderMode) -> ConnectionConfig:
    return ConnectionConfig(
        name="xn",
        transport=TransportKind.TCP_SERVER,
        protocol=WireProtocol.ASTM,
        driver="sysmex-xn",
        tcp=TcpEndpoint("127.0.0.1", 0),
        serial=None,
        encoding="latin-1",
        time_zone=None,
        orders=mode,
    )


class RefusingSimulator(AnalyzerSimulator):
    """An instrument that NAKs every frame while ``refusing`` (E1381 §6.5.1.2: the host
    gives the message up after six tries)."""

    refusing = False
    hanging: Deferred[None] | None = None  # frames wait for it (no reply to the host)

    def build_protocol(self) -> AstmLinkProtocol:
        protocol = super().build_protocol()
        protocol._commit_frame = self._commit  # type: ignore[attr-defined]
        return protocol

    def _commit(self, frame: FrameReceived) -> Deferred[None]:
        if self.hanging is not None:
            return self.hanging
        if self.refusing:
            return Deferred.fromCoroutine(self._refuse())
        return succeed(None)

    async def _refuse(self) -> None:
        raise RuntimeError("instrument refuses the frame")


class OrdersOutTest(unittest.TestCase):
    backend = "sqlite"
    timeout = 60

    def setUp(self) -> None:
        self.store = make_store(self, self.backend)
        self.journal = FrameJournal(self.store, reactor)
        self.sim = RefusingSimulator(clock=reactor, name="XN-550")

    def gateway_line(self, mode: OrderMode) -> tuple[AnalyzerIngest, int]:
        ingest = AnalyzerIngest(
            self.store,
            self.journal,
            default_catalogue(),
            HisProfile.plain("2.5.1"),
            RoutingConfig(),
            None,
            reactor,
            connection=analyzer(mode),
        )
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, AstmLinkFactory(lambda _: ingest.build_protocol()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(self.close_lines, ingest)
        return ingest, port.getHost().port

    async def close_lines(self, ingest: AnalyzerIngest) -> None:
        await self.sim.close()
        for line in list(ingest.lines):
            await line.close()
        await ingest.close()
        await self.journal.drain()

    async def connect(self, port: int) -> None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await endpoint.connect(self.sim.factory())
        await self.sim.when_connected()

    def save_orders(self, *orders: HisOrder) -> None:
        self.store.run_sync(work.save_his_orders, orders, routes=ROUTES, now=NOW)

    def rows(self, table: sa.Table, *columns: str) -> list[tuple[Any, ...]]:
        def read(conn: sa.Connection) -> list[tuple[Any, ...]]:
            selected = [table.c[name] for name in columns]
            return [tuple(r) for r in conn.execute(sa.select(*selected).order_by(table.c.id))]

        return self.store.run_sync(read)

    async def download(self) -> tuple[bytes, ...]:
        got = self.sim.next_download()
        got.addTimeout(WAIT, reactor)
        return await got

    async def until(self, check: Any) -> None:
        """Wait (bounded) until ``check()`` is true: the store is written from a thread."""
        for _ in range(int(WAIT / 0.05)):
            if check():
                return
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError("condition not reached in time")

    def queue(self) -> list[tuple[Any, ...]]:
        return self.rows(order_queue, "analyzer_code", "state", "attempts", "last_error")


class HostQueryTests(OrdersOutTest):
    async def test_a_query_is_answered_with_orders_and_no_orders_for_unknown_samples(self) -> None:
        self.save_orders(order("ORD-1", "S100", "HEM-WBC", "HEM-RBC"), order("ORD-2", "S200"))
        ingest, port = self.gateway_line(OrderMode.QUERY)
        responder = HostQueryResponder(self.store, ingest, reactor)
        responder.attach()
        await self.connect(port)
        outcome = await self.sim.send_host_query(["S100", "NOPE-1"])
        assert outcome.delivered
        reply = await self.download()
        assert reply[0].startswith(b"H|\\^&|||LISGW|||||XN-550||P|LIS2-A2|")
        assert reply[1:] == (
            b"P|1|PAT-ORD-1|||TEST^PATIENT",
            b"O|1|S100||^^^^WBC\\^^^^RBC|S||||||N||||||||||||||O",
            b"P|2",
            b"O|2|NOPE-1|||||||||||||||||||||||Y",
            b"L|1|N",
        )
        await responder.when_idle()
        await self.until(lambda: self.rows(replies, "tests") == [(2,)])
        assert self.queue() == [("WBC", "sent", 0, ""), ("RBC", "sent", 0, "")]
        assert self.rows(queries, "state") == [("answered",)]
        kinds = self.rows(messages, "direction", "kind")
        assert kinds == [("in", "query"), ("out", "query_reply")]
        assert responder.answered == 1

    async def test_a_reply_the_analyzer_refuses_leaves_the_tests_queued(self) -> None:
        self.save_orders(order("ORD-1", "S100", "HEM-WBC"))
        ingest, port = self.gateway_line(OrderMode.QUERY)
        responder = HostQueryResponder(self.store, ingest, reactor)
        responder.attach()
        await self.connect(port)
        self.sim.refusing = True
        await self.sim.send_host_query(["S100"])
        await self.until(lambda: responder.failed == 1)
        await responder.when_idle()
        assert self.queue() == [("WBC", "queued", 0, "")]
        assert self.rows(queries, "state") == [("open",)]

    async def test_a_query_abort_cancels_the_open_queries_and_is_not_answered(self) -> None:
        self.save_orders(order("ORD-1", "S100", "HEM-WBC"))
        ingest, port = self.gateway_line(OrderMode.QUERY)
        responder = HostQueryResponder(self.store, ingest, reactor)
        responder.attach()
        await self.connect(port)
        self.sim.refusing = True  # the first query's reply is refused: the query stays open
        await self.sim.send_host_query(["S100"])
        await self.until(lambda: responder.failed == 1)
        await responder.when_idle()
        self.sim.refusing = False
        # E1394 §12.1.13: Q.13 request information status "A" withdraws the last request.
        abort = host_query_records("XN-550", ["S100"])
        abort[1] = abort[1][: -len(b"O")] + b"A"
        outcome = await self.sim.send_message(abort)
        assert outcome.delivered
        await self.until(lambda: len(self.rows(queries, "state")) == 2)
        await self.until(lambda: self.rows(queries, "state") == [("cancelled",), ("cancelled",)])
        await responder.when_idle()
        assert responder.answered == 0
        assert self.queue() == [("WBC", "queued", 0, "")]
        assert self.rows(messages, "direction", "kind") == [("in", "query"), ("in", "query")]


class DownloadTests(OrdersOutTest):
    def downloader(self, ingest: AnalyzerIngest) -> OrderDownloader:
        policy = BackoffPolicy(base=0.2, cap=0.4, jitter=0.0, give_up_after=60.0)
        service = OrderDownloader(self.store, ingest, reactor, poll_interval=0.05, backoff=policy)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def test_queued_orders_are_downloaded_grouped_per_sample(self) -> None:
        ingest, port = self.gateway_line(OrderMode.BATCH)
        await self.connect(port)
        service = self.downloader(ingest)
        self.save_orders(
            order("ORD-1", "S1", "HEM-WBC"), order("ORD-2", "S2", "HEM-WBC", "HEM-RBC")
        )
        message = await self.download()
        assert message[1:] == (
            b"P|1|PAT-ORD-1|||TEST^PATIENT",
            b"O|1|S1||^^^^WBC|S||||||N||||||||||||||O",
            b"P|2|PAT-ORD-2|||TEST^PATIENT",
            b"O|2|S2||^^^^WBC\\^^^^RBC|S||||||N||||||||||||||O",
            b"L|1|N",
        )
        await self.until(lambda: [r[1] for r in self.queue()] == ["sent"] * 3)
        await self.until(lambda: service.delivered == 1)
        assert self.rows(messages, "direction", "kind") == [("out", "orders")]

    async def test_a_nak_ed_download_is_retried_with_backoff(self) -> None:
        ingest, port = self.gateway_line(OrderMode.BOTH)
        await self.connect(port)
        self.sim.refusing = True
        self.save_orders(order("ORD-1", "S1", "HEM-WBC"))
        service = self.downloader(ingest)
        await self.until(lambda: self.queue()[0][2] >= 1)
        (row,) = self.queue()
        assert row[:2] == ("WBC", "queued") and row[3]  # attempts counted, reason kept
        self.sim.refusing = False
        message = await self.download()
        assert message[2] == b"O|1|S1||^^^^WBC|S||||||N||||||||||||||O"
        await self.until(lambda: service.delivered == 1)
        assert self.queue()[0][1:3] == ("sent", 1)
        assert service.failures == 0

    async def test_orders_wait_while_the_line_is_down_and_go_when_it_is_up(self) -> None:
        ingest, port = self.gateway_line(OrderMode.BATCH)
        self.save_orders(order("ORD-1", "S1", "HEM-RBC"))
        self.downloader(ingest)
        await deferLater(reactor, 0.3, lambda: None)  # several polls with no line
        assert self.queue() == [("RBC", "queued", 0, "")]
        await self.connect(port)
        message = await self.download()
        assert message[2] == b"O|1|S1||^^^^RBC|S||||||N||||||||||||||O"
        await self.until(lambda: self.queue()[0][1] == "sent")

    async def test_a_line_lost_during_a_download_counts_an_attempt(self) -> None:
        ingest, port = self.gateway_line(OrderMode.BATCH)
        await self.connect(port)
        self.sim.hanging = Deferred()  # the first frame gets no reply
        self.save_orders(order("ORD-1", "S1", "HEM-WBC"))
        self.downloader(ingest)
        await self.until(lambda: self.rows(order_queue, "id") != [])
        await deferLater(reactor, 0.3, lambda: None)  # the download is in flight
        assert self.sim.protocol is not None and self.sim.protocol.transport is not None
        self.sim.protocol.transport.loseConnection()
        await self.until(lambda: self.queue()[0][2] >= 1)
        (row,) = self.queue()
        assert row[1] == "queued" and row[3]
        self.sim.hanging.callback(None)
        self.sim.hanging = None


class HostQueryOnPostgresTest(HostQueryTests):
    backend = "postgresql"


class DownloadOnPostgresTest(DownloadTests):
    backend = "postgresql"
