"""TCP for analyzer links, both roles: a guarded server factory and a reconnecting client.

Layer: transport (Twisted). Protocol-agnostic: any Twisted protocol factory (ASTM, MLLP) is
wrapped, so the limits live in one place and the protocols stay thin.

An analyzer may be the TCP server or the client (DESIGN §4), so both roles exist:

* ``LimitedServerFactory`` wraps a factory for listening: at most ``max_connections``
  connections at once (the next are closed on accept), and per connection the
  ``ConnectionLimits``: bytes received (beyond: dropped), idle timeout, TCP keep-alive with
  short probes (a powered-off analyzer leaves no FIN: keep-alive is how its socket ends).
  The wrapped factory may refuse a peer by returning None from ``buildProtocol`` (attribution
  by peer address belongs to the service layer).
* ``ReconnectingClient`` is a Service that connects through any ``IStreamClientEndpoint``
  (TCP, or ``lisgw.transports.serial.SerialEndpoint``) and reconnects after a failure or a
  lost connection, waiting ``ReconnectPolicy`` delays (exponential, capped, jittered so that
  many links do not retry in step). It reports its ``ConnectionStatus`` to observers.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from lisgw.errors import ConfigError, LocalProtocolError

__all__ = [
    "ConnectionLimits",
    "ConnectionState",
    "ConnectionStatus",
    "GuardedProtocol",
    "LimitedServerFactory",
    "ReconnectPolicy",
    "ReconnectingClient",
    "TransportWrapper",
    "describe_address",
]

_log = Logger()

_MAX_EXPONENT: Final = 64  # beyond this many failures the delay is long since capped


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection guards. None disables a limit.

    ``max_bytes``: bytes received on one connection before it is dropped. ``idle_timeout``:
    seconds with nothing received or sent before it is closed. ``keepalive``: TCP keep-alive
    on the socket, probing after ``keepalive_idle`` s every ``keepalive_interval`` s and
    giving up after ``keepalive_count`` probes (Linux defaults wait two hours).
    """

    max_bytes: int | None = None
    idle_timeout: float | None = None
    keepalive: bool = True
    keepalive_idle: int = 60
    keepalive_interval: int = 10
    keepalive_count: int = 5

    def __post_init__(self) -> None:
        problems = []
        if self.max_bytes is not None and self.max_bytes < 1:
            problems.append(f"max_bytes: {self.max_bytes} is below 1")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            problems.append(f"idle_timeout: {self.idle_timeout} is not a positive duration")
        for name in ("keepalive_idle", "keepalive_interval", "keepalive_count"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} is below 1")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Delay before the next attempt after ``failures`` consecutive failures (>= 1):
    ``initial_delay * factor ** (failures - 1)``, capped at ``max_delay``, then spread by
    ``± jitter`` (a fraction) so that links cut by one outage do not retry in step."""

    initial_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        problems = []
        if not self.initial_delay > 0:
            problems.append(f"initial_delay: {self.initial_delay} is not positive")
        if not self.factor >= 1:
            problems.append(f"factor: {self.factor} is below 1")
        if not self.max_delay >= self.initial_delay:
            problems.append(f"max_delay: {self.max_delay} is below initial_delay")
        if not 0 <= self.jitter < 1:
            problems.append(f"jitter: {self.jitter} is not in [0, 1)")
        if problems:
            raise ConfigError(problems)

    def delay(self, failures: int, rand: float) -> float:
        """The jittered delay; ``rand`` is a uniform draw in [0, 1)."""
        if failures < 1:
            raise ValueError("failures counts from 1")
        exponent = min(failures - 1, _MAX_EXPONENT)
        nominal = min(self.max_delay, self.initial_delay * self.factor**exponent)
        return nominal * (1 + self.jitter * (2 * rand - 1))


@implementer(ITransport)
class TransportWrapper(Protocol):
    """Wraps one connection's protocol and acts as its transport (as Twisted's
    ProtocolWrapper does, typed and without a registry): subclasses see every byte both ways.

    It provides whatever interfaces the real transport provides and forwards what it does not
    define itself. ``when_lost()`` fires after the inner connectionLost; ``lost_reason``
    then says why.
    """

    def __init__(self, inner: IProtocol) -> None:
        self.inner = inner
        self.lost_reason: Failure | None = None
        self._lost_waiters: list[Deferred[None]] = []

    def makeConnection(self, transport: ITransport) -> None:
        directlyProvides(self, providedBy(transport))
        self.transport = transport
        self.connected = 1
        self.inner.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost_reason = reason
        self.connected = 0
        self.inner.connectionLost(reason)
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_lost(self) -> Deferred[None]:
        """Fires once the connection is lost (at once if it already is)."""
        if self.lost_reason is not None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._lost_waiters.append(waiter)
        return waiter

    # -- the transport the inner protocol sees

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def abortConnection(self) -> None:
        """Drop the connection at once, unsent bytes and all (a plain close if the real
        transport cannot abort)."""
        if self.lost_reason is not None or self.transport is None:
            return
        if ITCPTransport.providedBy(self.transport):
            ITCPTransport(self.transport).abortConnection()
        else:
            self.transport.loseConnection()

    def getPeer(self) -> IAddress:
        if self.transport is None:
            raise LocalProtocolError("not connected")
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        if self.transport is None:
            raise LocalProtocolError("not connected")
        return self.transport.getHost()

    def __getattr__(self, name: str) -> Any:
        # pauseProducing, setTcpNoDelay, ...: whatever the real transport offers.
        return getattr(self.transport, name)


class GuardedProtocol(TransportWrapper):
    """A connection under ConnectionLimits: bytes received, idle timeout, keep-alive."""

    def __init__(
        self,
        inner: IProtocol,
        *,
        limits: ConnectionLimits,
        clock: IReactorTime,
        name: str,
        on_lost: Callable[[GuardedProtocol], None] | None = None,
    ) -> None:
        super().__init__(inner)
        self.limits = limits
        self.clock = clock
        self.name = name
        self.peer = "?"
        self.received = 0
        self._on_lost = on_lost
        self._last_activity = clock.seconds()
        self._idle_call: IDelayedCall | None = None

    def makeConnection(self, transport: ITransport) -> None:
        self.peer = describe_address(transport.getPeer())
        if self.limits.keepalive and ITCPTransport.providedBy(transport):
            self._enable_keepalive(ITCPTransport(transport))
        self._arm_idle_timer(self.limits.idle_timeout)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self.lost_reason is not None:
            return
        self.received += len(data)
        limit = self.limits.max_bytes
        if limit is not None and self.received > limit:
            _log.warn(
                "{name}: {peer} sent more than {limit} bytes: dropping the connection",
                name=self.name,
                peer=self.peer,
                limit=limit,
            )
            self.abortConnection()
            return
        self._last_activity = self.clock.seconds()
        self.inner.dataReceived(data)

    def write(self, data: bytes) -> None:
        self._last_activity = self.clock.seconds()
        super().write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        if self._on_lost is not None:
            self._on_lost(self)
        super().connectionLost(reason)

    def _enable_keepalive(self, transport: ITCPTransport) -> None:
        transport.setTcpKeepAlive(True)
        handle = getattr(transport, "getHandle", lambda: None)()
        if not isinstance(handle, socket.socket):
            return
        limits = self.limits
        # Linux names; elsewhere the system's keep-alive timers apply.
        for option, value in (
            ("TCP_KEEPIDLE", limits.keepalive_idle),
            ("TCP_KEEPINTVL", limits.keepalive_interval),
            ("TCP_KEEPCNT", limits.keepalive_count),
        ):
            if hasattr(socket, option):
                handle.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

    def _arm_idle_timer(self, delay: float | None) -> None:
        if delay is not None:
            self._idle_call = self.clock.callLater(delay, self._check_idle)

    def _check_idle(self) -> None:
        """Cheaper than resetting a timer on every read: check, and re-arm for the rest."""
        self._idle_call = None
        timeout = self.limits.idle_timeout
        if timeout is None or self.lost_reason is not None:
            return
        idle = self.clock.seconds() - self._last_activity
        if idle < timeout:
            self._arm_idle_timer(timeout - idle)
            return
        _log.info(
            "{name}: {peer} idle for {seconds} s: closing",
            name=self.name,
            peer=self.peer,
            seconds=timeout,
        )
        self.loseConnection()


class LimitedServerFactory(Factory[GuardedProtocol]):
    """A listening factory: at most ``max_connections`` at once, each one guarded."""

    def __init__(
        self,
        wrapped: IProtocolFactory,
        *,
        clock: IReactorTime,
        max_connections: int = 16,
        limits: ConnectionLimits | None = None,
        name: str = "tcp",
    ) -> None:
        if max_connections < 1:
            raise ConfigError([f"max_connections: {max_connections} is below 1"])
        self.wrapped = wrapped
        self.clock = clock
        self.max_connections = max_connections
        self.limits = limits or ConnectionLimits()
        self.name = name
        self._open: set[GuardedProtocol] = set()

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def open_connections(self) -> int:
        """Connections accepted and not lost yet."""
        return len(self._open)

    def connections(self) -> list[GuardedProtocol]:
        return list(self._open)

    def buildProtocol(self, addr: IAddress | None) -> GuardedProtocol | None:
        peer = describe_address(addr)
        if len(self._open) >= self.max_connections:
            _log.warn(
                "{name}: connection from {peer} refused: {limit} connections already open",
                name=self.name,
                peer=peer,
                limit=self.max_connections,
            )
            return None  # Twisted closes the accepted socket at once
        inner = self.wrapped.buildProtocol(addr) if addr is not None else None
        if inner is None:
            _log.warn("{name}: connection from {peer} refused", name=self.name, peer=peer)
            return None
        guarded = GuardedProtocol(
            inner, limits=self.limits, clock=self.clock, name=self.name, on_lost=self._forget
        )
        # Counted from here: a TCP server connects the protocol right after building it.
        self._open.add(guarded)
        return guarded

    def close_connections(self) -> Deferred[None]:
        """Close every open connection; fires once each one's connectionLost has run."""
        waiting = []
        for protocol in self.connections():
            waiting.append(protocol.when_lost())
            protocol.loseConnection()
        done: Deferred[None] = gatherResults(waiting).addCallback(lambda _: None)
        return done

    def _forget(self, protocol: GuardedProtocol) -> None:
        self._open.discard(protocol)


