"""The Twisted adapters: AstmLinkProtocol over a fake clock and transport, two adapters back to
back (iosim), and the TCP server factory and reconnecting client over real loopback sockets.

The adapter tests drive ``twisted.internet.task.Clock`` and ``StringTransport`` by hand: no
reactor, no real time. The TCP tests use the real reactor on 127.0.0.1, port 0, and close and
await every connection they open.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest

from lisgw.astm import frames as fr
from lisgw.astm.events import (
    ContentionDetected,
    Event,
    FrameReceived,
    MessageAborted,
    RecordsReceived,
    TransferEnded,
    TransferIncomplete,
)
from lisgw.astm.link import LinkOptions, LinkTimers
from lisgw.errors import ConfigError, LocalProtocolError, StoreError
from lisgw.transports.astm import (
    DEFAULT_ADAPTER_OPTIONS,
    AstmLinkFactory,
    AstmLinkProtocol,
    MessageOutcome,
)
from lisgw.transports.tcp import (
    ConnectionLimits,
    ConnectionState,
    ConnectionStatus,
    LimitedServerFactory,
    ReconnectingClient,
    ReconnectPolicy,
)

ENQ, EOT, ACK, NAK = b"\x05", b"\x04", b"\x06", b"\x15"
HEADER = b"H|\\^&|||Analyzer^1|||||host||P|1"
PATIENT = b"P|1"
RESULT = b"R|1|^^^GLU|5.5|mmol/l||N||F"
TERMINATOR = b"L|1|N"
MESSAGE = (HEADER, PATIENT, RESULT, TERMINATOR)


def frame(number: int, *records: bytes, final: bool = True) -> bytes:
    return fr.build_frame(number, b"".join(r + b"\r" for r in records), final)


# -- helpers shared with the serial and simulator tests ------------------------------------


@dataclass
class Host:
    """The gateway's side of a line with a recording store: commits are kept in order and
    answered at once, or held (``hold=True``) until the test fires them."""

    clock: IReactorTime
    options: LinkOptions = DEFAULT_ADAPTER_OPTIONS
    hold: bool = False
    committed: list[FrameReceived] = field(default_factory=list)
    waiting: list[Deferred[None]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    ends: DeferredQueue[Event] = field(default_factory=DeferredQueue)

    def protocol(self) -> AstmLinkProtocol:
        return AstmLinkProtocol(
            commit_frame=self.commit,
            on_event=self.on_event,
            clock=self.clock,
            options=self.options,
            name="test host",
        )

    def factory(self) -> AstmLinkFactory:
        def build(addr: IAddress | None) -> AstmLinkProtocol:
            return self.protocol()

        return AstmLinkFactory(build)

    def commit(self, frame: FrameReceived) -> Deferred[None]:
        if not self.hold:
            self.committed.append(frame)
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        waiter.addCallback(lambda _: self.committed.append(frame))
        self.waiting.append(waiter)
        return waiter

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, TransferEnded | TransferIncomplete):
            self.ends.put(event)

    def sessions(self) -> list[tuple[str, tuple[bytes, ...]]]:
        """Each transfer's end (TransferEnded / TransferIncomplete) and its records."""
        return sessions_of(self.events)

    def records(self) -> list[bytes]:
        return [r for e in self.events if isinstance(e, RecordsReceived) for r in e.records]


def sessions_of(events: list[Event]) -> list[tuple[str, tuple[bytes, ...]]]:
    done: list[tuple[str, tuple[bytes, ...]]] = []
    current: list[bytes] = []
    for event in events:
        if isinstance(event, RecordsReceived):
            current.extend(event.records)
        elif isinstance(event, TransferEnded | TransferIncomplete):
            done.append((type(event).__name__, tuple(current)))
            current = []
    return done


def connected(protocol: AstmLinkProtocol) -> StringTransport:
    transport = StringTransport()
    protocol.makeConnection(transport)
    return transport


def take(transport: StringTransport) -> bytes:
    data = transport.value()
    transport.clear()
    return bytes(data)


# -- commit before ACK -----------------------------------------------------------------------


def test_ack_is_written_only_after_the_commit_fires() -> None:
    host = Host(Clock(), hold=True)
    protocol = host.protocol()
    transport = connected(protocol)
    protocol.dataReceived(ENQ)
    assert take(transport) == ACK
    protocol.dataReceived(frame(1, *MESSAGE))
    assert take(transport) == b""  # the frame is not acknowledged yet ...
    assert not host.committed and len(host.waiting) == 1
    assert not any(isinstance(e, RecordsReceived) for e in host.events)  # ... nor delivered
    host.waiting.pop().callback(None)
    assert take(transport) == ACK
    assert [f.number for f in host.committed] == [1]
    assert host.records() == list(MESSAGE)
    protocol.dataReceived(EOT)
    assert host.sessions() == [("TransferEnded", MESSAGE)]


