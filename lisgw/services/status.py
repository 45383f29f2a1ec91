"""StatusReporter: the running gateway publishes its live state to the store for the CLI.

Layer: service (Twisted). Writes through lisgw.store.status (``nodes``, ``connection_status``)
on the store's thread pool; time comes from the injected clock. Read by ``lisgw status`` and
``lisgw top`` in another process, against the same store (issue 7).

What it writes:

* the gateway's ``nodes`` row (worker name, pid, version): at start, every
  ``HEARTBEAT_INTERVAL`` s (the heartbeat), and with ``stopped_at`` at stop. A node whose
  heartbeat is older than three intervals is "not running" (lisgw.store.status);
* one ``connection_status`` row per analyzer connection when its line changes state
  (listening, connecting, connected, waiting, down, stopped), with the peer, reconnect
  attempts, errors and the last error, and ``last_message_at`` when the connection's ingest
  has stored a transfer or message — at most every ``MESSAGE_REFRESH`` s (5 s) per line
  (issue 6: a busy lab's every line would otherwise be rewritten every tick), and once
  more at stop. So ``last_message_at`` may lag the newest stored message by up to
  ``MESSAGE_REFRESH`` + ``coalesce`` s; ``lisgw status``/``top`` show the later of it and
  the newest message row (lisgw.store.views), and a state change is still written at the
  next tick.

Writes are coalesced: changes mark a line dirty and a tick every ``coalesce`` s (1 s) writes
the dirty lines in one transaction, so a line is written at most once per tick and the last
state wins. One write at a time: a tick while a write is in flight leaves the lines dirty for
the next. A failed write (store down) is logged and retried at the next tick; it never
disturbs the analyzer lines. At stop every line is written ``stopped`` and the node
``stopped_at``.

Where the states come from (small callbacks, no protocol logic here):

* tcp-client and serial lines: ``ReconnectingClient.subscribe`` (``track_client``):
  connecting, connected, then after a failure ``waiting`` (the line was connected and was
  lost: backing off) or ``down`` (the attempt itself failed: the peer or device is missing);
  each new attempt after a failure counts as a reconnect, each failure as an error;
* tcp-server lines: ``ObservedFactory`` wraps the connection's protocol factory behind the
  listener (``line_factory``): connected while at least one peer is connected, listening
  otherwise; a line lost uncleanly counts as an error.

No patient data: states, peers, counts and OS error texts only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lisgw import __version__
from lisgw.store.records import ConnectionState
from lisgw.store.runner import Store
from lisgw.store.status import HEARTBEAT_INTERVAL, LineStatus, NodeStatus, publish_status
from lisgw.transports.tcp import ConnectionState as ClientState
from lisgw.transports.tcp import (
    ConnectionStatus,
    ReconnectingClient,
    TransportWrapper,
    describe_address,
)

__all__ = ["COALESCE_INTERVAL", "MESSAGE_REFRESH", "ObservedFactory", "StatusReporter"]

_log = Logger()
COALESCE_INTERVAL: Final = 1.0
MESSAGE_REFRESH: Final = 5.0  # last_message_at written at most this often per line
_CLIENT_STATES: Final = {
    ClientState.STOPPED: ConnectionState.STOPPED,
    ClientState.CONNECTING: ConnectionState.CONNECTING,
    ClientState.CONNECTED: ConnectionState.CONNECTED,
}


@dataclass(slots=True)
class _Line:
    """What the reporter knows of one connection (mutable, reactor thread only)."""

    state: ConnectionState
    since: float
    client: bool
    peer: str = ""
    last_message_at: float | None = None
    reconnects: int = 0
    errors: int = 0
    last_error: str = ""
    open_lines: int = 0
    messages: Callable[[], int] | None = None
    messages_seen: int = 0
    dirty: bool = True


class StatusReporter(Service):
    """Publishes the node heartbeat and the analyzer lines' states (module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: IReactorTime,
        node: str,
        version: str = __version__,
        pid: int | None = None,
        heartbeat: float = HEARTBEAT_INTERVAL,
        coalesce: float = COALESCE_INTERVAL,
        message_refresh: float = MESSAGE_REFRESH,
    ) -> None:
        self.setName("status reporter")  # type: ignore[no-untyped-call]
        self.store = store
        self.clock = clock
        self.node = node
        self.version = version
        self.pid = os.getpid() if pid is None else pid
        self.heartbeat = heartbeat
        self.coalesce = coalesce
        self.message_refresh = message_refresh
        self.writes = 0  # successful writes, for tests and the curious
        self._lines: dict[str, _Line] = {}
        self._started_at = clock.seconds()
        self._last_heartbeat: float | None = None
        self._loop: LoopingCall | None = None
        self._writing: Deferred[None] | None = None

    # -- what to watch ----------------------------------------------------------------------

    def track_server(self, name: str) -> None:
        """A tcp-server connection: listening until a peer connects (see ``line_factory``)."""
        self._lines[name] = _Line(ConnectionState.LISTENING, self.clock.seconds(), client=False)

    def track_client(self, name: str, client: ReconnectingClient) -> None:
        """A tcp-client or serial connection: its ReconnectingClient's states."""
        self._lines[name] = _Line(
            _CLIENT_STATES.get(client.status.state, ConnectionState.STOPPED),
            self.clock.seconds(),
            client=True,
        )
        client.subscribe(lambda status: self.client_status(name, status))

    def watch_messages(self, name: str, count: Callable[[], int]) -> None:
        """``count()`` is how many transfers/messages the connection's ingest has stored: when
        it grows, the line's ``last_message_at`` becomes now (checked at each tick)."""
        line = self._lines.get(name)
        if line is not None:
            line.messages = count
            line.messages_seen = count()

    def line_factory(self, name: str, factory: IProtocolFactory) -> ObservedFactory:
        """``factory`` wrapped so that each line it serves reports opening and closing."""
        return ObservedFactory(factory, self, name)

    # -- reports ----------------------------------------------------------------------------

    def client_status(self, name: str, status: ConnectionStatus) -> None:
        """A ReconnectingClient's new status (its subscriber)."""
        line = self._lines.get(name)
        if line is None:
            return
        if status.state is ClientState.WAITING:
            line.errors += 1
            line.last_error = status.last_error
            # Lost after being connected: backing off. The attempt failed: peer/device missing.
            lost = line.state is ConnectionState.CONNECTED
            self._move(line, ConnectionState.WAITING if lost else ConnectionState.DOWN)
            return
        state = _CLIENT_STATES[status.state]
        if state is ConnectionState.CONNECTING and line.state in (
            ConnectionState.WAITING,
            ConnectionState.DOWN,
        ):
            line.reconnects += 1
        if state is ConnectionState.CONNECTED:
            line.peer = status.peer
        self._move(line, state)

    def line_opened(self, name: str, peer: str) -> None:
        """A peer connected to a tcp-server connection."""
        line = self._lines.get(name)
        if line is None or line.client:
            return
        line.open_lines += 1
        line.peer = peer
        self._move(line, ConnectionState.CONNECTED)
        line.dirty = True  # a new peer while connected is news too

    def line_closed(self, name: str, error: str = "") -> None:
        """A tcp-server line closed; ``error`` says why when it was not a clean close."""
        line = self._lines.get(name)
        if line is None or line.client:
            return
        line.open_lines = max(0, line.open_lines - 1)
        if error:
            line.errors += 1
            line.last_error = error
            line.dirty = True
        if line.open_lines == 0 and line.state is not ConnectionState.STOPPED:
            self._move(line, ConnectionState.LISTENING)

    def lines(self) -> dict[str, LineStatus]:
        """The lines as they would be written now (tests, diagnostics)."""
        now = self.clock.seconds()
        return {name: self._status(name, line, now) for name, line in self._lines.items()}

    # -- the service ------------------------------------------------------------------------

    def startService(self) -> Deferred[None]:
        """Write the node row and every line at once, then tick every ``coalesce`` s."""
        super().startService()  # type: ignore[no-untyped-call]
        self._started_at = self.clock.seconds()
        loop = LoopingCall(self.tick)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.coalesce, now=False).addErrback(self._loop_failed)
        return self._write(heartbeat=True)

    def stopService(self) -> Deferred[None]:
        """Every line ``stopped``, the node ``stopped_at``; fires once written (or failed)."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._note_messages(self.clock.seconds(), refresh=0.0)
        for line in self._lines.values():
            self._move(line, ConnectionState.STOPPED)
        return Deferred.fromCoroutine(self._final_write())

    async def _final_write(self) -> None:
        while self._writing is not None:
            await self._writing
        await self._write(heartbeat=True, stopped=True)

    def tick(self) -> Deferred[None] | None:
        """Note stored messages, write the dirty lines, and the heartbeat when due; the write
        (its failure already handled) or None when there was nothing to write."""
        if self._writing is not None:
            return None  # the lines stay dirty for the next tick
        now = self.clock.seconds()
        self._note_messages(now, refresh=self.message_refresh)
        due = self._last_heartbeat is None or now - self._last_heartbeat >= self.heartbeat
        if due or any(line.dirty for line in self._lines.values()):
            return self._write(heartbeat=due)
        return None

    # -- writing ----------------------------------------------------------------------------

    def _note_messages(self, now: float, *, refresh: float) -> None:
        """Lines whose ingest stored something: ``last_message_at`` now, unless it was set
        less than ``refresh`` s ago (then the count is looked at again at a later tick)."""
        for line in self._lines.values():
            if line.messages is None:
                continue
            last = line.last_message_at
            if last is not None and now - last < refresh:
                continue
            seen = line.messages()
            if seen != line.messages_seen:
                line.messages_seen = seen
                line.last_message_at = now
                line.dirty = True

    def _move(self, line: _Line, state: ConnectionState) -> None:
        if line.state is not state:
            line.state = state
            line.since = self.clock.seconds()
            line.dirty = True

    def _status(self, name: str, line: _Line, now: float) -> LineStatus:
        return LineStatus(
            name=name,
            node=self.node,
            state=line.state,
            peer=line.peer,
            since=line.since,
            last_message_at=line.last_message_at,
            reconnects=line.reconnects,
            errors=line.errors,
            last_error=line.last_error,
            updated_at=now,
        )

    def _write(self, *, heartbeat: bool, stopped: bool = False) -> Deferred[None]:
        now = self.clock.seconds()
        dirty = [name for name, line in self._lines.items() if line.dirty]
        for name in dirty:
            self._lines[name].dirty = False
        lines = [self._status(name, self._lines[name], now) for name in dirty]
        node = None
        if heartbeat:
            node = NodeStatus(
                self.node,
                self.pid,
                self.version,
                self._started_at,
                heartbeat_at=now,
                stopped_at=now if stopped else None,
            )
        writing = self.store.run(publish_status, node, lines, now)
        self._writing = writing

        def written(_: None) -> None:
            self.writes += 1
            if heartbeat:
                self._last_heartbeat = now

        def failed(failure: Failure) -> None:
            for name in dirty:
                self._lines[name].dirty = True
            _log.warn(
                "status: live state not written ({error}); retrying",
                error=failure.getErrorMessage(),
            )

        def done(_: object) -> None:
            self._writing = None

        writing.addCallbacks(written, failed).addBoth(done)
        return writing

    def _loop_failed(self, failure: Failure) -> None:
        _log.failure("status: the reporting loop failed", failure)


class _ObservedLine(TransportWrapper):
    """One tcp-server line: tells the reporter when it opens and closes."""

    def __init__(self, inner: IProtocol, reporter: StatusReporter, name: str) -> None:
        super().__init__(inner)
        self.reporter = reporter
        self.name = name

    def makeConnection(self, transport: ITransport) -> None:
        self.reporter.line_opened(self.name, describe_address(transport.getPeer()))
        super().makeConnection(transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            clean = isinstance(reason.value, ConnectionDone)
            self.reporter.line_closed(self.name, "" if clean else reason.getErrorMessage())


@implementer(IProtocolFactory)
class ObservedFactory:
    """A protocol factory whose lines report to a StatusReporter (tcp-server connections)."""

    def __init__(self, wrapped: IProtocolFactory, reporter: StatusReporter, name: str) -> None:
        self.wrapped = wrapped
        self.reporter = reporter
        self.name = name
        self.noisy = False

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:
        inner = self.wrapped.buildProtocol(addr) if addr is not None else None
        if inner is None:
            return None
        return _ObservedLine(inner, self.reporter, self.name)
