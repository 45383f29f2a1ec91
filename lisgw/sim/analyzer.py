"""An ASTM analyzer simulator: replays captures as a real instrument would, with faults on demand.

Layer: simulator (Twisted). The simulated instrument is an ``AstmLinkProtocol`` in the
instrument role (``LinkOptions(we_are_instrument=True)``), so it speaks real E1381: it sends
ENQ and waits for ACK, sends each frame and waits for its ACK, retransmits on NAK (§6.5.1),
backs off on contention (§6.2.1: the instrument re-sends ENQ after 1 s), and receives order
downloads, which it accepts at once and records. It runs over TCP in either role
(``factory()`` is a Twisted factory for listening or connecting) or over a pseudo-terminal
(``open_pty``: the simulator holds the master side, the gateway opens ``device``).

``capture_messages`` turns a corpus capture into the messages to replay: for an E1381 byte
stream, the records of each captured session, as a receiving link reads them; for a records
file, the records grouped by H record. ``send_host_query`` sends an E1394 query (Q records).

Faults act on the wire, below the link, so the link itself stays correct (``Faults``): a
frame's checksum corrupted on its first transmission, the EOT ending a message dropped,
every byte written on its own, a stall before a frame.
"""

from __future__ import annotations

import os
import tty
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from twisted.internet import abstract, fdesc
from twisted.internet.defer import Deferred, DeferredQueue, gatherResults, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IReactorFDSet,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.astm import frames as fr
from lisgw.astm.events import (
    NEED_DATA,
    Event,
    FrameReceived,
    RecordsReceived,
    TransferEnded,
    TransferIncomplete,
    TransferStarted,
)
from lisgw.astm.link import AstmLink, LinkOptions
from lisgw.errors import ConfigError, LocalProtocolError
from lisgw.transports.astm import AstmLinkProtocol, MessageOutcome
from lisgw.transports.serial import SerialAddress
from lisgw.transports.tcp import TransportWrapper

__all__ = [
    "INSTRUMENT_OPTIONS",
    "AnalyzerSimulator",
    "Faults",
    "PtyMasterPort",
    "capture_messages",
    "host_query_records",
    "open_pty",
]

_log = Logger()

INSTRUMENT_OPTIONS: Final = LinkOptions(we_are_instrument=True, batch_records=True)
_EOT: Final = bytes((fr.EOT,))


def capture_messages(data: bytes) -> list[tuple[bytes, ...]]:
    """The messages of a capture, each a tuple of records (no CR), in order.

    A capture holding frames (STX) is read by a receiving AstmLink that acknowledges every
    frame: one message per captured session (ENQ…EOT, or up to the end of a capture cut at
    its first STX); a defective frame's content is not part of it, as on a real line. A
    records file (already de-framed) gives one message per H record.
    """
    if fr.STX in data:
        return _framed_messages(data)
    records = [r for r in data.replace(b"\n", b"\r").split(b"\r") if r]
    messages: list[list[bytes]] = []
    for record in records:
        if record[:1] == b"H" or not messages:
            messages.append([])
        messages[-1].append(record)
    return [tuple(message) for message in messages]