def test_a_failed_commit_naks_and_the_retransmission_is_committed_once() -> None:
    host = Host(Clock(), hold=True)
    protocol = host.protocol()
    transport = connected(protocol)
    protocol.dataReceived(ENQ)
    take(transport)
    protocol.dataReceived(frame(1, *MESSAGE))
    host.waiting.pop().errback(StoreError("disk full"))
    assert take(transport) == NAK
    assert not host.committed and not host.records()
    protocol.dataReceived(frame(1, *MESSAGE))  # E1381 §6.5.1: the sender retransmits
    host.waiting.pop().callback(None)
    assert take(transport) == ACK
    protocol.dataReceived(EOT)
    assert len(host.committed) == 1
    assert host.sessions() == [("TransferEnded", MESSAGE)]


def test_frames_are_committed_strictly_in_order_even_from_an_impatient_sender() -> None:
    host = Host(Clock(), hold=True)
    protocol = host.protocol()
    transport = connected(protocol)
    protocol.dataReceived(ENQ)
    take(transport)
    # The sender does not wait for our ACKs: frame 2 and EOT arrive during frame 1's commit.
    protocol.dataReceived(
        frame(1, HEADER, PATIENT, final=False) + frame(2, RESULT, TERMINATOR) + EOT
    )
    assert len(host.waiting) == 1  # frame 2 waits in the link's buffer
    host.waiting.pop().callback(None)
    assert take(transport) == ACK
    assert len(host.waiting) == 1
    assert host.records() == [HEADER, PATIENT]
    host.waiting.pop().callback(None)
    assert take(transport) == ACK
    assert [f.number for f in host.committed] == [1, 2]
    assert host.sessions() == [("TransferEnded", MESSAGE)]


def test_reading_pauses_while_bytes_pile_up_behind_a_pending_commit() -> None:
    options = LinkOptions(batch_records=True, max_frame_size=64)
    host = Host(Clock(), options=options, hold=True)
    protocol = host.protocol()
    transport = connected(protocol)
    protocol.dataReceived(ENQ + frame(1, RESULT))
    assert transport.producerState == "producing"
    protocol.dataReceived(b"x" * 100)
    assert transport.producerState == "paused"
    host.waiting.pop().callback(None)
    assert transport.producerState == "producing"


def test_the_frame_timeout_runs_on_the_injected_clock() -> None:
    clock = Clock()
    host = Host(clock)
    protocol = host.protocol()
    transport = connected(protocol)
    protocol.dataReceived(ENQ + frame(1, HEADER, PATIENT, final=False))
    assert take(transport) == ACK + ACK
    (timer,) = clock.getDelayedCalls()
    assert timer.getTime() == protocol.link.deadline() == 30.0  # E1381 §6.5.2
    clock.advance(29.0)
    assert not host.sessions()
    clock.advance(1.0)
    assert host.sessions() == [("TransferIncomplete", (HEADER, PATIENT))]
    assert clock.getDelayedCalls() == []


def test_one_timer_follows_the_link_deadline() -> None:
    clock = Clock()
    host = Host(clock)
    protocol = host.protocol()
    connected(protocol)
    protocol.dataReceived(ENQ)
    for number in range(1, 4):
        clock.advance(10.0)
        protocol.dataReceived(frame(number, RESULT, final=False))
        (timer,) = clock.getDelayedCalls()
        assert timer.getTime() == protocol.link.deadline() == clock.seconds() + 30.0
    protocol.dataReceived(EOT)
    assert clock.getDelayedCalls() == []


def test_connection_lost_during_a_commit_settles_after_it() -> None:
    host = Host(Clock(), hold=True)
    protocol = host.protocol()
    transport = connected(protocol)
    protocol.dataReceived(ENQ + frame(1, HEADER, PATIENT, final=False))
    closed = protocol.when_closed()
    protocol.connectionLost(Failure(ConnectionError("cable pulled")))
    assert not closed.called
    transport.clear()
    host.waiting.pop().callback(None)
    assert closed.called
    # The committed frame's records come out, then the transfer is incomplete (never a result).
    assert host.sessions() == [("TransferIncomplete", (HEADER, PATIENT))]


