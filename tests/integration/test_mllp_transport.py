"""MLLP over Twisted: real loopback sockets (port 0), TLS with client certificates, limits.

Time that matters (idle and reply timeouts) runs on a ``Clock``; sockets run on the global
reactor, passed in explicitly. Every test closes what it opened and awaits the close.
Messages are synthetic (no patient data). The TLS certificates are made at test time by
``make_pki``: a throwaway CA, a server certificate for localhost/127.0.0.1, client certificates.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.trial import unittest

from lisgw.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from lisgw.hl7.mllp import MllpMessage, frame
from lisgw.transports.mllp import (
    MAX_QUEUED,
    MllpClientProtocol,
    MllpConnectionLost,
    MllpLink,
    MllpProtocol,
    MllpServerFactory,
    MllpSettings,
    MllpTimeout,
    connect_mllp,
)
from lisgw.transports.tls import TlsMaterial, client_endpoint, server_endpoint

REACTOR: IReactorTCP = global_reactor
HOST = "127.0.0.1"


def message(control_id: str, filler: str = "") -> bytes:
    """A small synthetic ORU^R01 (no patient data)."""
    return (
        f"MSH|^~\\&|LISGW|LAB|HIS|HOSP|20260101120000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r"
        f"OBR|1||S{control_id}|GLU\rOBX|1|NM|GLU||5.4|mmol/L{filler}||||F\r"
    ).encode("ascii")


def ack_for(payload: bytes) -> bytes:
    control_id = payload.split(b"|")[9]
    return b"MSH|^~\\&|HIS|HOSP|LISGW|LAB|20260101120001||ACK|A1|P|2.5.1\rMSA|AA|" + control_id


# -- a throwaway PKI


@dataclass(frozen=True)
class Pki:
    server: TlsMaterial
    client: TlsMaterial
    stranger: TlsMaterial  # a client certificate from another CA


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _ca(common: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _issue(common, key, _name(common), key, ca=True), key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName] | None = None,
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(common, key, ca[0].subject, ca[1], usage=usage, names=names)
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_pki() -> Pki:
    """A CA, a server certificate (localhost, 127.0.0.1), a client one, and a stranger's."""
    import ipaddress

    ca = _ca("lisgw test CA")
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
    server_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(HOST)),
    ]
    server = _leaf(ca, "his.test", ExtendedKeyUsageOID.SERVER_AUTH, server_names)
    client = _leaf(ca, "lisgw.test", ExtendedKeyUsageOID.CLIENT_AUTH)
    other_ca = _ca("another CA")
    stranger = _leaf(other_ca, "intruder", ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        server=TlsMaterial(ca_pem, *server),
        client=TlsMaterial(ca_pem, *client),
        stranger=TlsMaterial(ca_pem, *stranger),
    )


# -- handlers


class RecordingHandler:
    """Answers each message with ``reply(payload)``; records (message, peer)."""

    def __init__(self, reply: Callable[[bytes], bytes | None] = ack_for) -> None:
        self.reply = reply
        self.seen: list[tuple[MllpMessage, str]] = []
        self.arrived: Deferred[None] | None = None
        self.links: list[MllpLink] = []
        self.closed: list[tuple[MllpLink, str]] = []

    def connection_opened(self, link: MllpLink) -> None:
        self.links.append(link)

    def connection_closed(self, link: MllpLink, reason: str) -> None:
        self.closed.append((link, reason))

    def handle_message(self, msg: MllpMessage, link: MllpLink) -> Deferred[bytes | None]:
        self.seen.append((msg, link.peer))
        if self.arrived is not None:
            arrived, self.arrived = self.arrived, None
            arrived.callback(None)
        return succeed(self.reply(msg.payload))

    def next_arrival(self) -> Deferred[None]:
        self.arrived = Deferred()
        return self.arrived


class GatedHandler(RecordingHandler):
    """Each message waits for the test to release it: shows one-at-a-time handling."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[Deferred[bytes | None]] = []
        self.payloads: list[bytes] = []

    def handle_message(self, msg: MllpMessage, link: MllpLink) -> Deferred[bytes | None]:
        gate: Deferred[bytes | None] = Deferred()
        self.gates.append(gate)
        self.payloads.append(msg.payload)
        if self.arrived is not None:
            arrived, self.arrived = self.arrived, None
            arrived.callback(None)
        return gate


class Collector(MllpProtocol):
    """A raw client end that keeps every message it receives (for pipelining tests)."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock, MllpSettings(idle_timeout=None))
        self.messages: list[bytes] = []
        self.waiting: tuple[int, Deferred[None]] | None = None

    def messageReceived(self, message: MllpMessage) -> None:
        self.messages.append(message.payload)
        if self.waiting and len(self.messages) >= self.waiting[0]:
            waiter, self.waiting = self.waiting[1], None
            waiter.callback(None)

    def wait_for(self, count: int) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if len(self.messages) >= count:
            waiter.callback(None)
        else:
            self.waiting = (count, waiter)
        return waiter