def _framed_messages(data: bytes) -> list[tuple[bytes, ...]]:
    link = AstmLink(LinkOptions(batch_records=True))
    link.receive_data(data, 0.0)
    link.close(0.0)
    messages: list[tuple[bytes, ...]] = []
    current: list[bytes] = []
    while (event := link.next_event()) is not NEED_DATA:
        if isinstance(event, FrameReceived):
            link.acknowledge(0.0)
        elif isinstance(event, RecordsReceived):
            current.extend(event.records)
        elif isinstance(event, TransferEnded | TransferIncomplete) and current:
            messages.append(tuple(current))
            current = []
    return messages


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults to inject; indexes count from 0 over the simulator's whole life.

    ``bad_checksum_frame``: that frame (counting each frame once, not its retransmissions)
    first goes out with a wrong checksum (the host must NAK it, §6.5.1, and accept the
    retransmission). ``drop_eot_after_message``: the EOT ending that message is never sent
    (the host's frame timeout, or the next ENQ, ends the transfer incomplete).
    ``one_byte_writes``: every byte written on its own. ``stall_before_frame``: the wire
    holds that frame and everything after it for ``stall_seconds``.
    """

    bad_checksum_frame: int | None = None
    drop_eot_after_message: int | None = None
    one_byte_writes: bool = False
    stall_before_frame: int | None = None
    stall_seconds: float = 0.0

    def __post_init__(self) -> None:
        problems = [
            f"{name}: {getattr(self, name)} is negative"
            for name in (
                "bad_checksum_frame",
                "drop_eot_after_message",
                "stall_before_frame",
                "stall_seconds",
            )
            if (getattr(self, name) or 0) < 0
        ]
        if problems:
            raise ConfigError(problems)


class _FaultPlan:
    """What the wire does to the bytes the instrument link writes: counts frames and EOTs,
    applies the faults, and returns the bytes to send with stall markers (seconds)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.frames_sent = 0
        self.messages_ended = 0
        self.corrupted = 0
        self.eots_dropped = 0
        self._last_frame = b""

    def rewrite(self, data: bytes) -> list[bytes | float]:
        out: list[bytes | float] = []
        pos = 0
        while pos < len(data):
            if data[pos] == fr.STX and (end := data.find(b"\n", pos)) != -1:
                out.extend(self._frame(data[pos : end + 1]))
                pos = end + 1
            else:
                out.extend(self._control(data[pos : pos + 1]))
                pos += 1
        return out

    def _frame(self, frame: bytes) -> list[bytes | float]:
        if frame == self._last_frame:
            return [frame]  # a retransmission (§6.5.1): sent as the link made it
        self._last_frame = frame
        index = self.frames_sent
        self.frames_sent += 1
        out: list[bytes | float] = []
        faults = self.faults
        if index == faults.stall_before_frame and faults.stall_seconds > 0:
            out.append(float(faults.stall_seconds))
        if index == faults.bad_checksum_frame:
            self.corrupted += 1
            frame = _corrupt_checksum(frame)
        out.append(frame)
        return out

    def _control(self, byte: bytes) -> list[bytes | float]:
        if byte != _EOT:
            return [byte]
        index = self.messages_ended
        self.messages_ended += 1
        self._last_frame = b""
        if index == self.faults.drop_eot_after_message:
            self.eots_dropped += 1
            return []
        return [byte]


def _corrupt_checksum(frame: bytes) -> bytes:
    """The same frame with checksum characters that do not match (E1381 §6.3.3)."""
    body_end = len(frame) - 4  # ... ETX/ETB C1 C2 CR LF
    wrong = (fr.checksum_value(frame[1:body_end]) + 1) % 256
    return frame[:body_end] + b"%02X" % wrong + frame[-2:]


class _FaultyWire(TransportWrapper):
    """Between the instrument link and the real transport: applies the fault plan and sends
    what is left, one byte per reactor turn with ``one_byte_writes``, after stalls."""

    def __init__(self, inner: AstmLinkProtocol, simulator: AnalyzerSimulator) -> None:
        super().__init__(inner)
        self._link_protocol = inner
        self._simulator = simulator
        self._plan = simulator.plan
        self._clock = simulator.clock
        self._queue: deque[bytes | float] = deque()
        self._waiting: IDelayedCall | None = None
        self._closing = False

    def makeConnection(self, transport: ITransport) -> None:
        super().makeConnection(transport)
        self._simulator.line_opened(self._link_protocol)

    def write(self, data: bytes) -> None:
        self._queue.extend(self._plan.rewrite(data))
        self._send()

    def loseConnection(self) -> None:
        """Close once the bytes held back (stall, one-byte writes) are sent."""
        self._closing = True
        self._send()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._waiting is not None and self._waiting.active():
            self._waiting.cancel()
        self._waiting = None
        self._queue.clear()
        super().connectionLost(reason)

    def _send(self) -> None:
        transport = self.transport
        if self._waiting is not None or self.lost_reason is not None or transport is None:
            return
        queue = self._queue
        while queue:
            item = queue.popleft()
            if isinstance(item, float):
                self._waiting = self._clock.callLater(item, self._resume)
                return
            if not self._plan.faults.one_byte_writes:
                transport.write(item)
                continue
            transport.write(item[:1])
            if len(item) > 1:
                queue.appendleft(item[1:])
            if queue:
                self._waiting = self._clock.callLater(0, self._resume)
                return
        if self._closing:
            transport.loseConnection()

    def _resume(self) -> None:
        self._waiting = None
        self._send()


class _WireFactory(Factory[_FaultyWire]):
    def __init__(self, simulator: AnalyzerSimulator) -> None:
        self.simulator = simulator

    def buildProtocol(self, addr: IAddress | None) -> _FaultyWire:
        return _FaultyWire(self.simulator.build_protocol(), self.simulator)


class AnalyzerSimulator:
    """One simulated instrument on one line at a time (module docstring)."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        faults: Faults | None = None,
        options: LinkOptions = INSTRUMENT_OPTIONS,
        name: str = "SIM",
    ) -> None:
        self.clock = clock
        self.name = name
        self.options = replace(options, we_are_instrument=True)
        self.plan = _FaultPlan(faults or Faults())
        self.protocol: AstmLinkProtocol | None = None
        self.downloads: list[tuple[bytes, ...]] = []
        self.incomplete_downloads = 0
        self.outcomes: list[MessageOutcome] = []
        self._download_queue: DeferredQueue[tuple[bytes, ...]] = DeferredQueue()
        self._receiving: list[bytes] = []
        self._connected_waiters: list[Deferred[AstmLinkProtocol]] = []

    @property
    def faults(self) -> Faults:
        return self.plan.faults

    def factory(self) -> Factory[_FaultyWire]:
        """A Twisted factory for the instrument's end of a TCP connection (either role)."""
        return _WireFactory(self)

    def build_protocol(self) -> AstmLinkProtocol:
        """The instrument's link protocol for a new connection (it replaces the last one)."""
        protocol = AstmLinkProtocol(
            commit_frame=_accept_at_once,
            on_event=self._on_event,
            clock=self.clock,
            options=self.options,
            name=f"sim {self.name}",
        )
        self.protocol = protocol
        return protocol

    def line_opened(self, protocol: AstmLinkProtocol) -> None:
        """Called by the wire once the connection is made."""
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.callback(protocol)

    def when_connected(self) -> Deferred[AstmLinkProtocol]:
        """Fires with the instrument's protocol once a line is open."""
        protocol = self.protocol
        if protocol is not None and protocol.transport is not None and not protocol.lost:
            return succeed(protocol)
        waiter: Deferred[AstmLinkProtocol] = Deferred()
        self._connected_waiters.append(waiter)
        return waiter

    def send_message(self, records: Sequence[bytes]) -> Deferred[MessageOutcome]:
        """Send one message in its own ENQ…EOT session; fires with its outcome."""
        protocol = self.protocol
        if protocol is None:
            return succeed(MessageOutcome(0, False, "not connected"))
        sent = protocol.send_message(records)
        return sent.addCallback(self._record_outcome)

    def replay(self, messages: Sequence[Sequence[bytes]]) -> Deferred[list[MessageOutcome]]:
        """Send the messages one after the other (the link queues them); fires with every
        outcome, in order."""
        sending = [self.send_message(message) for message in messages]
        replayed: Deferred[list[MessageOutcome]] = gatherResults(sending, consumeErrors=True)
        return replayed

    def send_host_query(
        self, sample_ids: Sequence[str], form: str = "astm-q"
    ) -> Deferred[MessageOutcome]:
        """Ask the host for the orders of these samples (E1394 §12: one Q record each)."""
        return self.send_message(host_query_records(self.name, sample_ids, form))

    def next_download(self) -> Deferred[tuple[bytes, ...]]:
        """Fires with the next complete message the host downloaded (in arrival order)."""
        return self._download_queue.get()

    def close(self) -> Deferred[None]:
        """Close the line; fires once it is closed."""
        if self.protocol is None:
            return succeed(None)
        return self.protocol.close()

    def _record_outcome(self, outcome: MessageOutcome) -> MessageOutcome:
        self.outcomes.append(outcome)
        return outcome

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TransferStarted):
            self._receiving = []
        elif isinstance(event, RecordsReceived):
            self._receiving.extend(event.records)
        elif isinstance(event, TransferEnded):
            if self._receiving:
                message = tuple(self._receiving)
                self.downloads.append(message)
                self._download_queue.put(message)
            self._receiving = []
        elif isinstance(event, TransferIncomplete):
            self.incomplete_downloads += 1
            self._receiving = []