# -- order download: the sender role -----------------------------------------------------


def test_send_message_fires_with_delivered_once_every_frame_is_acked() -> None:
    host = Host(Clock())
    protocol = host.protocol()
    transport = connected(protocol)
    outcome = protocol.send_message(MESSAGE)
    assert take(transport) == ENQ
    protocol.dataReceived(ACK)
    assert take(transport) == frame(1, *MESSAGE)
    assert not outcome.called
    protocol.dataReceived(ACK)
    assert take(transport) == EOT
    assert outcome.result == MessageOutcome(1, True)


def test_send_message_fires_with_aborted_after_six_naks() -> None:
    host = Host(Clock())
    protocol = host.protocol()
    transport = connected(protocol)
    outcome = protocol.send_message(MESSAGE)
    protocol.dataReceived(ACK)
    for _ in range(6):
        protocol.dataReceived(NAK)
    assert take(transport).endswith(EOT)
    result = outcome.result
    assert isinstance(result, MessageOutcome) and not result.delivered
    assert "NAK 6 times" in result.reason
    assert any(isinstance(e, MessageAborted) for e in host.events)


def test_send_message_on_a_lost_connection_is_aborted_at_once() -> None:
    host = Host(Clock())
    protocol = host.protocol()
    connected(protocol)
    protocol.connectionLost(Failure(ConnectionError("gone")))
    outcome = protocol.send_message(MESSAGE)
    assert outcome.result == MessageOutcome(0, False, "connection closed")


def test_queued_messages_are_aborted_when_the_connection_is_lost() -> None:
    host = Host(Clock())
    protocol = host.protocol()
    connected(protocol)
    outcome = protocol.send_message(MESSAGE)
    protocol.connectionLost(Failure(ConnectionError("gone")))
    assert outcome.result == MessageOutcome(1, False, "connection closed")


def test_send_message_refuses_records_e1381_cannot_carry() -> None:
    protocol = Host(Clock()).protocol()
    connected(protocol)
    failed = protocol.send_message([b"R|1|\x02"])
    errors: list[Failure] = []
    failed.addErrback(errors.append)
    assert errors and errors[0].check(LocalProtocolError)


# -- two adapters back to back -------------------------------------------------------------


def back_to_back(
    clock: Clock, host_options: LinkOptions = DEFAULT_ADAPTER_OPTIONS
) -> tuple[Host, AstmLinkProtocol, Host, AstmLinkProtocol, iosim.IOPump]:
    host = Host(clock, options=host_options)
    analyzer = Host(clock, options=LinkOptions(we_are_instrument=True, batch_records=True))
    host_protocol, analyzer_protocol = host.protocol(), analyzer.protocol()
    pump = iosim.connect(
        host_protocol,
        iosim.makeFakeServer(host_protocol),
        analyzer_protocol,
        iosim.makeFakeClient(analyzer_protocol),
        clock=clock,
    )
    return host, host_protocol, analyzer, analyzer_protocol, pump


def test_order_download_reaches_the_instrument_adapter() -> None:
    clock = Clock()
    host, host_protocol, analyzer, _, pump = back_to_back(clock)
    order = (HEADER, PATIENT, b"O|1|S1||^^^GLU|R", TERMINATOR)
    outcome = host_protocol.send_message(order)
    pump.flush()
    assert outcome.result == MessageOutcome(1, True)
    assert analyzer.sessions() == [("TransferEnded", order)]
    assert not host.records()


def test_contention_between_two_adapters_the_instrument_goes_first() -> None:
    clock = Clock()
    host, host_protocol, analyzer, analyzer_protocol, pump = back_to_back(clock)
    order = (HEADER, b"O|1|S1||^^^GLU|R", TERMINATOR)
    download = host_protocol.send_message(order)
    upload = analyzer_protocol.send_message(MESSAGE)
    pump.flush()  # both ENQs cross: E1381 §6.2.1
    assert any(isinstance(e, ContentionDetected) for e in host.events)
    assert any(isinstance(e, ContentionDetected) for e in analyzer.events)
    clock.advance(1.0)  # the instrument sends ENQ again after 1 s
    pump.flush()
    assert upload.result == MessageOutcome(1, True)
    assert host.sessions() == [("TransferEnded", MESSAGE)]
    assert not download.called
    clock.advance(20.0)  # the computer system waits 20 s before trying again
    pump.flush()
    assert download.result == MessageOutcome(1, True)
    assert analyzer.sessions() == [("TransferEnded", order)]