class ConnectionState(Enum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"  # backing off before the next attempt


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """A link's state for operators: since when, how many attempts failed in a row, the last
    error (OS text, never payload), when the next attempt is due, the connected peer."""

    state: ConnectionState
    since: float
    failures: int = 0
    last_error: str = ""
    next_attempt_at: float | None = None
    peer: str = ""


StatusObserver = Callable[[ConnectionStatus], None]


class _ClientFactory(Factory[GuardedProtocol]):
    def __init__(
        self, wrapped: IProtocolFactory, limits: ConnectionLimits, clock: IReactorTime, name: str
    ) -> None:
        self.wrapped = wrapped
        self.limits = limits
        self.clock = clock
        self.name = name

    def buildProtocol(self, addr: IAddress | None) -> GuardedProtocol | None:
        inner = self.wrapped.buildProtocol(addr) if addr is not None else None
        if inner is None:
            return None
        return GuardedProtocol(inner, limits=self.limits, clock=self.clock, name=self.name)


class ReconnectingClient(Service):
    """Keeps one connection through ``endpoint`` open while running (module docstring)."""

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        factory: IProtocolFactory,
        *,
        clock: IReactorTime,
        policy: ReconnectPolicy | None = None,
        limits: ConnectionLimits | None = None,
        rand: Callable[[], float] = random.random,
        name: str = "client",
    ) -> None:
        self.setName(name)  # type: ignore[no-untyped-call]
        self._endpoint = endpoint
        self._clock = clock
        self._policy = policy or ReconnectPolicy()
        self._rand = rand
        self._factory = _ClientFactory(factory, limits or ConnectionLimits(), clock, name)
        self._status = ConnectionStatus(ConnectionState.STOPPED, since=clock.seconds())
        self._observers: list[StatusObserver] = []
        self._attempt: Deferred[IProtocol] | None = None
        self._retry_call: IDelayedCall | None = None
        self._connection: GuardedProtocol | None = None
        self._failures = 0
        self._connected_waiters: list[Deferred[IProtocol]] = []

    @property
    def status(self) -> ConnectionStatus:
        return self._status

    @property
    def protocol(self) -> IProtocol | None:
        """The connected protocol (the wrapped factory's), or None."""
        return self._connection.inner if self._connection is not None else None

    def subscribe(self, observer: StatusObserver) -> None:
        """Call ``observer`` with every new status."""
        self._observers.append(observer)

    def when_connected(self) -> Deferred[IProtocol]:
        """Fires with the protocol of the current connection, or of the next one."""
        if self._connection is not None:
            return succeed(self._connection.inner)
        waiter: Deferred[IProtocol] = Deferred()
        self._connected_waiters.append(waiter)
        return waiter

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._failures = 0
        self._connect()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._attempt is not None:
            self._attempt.cancel()  # its errback sees running False and does nothing
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.errback(CancelledError(f"{self.name} stopped"))
        connection = self._connection
        if connection is None:
            self._set_status(ConnectionState.STOPPED)
            return succeed(None)
        lost = connection.when_lost()
        connection.loseConnection()
        return lost.addCallback(self._stopped)

    def _stopped(self, _: None) -> None:
        if self._status.state is not ConnectionState.STOPPED:
            self._set_status(ConnectionState.STOPPED)

    # -- the attempt cycle ------------------------------------------------------------------

    def _connect(self) -> None:
        self._retry_call = None
        self._set_status(ConnectionState.CONNECTING)
        attempt = self._endpoint.connect(self._factory)
        self._attempt = attempt
        attempt.addCallbacks(self._connected, self._attempt_failed)
        attempt.addErrback(self._client_failed)

    def _connected(self, protocol: IProtocol) -> None:
        self._attempt = None
        if not isinstance(protocol, GuardedProtocol):
            raise TypeError(f"{self.name}: unexpected protocol {protocol!r}")
        if not self.running:
            protocol.loseConnection()
            return
        self._connection = protocol
        self._failures = 0
        protocol.when_lost().addCallback(self._connection_lost, protocol).addErrback(
            self._client_failed
        )
        # Observers and waiters last: they may stop the service from their callback.
        self._set_status(ConnectionState.CONNECTED, peer=protocol.peer)
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.callback(protocol.inner)

    def _attempt_failed(self, failure: Failure) -> None:
        self._attempt = None
        if not self.running:
            return
        self._failures += 1
        self._retry_later(failure.getErrorMessage())

    def _connection_lost(self, _: None, protocol: GuardedProtocol) -> None:
        if self._connection is protocol:
            self._connection = None
        if not self.running:
            self._set_status(ConnectionState.STOPPED)
            return
        self._failures = 1
        reason = protocol.lost_reason
        why = reason.getErrorMessage() if reason is not None else "?"
        self._retry_later(f"connection lost: {why}")

    def _retry_later(self, error: str) -> None:
        delay = self._policy.delay(self._failures, self._rand())
        self._retry_call = self._clock.callLater(delay, self._connect)
        self._set_status(
            ConnectionState.WAITING,
            error=error,
            next_attempt_at=self._clock.seconds() + delay,
        )

    def _client_failed(self, failure: Failure) -> None:
        _log.failure("{name}: reconnecting client failure", failure, name=self.name)

    def _set_status(
        self,
        state: ConnectionState,
        *,
        error: str = "",
        next_attempt_at: float | None = None,
        peer: str = "",
    ) -> None:
        status = ConnectionStatus(
            state,
            since=self._clock.seconds(),
            failures=self._failures,
            # The last error stays visible until a connection succeeds.
            last_error=""
            if state is ConnectionState.CONNECTED
            else error or self._status.last_error,
            next_attempt_at=next_attempt_at,
            peer=peer,
        )
        self._status = status
        self._log_status(status)
        for observer in list(self._observers):
            observer(status)

    def _log_status(self, status: ConnectionStatus) -> None:
        if status.state is ConnectionState.WAITING:
            _log.warn(
                "{name}: {error}; retrying in {delay:.3g} s ({failures} in a row)",
                name=self.name,
                error=status.last_error,
                failures=status.failures,
                delay=(status.next_attempt_at or status.since) - status.since,
            )
        elif status.state is ConnectionState.CONNECTED:
            _log.info("{name}: connected to {peer}", name=self.name, peer=status.peer)
        else:
            _log.debug("{name}: {state}", name=self.name, state=status.state.value)


def describe_address(addr: IAddress | None) -> str:
    """``host:port`` of an IP address, the device of a serial line, else the repr."""
    host, port = getattr(addr, "host", None), getattr(addr, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    device = getattr(addr, "device", None)
    return str(device) if device is not None else repr(addr)
