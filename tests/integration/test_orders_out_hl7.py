"""HL7 host queries over a real MLLP connection: QRY^Q02 → DSR^Q03 / QCK^Q02, QCN^J01 cancel.

The gateway side is the gateway's own ``AnalyzerMllpHandler`` (lisgw.services.gateway) in an
``MllpServerFactory`` on 127.0.0.1 port 0, with an HL7 ``AnalyzerIngest`` and, for query
mode, a ``HostQueryResponder``; the analyzer is an MLLP client (lisgw.transports.mllp). The
reactor is the real one; every wait is bounded. Each test runs on SQLite and on PostgreSQL.

The QRY^Q02 messages are hand-written from HL7 v2.3.1 (chapter 2, QRD/QRF) with invented
analyzer names, sample IDs and orders, not captures. The GeneXpert QBP^Z03 and QCN^J01 are
the corpus captures (hl7/cepheid_genexpert, vendor examples; no patient data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

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
from lisgw.hl7 import apy
from lisgw.routing import RoutingConfig
from lisgw.services.gateway import AnalyzerMllpHandler
from lisgw.services.ingest import AnalyzerIngest
from lisgw.services.journal import FrameJournal
from lisgw.services.responder import HostQueryResponder
from lisgw.store import work
from lisgw.store.records import QueueTarget
from lisgw.store.schema import messages, order_queue, queries
from lisgw.transports.mllp import MllpClientProtocol, MllpServerFactory, MllpSettings, connect_mllp
from tests.integration.test_journal import make_store

CORPUS = Path("/work/shared/corpus/hl7/cepheid_genexpert")
XPERT_QBP = CORPUS / "cepheid_genexpert_hl7_qbp_z03_host_query.bin"
XPERT_QCN = CORPUS / "cepheid_genexpert_hl7_qcn_j01_query_cancel.bin"
NOW = 1_767_268_800.0
ROUTES = {
    "CHEM-GLU": (QueueTarget("chem", "GLU"),),
    "CHEM-ALT": (QueueTarget("chem", "ALT"),),
}
WAIT = 10.0  # seconds any one request may take before the test fails


def qry(who: str, tag: str) -> bytes:
    """A QRY^Q02 per HL7 v2.3.1 §2.24.4: QRD-4 the query ID, QRD-8 the sample IDs."""
    return (
        "MSH|^~\\&|CHEM-1|ANALYZER|LIS|LAB|20260101120000||QRY^Q02|Q100|P|2.3.1\r"
        f"QRD|20260101120000|R|I|{tag}|||1^RD|{who}|OTH|LAB||T\r"
        "QRF|CHEM-1|20260101000000|20260101120000|||RCT|COR|ALL\r"
    ).encode()


def order(placer: str, sample_id: str, *codes: str) -> HisOrder:
    return HisOrder(
        control="new",
        placer=placer,
        filler="",
        sample_id=sample_id,
        patient_id=f"PAT-{placer}",
        patient_name="TEST^PATIENT",
        priority="R",
        tests=tuple(OrderedTest(code, code.lower()) for code in codes),
    )


def connection(name: str, driver: str, mode: OrderMode) -> ConnectionConfig:
    return ConnectionConfig(
        name=name,
        transport=TransportKind.TCP_SERVER,
        protocol=WireProtocol.HL7,
        driver=driver,
        tcp=TcpEndpoint("127.0.0.1", 0),
        serial=None,
        encoding="utf-8",
        time_zone=None,
        orders=mode,
    )


class Hl7HostQueryTest(unittest.TestCase):
    backend = "sqlite"
    timeout = 60

    def setUp(self) -> None:
        self.store = make_store(self, self.backend)
        self.journal = FrameJournal(self.store, reactor)

    async def analyzer(self, name: str, driver: str, mode: OrderMode) -> MllpClientProtocol:
        """Serve one HL7 analyzer connection as the gateway does; connect its analyzer."""
        ingest = AnalyzerIngest(
            self.store,
            self.journal,
            default_catalogue(),
            HisProfile.plain("2.5.1"),
            RoutingConfig(),
            None,
            reactor,
            connection=connection(name, driver, mode),
        )
        responder = None
        if mode in (OrderMode.QUERY, OrderMode.BOTH):
            responder = HostQueryResponder(self.store, ingest, reactor)
        handler = AnalyzerMllpHandler(ingest, clock=reactor, encoding="utf-8", responder=responder)
        factory = MllpServerFactory(handler, clock=reactor, settings=MllpSettings())
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.stop, port, factory, ingest)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = await connect_mllp(
            endpoint, clock=reactor, settings=MllpSettings(idle_timeout=None)
        )
        self.addCleanup(client.close)
        return client

    async def stop(self, port: Any, factory: MllpServerFactory, ingest: AnalyzerIngest) -> None:
        await port.stopListening()
        await factory.close_connections()
        await ingest.close()
        await self.journal.drain()

    async def ask(self, client: MllpClientProtocol, payload: bytes) -> list[str]:
        reply = await client.request(payload, WAIT)
        apy.validate(reply.payload)
        return reply.payload.decode().rstrip("\r").split("\r")

    def rows(self, table: sa.Table, *columns: str) -> list[tuple[Any, ...]]:
        def read(conn: sa.Connection) -> list[tuple[Any, ...]]:
            selected = [table.c[name] for name in columns]
            return [tuple(r) for r in conn.execute(sa.select(*selected).order_by(table.c.id))]

        return self.store.run_sync(read)

    async def test_a_qry_is_answered_with_a_dsr_listing_every_asked_sample(self) -> None:
        self.store.run_sync(
            work.save_his_orders,
            (order("ORD-1", "S-1001", "CHEM-GLU", "CHEM-ALT"),),
            routes=ROUTES,
            now=NOW,
        )
        client = await self.analyzer("chem", "hl7-generic", OrderMode.QUERY)
        reply = await self.ask(client, qry("S-1001~S-404", "Q-1"))
        assert reply[0].split("|")[8] == "DSR^Q03^DSR_Q03"
        assert reply[1:3] == ["MSA|AA|Q100", "QAK|Q-1|OK"]
        assert reply[5:] == [
            "DSP|1|1|S-1001||S-1001",
            "DSP|2|2|GLU||S-1001",
            "DSP|3|2|ALT|S-1001|S-1001",
            "DSP|4|1|S-404|S-404|S-404",
        ]
        assert self.rows(queries, "sample_ids", "query_tag", "state") == [
            (["S-1001", "S-404"], "Q-1", "answered")
        ]
        assert self.rows(order_queue, "analyzer_code", "state") == [
            ("GLU", "sent"),
            ("ALT", "sent"),
        ]
        assert self.rows(messages, "direction", "kind") == [
            ("in", "query"),
            ("out", "query_reply"),
        ]

    async def test_a_qry_for_unknown_samples_gets_qck_nf(self) -> None:
        client = await self.analyzer("chem", "hl7-generic", OrderMode.QUERY)
        reply = await self.ask(client, qry("S-404~S-405", "Q-2"))
        assert reply[0].split("|")[8] == "QCK^Q02^QCK_Q02"
        assert reply[1:] == ["MSA|AA|Q100", "QAK|Q-2|NF"]
        assert self.rows(queries, "state") == [("answered",)]

    async def test_a_qcn_cancels_the_open_query_with_its_tag_and_is_acked(self) -> None:
        # Batch downloads only: the gateway does not answer the QBP, so the query stays open.
        client = await self.analyzer("xpert", "cepheid-genexpert-hl7", OrderMode.BATCH)
        ack = await self.ask(client, XPERT_QBP.read_bytes())
        assert ack[1] == "MSA|AA|662f165ebb1b4354b100cba090f1e7e5"
        assert self.rows(queries, "state") == [("open",)]
        ack = await self.ask(client, XPERT_QCN.read_bytes())
        assert ack[0].split("|")[8] == "ACK^J01^ACK"
        assert ack[1] == "MSA|AA|UDC000"
        assert self.rows(queries, "query_tag", "state") == [
            ("662f165ebb1b4354b100cba090f1e7e5", "cancelled")
        ]
        assert self.rows(messages, "kind") == [("query",), ("query_cancel",)]

    async def test_a_qcn_for_an_unknown_tag_is_acked_and_cancels_nothing(self) -> None:
        client = await self.analyzer("xpert", "cepheid-genexpert-hl7", OrderMode.BATCH)
        other = (
            XPERT_QBP.read_bytes()
            .replace(b"|662f165ebb1b4354b100cba090f1e7e5|P|2.5", b"|CTRL-2|P|2.5")
            .replace(b"HOST QUERY|662f165ebb1b4354b100cba090f1e7e5", b"HOST QUERY|OTHER-TAG")
        )
        await self.ask(client, other)
        ack = await self.ask(client, XPERT_QCN.read_bytes())
        assert ack[1] == "MSA|AA|UDC000"
        assert self.rows(queries, "query_tag", "state") == [("OTHER-TAG", "open")]


class Hl7HostQueryOnPostgresTest(Hl7HostQueryTest):
    backend = "postgresql"
