"""AnalyzerIngest end to end: corpus captures through AstmLinkProtocol into a real store.

The line is an AstmLinkProtocol from ``AnalyzerIngest.build_protocol`` on a
``StringTransport`` (what the gateway writes back is read from it); frames are committed
by a FrameJournal on the store's real thread pool; time is a ``Clock`` (the journal's
flushes, the link's timers, the ingest's retry delays). Captures come from the shared corpus
(../shared/corpus, replayed in their original read boundaries where known); orders, patients
and HIS codes are invented. Every ORU^R01 queued is checked with hl7apy strict validation.
Each test runs on SQLite and again on PostgreSQL (the ``…OnPostgresTest`` classes).

``IngestTest`` and its helpers are shared with tests/integration/test_recovery.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from lisgw.config_schema import ConnectionConfig, TcpEndpoint, TransportKind, WireProtocol
from lisgw.drivers import default_catalogue
from lisgw.drivers.mapping import TestCodeMap
from lisgw.errors import StoreError
from lisgw.his.profile import HisProfile
from lisgw.his.types import HisOrder, OrderedTest
from lisgw.hl7 import apy
from lisgw.hl7.message import parse_message
from lisgw.routing import RoutingConfig
from lisgw.services.ingest import RETRY_FIRST, AnalyzerIngest
from lisgw.services.journal import FrameJournal
from lisgw.store import work
from lisgw.store.records import MessageRecord, MessageState, OutboxRow, QueueTarget
from lisgw.store.runner import Store
from lisgw.store.schema import messages, results, sessions
from lisgw.transports.astm import AstmLinkProtocol
from tests.integration.test_journal import make_store, rename_table

NOW = 1_767_268_800.0  # 2026-01-01T12:00:00Z
PROFILE = HisProfile.plain("2.5.1")
E411 = "astm/roche_cobas_e411/roche_cobas_e411_multi_frame_results.bin"
XN_QC = "astm/sysmex_xn550/sysmex_xn550_qc_results_framed.bin"
CLINITEK = "hl7/siemens_clinitek_status/siemens_clinitek_status_hl7_oru_r01.bin"
E411_SAMPLE = "000002327"
E411_TESTS = ("8", "7", "6", "5", "4", "3", "1")  # R.3 of the capture: ^^^8/1/not …
CODES = TestCodeMap.from_dict(
    {"roche-cobas-e411": {f"{t}/1/not": f"IMM-{t}" for t in E411_TESTS}}, "test codes"
)
ROUTES = {f"IMM-{t}": (QueueTarget("e411", f"{t}/1/not"),) for t in E411_TESTS}
ACK, NAK, ENQ, EOT = b"\x06", b"\x15", b"\x05", b"\x04"


def corpus(name: str) -> Path:
    """A file of the shared corpus: the directory ``shared`` beside the repository."""
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / name


def capture(name: str) -> bytes:
    return corpus(name).read_bytes()


def reads(name: str) -> list[bytes]:
    """The capture in its original read() boundaries, where the corpus has them."""
    data = capture(name)
    chunks = corpus(name).with_name(corpus(name).stem + ".chunks.json")
    if not chunks.exists():
        return [data]
    pieces, start = [], 0
    for size in json.loads(chunks.read_text()):
        pieces.append(data[start : start + size])
        start += size
    return pieces


def frames_of(data: bytes) -> list[bytes]:
    """The frames of a capture, STX through the checksum (as the link archives them)."""
    return [f[:-2] for f in re.findall(rb"\x02[^\x02]*?\r\n", data)]


def analyzer(name: str = "e411", *, driver: str | None = None) -> ConnectionConfig:
    return ConnectionConfig(
        name=name,
        transport=TransportKind.TCP_SERVER,
        protocol=WireProtocol.ASTM,
        driver=driver,
        tcp=TcpEndpoint("127.0.0.1", 0),
        serial=None,
        encoding="latin-1",
        time_zone=None,
    )


def order(placer: str, sample_id: str, *codes: str) -> HisOrder:
    return HisOrder(
        control="new",
        placer=placer,
        filler="",
        sample_id=sample_id,
        patient_id=f"PAT-{placer}",
        patient_name="TEST^PATIENT",
        tests=tuple(OrderedTest(code, code.lower()) for code in codes),
    )


def rows(store: Store, table: sa.Table, *columns: str) -> list[tuple[Any, ...]]:
    def read(conn: sa.Connection) -> list[tuple[Any, ...]]:
        selected = [table.c[name] for name in columns]
        return [tuple(r) for r in conn.execute(sa.select(*selected).order_by(table.c.id))]

    return store.run_sync(read)


class IngestTest(unittest.TestCase):
    backend = "sqlite"

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = make_store(self, self.backend)
        self.journal = FrameJournal(self.store, self.clock)
        self.catalogue = default_catalogue()

    def ingest(self, config: ConnectionConfig | None = None) -> AnalyzerIngest:
        return AnalyzerIngest(
            self.store,
            self.journal,
            self.catalogue,
            PROFILE,
            RoutingConfig(),
            CODES,
            self.clock,
            connection=config or analyzer(),
        )

    def line(self, ingest: AnalyzerIngest, port: int = 40001) -> tuple[AstmLinkProtocol, Any]:
        protocol = ingest.build_protocol()
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.2.3", port))  # type: ignore[no-untyped-call]
        protocol.makeConnection(transport)  # type: ignore[no-untyped-call]
        return protocol, transport

    async def settle(self, *ingests: AnalyzerIngest) -> None:
        """Let every queued commit and every ended transfer be processed."""
        while not self.journal.idle:
            self.clock.advance(0)
            await self.journal.drain()
        for ingest in ingests:
            await ingest.when_idle()

    async def replay(
        self, ingest: AnalyzerIngest, pieces: Sequence[bytes], *, lose: bool = False
    ) -> Any:
        """Feed a capture to a new line; ``lose``: the connection drops after it."""
        protocol, transport = self.line(ingest)
        for piece in pieces:
            protocol.dataReceived(piece)
        await self.settle(ingest)
        if lose:
            protocol.connectionLost()
            await self.settle(ingest)
        return transport

    def save_orders(self, *orders: HisOrder) -> None:
        self.store.run_sync(work.save_his_orders, orders, routes=ROUTES, now=NOW)

    def messages(self) -> list[MessageRecord]:
        return [
            self.store.run_sync(work.get_message, message_id)
            for (message_id,) in rows(self.store, messages, "id")
        ]

    def outbox(self) -> list[OutboxRow]:
        return self.store.run_sync(work.outbox_rows)


class IngestAstmTests(IngestTest):
    async def test_no_ack_before_the_frame_is_committed(self) -> None:
        ingest = self.ingest()
        protocol, transport = self.line(ingest)
        protocol.dataReceived(ENQ)
        assert transport.value() == ACK  # establishment: nothing to commit
        first = frames_of(capture(E411))[0]
        protocol.dataReceived(first + b"\r\n")
        assert transport.value() == ACK  # the frame waits for its commit
        assert self.journal.queued == 1
        await self.settle(ingest)
        assert transport.value() == ACK + ACK
        (session,) = rows(self.store, sessions, "id", "peer", "closed_at")
        assert session[1:] == ("10.1.2.3:40001", None)
        assert [f.data for f in self.store.run_sync(work.session_frames, session[0])] == [first]

    async def test_a_failed_commit_is_naked_and_the_retransmission_acked(self) -> None:
        ingest = self.ingest()
        protocol, transport = self.line(ingest)
        first = frames_of(capture(E411))[0] + b"\r\n"
        rename_table(self.store, "frames", "frames_away")
        protocol.dataReceived(ENQ + first)
        await self.settle(ingest)
        assert transport.value() == ACK + NAK  # E1381 §6.5.1: the sender retransmits
        rename_table(self.store, "frames_away", "frames")
        protocol.dataReceived(first)
        await self.settle(ingest)
        assert transport.value() == ACK + NAK + ACK
        ((session_id,),) = rows(self.store, sessions, "id")
        stored = self.store.run_sync(work.session_frames, session_id)
        assert [(f.seq, f.data) for f in stored] == [(1, first[:-2])]

    async def test_a_capture_is_stored_routed_and_queued_for_the_his(self) -> None:
        self.save_orders(order("ORD-1", E411_SAMPLE, "IMM-8", "IMM-7", "IMM-1"))
        ingest = self.ingest()
        transport = await self.replay(ingest, reads(E411))
        assert transport.value() == ACK * 4  # ENQ and three frames
        (message,) = self.messages()
        assert (message.state, message.kind, message.driver) == (
            MessageState.ROUTED,
            "results",
            "roche-cobas-e411@1",
        )
        assert message.raw.startswith(b"H|\\^&|||cobas-e411") and message.raw.endswith(b"L|1|N\r")
        matches = rows(self.store, results, "test", "match", "order_placer", "his_code")
        assert matches == [
            ("8/1/not", "matched", "ORD-1", "IMM-8"),
            ("7/1/not", "matched", "ORD-1", "IMM-7"),
            ("6/1/not", "extra", "", "IMM-6"),
            ("5/1/not", "extra", "", "IMM-5"),
            ("4/1/not", "extra", "", "IMM-4"),
            ("3/1/not", "extra", "", "IMM-3"),
            ("1/1/not", "matched", "ORD-1", "IMM-1"),
        ]
        (row,) = self.outbox()  # one ORU^R01 per specimen
        assert (row.sample_id, row.order_placer, row.state) == (E411_SAMPLE, "ORD-1", "pending")
        apy.validate(row.payload, PROFILE.encoding)
        oru = parse_message(row.payload)
        obr = oru.segment("OBR")
        assert obr is not None and (obr.get(2), obr.get(3)) == ("ORD-1", E411_SAMPLE)
        assert oru.control_id == row.control_id
        observations = [s for s in oru if s.name == "OBX"]
        assert [(s.get(3), s.get(5)) for s in observations][:2] == [
            ("IMM-8", "1.95"),
            ("IMM-7", "9.61"),
        ]
        assert len(observations) == 7
        ((session_id, reason),) = rows(self.store, sessions, "id", "close_reason")
        assert reason == "ended"
        archived = self.store.run_sync(work.session_frames, session_id)
        assert [f.data for f in archived] == frames_of(capture(E411))  # bytes exact

    async def test_the_same_session_resent_adds_no_result_and_no_delivery(self) -> None:
        self.save_orders(order("ORD-1", E411_SAMPLE, "IMM-8"))
        ingest = self.ingest()
        await self.replay(ingest, reads(E411))
        await self.replay(ingest, [capture(E411)])
        first, second = self.messages()
        assert first.state == second.state == MessageState.ROUTED
        assert first.raw == second.raw  # both kept raw
        assert len(rows(self.store, results, "id")) == 7
        assert len(self.outbox()) == 1
        assert ingest.totals.results == 7 and ingest.totals.duplicates == 7
        assert ingest.totals.outbox == 1

    async def test_an_incomplete_transfer_routes_nothing(self) -> None:
        self.save_orders(order("ORD-1", E411_SAMPLE, "IMM-8"))
        ingest = self.ingest()
        data = capture(E411)
        cut = data.index(frames_of(data)[2])  # the connection drops before the last frame
        transport = await self.replay(ingest, [data[:cut]], lose=True)
        assert transport.value() == ACK * 3
        (message,) = self.messages()
        assert (message.state, message.kind) == (MessageState.INCOMPLETE, "unknown")
        assert message.normalized is not None and message.normalized["incomplete"] is True
        assert rows(self.store, results, "id") == []
        assert self.outbox() == []
        ((reason,),) = rows(self.store, sessions, "close_reason")
        assert reason == "incomplete: connection closed before EOT"

    async def test_a_message_complete_before_the_connection_dropped_is_kept(self) -> None:
        # Its last frame was ACKed: the analyzer will not send it again (E1381 §6.3).
        ingest = self.ingest()
        data = capture(E411)
        await self.replay(ingest, [data[: data.rindex(EOT)]], lose=True)
        (message,) = self.messages()
        assert message.state == MessageState.ROUTED
        assert len(rows(self.store, results, "id")) == 7

    async def test_qc_results_are_qc_never_matched(self) -> None:
        self.save_orders(order("ORD-QC", "QC-82151403", "IMM-8"))  # even with an order
        ingest = self.ingest(analyzer("xn-550"))
        transport = await self.replay(ingest, [capture(XN_QC)])
        assert transport.value().count(NAK) == 0
        (message,) = self.messages()
        assert (message.state, message.driver) == (MessageState.ROUTED, "sysmex-xn@1")
        found = rows(self.store, results, "sample_id", "qc", "match")
        assert len(found) == 33
        assert set(found) == {("QC-82151403", True, "qc")}
        assert self.outbox() == []
        assert self.store.run_sync(work.review_queue) == []

    async def test_frames_of_many_lines_share_one_commit(self) -> None:
        ingests = [self.ingest(analyzer(f"e411-{n}")) for n in range(6)]
        first = frames_of(capture(E411))[0] + b"\r\n"
        lines = [self.line(ingest, 40000 + n) for n, ingest in enumerate(ingests)]
        for protocol, _transport in lines:
            protocol.dataReceived(ENQ + first)
        await self.settle(*ingests)
        assert self.journal.stats.flushes == 1
        assert self.journal.stats.frames == 6
        assert [transport.value() for _protocol, transport in lines] == [ACK + ACK] * 6

    async def test_a_store_outage_at_eot_is_retried(self) -> None:
        ingest = self.ingest()
        protocol, transport = self.line(ingest)
        data = capture(E411)
        protocol.dataReceived(data[: data.rindex(EOT)])
        await self.settle(ingest)
        rename_table(self.store, "messages", "messages_away")
        protocol.dataReceived(EOT)
        for _ in range(500):  # until the first attempt has failed (it runs on the pool)
            if ingest.retries:
                break
            await deferLater(global_reactor, 0.01, lambda: None)
        assert (ingest.retries, ingest.transfers) == (1, 0)
        rename_table(self.store, "messages_away", "messages")
        self.clock.advance(RETRY_FIRST)  # the retry is due
        await ingest.when_idle()
        (message,) = self.messages()
        assert message.state == MessageState.ROUTED
        assert transport.value() == ACK * 4


class IngestHl7Tests(IngestTest):
    def hl7_ingest(self) -> AnalyzerIngest:
        config = ConnectionConfig(
            name="clinitek",
            transport=TransportKind.TCP_SERVER,
            protocol=WireProtocol.HL7,
            driver=None,
            tcp=TcpEndpoint("127.0.0.1", 0),
            serial=None,
            encoding="utf-8",
            time_zone=None,
        )
        return self.ingest(config)

    async def test_an_hl7_message_is_committed_with_its_results(self) -> None:
        ingest = self.hl7_ingest()
        payload = capture(CLINITEK).strip(b"\x0b\x1c\r") + b"\r"
        await ingest.hl7_message(payload, "10.1.2.4:5100")
        (message,) = self.messages()
        assert (message.state, message.protocol, message.raw) == (
            MessageState.ROUTED,
            "hl7",
            payload,
        )
        assert message.driver == "siemens-clinitek@1"
        assert len(rows(self.store, results, "id")) == 12  # unmatched: no order, no code
        ((session_id, peer, reason),) = rows(self.store, sessions, "id", "peer", "close_reason")
        assert (peer, reason) == ("10.1.2.4:5100", "message")
        assert [f.data for f in self.store.run_sync(work.session_frames, session_id)] == [payload]
        assert len(self.store.run_sync(work.review_queue)) == 12

    async def test_a_payload_that_is_not_hl7_is_kept_rejected(self) -> None:
        ingest = self.hl7_ingest()
        await ingest.hl7_message(b"\x00garbage", "10.1.2.4:5100")
        (message,) = self.messages()
        assert message.state == MessageState.REJECTED
        assert message.reason.startswith("not an HL7 message")

    async def test_nothing_kept_fails_the_deferred(self) -> None:
        ingest = self.hl7_ingest()
        rename_table(self.store, "frames", "frames_away")
        with pytest.raises(StoreError):
            await ingest.hl7_message(capture(CLINITEK).strip(b"\x0b\x1c\r"), "peer")
        rename_table(self.store, "frames_away", "frames")
        assert self.messages() == []


class IngestAstmOnPostgresTest(IngestAstmTests):
    backend = "postgresql"


class IngestHl7OnPostgresTest(IngestHl7Tests):
    backend = "postgresql"
