"""OutboxDispatcher end to end: a real SQLite store, real loopback MLLP, the HIS simulator.

Results are stored the way the gateway stores them (save_message, lisgw.routing.route,
lisgw.his.results.build_result_message, save_routed_results), then delivered to
lisgw.sim.his.HisSimulator. The dispatcher's time is a ``Clock``: a night-long outage is a few
``advance`` calls; sockets are real, on 127.0.0.1 port 0. The jitter draw is fixed at 0.5
(nominal delays) so each delay can be checked exactly. Results and orders are synthetic.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import Clock
from twisted.trial import unittest

from lisgw.his.profile import HisProfile
from lisgw.his.results import build_result_message, control_id_for, delivery_groups
from lisgw.his.types import HisOrder, OrderedTest
from lisgw.hl7.message import parse_message
from lisgw.model import Kind, NormalizedMessage, Protocol, Result, Specimen
from lisgw.routing import RoutingConfig, result_identity, route
from lisgw.services.backoff import BackoffPolicy
from lisgw.services.outbox import DispatcherSettings, OutboxDispatcher, PassReport
from lisgw.sim.his import AckMode, HisSimulator
from lisgw.store import migrate, work
from lisgw.store.database import make_engine
from lisgw.store.records import Direction, OutboxPayload, OutboxRow, OutboxState, QueueTarget
from lisgw.store.runner import Store
from lisgw.transports.mllp import MllpSettings
from lisgw.transports.tls import TlsMaterial, client_endpoint
from tests.integration.test_mllp_transport import make_pki
from tests.pgschema import fresh_pg_schema

REACTOR: IReactorTCP = global_reactor
HOST = "127.0.0.1"
NOW = 1_767_268_800.0  # 2026-01-01T12:00:00Z
PROFILE = HisProfile.plain("2.5.1")
ANALYZER = "c311"


def glucose(value: str, status: str = "F", minute: int = 5) -> Result:
    return Result(
        "GLU",
        value,
        test_name="Glucose",
        units="mmol/L",
        status=status,
        completed_at=f"2026-01-01T11:{minute:02d}:00+00:00",
    )


def order(placer: str, sample_id: str) -> HisOrder:
    return HisOrder(
        control="new",
        placer=placer,
        filler="",
        sample_id=sample_id,
        patient_id=f"PAT-{placer}",
        patient_name="TEST^PATIENT",
        tests=(OrderedTest("GLU", "Glucose"),),
    )


def save_orders(conn: sa.Connection, orders: Sequence[HisOrder], now: float) -> None:
    routes = {"GLU": [QueueTarget(ANALYZER, "GLU")]}
    work.save_his_orders(conn, orders, routes=routes, now=now)


def store_results(
    conn: sa.Connection, sample_id: str, results: Sequence[Result], now: float
) -> list[OutboxRow]:
    """One analyzer message with these results for one sample, routed and queued for the HIS."""
    message = NormalizedMessage(
        Protocol.ASTM,
        Kind.RESULTS,
        specimens=(Specimen(sample_id, results=tuple(results)),),
        driver="roche-cobas-c311@1",
    )
    record = work.save_message(
        conn,
        b"synthetic " + sample_id.encode(),
        direction=Direction.IN,
        protocol="astm",
        kind="results",
        now=now,
        connection=ANALYZER,
        normalized=message,
    )
    identities = [result_identity(ANALYZER, sample_id, r) for r in results]
    outcome = route(
        message,
        connection=ANALYZER,
        orders=work.open_orders_for(conn, [sample_id]),
        codes=None,
        known=work.known_identities(conn, identities),
        config=RoutingConfig(send_unsolicited=True),
    )
    orders = work.orders_by_placer(conn, [r.order_placer for r in outcome.to_deliver])
    payloads = []
    for group in delivery_groups(outcome.to_deliver):
        ids = tuple(r.identity for r in group)
        placer = group[0].order_placer
        his_order = orders[placer].as_his_order() if placer in orders else None
        payload = build_result_message(
            group, his_order, PROFILE, analyzer=ANALYZER, now_timestamp="20260101120000"
        )
        control_id = control_id_for(ids)
        payloads.append(
            OutboxPayload(control_id, sample_id, control_id, payload, ids, placer, ANALYZER)
        )
    return list(work.save_routed_results(conn, record.id, outcome, payloads, now).outbox)


class OutboxTest(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        # A real temporary directory: trial's mktemp() would write into the working tree.
        directory = Path(tempfile.mkdtemp(prefix="lisgw-outbox-"))
        self.addCleanup(shutil.rmtree, directory, True)
        engine = make_engine(f"sqlite:///{directory / 'lisgw.sqlite'}")
        migrate.upgrade(engine)
        self.store = Store(engine, reactor=global_reactor)  # type: ignore[arg-type]
        self.addCleanup(self.store.close)

    async def start_his(self, tls: TlsMaterial | None = None) -> HisSimulator:
        his = HisSimulator(REACTOR, clock=self.clock, host=HOST, tls=tls)
        await his.start()
        self.addCleanup(his.stop)
        return his

    def dispatcher(
        self,
        his: HisSimulator,
        *,
        tls: TlsMaterial | None = None,
        backoff: BackoffPolicy | None = None,
        worker: str = "gw-1",
        connections: int = 1,
        store: Store | None = None,
    ) -> OutboxDispatcher:
        endpoint = client_endpoint(
            REACTOR, host=HOST, port=his.port, tls=tls, server_name="localhost" if tls else None
        )
        settings = DispatcherSettings(
            worker=worker,
            batch_size=10,
            connections=connections,
            ack_timeout=10.0,
            backoff=backoff or BackoffPolicy(),
            mllp=MllpSettings(idle_timeout=None),
        )
        dispatcher = OutboxDispatcher(
            store or self.store,
            endpoint=endpoint,
            clock=self.clock,
            settings=settings,
            rand=lambda: 0.5,
        )
        self.addCleanup(dispatcher.stopService)
        return dispatcher

    def queue(self, sample_id: str, *results: Result) -> list[OutboxRow]:
        return self.store.run_sync(store_results, sample_id, results, self.clock.seconds())

    def rows(self) -> list[OutboxRow]:
        return self.store.run_sync(work.outbox_rows)


class DeliveryTests(OutboxTest):
    async def test_results_go_out_as_oru_and_are_delivered_on_aa(self) -> None:
        his = await self.start_his()
        self.store.run_sync(save_orders, [order("ORD1", "S1")], NOW)
        (row,) = self.queue("S1", glucose("5.4"))
        report = await self.dispatcher(his).run_once()
        assert report == PassReport(claimed=1, delivered=1)
        (received,) = his.received
        assert received.payload == row.payload
        assert (received.message_type, received.control_id) == ("ORU^R01", row.control_id)
        oru = parse_message(received.payload)
        obr, obx = oru.segment("OBR"), oru.segment("OBX")
        assert obr is not None and obx is not None
        assert (obr.get(2), obr.get(3)) == ("ORD1", "S1")  # linked to the HIS order
        assert (obx.get(3), obx.get(5), obx.get(6)) == ("GLU", "5.4", "mmol/L")
        (delivered,) = self.rows()
        assert delivered.state == OutboxState.DELIVERED
        assert (delivered.delivered_at, delivered.attempts) == (NOW, 1)
        assert await self.dispatcher(his).run_once() == PassReport()  # nothing left

    async def test_per_sample_order_and_exactly_once(self) -> None:
        his = await self.start_his()
        first = self.queue("S1", glucose("5.4"))
        other = self.queue("S2", glucose("6.1"))
        correction = self.queue("S1", glucose("5.5", status="C"))
        dispatcher = self.dispatcher(his)
        # S1's correction waits for S1's first message; S2 is independent.
        assert (await dispatcher.run_once()).delivered == 2
        assert (await dispatcher.run_once()).delivered == 1
        assert await dispatcher.run_once() == PassReport()
        sent = his.control_ids()
        assert sorted(sent) == sorted(r.control_id for r in first + other + correction)
        assert sent.index(first[0].control_id) < sent.index(correction[0].control_id)
        assert {r.state for r in self.rows()} == {OutboxState.DELIVERED}

    async def test_a_resent_session_is_not_delivered_twice(self) -> None:
        his = await self.start_his()
        self.queue("S1", glucose("5.4"))
        assert self.queue("S1", glucose("5.4")) == []  # same content: no new outbox row
        assert (await self.dispatcher(his).run_once()).delivered == 1
        assert len(his.received) == 1

    async def test_parallel_connections_deliver_every_sample_once(self) -> None:
        his = await self.start_his()
        for n in range(8):
            self.queue(f"S{n}", glucose(f"5.{n}"))
        report = await self.dispatcher(his, connections=3).run_once()
        assert report == PassReport(claimed=8, delivered=8)
        assert len(set(his.control_ids())) == len(his.received) == 8
        assert len({r.peer for r in his.received}) == 3

    async def test_tls_with_client_certificates(self) -> None:
        pki = make_pki()
        his = await self.start_his(tls=pki.server)
        self.queue("S1", glucose("5.4"))
        report = await self.dispatcher(his, tls=pki.client).run_once()
        assert report.delivered == 1


class RefusalTests(OutboxTest):
    async def test_ae_is_a_dead_letter_with_the_reason_and_blocks_nothing(self) -> None:
        his = await self.start_his()
        his.script([AckMode.ERROR])
        his.ack_text = "unknown order number"
        (refused,) = self.queue("S1", glucose("5.4"))
        (later,) = self.queue("S1", glucose("5.6", minute=7))
        dispatcher = self.dispatcher(his)
        assert (await dispatcher.run_once()) == PassReport(claimed=1, dead=1)
        dead = self.store.run_sync(work.outbox_rows, state=OutboxState.DEAD)
        assert [r.id for r in dead] == [refused.id]
        assert dead[0].last_error == "HIS answered AE: unknown order number"
        trail = self.store.run_sync(work.audit_trail, entity="outbox", entity_id=refused.id)
        assert [a.action for a in trail] == ["outbox.dead"]
        # A dead letter waits for a technician; the sample's later results still go.
        assert (await dispatcher.run_once()).delivered == 1
        assert his.control_ids() == [refused.control_id, later.control_id]

    async def test_ar_is_a_dead_letter_too(self) -> None:
        his = await self.start_his()
        his.mode = AckMode.REJECT
        self.queue("S1", glucose("5.4"))
        assert (await self.dispatcher(his).run_once()).dead == 1
        (row,) = self.rows()
        assert row.last_error.startswith("HIS answered AR")


class OutageTests(OutboxTest):
    async def test_his_down_overnight_then_everything_delivered_in_order(self) -> None:
        his = await self.start_his()
        await his.stop()  # the HIS goes down for the night
        s1 = self.queue("S1", glucose("5.4")) + self.queue("S1", glucose("5.5", status="C"))
        s2 = self.queue("S2", glucose("7.0"))
        dispatcher = self.dispatcher(his)
        delays: list[float] = []
        night = NOW + 10 * 3600
        for _ in range(1000):  # bounded: about 130 passes cover the night
            if self.clock.seconds() >= night:
                break
            report = await dispatcher.run_once()
            assert report == PassReport(claimed=2, retried=2)  # S1's correction waits
            pending = self.store.run_sync(work.outbox_rows, state=OutboxState.PENDING)
            assert len(pending) == 3  # nothing lost, nothing given up
            due = min(r.next_attempt_at for r in pending if r.attempts)
            delays.append(due - self.clock.seconds())
            self.clock.advance(due - self.clock.seconds())
        # Exponential backoff up to the cap (jitter draw fixed at its middle: nominal delays).
        assert delays[:10] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
        assert set(delays[10:]) == {300}
        assert len(delays) > 100
        s1_first = self.rows()[0]
        assert s1_first.attempts == len(delays)
        assert "cannot connect to the HIS" in s1_first.last_error
        assert s1_first.first_failed_at == NOW
        assert self.rows()[1].attempts == 0  # blocked behind S1's first message all night

        await his.start()  # morning: same address
        self.clock.advance(300)
        assert (await dispatcher.run_once()).delivered == 2
        assert (await dispatcher.run_once()).delivered == 1
        assert await dispatcher.run_once() == PassReport()
        assert his.control_ids() == [s1[0].control_id, s2[0].control_id, s1[1].control_id]
        assert {r.state for r in self.rows()} == {OutboxState.DELIVERED}

    async def test_no_ack_times_out_and_is_retried(self) -> None:
        his = await self.start_his()
        his.script([AckMode.SILENT])
        (row,) = self.queue("S1", glucose("5.4"))
        dispatcher = self.dispatcher(his)
        running = dispatcher.run_once()
        await his.wait_for(1)
        self.clock.advance(10.0)  # the ACK timeout
        assert await running == PassReport(claimed=1, retried=1)
        (waiting,) = self.rows()
        assert waiting.state == OutboxState.PENDING
        assert waiting.last_error == "no reply within 10 s"
        self.clock.advance(1.0)
        assert (await dispatcher.run_once()).delivered == 1
        assert his.control_ids() == [row.control_id, row.control_id]  # same MSH-10: dedupable

    async def test_a_reply_that_is_not_an_ack_is_retried(self) -> None:
        his = await self.start_his()
        his.script([AckMode.GARBAGE])
        self.queue("S1", glucose("5.4"))
        dispatcher = self.dispatcher(his)
        assert (await dispatcher.run_once()).retried == 1
        assert "not an ACK" in self.rows()[0].last_error
        self.clock.advance(1.0)
        assert (await dispatcher.run_once()).delivered == 1

    async def test_retries_exhausted_is_a_dead_letter(self) -> None:
        his = await self.start_his()
        await his.stop()
        self.queue("S1", glucose("5.4"))
        policy = BackoffPolicy(base=1.0, factor=2.0, cap=4.0, jitter=0.0, give_up_after=10.0)
        dispatcher = self.dispatcher(his, backoff=policy)
        reports = []
        for _ in range(policy.max_attempts):
            reports.append(await dispatcher.run_once())
            self.clock.advance(4.0)
        assert [r.retried for r in reports[:-1]] == [1] * (policy.max_attempts - 1)
        assert reports[-1].dead == 1
        (row,) = self.rows()
        assert row.state == OutboxState.DEAD
        assert row.last_error.startswith(f"gave up after {policy.max_attempts} attempts:")


class ServiceTests(OutboxTest):
    async def test_the_service_loop_delivers_and_stops_cleanly(self) -> None:
        his = await self.start_his()
        dispatcher = self.dispatcher(his)
        await dispatcher.startService()
        self.queue("S1", glucose("5.4"))
        self.clock.advance(0)  # the first pass, scheduled at start
        await his.wait_for(1)
        await dispatcher.run_once()  # after the loop's pass: its outcome is recorded
        assert self.rows()[0].state == OutboxState.DELIVERED
        self.queue("S2", glucose("6.0"))
        dispatcher.wake()
        self.clock.advance(0)
        await his.wait_for(2)
        await dispatcher.run_once()
        await dispatcher.stopService()
        await his.stop()
        assert self.clock.getDelayedCalls() == []  # no timer left behind on either side
        assert {r.state for r in self.rows()} == {OutboxState.DELIVERED}

    async def test_stopping_mid_delivery_waits_its_grace_then_releases_the_row(self) -> None:
        his = await self.start_his()
        his.mode = AckMode.SILENT
        self.queue("S1", glucose("5.4"))
        dispatcher = self.dispatcher(his)
        await dispatcher.startService()
        self.clock.advance(0)
        await his.wait_for(1)
        stopping = dispatcher.stopService()
        assert not stopping.called  # the message in flight may still get its ACK
        self.clock.advance(dispatcher.settings.stop_grace)  # it does not: aborted
        await stopping
        (row,) = self.rows()
        assert row.state == OutboxState.PENDING  # queued, sent again with the same MSH-10
        assert row.last_error
        await his.stop()
        assert self.clock.getDelayedCalls() == []


class SharedOutboxTests(OutboxTest):
    """Two gateway processes on one PostgreSQL database share the outbox (issue 5)."""

    def pg_store(self) -> Store:
        """A Store on a fresh PostgreSQL schema, as a second process would open it."""
        url = fresh_pg_schema(self, "lisgw_outbox")
        engine = make_engine(url)
        migrate.upgrade(engine)
        store = Store(engine, reactor=global_reactor)  # type: ignore[arg-type]
        self.addCleanup(store.close)
        return store

    async def test_two_dispatchers_deliver_each_result_exactly_once(self) -> None:
        his = await self.start_his()
        self.store = self.pg_store()
        corrected = {f"S{n}" for n in range(0, 24, 3)}
        for n in range(24):
            self.queue(f"S{n}", glucose(f"5.{n}"))
        for sample in sorted(corrected):
            self.queue(sample, glucose("9.9", status="C"))
        first = self.dispatcher(his, worker="gw-1")
        other_engine = make_engine(self.store.engine.url)  # its own pool: another process
        other_process = Store(other_engine, reactor=global_reactor)  # type: ignore[arg-type]
        self.addCleanup(other_process.close)
        second = self.dispatcher(his, worker="gw-2", store=other_process)
        claimed = {"gw-1": 0, "gw-2": 0}
        for _ in range(20):  # bounded: four rounds suffice
            reports = await gatherResults([first.run_once(), second.run_once()])
            claimed["gw-1"] += reports[0].claimed
            claimed["gw-2"] += reports[1].claimed
            if not any(r.claimed for r in reports):
                break
        rows = self.rows()
        assert len(rows) == 24 + len(corrected)
        assert {r.state for r in rows} == {OutboxState.DELIVERED}
        sent = his.control_ids()
        assert sorted(sent) == sorted(r.control_id for r in rows)  # each exactly once
        assert claimed["gw-1"] > 0 and claimed["gw-2"] > 0
        for sample in corrected:
            original, correction = (r.control_id for r in rows if r.sample_id == sample)
            assert sent.index(original) < sent.index(correction)
