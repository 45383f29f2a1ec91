"""Sender-name attribution on a shared listener: hold a new connection until its first
message names its sender, then give every byte to the protocol of the connection it is.

Layer: transport (Twisted), thin. What the bytes mean is lisgw.sender's (sans-IO probes:
ASTM H.5.1, HL7 MSH-3.1); which configured connection a sender is, the service's
(lisgw.services.gateway asks ``Listener.attribute``, through the ``choose`` callback).

``SenderAttributor`` is the protocol a listener builds for a peer whose address alone does
not decide (several connections admit it and differ by ``senders``, or its only candidate
lists senders). It

1. keeps every byte the peer sends (at most the probe's bound plus one read) and writes
   only what the probe answers, which is what the chosen connection's own protocol would
   answer to the same bytes (ASTM: the ACK to ENQ; nothing is ever acknowledged that the
   store has not kept: frames are answered by the chosen link alone, after their commit);
2. once the sender is known, asks ``choose(sender)`` for the chosen connection's protocol,
   connects it through ``EchoFilter`` and replays the bytes from the first one, so the
   protocol sees the same stream (same offsets) as on a listener of its own. ``EchoFilter``
   drops the protocol's repeat of what the probe already wrote; if the protocol answers
   anything else in its place, the connection is aborted (the analyzer sends again on a new
   one) rather than send the analyzer a reply it would misread;
3. refuses (closes) the connection, with a warning naming the listener, the peer and the
   sender, when the sender is unknown or still ambiguous, when the first bytes name no
   sender, or when none is named within ``timeout`` of the first byte (E1381 §6.5.2: a
   receiver waits 30 s; a peer that connects and stays silent is left to the listener's
   idle timeout, as analyzers that connect at start and speak when they have results are).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.sender import SenderFound, SenderOutcome, SenderProbe
from lisgw.transports.tcp import TransportWrapper, describe_address

__all__ = ["DECISION_TIMEOUT", "Choose", "EchoFilter", "SenderAttributor"]

_log = Logger()

DECISION_TIMEOUT: Final = 30.0  # E1381 §6.5.2: the receiver's wait for a frame
Choose = Callable[[str], IProtocol | None]


class EchoFilter(TransportWrapper):
    """The transport of the chosen protocol: swallows the first bytes it writes when they
    repeat ``echo`` (already sent by the probe); anything else in their place aborts."""

    def __init__(self, inner: IProtocol, echo: bytes, *, name: str) -> None:
        super().__init__(inner)
        self.pending = echo
        self.name = name
        self.mismatch = False

    def write(self, data: bytes) -> None:
        if self.mismatch:
            return
        pending = self.pending
        if pending:
            size = min(len(pending), len(data))
            if data[:size] != pending[:size]:
                self.refuse_mismatch()
                return
            self.pending, data = pending[size:], data[size:]
        if data:
            super().write(data)

    def check_echoed(self) -> None:
        """After the replay: the protocol must have repeated the whole echo by now."""
        if self.pending and not self.mismatch:
            self.refuse_mismatch()

    def refuse_mismatch(self) -> None:
        self.mismatch = True
        _log.error(
            "{name}: the attributed protocol did not answer the first bytes as the probe "
            "did: connection aborted",
            name=self.name,
        )
        self.abortConnection()


class SenderAttributor(Protocol):
    """One connection waiting for its sender's name (module docstring)."""

    def __init__(
        self,
        probe: SenderProbe,
        choose: Choose,
        *,
        clock: IReactorTime,
        name: str,
        timeout: float = DECISION_TIMEOUT,
    ) -> None:
        self.probe = probe
        self.choose = choose
        self.clock = clock
        self.name = name
        self.timeout = timeout
        self.peer = "?"
        self.sender: str | None = None
        self.chosen: EchoFilter | None = None
        self._buffer = bytearray()
        self._echo = bytearray()
        self._refused = False
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.peer = describe_address(self.transport.getPeer())

    def dataReceived(self, data: bytes) -> None:
        if self.chosen is not None:
            self.chosen.dataReceived(data)
            return
        if self._refused or self.transport is None:
            return
        if self._timer is None:
            # From the first byte: many analyzers connect at start and stay silent until
            # they have results; the listener's idle timeout governs that silence.
            self._timer = self.clock.callLater(self.timeout, self._timed_out)
        self._buffer += data
        outcome = self.probe.receive_data(data)
        answer = self.probe.data_to_send()
        if answer:
            self._echo += answer
            self.transport.write(answer)
        if outcome is not None:
            self._decide(outcome)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self.chosen is not None:
            self.chosen.connectionLost(reason)
        elif not self._refused:
            _log.info(
                "{name}: {peer} closed before naming its sender ({why})",
                name=self.name,
                peer=self.peer,
                why=reason.getErrorMessage(),
            )

    def _decide(self, outcome: SenderOutcome) -> None:
        self._cancel_timer()
        if not isinstance(outcome, SenderFound):
            self._refuse(outcome.reason)
            return
        self.sender = outcome.sender
        protocol = self.choose(outcome.sender)
        if protocol is None:
            self._refuse(f"sender {outcome.sender!r} is no single connection's")
            return
        _log.info(
            "{name}: {peer} attributed by its sender {sender!r}",
            name=self.name,
            peer=self.peer,
            sender=outcome.sender,
        )
        self._attach(protocol)

    def _attach(self, protocol: IProtocol) -> None:
        transport = self.transport
        if transport is None:
            return
        chosen = EchoFilter(protocol, bytes(self._echo), name=f"{self.name}: {self.peer}")
        self.chosen = chosen
        replay, self._buffer = bytes(self._buffer), bytearray()
        chosen.makeConnection(transport)
        chosen.dataReceived(replay)
        chosen.check_echoed()

    def _refuse(self, why: str) -> None:
        self._refused = True
        self._buffer = bytearray()
        _log.warn(
            "{name}: peer {peer} refused: {why}",
            name=self.name,
            peer=self.peer,
            why=why,
        )
        if self.transport is not None:
            self.transport.loseConnection()

    def _timed_out(self) -> None:
        self._timer = None
        if self.chosen is None and not self._refused:
            self._refuse(f"no sender name within {self.timeout:g} s")

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
