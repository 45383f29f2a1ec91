"""Sender-name attribution (lisgw.transports.attribute) and the gateway listener using it.

The adapter tests drive ``SenderAttributor`` on a ``task.Clock`` and a ``StringTransport``
with the gateway's real ASTM and MLLP protocols behind it: every byte reaches the chosen
protocol (same offsets as on a listener of its own), nothing but the ENQ's ACK is answered
before the frame is committed, and that ACK is never sent twice. The listener tests run the
gateway's ``AnalyzerListener`` on 127.0.0.1 port 0 with two analyzer simulators that share
the address and differ by sender name, writing one byte at a time. Messages are synthetic
(no patient data); the sender names are those of the Sysmex XN-550 and Horiba Pentra XLR
captures (../shared/corpus/astm).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.trial import unittest

from lisgw.astm import frames as fr
from lisgw.astm.events import FrameReceived
from lisgw.config import load_config
from lisgw.config_schema import Listener
from lisgw.hl7.mllp import MllpMessage, frame
from lisgw.sender import AstmSenderProbe, Hl7SenderProbe
from lisgw.services.gateway import AnalyzerListener
from lisgw.sim.analyzer import AnalyzerSimulator, Faults
from lisgw.transports.astm import AstmLinkFactory, AstmLinkProtocol
from lisgw.transports.attribute import SenderAttributor
from lisgw.transports.mllp import MllpLink, MllpServerFactory, MllpSettings
from tests.integration.test_astm_transport import Host

ENQ, EOT, ACK, NAK = b"\x05", b"\x04", b"\x06", b"\x15"
XN = (b"H|\\^&|||    XN-550^00-24^22723|||||||P|E1394-97", b"P|1", b"R|1|^^^^WBC^1|8.13", b"L|1")
ABX = (b"H|\\^&|||ABX|||||||P|E1394-97|20220727121551", b"P|1", b"R|1|^^^WBC|8.5", b"L|1")
PEER = IPv4Address("TCP", "127.0.0.1", 40001)


def framed(records: tuple[bytes, ...]) -> list[bytes]:
    return fr.build_frames(b"".join(r + b"\r" for r in records))


def warnings(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if e["log_level"].name in ("warn", "error")]


class Attributed:
    """A SenderAttributor on a StringTransport whose ``choose`` builds one Host's protocol
    for the senders in ``names``."""

    def __init__(self, names: set[str], *, hold: bool = True) -> None:
        self.clock = Clock()
        self.host = Host(self.clock, hold=hold)
        self.names = names
        self.asked: list[str] = []
        self.chosen: AstmLinkProtocol | None = None
        self.attributor = SenderAttributor(
            AstmSenderProbe(), self.choose, clock=self.clock, name="listener 127.0.0.1:5000"
        )
        self.transport = StringTransport(peerAddress=PEER)
        self.attributor.makeConnection(self.transport)

    def choose(self, sender: str) -> IProtocol | None:
        self.asked.append(sender)
        if sender not in self.names:
            return None
        self.chosen = self.host.protocol()
        return self.chosen

    def send(self, data: bytes, one_byte: bool = False) -> None:
        for i in range(len(data)) if one_byte else [0]:
            self.attributor.dataReceived(data[i : i + 1] if one_byte else data)

    def written(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value


@pytest.mark.parametrize("one_byte", [False, True])
def test_astm_sender_chooses_and_the_frame_is_acked_after_its_commit(one_byte: bool) -> None:
    line = Attributed({"XN-550"})
    line.send(ENQ)
    assert line.written() == ACK  # the probe answers the ENQ: the analyzer sends frame 1
    (first,) = framed(XN)
    line.send(first, one_byte)
    assert line.asked == ["XN-550"]
    assert line.chosen is not None
    # The link saw ENQ and frame 1 (same offsets as alone): the frame waits for its commit,
    # and the link's own ACK to the ENQ was not sent a second time.
    assert len(line.host.waiting) == 1
    assert line.written() == b""
    line.host.waiting.pop().callback(None)
    assert line.written() == ACK
    (committed,) = line.host.committed
    assert isinstance(committed, FrameReceived)
    assert committed.offset == 1
    line.send(EOT)
    assert line.host.sessions() == [("TransferEnded", XN)]
    assert not line.transport.disconnecting


def test_astm_doubled_enq_and_a_nak_after_the_choice() -> None:
    line = Attributed({"XN-550"}, hold=False)
    line.send(ENQ + ENQ, one_byte=True)
    assert line.written() == ACK
    (first,) = framed(XN)
    bad = first[:-4] + b"00" + first[-2:]  # wrong checksum: the link NAKs, never the probe
    line.send(bad)
    assert line.written() == NAK
    line.send(first + EOT)
    assert line.written() == ACK
    assert line.host.sessions() == [("TransferEnded", XN)]


def test_unknown_sender_is_refused_with_a_warning() -> None:
    line = Attributed({"XN-550"})
    with capturedLogs() as events:
        line.send(ENQ + framed(ABX)[0])
    assert line.asked == ["ABX"]
    assert line.transport.disconnecting
    assert line.written() == ACK  # the ENQ's, nothing for the frame
    assert line.host.waiting == [] and line.chosen is None
    (warning,) = warnings(events)
    assert "listener 127.0.0.1:5000" in warning
    assert "127.0.0.1:40001" in warning
    assert "'ABX'" in warning


def test_first_record_not_a_header_is_refused() -> None:
    line = Attributed({"XN-550"})
    with capturedLogs() as events:
        line.send(ENQ + framed((b"P|1", b"L|1"))[0])
    assert line.asked == []
    assert line.transport.disconnecting
    assert any("not a header" in w for w in warnings(events))


def test_no_sender_within_the_timeout_is_refused() -> None:
    line = Attributed({"XN-550"})
    line.clock.advance(3600)  # silent since connecting: left to the listener's idle timeout
    assert not line.transport.disconnecting
    line.send(ENQ)
    line.clock.advance(29)
    assert not line.transport.disconnecting
    with capturedLogs() as events:
        line.clock.advance(1)
    assert line.transport.disconnecting
    assert any("no sender name within 30 s" in w for w in warnings(events))


def test_closed_before_naming_itself() -> None:
    line = Attributed({"XN-550"})
    line.send(ENQ)
    line.attributor.connectionLost()
    assert line.asked == [] and not line.clock.getDelayedCalls()


def test_connection_lost_reaches_the_chosen_protocol() -> None:
    line = Attributed({"XN-550"})
    line.send(ENQ + framed(XN)[0])
    line.host.waiting.pop().callback(None)
    line.attributor.connectionLost()
    assert line.chosen is not None and line.chosen.lost
    assert line.host.sessions() == [("TransferIncomplete", XN)]


class _Rude(Protocol):
    """Answers the first byte it gets with something other than the probe's ACK."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(NAK)