def test_a_retransmission_after_a_failed_commit_between_two_adapters() -> None:
    clock = Clock()
    host, _, _, analyzer_protocol, pump = back_to_back(clock)
    host.hold = True
    upload = analyzer_protocol.send_message(MESSAGE)
    pump.flush()
    host.waiting.pop().errback(StoreError("locked"))
    pump.flush()
    host.waiting.pop().callback(None)
    pump.flush()
    assert upload.result == MessageOutcome(1, True)
    assert host.sessions() == [("TransferEnded", MESSAGE)]
    assert len(host.committed) == 1


class SinkFailureTest(unittest.TestCase):
    def test_a_failing_event_sink_is_logged_and_the_line_goes_on(self) -> None:
        def broken(event: Event) -> None:
            raise RuntimeError("sink bug")

        protocol = AstmLinkProtocol(
            commit_frame=lambda f: succeed(None), on_event=broken, clock=Clock()
        )
        transport = connected(protocol)
        protocol.dataReceived(ENQ + frame(1, *MESSAGE) + EOT)
        assert take(transport) == (ACK + ACK)
        assert self.flushLoggedErrors(RuntimeError)


def test_the_factory_builds_or_refuses_per_address() -> None:
    built: list[AstmLinkProtocol] = []

    def build(addr: IAddress | None) -> AstmLinkProtocol | None:
        if addr is None:
            return None
        protocol = Host(Clock()).protocol()
        built.append(protocol)
        return protocol

    factory = AstmLinkFactory(build)
    assert factory.buildProtocol(None) is None
    protocol = factory.buildProtocol(iosim.FakeAddress())
    assert protocol is built[0] and protocol.factory is factory


# -- reconnect policy --------------------------------------------------------------------


def test_reconnect_delays_grow_exponentially_to_the_cap_with_jitter() -> None:
    policy = ReconnectPolicy(initial_delay=1.0, factor=2.0, max_delay=60.0, jitter=0.2)
    assert [policy.delay(n, 0.5) for n in (1, 2, 3, 4, 7, 8, 1000)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        60.0,
        60.0,
        60.0,
    ]
    assert policy.delay(3, 0.0) == pytest.approx(3.2)
    assert policy.delay(3, 0.999999) == pytest.approx(4.8, rel=1e-5)
    with pytest.raises(ValueError):
        policy.delay(0, 0.5)


def test_invalid_policies_and_limits_are_config_errors_naming_every_key() -> None:
    with pytest.raises(ConfigError) as raised:
        ReconnectPolicy(initial_delay=0, factor=0.5, max_delay=-1, jitter=1.0)
    assert [p.split(":")[0] for p in raised.value.problems] == [
        "initial_delay",
        "factor",
        "max_delay",
        "jitter",
    ]
    with pytest.raises(ConfigError) as raised:
        ConnectionLimits(max_bytes=0, idle_timeout=0, keepalive_idle=0)
    assert [p.split(":")[0] for p in raised.value.problems] == [
        "max_bytes",
        "idle_timeout",
        "keepalive_idle",
    ]
    with pytest.raises(ConfigError):
        LimitedServerFactory(Factory(), clock=Clock(), max_connections=0)


# -- TCP over loopback ---------------------------------------------------------------------