def _accept_at_once(frame: FrameReceived) -> Deferred[None]:
    # The instrument keeps what the host downloads in memory: nothing to wait for.
    return succeed(None)


def host_query_records(sender: str, sample_ids: Sequence[str], form: str = "astm-q") -> list[bytes]:
    """An E1394 host query: H, one Q record per sample (Q.3 starting range ID ``^id``,
    Q.5 ``ALL`` tests, Q.13 ``O`` = order request), L.

    ``form`` ``roche-tsreq`` is the cobas request instead: H.11 ``TSREQ^REAL`` and the
    sample ID third in Q.3 (``^^id``), as in the corpus's cobas e411 TSREQ capture."""
    if not sample_ids:
        raise LocalProtocolError("a host query names at least one sample")
    if form not in _QUERY_FORMS:
        raise LocalProtocolError(f"query form {form!r} is not one of {', '.join(_QUERY_FORMS)}")
    message_type, id_prefix = _QUERY_FORMS[form]
    records = [b"H|\\^&|||" + _field(sender) + b"^1|||||host|" + message_type + b"|P|1"]
    for number, sample_id in enumerate(sample_ids, 1):
        q3 = id_prefix + _field(sample_id)
        records.append(b"Q|%d|" % number + q3 + b"||ALL||||||||O")
    records.append(b"L|1|N")
    return records