def test_an_answer_other_than_the_echo_aborts() -> None:
    clock = Clock()
    attributor = SenderAttributor(
        AstmSenderProbe(), lambda sender: _Rude(), clock=clock, name="listener x"
    )
    transport = StringTransport(peerAddress=PEER)
    attributor.makeConnection(transport)
    with capturedLogs() as events:
        attributor.dataReceived(ENQ + framed(XN)[0])
    assert transport.value() == ACK
    assert transport.disconnecting
    assert any("did not answer the first bytes" in w for w in warnings(events))


# -- HL7 -------------------------------------------------------------------------------------


class _Handler:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def connection_opened(self, link: MllpLink) -> None:
        pass

    def connection_closed(self, link: MllpLink, reason: str) -> None:
        pass

    def handle_message(self, message: MllpMessage, link: MllpLink) -> Deferred[bytes | None]:
        self.messages.append(message.payload)
        done: Deferred[bytes | None] = Deferred()
        done.callback(b"MSH|^~\\&|LIS||BC-5130||1||ACK|A1|P|2.3.1\rMSA|AA|8\r")
        return done


@pytest.mark.parametrize("one_byte", [False, True])
def test_hl7_sender_chooses_the_mllp_server(one_byte: bool) -> None:
    clock = Clock()
    handler = _Handler()
    factory = MllpServerFactory(handler, clock=clock, settings=MllpSettings(idle_timeout=None))
    asked: list[str] = []

    def choose(sender: str) -> IProtocol | None:
        asked.append(sender)
        return factory.buildProtocol(PEER) if sender == "BC-5130" else None

    attributor = SenderAttributor(Hl7SenderProbe(), choose, clock=clock, name="listener hl7")
    transport = StringTransport(peerAddress=PEER)
    attributor.makeConnection(transport)
    payload = b"MSH|^~\\&|BC-5130^M|LAB|||20240101||ORU^R01|8|P|2.3.1\rOBR|1||5\r"
    data = b"\x02" + frame(payload)  # a stray STX first, as the BC-5130 sends
    for chunk in [data[i : i + 1] for i in range(len(data))] if one_byte else [data]:
        attributor.dataReceived(chunk)
    assert asked == ["BC-5130"]
    assert handler.messages == [payload]
    assert transport.value() == frame(b"MSH|^~\\&|LIS||BC-5130||1||ACK|A1|P|2.3.1\rMSA|AA|8\r")


# -- the gateway's listener, real sockets ----------------------------------------------------