class TransportTest(unittest.TestCase):
    """Starts servers and clients and closes them all at the end of each test."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.factories: list[MllpServerFactory] = []

    async def listen(
        self,
        handler: Any,
        *,
        settings: MllpSettings | None = None,
        max_connections: int = 16,
        tls: TlsMaterial | None = None,
        clock: Any = None,
    ) -> int:
        factory = MllpServerFactory(
            handler,
            clock=clock or self.clock,
            settings=settings,
            max_connections=max_connections,
        )
        endpoint = server_endpoint(REACTOR, host=HOST, port=0, tls=tls)
        port: IListeningPort = await endpoint.listen(factory)
        self.factories.append(factory)
        self.addCleanup(self._stop_server, port, factory)
        return int(port.getHost().port)  # type: ignore[attr-defined]

    async def _stop_server(self, port: IListeningPort, factory: MllpServerFactory) -> None:
        await maybeDeferred(port.stopListening)
        await factory.close_connections()

    async def connect(
        self,
        port: int,
        *,
        tls: TlsMaterial | None = None,
        server_name: str | None = None,
        settings: MllpSettings | None = None,
        clock: Any = None,
    ) -> MllpClientProtocol:
        endpoint = client_endpoint(REACTOR, host=HOST, port=port, tls=tls, server_name=server_name)
        client = await connect_mllp(
            endpoint,
            clock=clock or global_reactor,
            settings=settings or MllpSettings(idle_timeout=None),
        )
        self.addCleanup(client.close)
        return client

    async def collector(self, port: int) -> Collector:
        endpoint = client_endpoint(REACTOR, host=HOST, port=port)
        protocol = await endpoint.connect(Factory.forProtocol(lambda: Collector(global_reactor)))
        assert isinstance(protocol, Collector)
        self.addCleanup(protocol.close)
        return protocol


class RequestReplyTests(TransportTest):
    async def test_request_gets_its_reply_and_the_handler_sees_the_exact_bytes(self) -> None:
        handler = RecordingHandler()
        port = await self.listen(handler)
        client = await self.connect(port)
        reply = await client.request(message("C1"), timeout=10)
        assert reply.payload.endswith(b"MSA|AA|C1")
        reply2 = await client.request(message("C2"), timeout=10)
        assert reply2.payload.endswith(b"MSA|AA|C2")
        assert [m.payload for m, _ in handler.seen] == [message("C1"), message("C2")]
        assert all(m.complete and peer.startswith("127.0.0.1:") for m, peer in handler.seen)
        (server,) = self.factories[0].protocols
        await client.close()
        assert client.lost
        await server.when_closed()
        assert handler.links == [server.link]
        assert server.link.peer == handler.seen[0][1]
        assert [link for link, _ in handler.closed] == [server.link]

    async def test_a_second_request_while_one_waits_is_a_local_error(self) -> None:
        handler = GatedHandler()
        port = await self.listen(handler)
        client = await self.connect(port)
        arrival = handler.next_arrival()
        first = client.request(message("C1"), timeout=10)
        with pytest.raises(LocalProtocolError):
            client.request(message("C2"), timeout=10)
        await arrival
        handler.gates[0].callback(ack_for(handler.payloads[0]))
        assert (await first).payload.endswith(b"MSA|AA|C1")

    async def test_a_payload_that_cannot_be_framed_is_refused_before_sending(self) -> None:
        port = await self.listen(RecordingHandler())
        client = await self.connect(port)
        with pytest.raises(LocalProtocolError):
            client.request(b"MSH|\x1c|", timeout=10)
        # The connection is still usable: nothing was sent or left waiting.
        assert (await client.request(message("C3"), timeout=10)).payload.endswith(b"AA|C3")

    async def test_noise_before_a_block_is_skipped(self) -> None:
        handler = RecordingHandler()
        port = await self.listen(handler)
        peer = await self.collector(port)
        assert peer.transport is not None
        # mindray BC-5130 capture: a stray STX before the VT of a block.
        peer.transport.write(b"\x02" + frame(message("N1")))
        await peer.wait_for(1)
        assert peer.messages[0].endswith(b"MSA|AA|N1")
        assert [m.payload for m, _ in handler.seen] == [message("N1")]


class OrderingTests(TransportTest):
    async def test_pipelined_messages_are_handled_one_at_a_time_in_order(self) -> None:
        handler = GatedHandler()
        port = await self.listen(handler)
        peer = await self.collector(port)
        assert peer.transport is not None
        count = MAX_QUEUED + 4  # more than the read-ahead: reading pauses, then resumes
        arrival = handler.next_arrival()
        peer.transport.write(b"".join(frame(message(f"P{i}")) for i in range(count)))
        for index in range(count):
            await arrival
            assert len(handler.gates) == index + 1  # the next one waits for this one
            arrival = handler.next_arrival()
            handler.gates[index].callback(ack_for(handler.payloads[index]))
        await peer.wait_for(count)
        assert handler.payloads == [message(f"P{i}") for i in range(count)]
        assert [m.split(b"|")[-1] for m in peer.messages] == [
            f"P{i}".encode() for i in range(count)
        ]

    async def test_a_long_pipelined_burst_answered_at_once_does_not_recurse(self) -> None:
        handler = RecordingHandler()  # answers synchronously, like the HIS simulator
        port = await self.listen(handler)
        peer = await self.collector(port)
        assert peer.transport is not None
        count = 2000
        peer.transport.write(b"".join(frame(message(f"B{i}")) for i in range(count)))
        await peer.wait_for(count)
        assert [m.split(b"|")[-1] for m in peer.messages] == [
            f"B{i}".encode() for i in range(count)
        ]

    async def test_messages_received_before_a_close_are_still_handled(self) -> None:
        handler = GatedHandler()
        port = await self.listen(handler)
        peer = await self.collector(port)
        assert peer.transport is not None
        arrival = handler.next_arrival()
        peer.transport.write(frame(message("Q1")) + frame(message("Q2")) + b"\x0bMSH|^~\\&|cut")
        await arrival
        await peer.close()
        (factory,) = self.factories
        (server,) = factory.protocols
        closed = server.when_closed()
        assert not closed.called  # still handling the queue
        for index in range(3):
            if index == len(handler.gates):
                await handler.next_arrival()
            handler.gates[index].callback(None)
        await closed
        assert handler.payloads[:2] == [message("Q1"), message("Q2")]
        assert handler.payloads[2] == b"MSH|^~\\&|cut"


class LimitTests(TransportTest):
    async def test_connections_over_the_limit_are_closed_at_once(self) -> None:
        port = await self.listen(RecordingHandler(), max_connections=1)
        first = await self.connect(port)
        assert (await first.request(message("L1"), timeout=10)).payload.endswith(b"AA|L1")
        second = await self.connect(port)
        with pytest.raises(MllpConnectionLost):
            await second.request(message("L2"), timeout=10)
        await second.when_closed()
        assert (await first.request(message("L3"), timeout=10)).payload.endswith(b"AA|L3")
        await first.close()
        third = await self.connect(port)  # the slot is free again
        assert (await third.request(message("L4"), timeout=10)).payload.endswith(b"AA|L4")

    async def test_an_oversize_message_closes_the_connection_unhandled(self) -> None:
        handler = RecordingHandler()
        port = await self.listen(handler, settings=MllpSettings(max_message_size=256))
        client = await self.connect(port)
        with pytest.raises(MllpConnectionLost):
            await client.request(message("O1", filler="x" * 400), timeout=10)
        assert handler.seen == []
        again = await self.connect(port)
        assert (await again.request(message("O2"), timeout=10)).payload.endswith(b"AA|O2")

    async def test_an_oversize_reply_fails_the_request(self) -> None:
        port = await self.listen(RecordingHandler(lambda _: message("R", filler="y" * 400)))
        client = await self.connect(port, settings=MllpSettings(max_message_size=256))
        with pytest.raises(RemoteProtocolError, match="size limit"):
            await client.request(message("O3"), timeout=10)
        await client.when_closed()

    async def test_an_idle_connection_is_closed_by_the_server(self) -> None:
        port = await self.listen(RecordingHandler(), settings=MllpSettings(idle_timeout=30.0))
        client = await self.connect(port)
        await client.request(message("I1"), timeout=10)
        self.clock.advance(29)
        assert not client.lost
        await client.request(message("I2"), timeout=10)  # traffic restarts the idle time
        self.clock.advance(29)
        assert not client.lost
        self.clock.advance(1)
        await client.when_closed()
        assert client.lost


class ClientTimeoutTests(TransportTest):
    async def test_no_reply_within_the_timeout_fails_and_aborts(self) -> None:
        handler = RecordingHandler(lambda _: None)  # a silent HIS
        port = await self.listen(handler, clock=global_reactor)
        client = await self.connect(port, clock=self.clock)
        arrival = handler.next_arrival()
        pending = client.request(message("T1"), timeout=5.0)
        await arrival
        self.clock.advance(4.9)
        assert not pending.called
        self.clock.advance(0.1)
        with pytest.raises(MllpTimeout):
            await pending
        await client.when_closed()

    async def test_cancelling_a_request_drops_the_connection(self) -> None:
        handler = RecordingHandler(lambda _: None)
        port = await self.listen(handler, clock=global_reactor)
        client = await self.connect(port, clock=self.clock)
        pending = client.request(message("T2"), timeout=5.0)
        pending.cancel()
        with pytest.raises(CancelledError):
            await pending
        await client.when_closed()
        assert self.clock.getDelayedCalls() == []

    async def test_a_request_on_a_closed_connection_fails(self) -> None:
        port = await self.listen(RecordingHandler())
        client = await self.connect(port)
        await client.close()
        with pytest.raises(MllpConnectionLost):
            await client.request(message("T3"), timeout=5.0)

    async def test_the_client_closes_when_idle(self) -> None:
        port = await self.listen(RecordingHandler(), clock=global_reactor)
        client = await self.connect(port, clock=self.clock, settings=MllpSettings(idle_timeout=60))
        await client.request(message("T4"), timeout=5.0)
        self.clock.advance(60)
        await client.when_closed()


class TlsTests(TransportTest):
    pki: Pki

    @classmethod
    def setUpClass(cls) -> None:
        cls.pki = make_pki()

    async def test_mutual_tls_round_trip(self) -> None:
        handler = RecordingHandler()
        port = await self.listen(handler, tls=self.pki.server)
        for name in ("localhost", HOST):
            client = await self.connect(port, tls=self.pki.client, server_name=name)
            reply = await client.request(message("S1"), timeout=10)
            assert reply.payload.endswith(b"MSA|AA|S1")
            await client.close()

    async def test_a_client_without_a_trusted_certificate_is_refused(self) -> None:
        handler = RecordingHandler()
        port = await self.listen(handler, tls=self.pki.server)
        client = await self.connect(port, tls=self.pki.stranger, server_name="localhost")
        with pytest.raises(MllpConnectionLost):
            await client.request(message("S2"), timeout=10)
        assert handler.seen == []

    async def test_a_server_with_the_wrong_name_is_refused(self) -> None:
        handler = RecordingHandler()
        port = await self.listen(handler, tls=self.pki.server)
        client = await self.connect(port, tls=self.pki.client, server_name="his.example.org")
        with pytest.raises(MllpConnectionLost):
            await client.request(message("S3"), timeout=10)
        assert handler.seen == []

    async def test_a_plain_client_gets_nothing_from_a_tls_server(self) -> None:
        handler = RecordingHandler()
        port = await self.listen(handler, tls=self.pki.server)
        client = await self.connect(port)
        with pytest.raises(MllpConnectionLost):
            await client.request(message("S4"), timeout=10)
        assert handler.seen == []


def test_tls_material_from_files_reports_every_problem(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_bytes(b"")
    with pytest.raises(ConfigError) as caught:
        TlsMaterial.from_files(tmp_path / "missing.pem", tmp_path / "empty.pem", tmp_path / "x")
    keys = [p.split(":")[0] for p in caught.value.problems]
    assert keys == ["tls.ca", "tls.cert", "tls.key"]


def test_tls_material_round_trips_through_files(tmp_path: Path) -> None:
    material = make_pki().client
    for name, data in (("ca", material.ca_pem), ("c", material.cert_pem), ("k", material.key_pem)):
        (tmp_path / name).write_bytes(data)
    loaded = TlsMaterial.from_files(tmp_path / "ca", tmp_path / "c", tmp_path / "k")
    assert loaded == material


def test_bad_pem_and_mismatched_keys_are_config_errors() -> None:
    pki = make_pki()
    with pytest.raises(ConfigError, match=r"tls\.cert"):
        server_endpoint(REACTOR, host=HOST, port=0, tls=TlsMaterial(pki.server.ca_pem, b"x", b"y"))
    mismatched = TlsMaterial(pki.server.ca_pem, pki.server.cert_pem, pki.client.key_pem)
    with pytest.raises(ConfigError, match=r"tls\.key"):
        server_endpoint(REACTOR, host=HOST, port=0, tls=mismatched)
    with pytest.raises(ConfigError, match=r"tls\.ca"):
        client_endpoint(
            REACTOR,
            host=HOST,
            port=1,
            tls=TlsMaterial(b"nope", pki.client.cert_pem, pki.client.key_pem),
        )
