"""MLLP over Twisted: a server that answers each message, a client that waits for each reply.

Layer: transport (Twisted). A thin adapter over the sans-IO ``lisgw.hl7.mllp.MllpFramer``:
bytes from the connection go into the framer, its events come out as method calls; replies
are framed with ``frame()``. No HL7 logic lives here: what a message means and what to answer
is the handler's business (lisgw.services.his, lisgw.services.outbox, lisgw.sim.his).

Implements the transport rules of HL7 v2.5.1 Appendix C (MLLP, C.4) as the gateway applies them:

* Original-mode acknowledgment is one message, one reply (C.4.1, §2.9.2): the server handles
  the messages of a connection one at a time, in the order received, and writes each reply
  before it starts on the next; a peer that sends without waiting is read no further while
  ``MAX_QUEUED`` messages wait (backpressure, ``pauseProducing``), so memory stays bounded.
  The client sends one message and waits for one reply, with a timeout; after a timeout the
  connection is aborted, because a late reply would otherwise be taken for the next message's.
* Limits: at most ``max_connections`` accepted connections per server (the next ones are
  closed at once), ``max_message_size`` bytes per message (the framer drops a larger block and
  the connection is closed: the sender waits for no ACK that would come and will resend on a
  new connection), and an idle timeout that closes a connection with no traffic (it is paused
  while a message is being handled or a reply awaited).
* ``when_closed()`` fires after ``connectionLost`` *and* after every message already received
  has been handled, so services and tests can stop cleanly.

An incomplete message (the connection closed inside a block, ``complete=False``) still goes to
the server's handler, which keeps it raw; no reply can be sent on a closed connection.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Final
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.errors import LocalProtocolError, RemoteProtocolError
from lisgw.hl7.mllp import (
    NEED_DATA,
    MllpEvent,
    MllpFramer,
    MllpMessage,
    MllpNoise,
    MllpOversize,
    frame,
)

__all__ = [
    "MAX_QUEUED",
    "MllpClientFactory",
    "MllpClientProtocol",
    "MllpConnectionLost",
    "MllpHandler",
    "MllpLink",
    "MllpProtocol",
    "MllpServerFactory",
    "MllpServerProtocol",
    "MllpSettings",
    "MllpTimeout",
    "connect_mllp",
    "describe_peer",
]

MAX_QUEUED: Final = 8  # messages read ahead of the one being handled before reading pauses

_log = Logger()


class MllpTimeout(RemoteProtocolError):
    """The peer sent no reply within the timeout."""


class MllpConnectionLost(RemoteProtocolError):
    """The connection ended (or failed, or never completed TLS) before the reply came."""


@dataclass(frozen=True, slots=True)
class MllpSettings:
    """Per-connection limits. ``idle_timeout`` None keeps idle connections open forever."""

    max_message_size: int = 1 << 20
    idle_timeout: float | None = 600.0
    lenient: bool = True  # the framer's tolerance of unframed HL7 and missing FS (module doc)


def describe_peer(address: IAddress) -> str:
    """``host:port`` for IP addresses, the address's repr for anything else."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else repr(address)