def two_analyzers(tmp_path: Path, senders: tuple[list[str], list[str]]) -> Listener:
    """The listener of a configuration with two ASTM analyzers on 127.0.0.1, moved to
    port 0."""
    connections = [
        {
            "name": name,
            "protocol": "astm",
            "driver": driver,
            "transport": "tcp-server",
            "host": "127.0.0.1",
            "port": 5001,  # one listener; port 0 would give each its own
            "peers": ["127.0.0.1"],
            "senders": names,
        }
        for name, driver, names in (
            ("xn-550", "sysmex-xn", senders[0]),
            ("pentra", "horiba-pentra", senders[1]),
        )
    ]
    data = {
        "data_dir": str(tmp_path / "data"),
        "his": {"profile": "hl7-v251", "results": {"host": "127.0.0.1", "port": 2575}},
        "connections": connections,
    }
    path = tmp_path / "lisgw.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    (listener,) = load_config(path).listeners
    return replace(listener, port=0)


class ListenerTest(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir(parents=True)
        self.hosts = {"xn-550": Host(reactor), "pentra": Host(reactor)}

    def factories(self) -> dict[str, IProtocolFactory]:
        def factory(host: Host) -> AstmLinkFactory:
            def build(_: IAddress | None) -> AstmLinkProtocol:
                return host.protocol()

            return AstmLinkFactory(build)

        return {name: factory(host) for name, host in self.hosts.items()}

    async def listen(self, listener: Listener) -> AnalyzerListener:
        service = AnalyzerListener(listener, self.factories(), reactor=reactor)
        await service.startService()
        self.addCleanup(service.stopService)
        self.addCleanup(service.close_connections)
        return service

    async def analyzer(self, port: int, faults: Faults | None = None) -> AnalyzerSimulator:
        simulator = AnalyzerSimulator(clock=reactor, faults=faults)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await endpoint.connect(simulator.factory())
        await simulator.when_connected()
        return simulator

    async def test_two_analyzers_one_address_told_apart_by_sender(self) -> None:
        service = await self.listen(two_analyzers(self.tmp, (["XN-550"], ["ABX"])))
        assert service.port is not None
        xn = await self.analyzer(service.port, Faults(one_byte_writes=True))
        pentra = await self.analyzer(service.port, Faults(one_byte_writes=True))
        outcomes = await Deferred.fromCoroutine(self._both(xn, pentra))
        assert all(o.delivered for o in outcomes)
        for name, records in (("xn-550", XN), ("pentra", ABX)):
            host = self.hosts[name]
            while not host.sessions():
                await host.ends.get()
            assert host.sessions() == [("TransferEnded", records)]
        await xn.close()
        await pentra.close()

    async def _both(self, xn: AnalyzerSimulator, pentra: AnalyzerSimulator) -> list[object]:
        first = xn.send_message(XN)
        second = pentra.send_message(ABX)
        return [await first, await second]

    async def test_an_unknown_sender_is_refused(self) -> None:
        service = await self.listen(two_analyzers(self.tmp, (["XN-550"], ["ABX"])))
        assert service.port is not None
        stranger = await self.analyzer(service.port)
        with capturedLogs() as events:
            outcome = await stranger.send_message((b"H|\\^&|||XP-100^1", b"L|1"))
            assert stranger.protocol is not None
            await stranger.protocol.when_closed()
        assert not outcome.delivered
        assert all(not host.events for host in self.hosts.values())
        assert any("'XP-100'" in w and "refused" in w for w in warnings(events))


def test_the_probe_is_used_only_where_the_sender_decides(tmp_path: Path) -> None:
    listener = two_analyzers(tmp_path, (["XN-550"], ["ABX"]))
    xn = listener.connections[0]
    alone = replace(xn, attribution=replace(xn.attribution, senders=frozenset()))
    allow_list = replace(listener, connections=(xn,))
    hosts = {"xn-550": Host(Clock()), "pentra": Host(Clock())}
    factories = {n: AstmLinkFactory(lambda _, h=h: h.protocol()) for n, h in hosts.items()}

    def built(listener: Listener) -> object:
        service = AnalyzerListener(listener, factories, reactor=Clock())
        return service.factory.wrapped.buildProtocol(PEER)

    assert isinstance(built(listener), SenderAttributor)  # two candidates: the sender decides
    assert isinstance(built(allow_list), SenderAttributor)  # one, but its senders allow-list
    assert isinstance(built(replace(listener, connections=(alone,))), AstmLinkProtocol)
    other = IPv4Address("TCP", "10.0.0.9", 4000)
    service = AnalyzerListener(listener, factories, reactor=Clock())
    assert service.factory.wrapped.buildProtocol(other) is None  # no connection admits it
