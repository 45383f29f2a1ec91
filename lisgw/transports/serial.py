"""RS-232 analyzer lines: pyserial through Twisted's ``SerialPort``, reopened while missing.

Layer: transport (Twisted). ``SerialSettings`` carries every line setting (baud rate, data
bits, parity, stop bits, flow control), validated all at once (each problem names its key).
``SerialEndpoint`` opens the device as an ``IStreamClientEndpoint``, so the reconnecting
client of ``lisgw.transports.tcp`` keeps a serial line open exactly as it keeps a TCP one:
while the device is missing (USB adapter unplugged, wrong path) or after it fails, it retries
with backoff and reports its state (``serial_client``).

E1381 §5 (physical layer) leaves the line settings to the instrument; 9600 8N1 with no flow
control is the common default. The port is opened exclusively (``flock``) so that two
processes never read one line, each taking half the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import serial
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorFDSet,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.serialport import SerialPort
from zope.interface import implementer

from lisgw.errors import ConfigError
from lisgw.transports.tcp import ConnectionLimits, ReconnectingClient, ReconnectPolicy

__all__ = [
    "FlowControl",
    "Parity",
    "SerialAddress",
    "SerialEndpoint",
    "SerialSettings",
    "serial_client",
]


class Parity(Enum):
    NONE = "none"
    EVEN = "even"
    ODD = "odd"
    MARK = "mark"
    SPACE = "space"


class FlowControl(Enum):
    NONE = "none"
    XONXOFF = "xonxoff"  # software: DC1/DC3, which E1381 §6.6 keeps out of message text
    RTSCTS = "rtscts"
    DSRDTR = "dsrdtr"


_PYSERIAL_PARITY: Final = {
    Parity.NONE: serial.PARITY_NONE,
    Parity.EVEN: serial.PARITY_EVEN,
    Parity.ODD: serial.PARITY_ODD,
    Parity.MARK: serial.PARITY_MARK,
    Parity.SPACE: serial.PARITY_SPACE,
}
_DATA_BITS: Final = (5, 6, 7, 8)
_STOP_BITS: Final = (1, 1.5, 2)


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """One serial line. Invalid settings raise ConfigError listing every problem."""

    device: str
    baudrate: int = 9600
    data_bits: int = 8
    parity: Parity = Parity.NONE
    stop_bits: float = 1
    flow_control: FlowControl = FlowControl.NONE

    def __post_init__(self) -> None:
        problems = []
        if not self.device:
            problems.append("device: empty")
        if not (isinstance(self.baudrate, int) and self.baudrate > 0):
            problems.append(f"baudrate: {self.baudrate!r} is not a positive integer")
        if self.data_bits not in _DATA_BITS:
            problems.append(f"data_bits: {self.data_bits!r} is not one of 5, 6, 7, 8")
        if not isinstance(self.parity, Parity):
            problems.append(f"parity: {self.parity!r} is not one of {_names(Parity)}")
        if self.stop_bits not in _STOP_BITS:
            problems.append(f"stop_bits: {self.stop_bits!r} is not one of 1, 1.5, 2")
        if not isinstance(self.flow_control, FlowControl):
            problems.append(
                f"flow_control: {self.flow_control!r} is not one of {_names(FlowControl)}"
            )
        if problems:
            raise ConfigError(problems)

    def pyserial_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``serial.Serial`` for these settings."""
        flow = self.flow_control
        return {
            "baudrate": self.baudrate,
            "bytesize": self.data_bits,
            "parity": _PYSERIAL_PARITY[self.parity],
            "stopbits": self.stop_bits,
            "xonxoff": flow is FlowControl.XONXOFF,
            "rtscts": flow is FlowControl.RTSCTS,
            "dsrdtr": flow is FlowControl.DSRDTR,
        }


def _names(enum: type[Enum]) -> str:
    return ", ".join(str(member.value) for member in enum)


@implementer(IAddress)
@dataclass(frozen=True, slots=True)
class SerialAddress:
    """The address of a serial line: its device path."""

    device: str


class _LineSerialPort(SerialPort):
    """Twisted's SerialPort with every pyserial setting (it passes no ``dsrdtr`` itself),
    an exclusive open, and the device as peer and host address."""

    def __init__(
        self,
        protocol: IProtocol,
        settings: SerialSettings,
        reactor: IReactorFDSet,
    ) -> None:
        self._settings = settings
        arguments = settings.pyserial_arguments()
        super().__init__(  # type: ignore[no-untyped-call]
            protocol,
            settings.device,
            reactor,
            baudrate=arguments["baudrate"],
            bytesize=arguments["bytesize"],
            parity=arguments["parity"],
            stopbits=arguments["stopbits"],
            xonxoff=arguments["xonxoff"],
            rtscts=arguments["rtscts"],
        )

    def _serialFactory(self, device: str, **arguments: Any) -> serial.Serial:
        # A bound method, unlike the class attribute it overrides: the settings are at hand.
        return serial.Serial(
            device,
            dsrdtr=self._settings.flow_control is FlowControl.DSRDTR,
            exclusive=True,
            **arguments,
        )

    @property
    def serial(self) -> serial.Serial:
        """The pyserial object (line settings, modem lines)."""
        return self._serial

    def getPeer(self) -> SerialAddress:
        return SerialAddress(self._settings.device)

    def getHost(self) -> SerialAddress:
        return SerialAddress(self._settings.device)


@implementer(IStreamClientEndpoint)
class SerialEndpoint:
    """Opens a serial device for a protocol factory, as a client endpoint does a connection.

    ``connect`` fails (SerialException, OSError) when the device is missing or cannot be
    configured; the connection is lost when the device goes away (read error or hang-up).
    The factory's protocol is built before the device is opened (Twisted's SerialPort takes
    it at construction): when the open fails, it is dropped without ever being connected.
    """

    def __init__(self, reactor: IReactorFDSet, settings: SerialSettings) -> None:
        self.reactor = reactor
        self.settings = settings

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        protocol = protocolFactory.buildProtocol(SerialAddress(self.settings.device))
        if protocol is None:
            return fail(ConnectionRefusedError(f"no protocol for {self.settings.device}"))
        try:
            _LineSerialPort(protocol, self.settings, self.reactor)
        except (serial.SerialException, OSError, ValueError):
            return fail()
        return succeed(protocol)


def serial_client(
    settings: SerialSettings,
    factory: IProtocolFactory,
    *,
    reactor: Any,
    policy: ReconnectPolicy | None = None,
    idle_timeout: float | None = None,
    rand: Callable[[], float] | None = None,
    name: str | None = None,
) -> ReconnectingClient:
    """A service that keeps ``settings.device`` open for ``factory``'s protocol, retrying
    with backoff while the device is missing or after it is unplugged. ``reactor`` must
    provide IReactorFDSet and IReactorTime (any real reactor does)."""
    if not (IReactorFDSet.providedBy(reactor) and IReactorTime.providedBy(reactor)):
        raise TypeError("the reactor must provide IReactorFDSet and IReactorTime")
    extra: dict[str, Any] = {"rand": rand} if rand is not None else {}
    return ReconnectingClient(
        SerialEndpoint(reactor, settings),
        factory,
        clock=reactor,
        policy=policy,
        limits=ConnectionLimits(keepalive=False, idle_timeout=idle_timeout),
        name=name or f"serial {settings.device}",
        **extra,
    )