class MllpProtocol(Protocol):
    """Common part of both ends: framing, idle timeout, clean-close notification."""

    def __init__(self, clock: IReactorTime, settings: MllpSettings) -> None:
        self.clock = clock
        self.settings = settings
        self.peer = "?"
        self._framer = MllpFramer(settings.max_message_size, settings.lenient)
        self._idle_call: IDelayedCall | None = None
        self._idle_paused = False
        self._lost = False
        self._close_waiters: list[Deferred[None]] = []

    # -- Twisted callbacks

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.peer = describe_peer(self.transport.getPeer())
        self._touch()

    def dataReceived(self, data: bytes) -> None:
        if self._lost:
            return
        self._touch()
        self._framer.receive_data(data)
        self._drain()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._cancel_idle()
        self._framer.close()
        self._drain()  # a block the close cut short comes out with complete=False
        self.connectionEnded(reason)
        self._settle()

    # -- hooks for the two ends

    def messageReceived(self, message: MllpMessage) -> None:
        """One message (``complete`` False if the connection closed inside it)."""

    def noiseReceived(self, noise: MllpNoise) -> None:
        # The bytes may hold patient data: only their size and position are logged.
        _log.warn(
            "MLLP noise from {peer}: {size} bytes at offset {offset} ({reason})",
            peer=self.peer,
            size=len(noise.data),
            offset=noise.offset,
            reason=noise.reason,
        )

    def oversizeReceived(self, oversize: MllpOversize) -> None:
        _log.warn(
            "MLLP message from {peer} over the size limit ({size} > {limit} bytes): closing",
            peer=self.peer,
            size=oversize.size,
            limit=self.settings.max_message_size,
        )
        self.abort()

    def connectionEnded(self, reason: Failure) -> None:
        """Called once from ``connectionLost``, after the framer was flushed."""

    def settled(self) -> bool:
        """True when nothing is left to do on this connection (it is closed, work done)."""
        return self._lost

    # -- actions

    @property
    def lost(self) -> bool:
        return self._lost

    def send_message(self, payload: bytes) -> None:
        """Frame and write one message (dropped silently once the connection is lost)."""
        self._write(frame(payload))

    def _write(self, data: bytes) -> None:
        if self._lost or self.transport is None:
            return
        self.transport.write(data)
        self._touch()

    def close(self) -> Deferred[None]:
        """Close the connection gracefully; fires once it is closed and settled."""
        if not self._lost and self.transport is not None:
            self.transport.loseConnection()
        return self.when_closed()

    def abort(self) -> None:
        """Drop the connection now, without flushing what is buffered for writing."""
        if self._lost or self.transport is None:
            return
        if ITCPTransport.providedBy(self.transport):
            ITCPTransport(self.transport).abortConnection()
        else:
            self.transport.loseConnection()

    def when_closed(self) -> Deferred[None]:
        """A Deferred firing once the connection is lost and every received message handled."""
        if self.settled():
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        return waiter

    # -- idle timeout

    def pause_idle(self) -> None:
        self._idle_paused = True
        self._cancel_idle()

    def resume_idle(self) -> None:
        self._idle_paused = False
        self._touch()

    def idleTimedOut(self) -> None:
        _log.info(
            "MLLP connection {peer} idle for {seconds} s: closing",
            peer=self.peer,
            seconds=self.settings.idle_timeout,
        )
        if self.transport is not None:
            self.transport.loseConnection()

    def _touch(self) -> None:
        timeout = self.settings.idle_timeout
        if timeout is None or self._lost or self._idle_paused:
            return
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(timeout)
        else:
            self._idle_call = self.clock.callLater(timeout, self._idle_expired)

    def _cancel_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _idle_expired(self) -> None:
        self._idle_call = None
        self.idleTimedOut()

    # -- internals

    def _drain(self) -> None:
        while True:
            event: MllpEvent | object = self._framer.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, MllpMessage):
                self.messageReceived(event)
            elif isinstance(event, MllpNoise):
                self.noiseReceived(event)
            elif isinstance(event, MllpOversize):
                self.oversizeReceived(event)

    def _settle(self) -> None:
        """Fire the close waiters once ``settled()`` holds; subclasses call it when work ends."""
        if not self.settled():
            return
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)


@dataclass(frozen=True, slots=True)
class MllpLink:
    """One accepted server connection as a handler sees it: unique ``id``, and the peer."""

    id: int
    peer: str


class MllpHandler(TypingProtocol):
    """What a server does with its connections and their messages.

    ``handle_message`` returns the reply payload (unframed), or None for no reply. Its
    Deferred must not fail for a bad message (answer it with a negative ACK): a failure is
    logged and the connection dropped, as nothing sensible can be answered.
    ``connection_closed`` comes once the connection is lost *and* its messages are handled.
    """

    def connection_opened(self, link: MllpLink) -> None: ...

    def handle_message(self, message: MllpMessage, link: MllpLink) -> Deferred[bytes | None]: ...

    def connection_closed(self, link: MllpLink, reason: str) -> None: ...


