"""Crash recovery: sessions left open by a crash, processed from their committed frames.

A "crash" here is a line whose frames were all committed and ACKed through the live path
(AstmLinkProtocol → AnalyzerIngest → FrameJournal → real store) and that is then simply
abandoned: no EOT, no connection loss, so the transfer was never processed and its session
is still open in the store, as after a kill -9. ``recover`` then runs as at the next start.
Captures come from the shared corpus; orders and HIS codes are invented (see
tests/integration/test_ingest.py, whose helpers these tests use). SQLite and PostgreSQL.
"""

from __future__ import annotations

from lisgw.astm.frames import build_frame
from lisgw.his.types import HisOrder
from lisgw.hl7 import apy
from lisgw.routing import RoutingConfig
from lisgw.services.ingest import AnalyzerIngest
from lisgw.services.recovery import RECOVERED_REASON, RecoveryReport, recover
from lisgw.store import work
from lisgw.store.ingest_work import open_sessions
from lisgw.store.records import Direction, MessageState
from lisgw.store.schema import results, sessions
from tests.integration.test_ingest import (
    CODES,
    E411,
    E411_SAMPLE,
    ENQ,
    NOW,
    PROFILE,
    IngestTest,
    analyzer,
    capture,
    frames_of,
    order,
    rows,
)

LATER = NOW + 3600.0
ORDER: HisOrder = order("ORD-1", E411_SAMPLE, "IMM-8", "IMM-7", "IMM-1")


class RecoveryTests(IngestTest):
    async def crash_after(self, ingest: AnalyzerIngest, data: bytes) -> None:
        """Feed a line; every frame is committed and ACKed; then the process 'dies'."""
        protocol, transport = self.line(ingest)
        protocol.dataReceived(data)
        await self.settle(ingest)
        assert transport.value().count(b"\x15") == 0  # nothing was refused
        assert self.messages() == []  # the transfer never ended: nothing processed yet

    def recover(self, **options: object) -> RecoveryReport:
        return recover(
            self.store,
            self.catalogue,
            PROFILE,
            RoutingConfig(),
            CODES,
            LATER,
            **options,  # type: ignore[arg-type]
        )

    def whole_e411_without_eot(self) -> bytes:
        data = capture(E411)
        return data[: data.rindex(b"\x04")]

    async def test_committed_frames_without_eot_are_processed_once(self) -> None:
        self.save_orders(ORDER)
        await self.crash_after(self.ingest(), self.whole_e411_without_eot())
        report = self.recover()
        assert (report.sessions, report.recovered, report.failed) == (1, 1, 0)
        assert (report.stored.results, report.stored.outbox, report.stored.incomplete) == (7, 1, 0)
        (message,) = self.messages()
        assert (message.state, message.driver) == (MessageState.ROUTED, "roche-cobas-e411@1")
        matched = [m for (m,) in rows(self.store, results, "match")]
        assert matched.count("matched") == 3
        (row,) = self.outbox()
        apy.validate(row.payload, PROFILE.encoding)
        assert row.order_placer == "ORD-1"
        assert rows(self.store, sessions, "close_reason", "closed_at") == [
            (RECOVERED_REASON, LATER)
        ]

    async def test_running_recovery_twice_gives_nothing_new(self) -> None:
        self.save_orders(ORDER)
        await self.crash_after(self.ingest(), self.whole_e411_without_eot())
        first = self.recover()
        assert first.recovered == 1
        assert self.recover() == RecoveryReport()
        assert len(self.messages()) == 1
        assert len(rows(self.store, results, "id")) == 7
        assert len(self.outbox()) == 1

    async def test_the_instrument_resending_after_recovery_adds_no_delivery(self) -> None:
        self.save_orders(ORDER)
        await self.crash_after(self.ingest(), self.whole_e411_without_eot())
        self.recover()
        restarted = self.ingest()
        await self.replay(restarted, [capture(E411)])
        assert restarted.totals.duplicates == 7 and restarted.totals.results == 0
        assert len(self.outbox()) == 1

    async def test_a_partial_trailing_message_is_incomplete(self) -> None:
        self.save_orders(ORDER)
        data = capture(E411)
        cut = data.index(frames_of(data)[2])  # frames 1 and 2 ACKed, the L never came
        await self.crash_after(self.ingest(), data[:cut])
        report = self.recover()
        assert (report.recovered, report.stored.incomplete, report.stored.results) == (1, 1, 0)
        (message,) = self.messages()
        assert message.state == MessageState.INCOMPLETE
        assert rows(self.store, results, "id") == []
        assert self.outbox() == []

    async def test_complete_messages_are_kept_and_the_trailing_one_is_not(self) -> None:
        self.save_orders(ORDER)
        frames = b"".join(f + b"\r\n" for f in frames_of(capture(E411)))
        # A second message began in frame 4 and was cut off by the crash.
        next_message = b"H|\\^&|||cobas-e411^1|||||host|RSUPL^BATCH|P|1\rP|1\rO|1|0000"
        partial = build_frame(4, next_message, final=False)
        await self.crash_after(self.ingest(), ENQ + frames + partial)
        report = self.recover()
        assert (report.stored.results, report.stored.incomplete) == (7, 1)
        first, second = self.messages()
        assert first.state == MessageState.ROUTED
        assert second.state == MessageState.INCOMPLETE
        assert second.raw == b"H|\\^&|||cobas-e411^1|||||host|RSUPL^BATCH|P|1\rP|1\r"
        assert len(self.outbox()) == 1

    async def test_a_session_with_messages_already_is_only_closed(self) -> None:
        await self.crash_after(self.ingest(), self.whole_e411_without_eot())
        ((session_id,),) = rows(self.store, sessions, "id")
        self.store.run_sync(
            work.save_message,
            b"H|\\^&\rL|1\r",
            direction=Direction.IN,
            protocol="astm",
            kind="results",
            now=NOW,
            connection="e411",
            session_id=session_id,
            state=MessageState.ROUTED,
        )
        report = self.recover()
        assert (report.sessions, report.recovered, report.already_processed) == (1, 0, 1)
        assert rows(self.store, results, "id") == []
        assert self.store.run_sync(open_sessions) == []

    async def test_only_the_given_connections_are_recovered(self) -> None:
        await self.crash_after(self.ingest(analyzer("e411")), self.whole_e411_without_eot())
        await self.crash_after(self.ingest(analyzer("other")), self.whole_e411_without_eot())
        self.store.run_sync(work.open_session, "his", protocol="hl7", peer="his:1", now=NOW)
        report = self.recover(connections=[analyzer("e411", driver="roche-cobas-e411")])
        assert (report.sessions, report.recovered) == (1, 1)
        still_open = sorted(s.connection for s in self.store.run_sync(open_sessions))
        assert still_open == ["his", "other"]  # another process's lines; the HIS listener's
        everything = self.recover()
        assert (everything.sessions, everything.recovered) == (1, 1)  # ASTM only: "other"


class RecoveryOnPostgresTest(RecoveryTests):
    backend = "postgresql"
