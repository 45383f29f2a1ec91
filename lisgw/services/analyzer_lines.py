"""Analyzer lines on the gateway's side: the MLLP handler of HL7 analyzers and the TCP
listeners that serve one or several tcp-server connections.

Layer: service (Twisted), part of lisgw.services.gateway (which builds these and owns their
life cycle). ``AnalyzerMllpHandler`` keeps each HL7 message through the ingest, then ACKs it
(or answers a host query with its reply, or applies a query cancel). ``AnalyzerListener``
listens on one port; ``_AttributingFactory`` gives each accepted peer to the one connection
its address, or the sender name of its first message (lisgw.transports.attribute), belongs
to, and refuses the others with a warning naming listener, peer and why.
No patient data is logged here: names, ports, peers, counts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocol, IProtocolFactory
from twisted.logger import Logger

from lisgw.config_schema import (
    Listener,
    WireProtocol,
)
from lisgw.errors import CodecError
from lisgw.hl7.build import AckError, build_ack
from lisgw.hl7.message import parse_message
from lisgw.hl7.mllp import MllpMessage
from lisgw.model import Kind
from lisgw.sender import AstmSenderProbe, Hl7SenderProbe
from lisgw.services.his import STORE_UNAVAILABLE, hl7_now
from lisgw.services.ingest import AnalyzerIngest
from lisgw.services.responder import HostQueryResponder, apply_query_cancel
from lisgw.transports.attribute import SenderAttributor
from lisgw.transports.mllp import MllpLink
from lisgw.transports.tcp import (
    ConnectionLimits,
    LimitedServerFactory,
)
from lisgw.transports.tls import server_endpoint

__all__ = ["AnalyzerListener", "AnalyzerMllpHandler", "pause_reading_of"]

_log = Logger()
_STUB_ORIGINAL: Final = b"MSH|^~\\&|||||||||P|2.5.1\r"  # answers a payload that is not HL7


# -- HL7 analyzers -------------------------------------------------------------------------


class AnalyzerMllpHandler:
    """The MLLP server side of an HL7 analyzer: each message kept by the ingest, then ACKed
    (AA; AE when it is not HL7; AR "store unavailable" when nothing could be kept, so that the
    analyzer sends it again). A message cut short by a closing connection gets no ACK."""

    def __init__(
        self,
        ingest: AnalyzerIngest,
        *,
        clock: Any,
        encoding: str,
        responder: HostQueryResponder | None = None,
    ) -> None:
        self.ingest = ingest
        self.clock = clock
        self.encoding = encoding
        self.responder = responder  # answers a QBP with its RSP instead of the ACK
        self._numbers = itertools.count(1)

    def connection_opened(self, link: MllpLink) -> None:
        """Nothing to prepare: every message is its own session (lisgw.services.pipeline)."""

    def connection_closed(self, link: MllpLink, reason: str) -> None:
        """Nothing to clean up."""

    def handle_message(self, message: MllpMessage, link: MllpLink) -> Deferred[bytes | None]:
        return Deferred.fromCoroutine(self._handle(message, link))

    async def _handle(self, message: MllpMessage, link: MllpLink) -> bytes | None:
        name = self.ingest.name
        if not message.complete:
            _log.warn(
                "HL7 {name}: message of {size} bytes from {peer} cut short: no ACK",
                name=name,
                size=len(message.payload),
                peer=link.peer,
            )
            return None
        try:
            original = parse_message(message.payload, encoding=self.encoding, lenient=True)
        except CodecError:
            original = None
        try:
            decoded, stored = await self.ingest.hl7_stored(message.payload, link.peer)
        except Exception as error:  # nothing was kept: the analyzer must send it again
            _log.error(
                "HL7 {name}: message from {peer} not stored ({error}): AR",
                name=name,
                peer=link.peer,
                error=type(error).__name__,
            )
            fault = AckError("207", "Application internal error", diagnostic=STORE_UNAVAILABLE)
            return self._ack(original, "AR", STORE_UNAVAILABLE, fault)
        if original is None:
            fault = AckError("102", "Data type error", diagnostic="not an HL7 message")
            return self._ack(None, "AE", "not an HL7 message", fault)
        if self.responder is not None and stored.queries:
            try:
                reply = await self.responder.hl7_reply(decoded, stored)
            except Exception:  # the query is kept: ACK it, the reason is logged
                _log.failure("HL7 {name}: host query reply not built", name=name)
                reply = None
            if reply is not None:
                return reply
        if decoded.message.kind is Kind.QUERY_CANCEL and not decoded.rejected:
            try:  # QCN^J01: the cancelled query is marked; the analyzer gets AA regardless
                now = self.clock.seconds()
                await apply_query_cancel(self.ingest.store, name, decoded, now)
            except Exception:
                _log.failure("HL7 {name}: query cancel not recorded", name=name)
        return self._ack(original, "AA", "", None)

    def _ack(self, original: Any, code: str, text: str, fault: AckError | None) -> bytes:
        now = self.clock.seconds()
        control_id = f"A{int(now)}.{next(self._numbers)}"[:20]
        return build_ack(
            original if original is not None else parse_message(_STUB_ORIGINAL),
            code,
            text,
            control_id=control_id,
            now_timestamp=hl7_now(now),
            error=fault,
            encoding=self.encoding,
        )


# -- analyzer links ------------------------------------------------------------------------


class _AttributingFactory:
    """The protocol factory behind a listener: each accepted peer goes to the one connection
    its address belongs to (``Listener.attribute``) or, when the address leaves it open, the
    one its first message's sender names (lisgw.transports.attribute); others are refused."""

    def __init__(
        self, listener: Listener, factories: Mapping[str, IProtocolFactory], *, clock: Any
    ) -> None:
        self.listener = listener
        self.factories = factories
        self.clock = clock

    def doStart(self) -> None:
        for factory in self.factories.values():
            factory.doStart()

    def doStop(self) -> None:
        for factory in self.factories.values():
            factory.doStop()

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:
        if addr is None:
            return None
        host = str(getattr(addr, "host", ""))
        chosen = self.listener.attribute(host)
        if chosen is not None:
            return self.factories[chosen.name].buildProtocol(addr)
        candidates = self.listener.for_peer(host)
        if any(c.attribution.senders for c in candidates):
            astm = self.listener.protocol is WireProtocol.ASTM
            return SenderAttributor(
                AstmSenderProbe() if astm else Hl7SenderProbe(),
                lambda sender: self._by_sender(addr, host, sender),
                clock=self.clock,
                name=f"listener {self.listener.host}:{self.listener.port}",
            )
        why = "no connection admits it" if not candidates else "several connections admit it"
        _log.warn(
            "listener {host}:{port}: peer {peer} refused ({why})",
            host=self.listener.host,
            port=self.listener.port,
            peer=host,
            why=why,
        )
        return None

    def _by_sender(self, addr: IAddress, host: str, sender: str) -> IProtocol | None:
        chosen = self.listener.attribute(host, sender)
        return None if chosen is None else self.factories[chosen.name].buildProtocol(addr)