class MllpServerProtocol(MllpProtocol):
    """Server end: each message to the factory's handler in order, its reply written back."""

    def __init__(self, factory: MllpServerFactory, *, accepted: bool, link_id: int) -> None:
        super().__init__(factory.clock, factory.settings)
        self.factory = factory
        self.accepted = accepted
        self.link = MllpLink(link_id, "?")
        self._close_reason = ""
        self._queue: deque[MllpMessage] = deque()
        self._busy = False
        self._in_next = False
        self._paused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        if not self.accepted:
            _log.warn(
                "MLLP {name}: connection from {peer} refused, {limit} connections already open",
                name=self.factory.name,
                peer=self.peer,
                limit=self.factory.max_connections,
            )
            self.abort()
            return
        _log.info(
            "MLLP {name}: connection from {peer} ({count} open)",
            name=self.factory.name,
            peer=self.peer,
            count=self.factory.open_connections(),
        )
        self.link = MllpLink(self.link.id, self.peer)
        self.factory.handler.connection_opened(self.link)
        self.when_closed().addCallback(self._closed).addErrback(self._close_hook_failed)

    def _closed(self, _: None) -> None:
        self.factory.handler.connection_closed(self.link, self._close_reason)

    def _close_hook_failed(self, failure: Failure) -> None:
        _log.failure("MLLP {name}: connection_closed failed", failure, name=self.factory.name)

    def dataReceived(self, data: bytes) -> None:
        if self.accepted:
            super().dataReceived(data)

    def connectionEnded(self, reason: Failure) -> None:
        self._close_reason = reason.getErrorMessage()
        if self.accepted:
            _log.info(
                "MLLP {name}: connection from {peer} closed ({why})",
                name=self.factory.name,
                peer=self.peer,
                why=reason.getErrorMessage(),
            )

    def settled(self) -> bool:
        return self.lost and not self._busy and not self._queue

    def messageReceived(self, message: MllpMessage) -> None:
        self._queue.append(message)
        if len(self._queue) >= MAX_QUEUED:
            self._pause_reading()
        self._next()

    def _next(self) -> None:
        """Start the next message unless one is being handled; a loop, not recursion, since
        handlers that answer at once (the simulator) would otherwise nest one call per
        message of a pipelined read."""
        if self._in_next:
            return
        self._in_next = True
        try:
            while not self._busy and self._queue:
                self._start(self._queue.popleft())
        finally:
            self._in_next = False
        if not self._busy and not self._queue:
            self._settle()

    def _start(self, message: MllpMessage) -> None:
        if self._paused and len(self._queue) < MAX_QUEUED // 2:
            self._resume_reading()
        self._busy = True
        self.pause_idle()
        handled: Deferred[bytes | None] = maybeDeferred(
            self.factory.handler.handle_message, message, self.link
        )
        handled.addCallbacks(self._reply, self._handler_failed)
        handled.addBoth(self._handled)

    def _reply(self, payload: bytes | None) -> None:
        if payload is not None:
            self.send_message(payload)

    def _handler_failed(self, failure: Failure) -> None:
        _log.failure(
            "MLLP {name}: handler failed on a message from {peer}: closing",
            failure,
            name=self.factory.name,
            peer=self.peer,
        )
        self.abort()

    def _handled(self, _: object) -> None:
        self._busy = False
        if not self.lost:
            self.resume_idle()
        self._next()

    def _pause_reading(self) -> None:
        if not self._paused and IPushProducer.providedBy(self.transport):
            IPushProducer(self.transport).pauseProducing()
            self._paused = True

    def _resume_reading(self) -> None:
        if self._paused and IPushProducer.providedBy(self.transport):
            IPushProducer(self.transport).resumeProducing()
        self._paused = False


