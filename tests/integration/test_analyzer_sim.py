"""The analyzer simulator against the gateway's ASTM adapter: corpus captures replayed over
TCP in both roles and over a pty, host queries, order downloads, and every injected fault.

Corpus bytes are read from ../shared/corpus at test time and never copied here. The fault
tests that depend on time (frame timeout, stall) run on a Clock with two adapters back to
back (iosim); the others use the real reactor on 127.0.0.1, port 0.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial import unittest

from lisgw.astm import frames as fr
from lisgw.astm.events import FrameRejected, ProtocolWarning
from lisgw.astm.link import LinkOptions, LinkTimers
from lisgw.errors import ConfigError, LocalProtocolError
from lisgw.sim.analyzer import (
    AnalyzerSimulator,
    Faults,
    capture_messages,
    host_query_records,
    open_pty,
)
from lisgw.transports.serial import SerialSettings, serial_client
from lisgw.transports.tcp import LimitedServerFactory, ReconnectingClient, ReconnectPolicy
from tests.integration.test_astm_transport import Host

CORPUS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus").resolve()
ENQ, EOT, ACK, NAK = b"\x05", b"\x04", b"\x06", b"\x15"
MESSAGE = (b"H|\\^&|||SIM^1|||||host||P|1", b"P|1", b"R|1|^^^GLU|5.5|mmol/l||N||F", b"L|1|N")
SECOND = (b"H|\\^&|||SIM^1|||||host||P|1", b"P|1", b"R|1|^^^NA|140|mmol/l||N||F", b"L|1|N")


@cache
def astm_captures() -> tuple[tuple[str, bytes], ...]:
    """(name, bytes) of every ASTM capture, framed and records, in manifest order."""
    manifest: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text("utf-8"))
    return tuple(
        (Path(e["path"]).stem, (CORPUS / e["path"]).read_bytes())
        for e in manifest["files"]
        if e["framing"] in ("astm-frames", "astm-records")
    )


def all_messages() -> list[tuple[bytes, ...]]:
    return [message for _, data in astm_captures() for message in capture_messages(data)]


def ended(messages: list[tuple[bytes, ...]]) -> list[tuple[str, tuple[bytes, ...]]]:
    return [("TransferEnded", message) for message in messages]


def capture(name: str) -> bytes:
    return next(data for stem, data in astm_captures() if stem == name)


# -- captures --------------------------------------------------------------------------------


def test_every_astm_capture_gives_messages_of_whole_records() -> None:
    assert len(astm_captures()) >= 20
    for name, data in astm_captures():
        messages = capture_messages(data)
        assert messages, name
        for message in messages:
            assert message[0][:1] == b"H" or b"H|" not in data, name
            assert all(
                record and fr.RESTRICTED_IN_RECORD.search(record) is None for record in message
            )


def test_sessions_and_header_records_delimit_messages() -> None:
    assert len(capture_messages(capture("erba_em200_results_two_sessions"))) == 2
    architect = "abbott_architect_i1000sr_multi_message_serology_results"
    assert len(capture_messages(capture(architect))) == 5
    # The deliberately bad frame of the c111 capture is not part of what a receiver gets.
    c111 = capture_messages(capture("roche_cobas_c111_multi_result_ETB_frames"))
    assert [len(m) for m in c111] == [11]


def test_host_query_records() -> None:
    assert host_query_records("SIM", ["S1", "S2"]) == [
        b"H|\\^&|||SIM^1|||||host||P|1",
        b"Q|1|^S1||ALL||||||||O",
        b"Q|2|^S2||ALL||||||||O",
        b"L|1|N",
    ]
    for bad in (["S|1"], ["S\r1"], []):
        try:
            host_query_records("SIM", bad)
        except LocalProtocolError:
            continue
        raise AssertionError(f"{bad!r} accepted")


# -- the wire's faults, byte by byte ---------------------------------------------------------


class WriteLog(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        super().write(data)


def wired(faults: Faults) -> tuple[AnalyzerSimulator, Clock, WriteLog, Any]:
    clock = Clock()
    simulator = AnalyzerSimulator(clock=clock, faults=faults)
    wire = simulator.factory().buildProtocol(None)
    transport = WriteLog()
    wire.makeConnection(transport)
    return simulator, clock, transport, wire


def test_one_byte_writes_send_every_byte_on_its_own() -> None:
    simulator, clock, transport, wire = wired(Faults(one_byte_writes=True))
    simulator.send_message(MESSAGE)
    wire.dataReceived(ACK)
    clock.advance(0)
    expected = ENQ + fr.build_frame(1, b"".join(r + b"\r" for r in MESSAGE), True)
    assert transport.value() == expected
    assert all(len(write) == 1 for write in transport.writes)
    assert len(transport.writes) == len(expected)


def test_bad_checksum_goes_out_once_then_the_true_frame() -> None:
    simulator, _, transport, wire = wired(Faults(bad_checksum_frame=0))
    outcome = simulator.send_message(MESSAGE)
    good = fr.build_frame(1, b"".join(r + b"\r" for r in MESSAGE), True)
    wire.dataReceived(ACK)
    assert transport.writes[-1] != good and transport.writes[-1][:-4] == good[:-4]
    assert not fr.checksum_matches(transport.writes[-1][:-2])
    wire.dataReceived(NAK)
    assert transport.writes[-1] == good
    wire.dataReceived(ACK)
    assert transport.writes[-1] == EOT
    assert outcome.result.delivered and simulator.plan.corrupted == 1


def test_dropped_eot_is_never_written() -> None:
    simulator, _, transport, wire = wired(Faults(drop_eot_after_message=0))
    outcome = simulator.send_message(MESSAGE)
    wire.dataReceived(ACK)
    wire.dataReceived(ACK)
    assert outcome.result.delivered  # the instrument believes it is done
    assert EOT not in transport.value()
    assert simulator.plan.eots_dropped == 1


# -- against the gateway's adapter, time on a Clock ----------------------------------------


def back_to_back(
    faults: Faults, host_timers: LinkTimers | None = None
) -> tuple[AnalyzerSimulator, Host, Clock, iosim.IOPump]:
    clock = Clock()
    simulator = AnalyzerSimulator(clock=clock, faults=faults)
    options = LinkOptions(batch_records=True, timers=host_timers or LinkTimers())
    host = Host(clock, options=options)
    host_protocol = host.protocol()
    wire = simulator.factory().buildProtocol(None)
    pump = iosim.connect(
        host_protocol,
        iosim.makeFakeServer(host_protocol),
        wire,
        iosim.makeFakeClient(wire),
        clock=clock,
    )
    return simulator, host, clock, pump


def test_dropped_eot_ends_the_transfer_incomplete_at_the_frame_timeout() -> None:
    simulator, host, clock, pump = back_to_back(Faults(drop_eot_after_message=0))
    outcome = simulator.send_message(MESSAGE)
    pump.flush()
    assert outcome.result.delivered
    assert host.sessions() == []
    clock.advance(30.0)  # E1381 §6.5.2: no frame or EOT within 30 s
    assert host.sessions() == [("TransferIncomplete", MESSAGE)]


def test_a_stall_longer_than_the_frame_timeout_splits_the_transfer() -> None:
    faults = Faults(stall_before_frame=1, stall_seconds=10.0)
    simulator, host, clock, pump = back_to_back(faults, LinkTimers(frame_timeout=5.0))
    long_message = (*MESSAGE[:-1], b"C|1|I|" + b"x" * 300 + b"|G", MESSAGE[-1])
    text = b"".join(record + b"\r" for record in long_message)
    first_frame_records = text[: fr.MAX_TEXT].count(b"\r")
    outcome = simulator.send_message(long_message)
    pump.flush()
    clock.advance(5.0)  # the host gives up on the stalled transfer ...
    assert host.sessions()[0][0] == "TransferIncomplete"
    assert len(host.sessions()[0][1]) == first_frame_records
    clock.advance(5.0)  # ... and the instrument carries on after its stall
    pump.flush()
    assert outcome.result.delivered
    assert any(isinstance(e, ProtocolWarning) for e in host.events)  # frame without ENQ


def test_invalid_faults_are_config_errors() -> None:
    with pytest.raises(ConfigError) as raised:
        Faults(bad_checksum_frame=-1, stall_seconds=-2)
    assert [p.split(":")[0] for p in raised.value.problems] == [
        "bad_checksum_frame",
        "stall_seconds",
    ]


def test_a_short_stall_delays_but_delivers_everything() -> None:
    faults = Faults(stall_before_frame=0, stall_seconds=10)
    simulator, host, clock, pump = back_to_back(faults)
    outcome = simulator.send_message(MESSAGE)
    pump.flush()
    assert not outcome.called
    clock.advance(10.0)
    pump.flush()
    assert outcome.result.delivered
    assert host.sessions() == [("TransferEnded", MESSAGE)]


# -- against the gateway's adapter over real connections -----------------------------------


class SimulatorOverTcpTest(unittest.TestCase):
    timeout = 30

    async def host_server(self, host: Host) -> tuple[LimitedServerFactory, int]:
        server = LimitedServerFactory(host.factory(), clock=reactor, name="gateway")
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
        self.addCleanup(listening.stopListening)
        return server, int(listening.getHost().port)

    async def connect(self, simulator: AnalyzerSimulator, port: int) -> None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await endpoint.connect(simulator.factory())

    async def replay(
        self, simulator: AnalyzerSimulator, host: Host, messages: list[tuple[bytes, ...]]
    ) -> None:
        outcomes = await simulator.replay(messages)
        assert all(outcome.delivered for outcome in outcomes)
        while len(host.sessions()) < len(messages):
            await host.ends.get()

    async def test_every_capture_replayed_with_the_analyzer_as_client(self) -> None:
        host = Host(reactor)
        server, port = await self.host_server(host)
        simulator = AnalyzerSimulator(clock=reactor)
        await self.connect(simulator, port)
        messages = all_messages()
        await self.replay(simulator, host, messages)
        assert host.sessions() == ended(messages)
        await simulator.close()
        await server.close_connections()

    async def test_every_capture_replayed_with_the_analyzer_as_server(self) -> None:
        simulator = AnalyzerSimulator(clock=reactor)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        listening = await endpoint.listen(simulator.factory())
        self.addCleanup(listening.stopListening)
        host = Host(reactor)
        client = ReconnectingClient(
            TCP4ClientEndpoint(reactor, "127.0.0.1", listening.getHost().port),
            host.factory(),
            clock=reactor,
        )
        client.startService()
        self.addCleanup(client.stopService)
        await client.when_connected()
        await simulator.when_connected()
        messages = all_messages()
        await self.replay(simulator, host, messages)
        assert host.sessions() == ended(messages)
        await client.stopService()
        await simulator.protocol.when_closed()

    async def test_one_byte_writes_give_the_same_records(self) -> None:
        host = Host(reactor)
        server, port = await self.host_server(host)
        simulator = AnalyzerSimulator(clock=reactor, faults=Faults(one_byte_writes=True))
        await self.connect(simulator, port)
        messages = capture_messages(capture("roche_cobas_e411_multi_frame_results"))
        await self.replay(simulator, host, messages)
        assert host.sessions() == ended(messages)
        await simulator.close()
        await server.close_connections()

    async def test_a_bad_checksum_is_naked_and_the_retransmission_accepted(self) -> None:
        host = Host(reactor)
        server, port = await self.host_server(host)
        simulator = AnalyzerSimulator(clock=reactor, faults=Faults(bad_checksum_frame=2))
        await self.connect(simulator, port)
        messages = capture_messages(capture("roche_cobas_c311_H7600_batch_frame_split_midrecord"))
        await self.replay(simulator, host, messages)
        assert host.sessions() == ended(messages)
        rejected = [e for e in host.events if isinstance(e, FrameRejected)]
        assert len(rejected) == 1
        assert "checksum" in rejected[0].reason
        assert (len({f.raw for f in host.committed})) == len(host.committed)
        await simulator.close()
        await server.close_connections()

    async def test_a_dropped_eot_leaves_the_first_transfer_incomplete(self) -> None:
        host = Host(reactor)
        server, port = await self.host_server(host)
        faults = Faults(drop_eot_after_message=0)
        simulator = AnalyzerSimulator(clock=reactor, faults=faults)
        await self.connect(simulator, port)
        outcomes = await simulator.replay([MESSAGE, SECOND])
        assert all(outcome.delivered for outcome in outcomes)
        while len(host.sessions()) < 2:
            await host.ends.get()
        # The next ENQ, not an EOT, ended the first transfer: it never becomes a result.
        assert host.sessions() == [("TransferIncomplete", MESSAGE), ("TransferEnded", SECOND)]
        await simulator.close()
        await server.close_connections()

    async def test_host_query_then_order_download(self) -> None:
        host = Host(reactor)
        server, port = await self.host_server(host)
        simulator = AnalyzerSimulator(clock=reactor, name="c311")
        await self.connect(simulator, port)
        queried = await simulator.send_host_query(["S1", "S2"])
        assert queried.delivered
        await host.ends.get()
        assert host.sessions() == (ended([tuple(host_query_records("c311", ["S1", "S2"]))]))
        (gateway,) = [p.inner for p in server.connections()]
        order = (b"H|\\^&|||lisgw|||||c311||P|1", b"P|1", b"O|1|S1||^^^GLU|R", b"L|1|N")
        downloaded = await gateway.send_message(order)
        assert downloaded.delivered
        assert (await simulator.next_download()) == order
        assert simulator.downloads == [order]
        await simulator.close()
        await server.close_connections()


class SimulatorOverPtyTest(unittest.TestCase):
    timeout = 30

    async def test_a_capture_replayed_over_a_serial_line(self) -> None:
        simulator = AnalyzerSimulator(clock=reactor)
        port = open_pty(simulator, reactor)
        host = Host(reactor)
        client = serial_client(
            SerialSettings(port.device, baudrate=9600),
            host.factory(),
            reactor=reactor,
            policy=ReconnectPolicy(initial_delay=0.05, max_delay=0.5),
        )
        client.startService()
        await client.when_connected()
        messages = capture_messages(capture("stago_sta_satellite_max_coag_results"))
        outcomes = await simulator.replay(messages)
        assert all(outcome.delivered for outcome in outcomes)
        while len(host.sessions()) < len(messages):
            await host.ends.get()
        assert host.sessions() == ended(messages)
        await client.stopService()
        closed = simulator.protocol.when_closed()
        port.loseConnection()
        await closed