class Recorder(Protocol):
    """A plain protocol that records what it gets and says when its connection ends."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.made: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.received: DeferredQueue[bytes] = DeferredQueue()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.received.put(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class RecorderFactory(Factory[Recorder]):
    def __init__(self) -> None:
        self.built: list[Recorder] = []

    def buildProtocol(self, addr: IAddress | None) -> Recorder:
        protocol = Recorder()
        self.built.append(protocol)
        return protocol


async def listen(factory: Factory[object] | LimitedServerFactory) -> IListeningPort:
    return await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)


async def dial(port: int) -> Recorder:
    client = Recorder()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    return client


def port_of(listening: IListeningPort) -> int:
    return int(listening.getHost().port)


class LimitedServerTest(unittest.TestCase):
    timeout = 10

    async def serve(self, **options: object) -> tuple[LimitedServerFactory, RecorderFactory, int]:
        inner = RecorderFactory()
        factory = LimitedServerFactory(inner, name="test", **options)
        listening = await listen(factory)
        self.addCleanup(listening.stopListening)
        self.addCleanup(factory.close_connections)
        return factory, inner, port_of(listening)

    async def test_connections_over_the_limit_are_closed_on_accept(self) -> None:
        factory, inner, port = await self.serve(clock=reactor, max_connections=2)
        first, second = await dial(port), await dial(port)
        third = await dial(port)
        await third.lost  # refused: accepted by the kernel, closed at once
        assert len(inner.built) == 2
        assert factory.open_connections() == 2
        first.transport.loseConnection()
        await first.lost
        await inner.built[0].lost
        fourth = await dial(port)
        fourth.transport.write(b"hello")
        assert (await inner.built[2].received.get()) == b"hello"
        for client in (second, fourth):
            client.transport.loseConnection()
            await client.lost

    async def test_a_connection_over_its_byte_limit_is_dropped(self) -> None:
        limits = ConnectionLimits(max_bytes=10)
        factory, inner, port = await self.serve(clock=reactor, limits=limits)
        client = await dial(port)
        client.transport.write(b"0123456789")
        assert (await inner.built[0].received.get()) == b"0123456789"
        client.transport.write(b"more")
        await inner.built[0].lost
        await client.lost
        assert bytes(inner.built[0].data) == b"0123456789"
        assert factory.open_connections() == 0

    async def test_an_idle_connection_is_closed_on_the_factory_clock(self) -> None:
        clock = Clock()
        limits = ConnectionLimits(idle_timeout=10.0)
        factory, inner, port = await self.serve(clock=clock, limits=limits)
        client = await dial(port)
        await inner.built[0].made
        (guarded,) = factory.connections()
        clock.advance(6.0)
        client.transport.write(b"still here")
        await inner.built[0].received.get()
        clock.advance(6.0)  # idle for 6 s only
        assert guarded.lost_reason is None
        assert not guarded.transport.disconnecting
        clock.advance(4.0)  # idle for 10 s
        await inner.built[0].lost
        await client.lost

    async def test_accepted_sockets_probe_with_tcp_keepalive(self) -> None:
        limits = ConnectionLimits(keepalive_idle=30, keepalive_interval=5, keepalive_count=3)
        factory, inner, port = await self.serve(clock=reactor, limits=limits)
        client = await dial(port)
        await inner.built[0].made
        (guarded,) = factory.connections()
        handle = guarded.transport.getHandle()
        assert (handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert (handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)) == 30
            assert (handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)) == 5
            assert (handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)) == 3
        client.transport.loseConnection()
        await client.lost
        await inner.built[0].lost

    async def test_a_refusing_inner_factory_closes_the_connection(self) -> None:
        class Refusing(Factory[Protocol]):
            def buildProtocol(self, addr: IAddress | None) -> None:
                return None

        factory = LimitedServerFactory(Refusing(), clock=reactor)
        listening = await listen(factory)
        self.addCleanup(listening.stopListening)
        client = await dial(port_of(listening))
        await client.lost
        assert factory.open_connections() == 0


class StatusLog:
    """Every status a client reports, and a way to wait for the next one in a given state."""

    def __init__(self, client: ReconnectingClient) -> None:
        self.seen: list[ConnectionStatus] = []
        self._waiting: list[tuple[ConnectionState, Deferred[ConnectionStatus]]] = []
        client.subscribe(self._observe)

    def _observe(self, status: ConnectionStatus) -> None:
        self.seen.append(status)
        for entry in list(self._waiting):
            if entry[0] is status.state:
                self._waiting.remove(entry)
                entry[1].callback(status)

    def next(self, state: ConnectionState) -> Deferred[ConnectionStatus]:
        waiter: Deferred[ConnectionStatus] = Deferred()
        self._waiting.append((state, waiter))
        return waiter


class ReconnectingClientTest(unittest.TestCase):
    timeout = 10

    def client(
        self, port: int, clock: Clock, factory: Factory[Recorder] | None = None
    ) -> tuple[ReconnectingClient, RecorderFactory, StatusLog]:
        inner = factory if isinstance(factory, RecorderFactory) else RecorderFactory()
        client = ReconnectingClient(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            inner,
            clock=clock,
            policy=ReconnectPolicy(initial_delay=1.0, factor=2.0, max_delay=8.0, jitter=0.2),
            rand=lambda: 0.5,
            name="test client",
        )
        return client, inner, StatusLog(client)

    async def test_backs_off_while_the_server_is_down_then_connects(self) -> None:
        server = RecorderFactory()
        listening = await listen(server)
        port = port_of(listening)
        await listening.stopListening()  # the analyzer is not up yet
        clock = Clock()
        client, inner, statuses = self.client(port, clock)
        waiting = statuses.next(ConnectionState.WAITING)
        client.startService()
        first = await waiting
        assert (first.failures, first.next_attempt_at) == (1, 1.0)
        assert "refused" in first.last_error.lower()
        waiting = statuses.next(ConnectionState.WAITING)
        clock.advance(1.0)
        second = await waiting
        assert (second.failures, second.next_attempt_at) == (2, 3.0)
        listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(server)
        self.addCleanup(listening.stopListening)
        connected_status = statuses.next(ConnectionState.CONNECTED)
        clock.advance(2.0)
        status = await connected_status
        assert status.failures == 0
        assert status.last_error == ""
        assert status.peer.startswith("127.0.0.1:")
        cycle = [ConnectionState.CONNECTING, ConnectionState.WAITING]
        assert [s.state for s in statuses.seen] == [
            *cycle,
            *cycle,
            ConnectionState.CONNECTING,
            ConnectionState.CONNECTED,
        ]
        assert (await client.when_connected()) is inner.built[-1]
        await client.stopService()
        assert client.status.state is ConnectionState.STOPPED
        await server.built[0].lost

    async def test_reconnects_after_the_server_drops_the_connection(self) -> None:
        server = RecorderFactory()
        listening = await listen(server)
        self.addCleanup(listening.stopListening)
        clock = Clock()
        client, _, statuses = self.client(port_of(listening), clock)
        client.startService()
        first = await client.when_connected()
        await server.built[0].made
        waiting = statuses.next(ConnectionState.WAITING)
        server.built[0].transport.loseConnection()
        status = await waiting
        assert ("connection lost") in status.last_error
        assert client.protocol is None
        clock.advance(1.0)
        second = await client.when_connected()
        assert first is not second
        assert client.protocol is second
        await client.stopService()
        await server.built[1].lost

    async def test_stopping_while_waiting_cancels_the_retry(self) -> None:
        listening = await listen(RecorderFactory())
        port = port_of(listening)
        await listening.stopListening()
        clock = Clock()
        client, _, statuses = self.client(port, clock)
        waiting = statuses.next(ConnectionState.WAITING)
        client.startService()
        await waiting
        pending = client.when_connected()
        pending.addErrback(lambda f: f.trap(Exception))
        await client.stopService()
        assert clock.getDelayedCalls() == []
        assert client.status.state is ConnectionState.STOPPED


class AstmOverTcpTest(unittest.TestCase):
    """Both TCP roles with the ASTM adapter on each end (the simulator tests go further)."""

    timeout = 10

    async def test_analyzer_connects_to_the_gateway(self) -> None:
        host = Host(reactor)
        server = LimitedServerFactory(host.factory(), clock=reactor, name="astm")
        listening = await listen(server)
        self.addCleanup(listening.stopListening)
        analyzer = Host(reactor, options=LinkOptions(we_are_instrument=True))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(listening))
        protocol = await endpoint.connect(analyzer.factory())
        outcome = await protocol.send_message(MESSAGE)
        assert outcome.delivered
        await host.ends.get()
        assert host.sessions() == [("TransferEnded", MESSAGE)]
        await protocol.close()
        await server.close_connections()

    async def test_gateway_connects_to_the_analyzer(self) -> None:
        analyzer = Host(reactor, options=LinkOptions(we_are_instrument=True))
        analyzers: list[AstmLinkProtocol] = []

        def build(addr: IAddress | None) -> AstmLinkProtocol:
            analyzers.append(analyzer.protocol())
            return analyzers[-1]

        server = LimitedServerFactory(AstmLinkFactory(build), clock=reactor)
        listening = await listen(server)
        self.addCleanup(listening.stopListening)
        host = Host(reactor, options=LinkOptions(batch_records=True, timers=LinkTimers()))
        client = ReconnectingClient(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(listening)),
            host.factory(),
            clock=reactor,
        )
        client.startService()
        gateway = await client.when_connected()
        assert isinstance(gateway, AstmLinkProtocol)
        outcome = await analyzers[0].send_message(MESSAGE)
        assert outcome.delivered
        await host.ends.get()
        assert host.sessions() == [("TransferEnded", MESSAGE)]
        await client.stopService()
        await analyzers[0].when_closed()


def test_a_message_queued_before_the_connection_goes_out_once_it_is_made() -> None:
    protocol = Host(Clock()).protocol()
    outcome = protocol.send_message(MESSAGE)
    transport = connected(protocol)
    assert take(transport) == ENQ
    protocol.dataReceived(ACK)
    protocol.dataReceived(ACK)
    assert outcome.result == MessageOutcome(1, True)
