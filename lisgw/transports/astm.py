"""The E1381 link over Twisted: a thin adapter wiring ``lisgw.astm.link.AstmLink`` to a connection.

Layer: transport (Twisted). No protocol logic lives here: bytes read go to
``AstmLink.receive_data(now=clock.seconds())``, events are drained from ``next_event()``,
``data_to_send()`` is written after every call, and one ``callLater`` is kept at ``deadline()``
to call ``handle_timeout(now)`` (E1381 §6.5.2 timers). ``connectionLost`` calls ``close(now)``,
which ends an open receive session as TransferIncomplete and aborts queued messages.

Durability (DESIGN §1, E1381 §6.3.4): every ``FrameReceived`` goes to the injected
``commit_frame(event) -> Deferred[None]``; only when that Deferred fires is the frame
acknowledged (ACK written), and when it fails the frame is rejected (NAK: the sender
retransmits it, §6.5.1). Frames are handled strictly in order: while a commit is pending the
link is PAUSED and later bytes wait in its buffer; reading from the transport is paused too if
more than a frame's worth of bytes piles up (a sender that does not wait for our ACK).

Every other event (records, TransferStarted/Ended/Incomplete, warnings, noise,
MessageDelivered/Aborted, ContentionDetected) goes to the injected ``on_event(event)`` sink.
``send_message(records)`` queues a message for the sender role (order download, E1381 §6.2:
the link handles establishment and contention) and fires with its ``MessageOutcome``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.astm.events import (
    NEED_DATA,
    PAUSED,
    Event,
    FrameReceived,
    MessageAborted,
    MessageDelivered,
)
from lisgw.astm.link import AstmLink, LinkOptions
from lisgw.errors import LocalProtocolError
from lisgw.transports.tcp import describe_address

__all__ = [
    "DEFAULT_ADAPTER_OPTIONS",
    "AstmLinkFactory",
    "AstmLinkProtocol",
    "CommitFrame",
    "EventSink",
    "MessageOutcome",
    "describe_peer",
]

_log = Logger()

CommitFrame = Callable[[FrameReceived], "Deferred[None]"]
EventSink = Callable[[Event], None]

# The gateway takes records by the frame (one RecordsReceived per acknowledged frame).
DEFAULT_ADAPTER_OPTIONS: Final = LinkOptions(batch_records=True)


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """What became of a message given to ``send_message``.

    ``message_id`` is the link's id (0 when the message was never queued, because the
    connection was already gone); ``reason`` says why an undelivered message was given up.
    E1381 §6.5: an undelivered message is kept by the caller to be sent again later.
    """

    message_id: int
    delivered: bool
    reason: str = ""


def describe_peer(transport: object) -> str:
    """``host:port`` of an IP peer, the device of a serial line, or the peer's repr."""
    get_peer = getattr(transport, "getPeer", None)
    return describe_address(get_peer()) if get_peer is not None else "?"


