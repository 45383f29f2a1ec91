"""Analyzer ingest: one analyzer connection's frames and messages, from the line to the store.

Layer: service (Twisted). Plugs into lisgw.transports.astm.AstmLinkProtocol (ASTM lines) and
an MLLP server or client (HL7 analyzers); commits through lisgw.services.journal
(FrameJournal, the group commit) and lisgw.services.pipeline (decoding and the unit of work
that stores a transfer); the store runs on its thread pool, time comes from the clock.

ASTM (E1381 / E1394):

* ``commit_frame(FrameReceived)`` hands the frame, bytes exact, to the journal: the link
  ACKs when it is durable and NAKs when it is not (issue 5, durability before
  acknowledgement). A transfer (ENQ … EOT) is one store session, opened with its first
  frame in the journal's transaction.
* ``on_event`` collects the transfer's records (RecordsReceived, one per acknowledged frame)
  and, at TransferEnded or TransferIncomplete, hands them to the pipeline: messages, driver
  (pinned, or detected once for the connection), normalization, then one transaction that
  keeps the messages, routes the results against the open orders, queues their ORU^R01 in
  the outbox, records host queries, and closes the session. Transfers are processed one at
  a time, in order, so the outbox keeps the order results arrived in.
* If that transaction fails (store down) it is retried with backoff (1 s doubling to 5 min)
  until it succeeds or ``close()`` is called; the frames are durable, the session stays
  open, and recovery at the next start (lisgw.services.recovery) processes it anyway.

HL7 over MLLP: ``hl7_message(payload, peer)`` keeps the message raw in a session of its own
and stores its results in one transaction; it fires after the commit (send the ACK then)
and fails when nothing was kept (send no positive ACK: the analyzer sends it again).

Orders out (issue 6): once a transfer carrying host queries is stored, ``on_queries`` (set by
lisgw.services.responder) gets its messages and the line it came on, to answer there;
``lines`` / ``connected_line`` are the connection's live ASTM lines, for order downloads
(lisgw.services.download); ``hl7_stored`` fires with what an HL7 message became (a QBP is
answered from it).

One ``AnalyzerIngest`` per configured analyzer connection. Its ``commit_frame``/``on_event``
serve one line at a time; a tcp-server connection that may have several lines at once
(``limits.max_connections``) gets one protocol per line from ``build_protocol()``, each with
its own transfer state, all sharing the connection's driver and processing order.
Patient data stays out of INFO logs: counts, sessions and peers only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from twisted.internet.defer import CancelledError, Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.astm.events import (
    Event,
    FrameReceived,
    RecordReceived,
    RecordsReceived,
    TransferEnded,
    TransferIncomplete,
    TransferStarted,
)
from lisgw.astm.link import LinkOptions
from lisgw.config_schema import ConnectionConfig
from lisgw.drivers import Catalogue
from lisgw.drivers.mapping import TestCodeMap
from lisgw.errors import StoreError
from lisgw.his.profile import HisProfile
from lisgw.routing import RoutingConfig
from lisgw.services.batcher import UnitBatcher
from lisgw.services.journal import FrameJournal
from lisgw.services.pipeline import (
    Decoded,
    IngestContext,
    TransferReader,
    TransferStored,
    store_hl7_message,
    store_transfer,
)
from lisgw.store.runner import Store
from lisgw.transports.astm import AstmLinkProtocol

__all__ = ["AnalyzerIngest", "LineIngest", "QueryHook"]

_log = Logger()
_session_numbers = itertools.count(1)
RETRY_FIRST: Final = 1.0
RETRY_CAP: Final = 300.0
# Called once a transfer carrying host queries is stored: its messages, what was stored
# (message_ids in the same order), and the line it came on (lisgw.services.responder).
QueryHook = Callable[[list[Decoded], TransferStored, AstmLinkProtocol | None], None]


@dataclass(slots=True)
class _Transfer:
    """One receive session of a line (ENQ … EOT), as far as it got."""

    key: str
    offset: int
    records: list[bytes] = field(default_factory=list)


class LineIngest:
    """One ASTM line's transfer state; ``commit_frame`` and ``on_event`` for its protocol."""

    def __init__(
        self,
        ingest: AnalyzerIngest,
        peer: Callable[[], str],
        protocol: Callable[[], AstmLinkProtocol | None] = lambda: None,
    ) -> None:
        self._ingest = ingest
        self._peer = peer
        self._protocol = protocol
        self._transfer: _Transfer | None = None

    def commit_frame(self, event: FrameReceived) -> Deferred[None]:
        """Make the frame durable (the journal's group commit); the link ACKs when it fires."""
        transfer = self._transfer or self._start(event.offset)
        ingest = self._ingest
        return ingest.journal.commit(
            transfer.key,
            ingest.name,
            self._peer(),
            event.raw,
            "in",
            ingest.clock.seconds(),
        )

    def on_event(self, event: Event) -> None:
        """Records, and the end of transfers, from the link (other events are logged)."""
        if isinstance(event, RecordsReceived):
            (self._transfer or self._start(event.offsets[0])).records.extend(event.records)
        elif isinstance(event, RecordReceived):
            (self._transfer or self._start(event.offset)).records.append(event.text)
        elif isinstance(event, TransferStarted):
            if self._transfer is not None:
                self._finish(False, "a new transfer began before this one ended")
            self._start(event.offset)
        elif isinstance(event, TransferEnded):
            self._finish(True, "")
        elif isinstance(event, TransferIncomplete):
            self._finish(False, event.reason)
        else:
            _log.debug(
                "ASTM {name}: {event} from {peer}",
                name=self._ingest.name,
                event=type(event).__name__,
                peer=self._peer(),
            )

    def _start(self, offset: int) -> _Transfer:
        key = f"{self._ingest.name}#{next(_session_numbers)}"
        self._transfer = _Transfer(key, offset)
        return self._transfer

    def _finish(self, ended: bool, reason: str) -> None:
        transfer, self._transfer = self._transfer, None
        if transfer is not None:
            self._ingest.transfer_done(
                transfer.key,
                transfer.records,
                transfer.offset,
                ended,
                reason,
                line=self._protocol(),
            )


