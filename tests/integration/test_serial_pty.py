"""Serial lines for real, through pseudo-terminal pairs (os.openpty), with the real reactor.

The gateway opens the pty's slave path with Twisted's SerialPort (pyserial underneath), as it
would /dev/ttyUSB0; the test drives the master side as the analyzer would. A symlink stands
for the configured device path, so a device can be missing, appear, and be unplugged.
"""

from __future__ import annotations

import tempfile
import termios
from pathlib import Path

import pytest
import serial
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial import unittest

from lisgw.astm import frames as fr
from lisgw.astm.link import LinkOptions, LinkTimers
from lisgw.errors import ConfigError
from lisgw.sim.analyzer import PtyMasterPort
from lisgw.transports.astm import AstmLinkProtocol
from lisgw.transports.serial import (
    FlowControl,
    Parity,
    SerialAddress,
    SerialEndpoint,
    SerialSettings,
    serial_client,
)
from lisgw.transports.tcp import ConnectionState, ReconnectPolicy
from tests.integration.test_astm_transport import Host, StatusLog

ENQ, EOT, ACK = b"\x05", b"\x04", b"\x06"
MESSAGE = (b"H|\\^&|||Analyzer^1|||||host||P|1", b"P|1", b"R|1|^^^K|4.1|mmol/l||N||F", b"L|1|N")

FAST_RETRY = ReconnectPolicy(initial_delay=0.01, factor=2.0, max_delay=0.05, jitter=0.0)


def test_settings_report_every_problem_with_its_key() -> None:
    with pytest.raises(ConfigError) as raised:
        SerialSettings(
            device="",
            baudrate=0,
            data_bits=9,
            parity="odd",
            stop_bits=3,
            flow_control="cts",
        )
    keys = [problem.split(":")[0] for problem in raised.value.problems]
    assert keys == ["device", "baudrate", "data_bits", "parity", "stop_bits", "flow_control"]


def test_settings_map_to_pyserial_arguments() -> None:
    settings = SerialSettings(
        "/dev/ttyS0",
        baudrate=19200,
        data_bits=7,
        parity=Parity.EVEN,
        stop_bits=2,
        flow_control=FlowControl.RTSCTS,
    )
    assert settings.pyserial_arguments() == {
        "baudrate": 19200,
        "bytesize": 7,
        "parity": serial.PARITY_EVEN,
        "stopbits": 2,
        "xonxoff": False,
        "rtscts": True,
        "dsrdtr": False,
    }


