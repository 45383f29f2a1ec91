"""HisOrderListener: orders in over real loopback MLLP, committed to a real SQLite store, ACKed.

Each test gets a fresh SQLite store (migrated) under trial's temporary directory, a listener
on 127.0.0.1 port 0, and MLLP clients that are closed and awaited before the test ends.
Messages are synthetic, written for these tests (the same shapes as tests/unit/test_hl7_orders.py),
with invented patient data.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import Clock
from twisted.trial import unittest

from lisgw.errors import StoreError
from lisgw.his.ack import AckOutcome, read_ack
from lisgw.his.profile import HisProfile
from lisgw.hl7 import apy
from lisgw.hl7.message import parse_message
from lisgw.services import his
from lisgw.services.his import HisOrderListener
from lisgw.store import migrate, work
from lisgw.store.database import make_engine
from lisgw.store.records import Direction, MessageState, OrderState, QueueTarget
from lisgw.store.runner import Store
from lisgw.transports.mllp import MllpClientProtocol, MllpConnectionLost, MllpSettings, connect_mllp
from lisgw.transports.tls import client_endpoint, server_endpoint

REACTOR: IReactorTCP = global_reactor
HOST = "127.0.0.1"
NOW = 1_767_268_800.0  # 2026-01-01T12:00:00Z

P = ParamSpec("P")
T = TypeVar("T")

ORM_NEW = (
    b"MSH|^~\\&|HIS|WARD|LISGW|LAB|20260101115900||ORM^O01^ORM_O01|MSG0001|P|2.5.1\r"
    b"PID|1||PAT0001^^^HIS^MR||TEST^PATIENT^A||19800101|F\r"
    b"PV1|1|O\r"
    b"ORC|NW|ORD0001|||||||20260101115800\r"
    b"OBR|1|ORD0001||WBC^White blood cells^L|||20260101115000\r"
    b"ORC|NW|ORD0001|||||||20260101115800\r"
    b"OBR|2|ORD0001||HGB^Hemoglobin^L|||20260101115000\r"
)
ORM_CANCEL = ORM_NEW.replace(b"ORC|NW|", b"ORC|CA|").replace(b"MSG0001", b"MSG0003")
OML_NEW = (
    b"MSH|^~\\&|HIS|WARD|LISGW|LAB|20260101115900||OML^O21^OML_O21|MSG0002|P|2.5.1\r"
    b"PID|1||PAT0002^^^HIS^MR||TEST^PATIENT^B||19900101|M\r"
    b"ORC|NW|ORD0002|||||||20260101115800\r"
    b"OBR|1|ORD0002||GLU^Glucose^L|||20260101115000\r"
)
ORM_NO_TEST = (
    b"MSH|^~\\&|HIS|WARD|LISGW|LAB|20260101115900||ORM^O01^ORM_O01|MSG0004|P|2.5.1\r"
    b"PID|1||PAT0003^^^HIS^MR||TEST^PATIENT^C\r"
    b"ORC|NW|ORD0004\r"
    b"OBR|1|ORD0004\r"
)
ADT = (
    b"MSH|^~\\&|HIS|WARD|LISGW|LAB|20260101115900||ADT^A01^ADT_A01|MSG0005|P|2.5.1\r"
    b"EVN|A01|20260101115900\r"
    b"PID|1||PAT0004^^^HIS^MR||TEST^PATIENT^D\r"
)
NOT_HL7 = b"this is not an HL7 message at all"

ROUTES = {
    "WBC": [QueueTarget("xn550", "WBC")],
    "HGB": [QueueTarget("xn550", "HGB")],
    "GLU": [QueueTarget("c311", "GLU"), QueueTarget("c111", "GLU")],
}


def count(store: Store, table: str) -> int:
    def query(conn: sa.Connection) -> int:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())

    return store.run_sync(query)


class FaultyStore(Store):
    """A real store whose message commit fails, as on a full disk or a lost server."""

    def run(
        self,
        fn: Callable[Concatenate[sa.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        if fn is his._record_message:
            return fail(StoreError("database sqlite:///lisgw.sqlite: disk I/O error"))
        return super().run(fn, *args, **kwargs)


class ListenerTest(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        # A real temporary directory: trial's mktemp() would write into the working tree.
        self.db_path = Path(tempfile.mkdtemp(prefix="lisgw-listener-"))
        self.addCleanup(shutil.rmtree, self.db_path, True)
        self.url = f"sqlite:///{self.db_path / 'lisgw.sqlite'}"
        engine = make_engine(self.url)
        migrate.upgrade(engine)
        engine.dispose()

    def make_store(self, cls: type[Store] = Store, url: str | None = None) -> Store:
        store = cls(make_engine(url or self.url), reactor=global_reactor)  # type: ignore[arg-type]
        self.addCleanup(store.close)
        return store

    async def start(self, store: Store, profile: HisProfile | None = None) -> HisOrderListener:
        self.woken: list[frozenset[str]] = []
        listener = HisOrderListener(
            store,
            profile or HisProfile.plain("2.5.1"),
            endpoint=server_endpoint(REACTOR, host=HOST, port=0),
            clock=self.clock,
            routes=ROUTES,
            settings=MllpSettings(idle_timeout=None),
            on_queued=self.woken.append,
        )
        await listener.startService()
        self.addCleanup(listener.stopService)
        return listener

    async def client(self, listener: HisOrderListener) -> MllpClientProtocol:
        assert listener.port is not None
        endpoint = client_endpoint(REACTOR, host=HOST, port=listener.port)
        client = await connect_mllp(
            endpoint, clock=global_reactor, settings=MllpSettings(idle_timeout=None)
        )
        self.addCleanup(client.close)
        return client

    async def send(self, client: MllpClientProtocol, payload: bytes) -> AckOutcome:
        reply = await client.request(payload, timeout=30)
        ack = parse_message(reply.payload)
        assert ack.message_code == "ACK"
        return read_ack(reply.payload)


class AcceptedOrderTests(ListenerTest):
    async def test_orm_new_is_committed_queued_then_acknowledged(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        reply = await client.request(ORM_NEW, timeout=30)
        apy.validate(reply.payload)
        outcome = read_ack(reply.payload)
        assert (outcome.code, outcome.control_id) == ("AA", "MSG0001")
        # Committed before the ACK: the order is there as soon as the AA is.
        order = store.run_sync(work.orders_by_placer, ["ORD0001"])["ORD0001"]
        assert order.state == OrderState.OPEN
        assert [t.his_code for t in order.tests] == ["WBC", "HGB"]
        assert (order.sample_id, order.patient_id) == ("ORD0001", "PAT0001")
        queued = store.run_sync(work.queued_tests_for, "xn550")
        assert sorted(q.analyzer_code for q in queued) == ["HGB", "WBC"]
        assert self.woken == [frozenset({"xn550"})]  # its order downloader is woken
        (message,) = store.run_sync(work.messages_in_state, MessageState.PROCESSED)
        assert message.raw == ORM_NEW
        assert (message.direction, message.connection) == (Direction.IN, "his")

    async def test_the_session_archives_message_and_ack_bytes_exact(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        reply = await client.request(OML_NEW, timeout=30)
        await client.close()
        await listener.stopService()
        (message,) = store.run_sync(work.messages_in_state, MessageState.PROCESSED)
        assert message.session_id is not None
        frames = store.run_sync(work.session_frames, message.session_id)
        assert [(f.direction, f.data) for f in frames] == [
            (Direction.IN, OML_NEW),
            (Direction.OUT, reply.payload),
        ]
        assert read_ack(reply.payload).control_id == "MSG0002"
        assert parse_message(reply.payload).control_id == f"L{message.session_id}.2"

        def session(conn: sa.Connection) -> Any:
            query = "SELECT peer, closed_at FROM sessions WHERE id = ?"
            return conn.exec_driver_sql(query, (message.session_id,)).one()

        peer, closed_at = store.run_sync(session)
        assert peer.startswith("127.0.0.1:") and closed_at == NOW
        glu = store.run_sync(work.queued_tests_for, "c311") + store.run_sync(
            work.queued_tests_for, "c111"
        )
        assert [q.placer for q in glu] == ["ORD0002", "ORD0002"]

    async def test_a_resent_order_is_acknowledged_again_and_stored_once(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        assert (await self.send(client, ORM_NEW)).code == "AA"
        assert (await self.send(client, ORM_NEW)).code == "AA"
        assert count(store, "orders") == 1
        assert count(store, "messages") == 2  # both kept raw

    async def test_a_cancel_cancels_the_order(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        await self.send(client, ORM_NEW)
        outcome = await self.send(client, ORM_CANCEL)
        assert (outcome.code, outcome.control_id) == ("AA", "MSG0003")
        order = store.run_sync(work.orders_by_placer, ["ORD0001"])["ORD0001"]
        assert order.state == OrderState.CANCELLED

    async def test_v231_profile_reads_orders_and_answers_in_231(self) -> None:
        store = self.make_store()
        listener = await self.start(store, HisProfile.plain("2.3.1"))
        client = await self.client(listener)
        v231 = ORM_NEW.replace(b"|P|2.5.1", b"|P|2.3.1")
        reply = await client.request(v231, timeout=30)
        assert read_ack(reply.payload).code == "AA"
        assert parse_message(reply.payload).version == "2.3.1"


class RejectedMessageTests(ListenerTest):
    async def test_an_unreadable_order_gets_ae_with_the_reason_and_is_kept(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        reply = await client.request(ORM_NO_TEST, timeout=30)
        outcome = read_ack(reply.payload)
        assert (outcome.code, outcome.control_id) == ("AE", "MSG0004")
        assert "OBR-4" in outcome.text  # the reason names the missing test code
        err = parse_message(reply.payload).segment("ERR")
        assert err is not None
        assert (err.get(2, 1), err.get(2, 3), err.get(3, 1)) == ("OBR", "4", "102")
        apy.validate(reply.payload)  # hl7apy strict: a valid ACK with its ERR
        (kept,) = store.run_sync(work.messages_in_state, MessageState.REJECTED)
        assert kept.raw == ORM_NO_TEST
        assert kept.reason == outcome.text
        assert count(store, "orders") == 0

    async def test_bytes_that_are_not_hl7_get_ae_and_are_kept(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        reply = await client.request(NOT_HL7, timeout=30)
        outcome = read_ack(reply.payload)
        assert outcome.code == "AE"
        assert "not an HL7 message" in outcome.text
        (kept,) = store.run_sync(work.messages_in_state, MessageState.REJECTED)
        assert kept.raw == NOT_HL7

    async def test_an_unknown_message_type_gets_ar_and_is_kept(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        outcome = await self.send(client, ADT)
        assert (outcome.code, outcome.control_id) == ("AR", "MSG0005")
        assert "ADT^A01" in outcome.text
        reply = await client.request(ADT, timeout=30)
        err = parse_message(reply.payload).segment("ERR")
        assert err is not None and err.get(3, 1) == "200"
        apy.validate(reply.payload)
        kept = store.run_sync(work.messages_in_state, MessageState.REJECTED)
        assert [m.raw for m in kept] == [ADT, ADT]
        assert count(store, "orders") == 0

    async def test_a_message_cut_by_the_close_is_kept_incomplete_unapplied(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        assert (await self.send(client, OML_NEW)).code == "AA"  # the server end is up
        assert client.transport is not None
        client.transport.write(b"\x0b" + ORM_NEW[:120])
        await client.close()
        await listener.connections_closed()  # the cut message is handled, the session closed
        (kept,) = store.run_sync(work.messages_in_state, MessageState.INCOMPLETE)
        assert kept.raw == ORM_NEW[:120]
        assert store.run_sync(work.orders_by_placer, ["ORD0001"]) == {}

    async def test_undecodable_bytes_get_ae_echoing_the_control_id(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        latin1 = OML_NEW.replace(b"TEST^PATIENT^B", "TÉST^PATIENT^B".encode("latin-1"))
        outcome = await self.send(client, latin1)  # the profile says UTF-8
        assert (outcome.code, outcome.control_id) == ("AE", "MSG0002")
        assert "not an HL7 message" in outcome.text
        (kept,) = store.run_sync(work.messages_in_state, MessageState.REJECTED)
        assert kept.raw == latin1


class StoreFailureTests(ListenerTest):
    async def test_a_failed_commit_gets_ar_store_unavailable_never_aa(self) -> None:
        store = self.make_store(FaultyStore)
        listener = await self.start(store)
        client = await self.client(listener)
        reply = await client.request(ORM_NEW, timeout=30)
        apy.validate(reply.payload)
        outcome = read_ack(reply.payload)
        assert (outcome.code, outcome.control_id) == ("AR", "MSG0001")
        assert outcome.text == his.STORE_UNAVAILABLE
        assert count(store, "orders") == 0
        assert count(store, "messages") == 0
        self.flushLoggedErrors(StoreError)

    async def test_a_read_only_database_gets_ar(self) -> None:
        ro_url = f"sqlite:///file:{self.db_path / 'lisgw.sqlite'}?mode=ro&uri=true"
        store = self.make_store(url=ro_url)
        listener = await self.start(store)
        client = await self.client(listener)
        assert (await self.send(client, ORM_NEW)).code == "AR"
        assert (await self.send(client, OML_NEW)).code == "AR"  # still no store: still AR
        self.flushLoggedErrors(StoreError)
        writable = self.make_store()
        assert count(writable, "messages") == 0


class LifecycleTests(ListenerTest):
    async def test_stopping_closes_open_connections(self) -> None:
        store = self.make_store()
        listener = await self.start(store)
        client = await self.client(listener)
        await self.send(client, ORM_NEW)
        await listener.stopService()
        await client.when_closed()
        assert listener.port is None
        try:
            await client.request(ORM_NEW, timeout=5)
        except MllpConnectionLost:
            pass
        else:
            raise AssertionError("the connection should be closed")