class AnalyzerIngest:
    """One analyzer connection's ingest (module docstring)."""

    def __init__(
        self,
        store: Store,
        journal: FrameJournal,
        catalogue: Catalogue,
        his_profile: HisProfile,
        routing_config: RoutingConfig,
        test_codes: TestCodeMap | None,
        clock: IReactorTime,
        *,
        connection: ConnectionConfig,
        peer: str = "?",
        units: UnitBatcher | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        # Transfers of all connections share commits when the gateway passes one batcher
        # (lisgw.services.batcher, issue 6); alone, this connection's share its own.
        self.units = units if units is not None else UnitBatcher(store, clock)
        self.clock = clock
        self.connection = connection
        self.name = connection.name
        self.peer = peer  # the peer of the line served by commit_frame/on_event
        self.reader = TransferReader(
            catalogue,
            protocol=str(connection.protocol),
            driver=connection.driver,
            encoding=connection.encoding,
            tz=connection.time_zone,
        )
        self.context = IngestContext(connection.name, his_profile, routing_config, test_codes)
        self.totals = TransferStored()
        self.transfers = 0  # transfers and HL7 messages stored
        self.retries = 0  # transactions retried after a store failure
        self._line = LineIngest(self, lambda: self.peer)
        self._lock = DeferredLock()
        self._busy = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._closing = False
        self._sleeping: Deferred[None] | None = None
        # Orders out (lisgw.services.responder, lisgw.services.download): the lines of this
        # connection that are up, and who answers the host queries a transfer carried.
        self.lines: list[AstmLinkProtocol] = []
        self.on_queries: QueryHook | None = None
        # Called when a transfer queued ORU^R01 for the HIS: the gateway wakes the outbox
        # dispatcher, so delivery does not wait for its next poll (issue 6 latency).
        self.on_outbox: Callable[[], None] | None = None

    # -- wiring -----------------------------------------------------------------------------

    @property
    def link_options(self) -> LinkOptions:
        """E1381 options for this connection's lines: the driver's link settings (the
        generic driver's when none is pinned), the connection's timer overrides, and records
        in one event per frame."""
        base = self.reader.link_options()
        timers = self.connection.timers.applied_to(base.timers)
        return replace(base, timers=timers, batch_records=True)

    def build_protocol(self, *, name: str | None = None) -> AstmLinkProtocol:
        """An AstmLinkProtocol for one line of this connection, with its own transfer state
        and the peer it reports."""
        holder: list[AstmLinkProtocol] = []
        line = LineIngest(
            self, lambda: holder[0].peer if holder else "?", lambda: holder[0] if holder else None
        )
        protocol = AstmLinkProtocol(
            commit_frame=line.commit_frame,
            on_event=line.on_event,
            clock=self.clock,
            options=self.link_options,
            name=name or self.name,
        )
        holder.append(protocol)
        self.lines.append(protocol)
        protocol.when_closed().addCallback(lambda _: self._line_closed(protocol))
        return protocol

    def _line_closed(self, protocol: AstmLinkProtocol) -> None:
        if protocol in self.lines:
            self.lines.remove(protocol)

    @property
    def connected_line(self) -> AstmLinkProtocol | None:
        """The most recent line that is connected (for order downloads), else None."""
        for protocol in reversed(self.lines):
            if protocol.transport is not None and not protocol.lost:
                return protocol
        return None

    def commit_frame(self, event: FrameReceived) -> Deferred[None]:
        """For AstmLinkProtocol(commit_frame=…): one line at a time (see build_protocol)."""
        return self._line.commit_frame(event)

    def on_event(self, event: Event) -> None:
        """For AstmLinkProtocol(on_event=…): one line at a time (see build_protocol)."""
        self._line.on_event(event)

    # -- HL7 --------------------------------------------------------------------------------

    def hl7_message(self, payload: bytes, peer: str) -> Deferred[None]:
        """Keep one HL7 message from the analyzer and store its results; fires after the
        commit (the ACK goes out then), fails when nothing was kept (no positive ACK)."""
        return self.hl7_stored(payload, peer).addCallback(lambda _: None)

    def hl7_stored(self, payload: bytes, peer: str) -> Deferred[tuple[Decoded, TransferStored]]:
        """As ``hl7_message``, firing with the message decoded and what was stored (the
        host-query responder answers a QBP from them)."""
        return Deferred.fromCoroutine(self._hl7(payload, peer))

    async def _hl7(self, payload: bytes, peer: str) -> tuple[Decoded, TransferStored]:
        self._busy += 1
        await self._lock.acquire()
        try:
            decoded = self.reader.hl7(payload)
            stored = await self.store.run(
                store_hl7_message, decoded, self.context, peer=peer, now=self.clock.seconds()
            )
            self._stored("HL7 message", peer, stored)
            return decoded, stored
        finally:
            self._lock.release()
            self._done()

    # -- ASTM transfers ---------------------------------------------------------------------

    def transfer_done(
        self,
        key: str,
        records: list[bytes],
        offset: int,
        ended: bool,
        reason: str,
        *,
        line: AstmLinkProtocol | None = None,
    ) -> None:
        """A line's transfer ended (with EOT or not): process it, after those before it.
        ``line`` is the protocol it came on: a host query is answered there."""
        self._busy += 1
        job = Deferred.fromCoroutine(self._process(key, records, offset, ended, reason, line))
        job.addErrback(self._process_failed, key)

    async def _process(
        self,
        key: str,
        records: list[bytes],
        offset: int,
        ended: bool,
        reason: str,
        line: AstmLinkProtocol | None = None,
    ) -> None:
        await self._lock.acquire()
        try:
            session_id = self.journal.session_id(key)
            if session_id is None:  # no frame was committed, so none was acknowledged
                self.journal.forget(key)
                return
            decoded = self.reader.astm(records, ended=ended, offset=offset)
            close_reason = "ended" if ended else f"incomplete: {reason}"
            stored = await self._store_transfer(decoded, session_id, close_reason)
            self.journal.forget(key)
            self._stored(f"session {session_id}", close_reason, stored)
            if stored.queries and self.on_queries is not None:
                self.on_queries(decoded, stored, line)
        finally:
            self._lock.release()
            self._done()

    async def _store_transfer(
        self, decoded: list[Decoded], session_id: int, close_reason: str
    ) -> TransferStored:
        now = self.clock.seconds()
        delay = RETRY_FIRST
        while True:
            try:
                return await self.units.run(
                    store_transfer,
                    decoded,
                    self.context,
                    session_id=session_id,
                    now=now,
                    close_reason=close_reason,
                )
            except StoreError as error:
                if self._closing:
                    raise
                self.retries += 1
                _log.warn(
                    "ASTM {name}: session {session} not processed ({error}); retry in {delay} s",
                    name=self.name,
                    session=session_id,
                    error=str(error),
                    delay=delay,
                )
            self._sleeping = deferLater(self.clock, delay, lambda: None)
            try:
                await self._sleeping
            finally:
                self._sleeping = None
            delay = min(delay * 2, RETRY_CAP)

    def _process_failed(self, failure: Failure, key: str) -> None:
        session = self.journal.session_id(key)
        self.journal.forget(key)
        if isinstance(failure.value, CancelledError):
            _log.info(
                "ASTM {name}: session {session} left for recovery at the next start",
                name=self.name,
                session=session,
            )
            return
        _log.failure(
            "ASTM {name}: session {session} not processed; recovery at the next start will",
            failure,
            name=self.name,
            session=session,
        )

    # -- life cycle -------------------------------------------------------------------------

    def when_idle(self) -> Deferred[None]:
        """Fires once every transfer and message handed over so far is processed."""
        if not self._busy:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def close(self) -> Deferred[None]:
        """Stop retrying (what is left is recovered at the next start); fires when idle."""
        self._closing = True
        if self._sleeping is not None:
            self._sleeping.cancel()
        return self.when_idle()

    def _done(self) -> None:
        self._busy -= 1
        if not self._busy:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _stored(self, what: str, detail: str, stored: TransferStored) -> None:
        self.transfers += 1
        self.totals += stored
        if stored.outbox and self.on_outbox is not None:
            self.on_outbox()
        _log.info(
            "{name}: {what} ({detail}): {messages} message(s), {results} new result(s), "
            "{duplicates} duplicate(s), {outbox} for the HIS, {review} to review, "
            "{incomplete} incomplete",
            name=self.name,
            what=what,
            detail=detail,
            messages=len(stored.message_ids),
            results=stored.results,
            duplicates=stored.duplicates,
            outbox=stored.outbox,
            review=stored.review,
            incomplete=stored.incomplete,
        )