class Line(Protocol):
    """The analyzer's end of the cable, driven by the test: what the gateway writes."""

    def __init__(self) -> None:
        self.received: DeferredQueue[bytes] = DeferredQueue()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        for byte in data:  # one item per byte, however the reads split them
            self.received.put(bytes((byte,)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


def plug(link: Path) -> tuple[Line, PtyMasterPort]:
    """A new pty with ``link`` pointing at its slave: the device appears."""
    line = Line()
    port = PtyMasterPort(line, reactor)
    link.symlink_to(port.device)
    return line, port


async def unplug(link: Path, line: Line, port: PtyMasterPort) -> None:
    link.unlink()
    port.loseConnection()
    await line.lost


class SerialPtyTest(unittest.TestCase):
    timeout = 15

    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory(prefix="lisgw-serial-")
        self.addCleanup(directory.cleanup)
        self.device = Path(directory.name) / "ttyLIS"  # not there until plugged

    async def test_line_settings_reach_the_device(self) -> None:
        line, port = plug(self.device)
        self.addCleanup(lambda: unplug(self.device, line, port))
        settings = SerialSettings(
            str(self.device),
            baudrate=19200,
            data_bits=7,
            parity=Parity.ODD,
            stop_bits=2,
            flow_control=FlowControl.XONXOFF,
        )
        gateway = Protocol()
        opened = await SerialEndpoint(reactor, settings).connect(
            Factory.forProtocol(lambda: gateway)
        )
        assert opened is gateway
        transport = gateway.transport
        assert transport.getPeer() == SerialAddress(str(self.device))
        line_port = transport.serial
        assert (line_port.baudrate, line_port.bytesize, line_port.parity, line_port.stopbits) == (
            19200,
            7,
            serial.PARITY_ODD,
            2,
        )
        assert (line_port.xonxoff, line_port.rtscts, line_port.dsrdtr) == (True, False, False)
        # What the kernel's pty driver keeps of them (it forces CS8 and clears PARENB).
        iflag, _, cflag, _, ispeed, ospeed, _ = termios.tcgetattr(transport.fileno())
        assert cflag & termios.PARODD and cflag & termios.CSTOPB
        assert iflag & termios.IXON
        assert (ispeed, ospeed) == (termios.B19200, termios.B19200)
        lost: Deferred[None] = Deferred()
        gateway.connectionLost = lambda reason: lost.callback(None)
        transport.loseConnection()
        await lost

    async def test_an_enq_to_eot_session_through_the_pty(self) -> None:
        line, port = plug(self.device)
        self.addCleanup(lambda: unplug(self.device, line, port))
        host = Host(reactor, options=LinkOptions(batch_records=True, timers=LinkTimers()))
        client = serial_client(
            SerialSettings(str(self.device), baudrate=9600), host.factory(), reactor=reactor
        )
        client.startService()
        self.addCleanup(client.stopService)
        gateway = await client.when_connected()
        assert isinstance(gateway, AstmLinkProtocol)
        assert client.status.peer == str(self.device)
        port.write(ENQ)
        assert (await line.received.get()) == ACK
        text = b"".join(record + b"\r" for record in MESSAGE)
        frames = fr.build_frames(text, 1, max_text=40)  # several frames, ETB then ETX
        for raw in frames:
            port.write(raw)
            assert (await line.received.get()) == ACK
        port.write(EOT)
        await host.ends.get()
        assert host.sessions() == [("TransferEnded", MESSAGE)]
        assert [f.raw + b"\r\n" for f in host.committed] == frames

    async def test_a_missing_device_is_retried_until_it_appears_and_after_unplugging(
        self,
    ) -> None:
        host = Host(reactor)
        client = serial_client(
            SerialSettings(str(self.device)), host.factory(), reactor=reactor, policy=FAST_RETRY
        )
        statuses = StatusLog(client)
        plugged: list[tuple[Line, PtyMasterPort]] = []
        stopping: list[bool] = []

        def plug_on_second_failure(status: object) -> None:
            waiting = client.status.state is ConnectionState.WAITING
            if waiting and client.status.failures == 2 and not stopping:
                plugged.append(plug(self.device))

        client.subscribe(plug_on_second_failure)
        up = statuses.next(ConnectionState.CONNECTED)
        client.startService()
        self.addCleanup(client.stopService)
        status = await up
        assert [s.failures for s in statuses.seen if s.state is ConnectionState.WAITING] == [1, 2]
        missing = next(s for s in statuses.seen if s.state is ConnectionState.WAITING)
        assert ("No such file") in missing.last_error
        assert status.peer == str(self.device)

        # Unplugged: the gateway sees its reads fail, then the device is missing again.
        down = statuses.next(ConnectionState.WAITING)
        line, port = plugged.pop()
        await unplug(self.device, line, port)
        status = await down
        assert ("connection lost") in status.last_error
        assert status.failures == 1
        up = statuses.next(ConnectionState.CONNECTED)
        await up  # replugged by the observer on the second failed open
        line, port = plugged.pop()
        # And the line works after coming back.
        gateway = await client.when_connected()
        assert isinstance(gateway, AstmLinkProtocol)
        port.write(ENQ)
        assert (await line.received.get()) == ACK
        stopping.append(True)
        await client.stopService()
        await unplug(self.device, line, port)