class MllpServerFactory(Factory):
    """Builds server protocols for one handler, enforcing the connection limit."""

    def __init__(
        self,
        handler: MllpHandler,
        *,
        clock: IReactorTime,
        settings: MllpSettings | None = None,
        max_connections: int = 16,
        name: str = "mllp",
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.handler = handler
        self.clock = clock
        self.settings = settings or MllpSettings()
        self.max_connections = max_connections
        self.name = name
        self.protocols: set[MllpServerProtocol] = set()
        self._link_ids = itertools.count(1)

    def open_connections(self) -> int:
        """Accepted connections not yet lost."""
        return sum(1 for p in self.protocols if p.accepted and not p.lost)

    def buildProtocol(self, addr: IAddress | None) -> MllpServerProtocol:
        accepted = self.open_connections() < self.max_connections
        protocol = MllpServerProtocol(self, accepted=accepted, link_id=next(self._link_ids))
        self.protocols.add(protocol)
        protocol.when_closed().addBoth(self._forget, protocol)
        return protocol

    def _forget(self, _: object, protocol: MllpServerProtocol) -> None:
        self.protocols.discard(protocol)

    def close_connections(self) -> Deferred[None]:
        """Close every connection; fires when all are closed and their messages handled."""
        closing = [protocol.close() for protocol in list(self.protocols)]
        done: Deferred[None] = gatherResults(closing, consumeErrors=True).addCallback(
            lambda _: None
        )
        return done


class MllpClientProtocol(MllpProtocol):
    """Client end: ``request()`` sends one message and fires with the next message received."""

    def __init__(self, clock: IReactorTime, settings: MllpSettings) -> None:
        super().__init__(clock, settings)
        self._pending: Deferred[MllpMessage] | None = None
        self._timeout_call: IDelayedCall | None = None

    def request(self, payload: bytes, timeout: float) -> Deferred[MllpMessage]:
        """Send ``payload``; fire with the reply, or fail with MllpTimeout/MllpConnectionLost."""
        if self._pending is not None:
            raise LocalProtocolError("an MLLP request is already waiting for its reply")
        data = frame(payload)  # LocalProtocolError before any state changes
        if self.lost:
            failed: Deferred[MllpMessage] = Deferred()
            failed.errback(MllpConnectionLost("the connection is closed"))
            return failed
        pending: Deferred[MllpMessage] = Deferred(self._cancel_request)
        self._pending = pending
        self.pause_idle()
        self._timeout_call = self.clock.callLater(timeout, self._timed_out, timeout)
        self._write(data)
        return pending

    def messageReceived(self, message: MllpMessage) -> None:
        if not message.complete:
            return  # cut short by the close: connectionEnded fails the request
        if self._pending is None:
            _log.warn(
                "MLLP reply from {peer} with no request waiting ({size} bytes): ignored",
                peer=self.peer,
                size=len(message.payload),
            )
            return
        self._finish().callback(message)

    def oversizeReceived(self, oversize: MllpOversize) -> None:
        if self._pending is not None:
            self._finish().errback(
                RemoteProtocolError(
                    f"reply over the size limit ({oversize.size} bytes)", offset=oversize.offset
                )
            )
        super().oversizeReceived(oversize)

    def connectionEnded(self, reason: Failure) -> None:
        if self._pending is not None:
            why = reason.getErrorMessage()
            self._finish().errback(MllpConnectionLost(f"connection closed before the reply: {why}"))

    def _cancel_request(self, pending: Deferred[MllpMessage]) -> None:
        """Cancelling a request drops the connection: its reply could not be told apart."""
        if self._pending is pending:
            self._finish()
        self.abort()

    def _timed_out(self, timeout: float) -> None:
        self._timeout_call = None
        if self._pending is None:
            return
        self._finish().errback(MllpTimeout(f"no reply within {timeout:g} s"))
        self.abort()  # a late reply must not be read as the answer to the next message

    def _finish(self) -> Deferred[MllpMessage]:
        pending, self._pending = self._pending, None
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self._timeout_call = None
        if not self.lost:
            self.resume_idle()
        if pending is None:
            raise LocalProtocolError("no MLLP request is waiting")
        return pending


class MllpClientFactory(Factory):
    """Builds client protocols with a clock and per-connection settings."""

    def __init__(self, clock: IReactorTime, settings: MllpSettings | None = None) -> None:
        self.clock = clock
        self.settings = settings or MllpSettings()

    def buildProtocol(self, addr: IAddress | None) -> MllpClientProtocol:
        return MllpClientProtocol(self.clock, self.settings)


def connect_mllp(
    endpoint: IStreamClientEndpoint,
    *,
    clock: IReactorTime,
    settings: MllpSettings | None = None,
) -> Deferred[MllpClientProtocol]:
    """Connect to an MLLP server (see lisgw.transports.tls for TCP and TLS endpoints)."""
    connecting = endpoint.connect(MllpClientFactory(clock, settings))
    return connecting.addCallback(_as_client)


def _as_client(protocol: object) -> MllpClientProtocol:
    if not isinstance(protocol, MllpClientProtocol):  # endpoints return the factory's protocol
        raise LocalProtocolError(f"unexpected protocol {protocol!r}")
    return protocol