_QUERY_FORMS: Final = {"astm-q": (b"", b"^"), "roche-tsreq": (b"TSREQ^REAL", b"^^")}


def _field(text: str) -> bytes:
    value = text.encode("latin-1")
    if any(byte in value for byte in b"|\\^&") or fr.RESTRICTED_IN_RECORD.search(value):
        raise LocalProtocolError(f"{text!r} holds a delimiter or a restricted character")
    return value


# -- the serial line: a pseudo-terminal pair ---------------------------------------------


class PtyMasterPort(abstract.FileDescriptor):
    """The instrument's end of a simulated serial cable: the master side of a pty pair.

    The slave side (``device``) is set raw and held open here, so the line stays up between
    the gateway's opens (as a cable does); ``loseConnection`` unplugs it: both sides close,
    the gateway's reads fail and the device path disappears.
    """

    connected = 1  # FileDescriptor.loseConnection acts on connected descriptors only

    def __init__(self, protocol: IProtocol, reactor: IReactorFDSet) -> None:
        super().__init__(reactor)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation before the gateway opens it
        fdesc.setNonBlocking(self._master)  # type: ignore[no-untyped-call]
        self.device = os.ttyname(self._slave)
        self.protocol = protocol
        protocol.makeConnection(self)
        self.startReading()  # type: ignore[no-untyped-call]

    def fileno(self) -> int:
        return self._master

    def writeSomeData(self, data: bytes) -> int | BaseException:
        written: int | BaseException = fdesc.writeToFD(self._master, data)  # type: ignore[no-untyped-call]
        return written

    def doRead(self) -> object:
        return fdesc.readFromFD(self._master, self.protocol.dataReceived)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        self.protocol.connectionLost(reason)

    def getPeer(self) -> SerialAddress:
        return SerialAddress(self.device)

    def getHost(self) -> SerialAddress:
        return SerialAddress(self.device)


def open_pty(simulator: AnalyzerSimulator, reactor: IReactorFDSet) -> PtyMasterPort:
    """Put the simulator on a new pseudo-terminal; the gateway opens the port's ``device``."""
    return PtyMasterPort(_WireFactory(simulator).buildProtocol(None), reactor)