class AstmLinkProtocol(Protocol):
    """One E1381 line over one connection (module docstring). Twisted callbacks keep their
    camelCase; everything else is wiring between the transport and the sans-IO link."""

    def __init__(
        self,
        *,
        commit_frame: CommitFrame,
        on_event: EventSink,
        clock: IReactorTime,
        options: LinkOptions = DEFAULT_ADAPTER_OPTIONS,
        name: str = "astm",
    ) -> None:
        self.link = AstmLink(options)
        self.name = name
        self.peer = "?"
        self._commit_frame = commit_frame
        self._on_event = on_event
        self._clock = clock
        self._timer: IDelayedCall | None = None
        self._timer_deadline: float | None = None
        self._pumping = False
        self._committing = False
        self._reading_paused = False
        self._lost = False
        self._outcomes: dict[int, Deferred[MessageOutcome]] = {}
        self._close_waiters: list[Deferred[None]] = []

    # -- Twisted callbacks ------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = describe_peer(self.transport)
        _log.info("ASTM {name}: connected to {peer}", name=self.name, peer=self.peer)
        self._pump()  # a message queued before the connection sends its ENQ now

    def dataReceived(self, data: bytes) -> None:
        if self._lost:
            return
        self.link.receive_data(data, self._clock.seconds())
        self._pump()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._lost:
            return
        self._lost = True
        _log.info(
            "ASTM {name}: connection to {peer} closed ({why})",
            name=self.name,
            peer=self.peer,
            why=reason.getErrorMessage(),
        )
        self.link.close(self._clock.seconds())
        self._pump()

    # -- actions ----------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        return self._lost

    def send_message(self, records: Sequence[bytes]) -> Deferred[MessageOutcome]:
        """Queue one message (records without their CR) for the sender role.

        Fires with its MessageOutcome once delivered or given up; fails with
        LocalProtocolError for records E1381 cannot carry (restricted characters, none).
        """
        if self._lost:
            return succeed(MessageOutcome(0, False, "connection closed"))
        try:
            message_id = self.link.send_message(records, self._clock.seconds())
        except LocalProtocolError:
            return fail()
        outcome: Deferred[MessageOutcome] = Deferred()
        self._outcomes[message_id] = outcome
        self._pump()
        return outcome

    def when_closed(self) -> Deferred[None]:
        """Fires once the connection is lost, any pending commit settled and the link's last
        events (TransferIncomplete, MessageAborted) delivered."""
        if self._settled():
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        return waiter

    def close(self) -> Deferred[None]:
        """Close the connection gracefully; fires as ``when_closed()``."""
        if not self._lost and self.transport is not None:
            self.transport.loseConnection()
        return self.when_closed()

    # -- the pump: events out of the link, bytes and timer back in --------------------------

    def _pump(self) -> None:
        if self._pumping:
            return  # a commit that fired synchronously: the running loop carries on
        self._pumping = True
        try:
            link = self.link
            while not self._committing:
                event = link.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                self._dispatch(event)
        finally:
            self._pumping = False
        self._flush()
        self._schedule()
        self._regulate_reading()
        self._settle()

    def _dispatch(self, event: Event) -> None:
        if type(event) is FrameReceived:
            self._committing = True
            committed: Deferred[None] = maybeDeferred(self._commit_frame, event)
            committed.addCallbacks(self._frame_committed, self._frame_not_committed)
            committed.addErrback(self._adapter_failed)
            return
        if isinstance(event, MessageDelivered | MessageAborted):
            self._resolve(event)
        try:
            self._on_event(event)
        except Exception:
            # The sink is the service's; its bug must not stall the line (frames are
            # committed before their records come out, so nothing is lost).
            _log.failure("ASTM {name}: on_event failed", name=self.name)

    def _frame_committed(self, _: object) -> None:
        self._committing = False
        self.link.acknowledge(self._clock.seconds())
        self._pump()

    def _frame_not_committed(self, failure: Failure) -> None:
        self._committing = False
        # The error's text may quote the frame (patient data): only its type at WARN. It is
        # the store's to log in full; logging the Failure here would count as an error.
        _log.warn(
            "ASTM {name}: frame from {peer} not committed ({error}): NAK",
            name=self.name,
            peer=self.peer,
            error=failure.type.__name__ if failure.type is not None else "?",
        )
        _log.debug("ASTM {name}: commit error: {detail!r}", name=self.name, detail=failure.value)
        self.link.reject(self._clock.seconds())
        self._pump()

    def _adapter_failed(self, failure: Failure) -> None:
        _log.failure("ASTM {name}: adapter failure", failure, name=self.name)
        self._abort()

    def _resolve(self, event: MessageDelivered | MessageAborted) -> None:
        waiter = self._outcomes.pop(event.message_id, None)
        if waiter is None or waiter.called:  # cancelled by its caller
            return
        if isinstance(event, MessageDelivered):
            waiter.callback(MessageOutcome(event.message_id, True))
        else:
            waiter.callback(MessageOutcome(event.message_id, False, event.reason))

    def _flush(self) -> None:
        """Write what the link has to send. Before the connection is made it stays in the
        link (an ENQ queued early goes out on connectionMade); once lost, it is dropped."""
        if self._lost:
            self.link.data_to_send()
        elif self.transport is not None:
            data = self.link.data_to_send()
            if data:
                self.transport.write(data)

    def _schedule(self) -> None:
        """Keep exactly one timer, at the link's deadline (E1381 §6.5.2)."""
        deadline = None if self._lost else self.link.deadline()
        timer = self._timer
        if deadline is None:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = self._timer_deadline = None
            return
        if timer is not None and timer.active():
            if self._timer_deadline != deadline:
                timer.reset(max(0.0, deadline - self._clock.seconds()))
                self._timer_deadline = deadline
            return
        self._timer = self._clock.callLater(
            max(0.0, deadline - self._clock.seconds()), self._timed_out
        )
        self._timer_deadline = deadline

    def _timed_out(self) -> None:
        self._timer = self._timer_deadline = None
        if self._lost:
            return
        self.link.handle_timeout(self._clock.seconds())
        self._pump()

    def _regulate_reading(self) -> None:
        """Stop reading while a commit is pending and more than a frame's worth of bytes
        waits; E1381 §6.3.4 senders wait for our reply, so only a broken peer gets here."""
        if self._committing:
            too_much = self.link.buffered_size > self.link.options.max_frame_size
            if too_much and not self._reading_paused and not self._lost:
                self._reading_paused = self._producer_call("pauseProducing")
        elif self._reading_paused:
            self._reading_paused = False
            self._producer_call("resumeProducing")

    def _producer_call(self, method: str) -> bool:
        """Pause or resume the transport if it is a push producer; False if it is not."""
        if self._lost or not IPushProducer.providedBy(self.transport):
            return False
        getattr(IPushProducer(self.transport), method)()
        return True

    def _abort(self) -> None:
        if self._lost or self.transport is None:
            return
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()

    def _settled(self) -> bool:
        return self._lost and not self._committing and not self._pumping

    def _settle(self) -> None:
        if not self._settled():
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)


class AstmLinkFactory(Factory[AstmLinkProtocol]):
    """Builds one AstmLinkProtocol per connection with ``build(address)``; None refuses the
    connection (e.g. an address no configured analyzer is attributed to)."""

    def __init__(self, build: Callable[[IAddress | None], AstmLinkProtocol | None]) -> None:
        self._build = build

    def buildProtocol(self, addr: IAddress | None) -> AstmLinkProtocol | None:
        protocol = self._build(addr)
        if protocol is not None:
            protocol.factory = self
        return protocol