class AnalyzerListener(Service):
    """One TCP listener serving one or several tcp-server analyzer connections."""

    def __init__(
        self, listener: Listener, factories: Mapping[str, IProtocolFactory], *, reactor: Any
    ) -> None:
        self.listener = listener
        self.reactor = reactor
        self.name = f"listen {listener.host}:{listener.port}"
        connections = listener.connections
        idle = [c.limits.idle_timeout for c in connections]
        limits = ConnectionLimits(
            idle_timeout=None if None in idle else max(t for t in idle if t is not None),
            keepalive=any(c.keepalive for c in connections),
        )
        self.factory = LimitedServerFactory(
            _AttributingFactory(listener, factories, clock=reactor),  # type: ignore[arg-type]
            clock=reactor,
            max_connections=sum(c.limits.max_connections for c in connections),
            limits=limits,
            name=self.name,
        )
        self.factory.noisy = False
        self._port: IListeningPort | None = None

    @property
    def port(self) -> int | None:
        """The bound port while listening (the configured one, or the one port 0 got)."""
        return None if self._port is None else int(self._port.getHost().port)  # type: ignore[attr-defined]

    def startService(self) -> Deferred[None]:
        self.running = True
        endpoint = server_endpoint(self.reactor, host=self.listener.host, port=self.listener.port)
        return endpoint.listen(self.factory).addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> None:
        self._port = port
        names = ", ".join(c.name for c in self.listener.connections)
        _log.info("{name}: listening for {names}", name=self.name, names=names)

    def stopService(self) -> Deferred[None]:
        """Stop accepting; open connections are closed by ``close_connections``."""
        self.running = False
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)

    def pause_reading(self) -> None:
        for connection in self.factory.connections():
            pause_reading_of(connection)

    def close_connections(self) -> Deferred[None]:
        return self.factory.close_connections()


def pause_reading_of(transport: object) -> None:
    """Stop reading from a connection (a Twisted transport or a wrapper of one)."""
    pause = getattr(transport, "pauseProducing", None)
    if pause is not None:
        try:
            pause()
        except Exception:  # already closed: nothing left to read
            _log.debug("pause: connection already gone")
