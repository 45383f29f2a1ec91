"""HIS order listener: ORM^O01 / OML^O21 in over MLLP, committed, then acknowledged.

Layer: service (Twisted). Listens with lisgw.transports.mllp; reads orders with
lisgw.his.orders (pure); keeps everything with the store's units of work (lisgw.store.work),
run on the store's thread pool; answers with lisgw.hl7.build.build_ack.

Durability before acknowledgement (issue 5): for each message, one transaction archives the
message (frame and message rows, bytes exact, in the connection's session, which names the
peer) *and* the ACK we are about to send, and applies the orders (new, cancel, change, each
queued for every analyzer that performs its tests: ``routes``); only once it has committed
is the ACK written. What is answered (HL7 v2.5.1 §2.9.2, original mode):

* ``AA``: the orders are stored;
* ``AE`` with the reason in MSA-3 and ERR (ERR-3 102, ERR-2 where it was found): the message
  is not HL7, or is an order message that cannot be read (no placer, no test, unknown order
  control …): resending it will not help; it is kept raw, state ``rejected``, with the reason;
* ``AR`` (ERR-3 200): a message type this listener does not take (§2.9.2.1: MSH-9 not
  accepted), kept raw and rejected likewise;
* ``AR`` "store unavailable" (ERR-3 207): the transaction failed, nothing was kept, so the HIS
  must send the message again. §2.9.2.2 (c) makes AR the answer for failures "unrelated to
  its content or format (system down, internal error)" that a later resend may cure; an AE
  would tell most HIS products not to resend.

A message cut short by the connection closing is kept raw as ``incomplete`` and not applied;
no ACK can be sent. The ACK's control ID (MSH-10) is ``L<session>.<seq>``: unique in the
store, known before the commit, so the ACK is archived in the same transaction.

Patient data stays out of INFO logs: message control IDs, types, counts and peers only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import sqlalchemy as sa
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.errors import CodecError
from lisgw.his.orders import UnsupportedMessageError, read_orders
from lisgw.his.profile import HisProfile
from lisgw.his.results import hl7_now  # re-exported: the services import it from here
from lisgw.his.types import HisOrder
from lisgw.hl7.build import AckError, build_ack
from lisgw.hl7.message import Hl7Message, parse_message
from lisgw.hl7.mllp import MllpMessage
from lisgw.model import Kind
from lisgw.store import work
from lisgw.store.records import (
    Direction,
    FrameIn,
    MessageRecord,
    MessageState,
    OrdersSaved,
    QueueTarget,
    SessionRecord,
)
from lisgw.store.runner import Store
from lisgw.transports.mllp import MllpLink, MllpServerFactory, MllpSettings

__all__ = ["STORE_UNAVAILABLE", "HisOrderListener", "Verdict", "hl7_now", "judge"]

_log = Logger()
_STUB_ORIGINAL = "MSH|^~\\&|||||||||P|"  # + version: answers a payload that is not HL7
STORE_UNAVAILABLE = "store unavailable"
_FIELD_REF = re.compile(r"\b([A-Z][A-Z0-9]{2})-(\d+)")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a message deserves before the store is asked: its ACK code, state and reason."""

    code: str  # AA, AE, AR
    state: MessageState
    reason: str = ""
    kind: str = str(Kind.ORDERS)
    orders: tuple[HisOrder, ...] = ()
    original: Hl7Message | None = None
    error: AckError | None = None


def judge(message: MllpMessage, profile: HisProfile) -> Verdict:
    """Read one inbound message (pure): orders to apply, or why it is rejected."""
    if not message.complete:
        reason = "incomplete: the connection closed inside the message"
        return Verdict("AE", MessageState.INCOMPLETE, reason, kind=str(Kind.UNKNOWN))
    try:
        parsed = parse_message(message.payload, encoding=profile.encoding)
    except CodecError as exc:
        reason = f"not an HL7 message: {exc}"
        original = _salvage(message.payload, profile)
        kind = str(Kind.UNKNOWN)
        return Verdict("AE", MessageState.REJECTED, reason, kind, (), original, _ae(exc))
    try:
        orders = read_orders(parsed, profile)
    except UnsupportedMessageError as exc:
        error = AckError("200", "Unsupported message type", "MSH", 1, 9, diagnostic=str(exc))
        kind = str(Kind.UNKNOWN)
        return Verdict("AR", MessageState.REJECTED, str(exc), kind, (), parsed, error)
    except CodecError as exc:
        return Verdict(
            "AE", MessageState.REJECTED, str(exc), str(Kind.ORDERS), (), parsed, _ae(exc)
        )
    return Verdict("AA", MessageState.PROCESSED, "", str(Kind.ORDERS), tuple(orders), parsed)


def _salvage(payload: bytes, profile: HisProfile) -> Hl7Message | None:
    """The header of a message that failed to decode, read leniently, so the AE can still
    echo its control ID (MSA-2) and address its sender; None when there is no header."""
    try:
        return parse_message(payload, encoding=profile.encoding, lenient=True)
    except CodecError:
        return None


def _ae(exc: CodecError) -> AckError:
    """ERR for a message that cannot be read: 102 (data type error), located (ERR-2) at the
    first field reference the reason names, e.g. "ORC-1" or "OBR-4.1"."""
    found = _FIELD_REF.search(str(exc))
    segment = found.group(1) if found else (exc.where or "")[:3]
    if not _SEGMENT_NAME.fullmatch(segment):
        segment = ""
    field_number = int(found.group(2)) if found else None
    return AckError("102", "Data type error", segment, 1, field_number, diagnostic=str(exc))


@dataclass
class _Link:
    """Per-connection state: its store session (opened once), the last frame number used.

    A Deferred's result is consumed by the first ``await``, so the session, once open, is
    kept here and ``opening`` is awaited by one caller only.
    """

    session: SessionRecord | None = None
    opening: Deferred[None] | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class _Stored:
    message: MessageRecord
    orders: OrdersSaved | None


class HisOrderListener(Service):
    """The MLLP server taking orders from the HIS (module docstring).

    ``startService`` and ``stopService`` return Deferreds: await them (the service tree does).
    """

    def __init__(
        self,
        store: Store,
        profile: HisProfile,
        *,
        endpoint: IStreamServerEndpoint,
        clock: IReactorTime,
        routes: Mapping[str, Sequence[QueueTarget]],
        connection: str = "his",
        settings: MllpSettings | None = None,
        max_connections: int = 16,
        on_queued: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.profile = profile
        # Called after a commit that queued tests, with the analyzer connections they are for
        # (the gateway wakes their order downloaders instead of waiting for a poll).
        self.on_queued = on_queued
        self.endpoint = endpoint
        self.clock = clock
        self.routes = routes
        self.connection = connection
        self.name = f"his-orders:{connection}"
        self._factory = MllpServerFactory(
            self,
            clock=clock,
            settings=settings or MllpSettings(),
            max_connections=max_connections,
            name=f"his-orders:{connection}",
        )
        self._listening: IListeningPort | None = None
        self._links: dict[MllpLink, _Link] = {}
        self._background: set[Deferred[None]] = set()

    @property
    def port(self) -> int | None:
        """The bound TCP port while listening (useful with port 0)."""
        if self._listening is None:
            return None
        return int(self._listening.getHost().port)  # type: ignore[attr-defined]

    def startService(self) -> Deferred[None]:
        self.running = True
        listening = self.endpoint.listen(self._factory)
        return listening.addCallback(self._listening_on)

    def _listening_on(self, port: IListeningPort) -> None:
        self._listening = port
        _log.info("HIS order listener {name} on port {port}", name=self.name, port=self.port)

    def stopService(self) -> Deferred[None]:
        self.running = False
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            await maybeDeferred(listening.stopListening)
        await self._factory.close_connections()
        await self.connections_closed()
        _log.info("HIS order listener {name} stopped", name=self.name)

    def connections_closed(self) -> Deferred[None]:
        """Fires once the connections open now have closed (by either side), their messages
        are handled and their sessions closed in the store. Does not close anything."""
        return Deferred.fromCoroutine(self._connections_closed())

    async def _connections_closed(self) -> None:
        await gatherResults([p.when_closed() for p in self._factory.protocols])
        while self._background:
            await gatherResults(list(self._background), consumeErrors=True)

    # -- lisgw.transports.mllp.MllpHandler

    def connection_opened(self, link: MllpLink) -> None:
        state = _Link()
        state.opening = self._open_session(link, state)
        self._links[link] = state

    def connection_closed(self, link: MllpLink, reason: str) -> None:
        state = self._links.pop(link, None)
        if state is not None:
            self._track(Deferred.fromCoroutine(self._close_session(state, reason)))

    def handle_message(self, message: MllpMessage, link: MllpLink) -> Deferred[bytes | None]:
        return Deferred.fromCoroutine(self._handle(message, link))

    # -- internals

    async def _handle(self, message: MllpMessage, link: MllpLink) -> bytes | None:
        verdict = judge(message, self.profile)
        state = self._links.get(link)
        session = await self._session(link, state)
        now = self.clock.seconds()
        if state is None or session is None:
            return self._store_failed(verdict, link, now, "no session")
        in_seq, out_seq = state.seq + 1, state.seq + 2
        state.seq = out_seq
        control_id = f"L{session.id}.{out_seq}"
        ack = self._ack(verdict, verdict.code, verdict.reason, control_id, now, verdict.error)
        frames = [FrameIn(session.id, in_seq, Direction.IN, message.payload, now)]
        if message.complete:
            frames.append(FrameIn(session.id, out_seq, Direction.OUT, ack, now))
        try:
            stored = await self.store.run(
                _record_message, message.payload, verdict, frames, self._save_args(session, now)
            )
        except Exception as exc:  # any failure of the unit of work: nothing was committed
            return self._store_failed(verdict, link, now, str(exc))
        self._log_stored(verdict, stored, link)
        if self.on_queued is not None and stored.orders is not None:
            targets = frozenset(t.connection for o in stored.orders.orders for t in o.queued)
            if targets:
                self.on_queued(targets)
        return ack if message.complete else None

    def _save_args(self, session: SessionRecord, now: float) -> _SaveArgs:
        return _SaveArgs(self.connection, session.id, self.routes, now)

    def _store_failed(self, verdict: Verdict, link: MllpLink, now: float, why: str) -> bytes:
        _log.error(
            "HIS order message from {peer} not stored, answering AR: {why}",
            peer=link.peer,
            why=why,
        )
        error = AckError("207", "Application internal error", diagnostic=STORE_UNAVAILABLE)
        control_id = f"E{int(now * 1000) % 10**15}"
        return self._ack(verdict, "AR", STORE_UNAVAILABLE, control_id, now, error)

    def _ack(
        self,
        verdict: Verdict,
        code: str,
        text: str,
        control_id: str,
        now: float,
        error: AckError | None,
    ) -> bytes:
        original = verdict.original or parse_message(_STUB_ORIGINAL + self.profile.version)
        encoding = self.profile.encoding
        fitted = text.encode(encoding, errors="replace").decode(encoding)
        if error is not None:
            diagnostic = error.diagnostic.encode(encoding, errors="replace").decode(encoding)
            error = replace(error, diagnostic=diagnostic)
        return build_ack(
            original,
            code,
            fitted,
            control_id=control_id,
            now_timestamp=hl7_now(now),
            error=error,
            encoding=encoding,
        )

    def _log_stored(self, verdict: Verdict, stored: _Stored, link: MllpLink) -> None:
        original = verdict.original
        control_id = original.control_id if original is not None else ""
        message_type = original.message_type if original is not None else ""
        if verdict.code == "AA" and stored.orders is not None:
            actions = [str(saved.action) for saved in stored.orders.orders]
            _log.info(
                "HIS message {control_id} ({message_type}) from {peer}: stored as message "
                "{message_id}, orders {actions}, AA",
                control_id=control_id,
                message_type=message_type,
                peer=link.peer,
                message_id=stored.message.id,
                actions=actions,
            )
            return
        _log.warn(
            "HIS message {control_id} ({message_type}) from {peer}: kept as message "
            "{message_id}, {state}, {code}: {reason}",
            control_id=control_id,
            message_type=message_type,
            peer=link.peer,
            message_id=stored.message.id,
            state=str(verdict.state),
            code=verdict.code if stored.message.state != MessageState.INCOMPLETE else "no ACK",
            reason=verdict.reason,
        )

    def _open_session(self, link: MllpLink, state: _Link) -> Deferred[None]:
        opening = self.store.run(
            work.open_session,
            self.connection,
            protocol="hl7",
            peer=link.peer,
            now=self.clock.seconds(),
        )
        opened = opening.addCallback(self._session_opened, state)
        return opened.addErrback(self._session_failed, link)

    def _session_opened(self, session: SessionRecord, state: _Link) -> None:
        state.session = session

    def _session_failed(self, failure: Failure, link: MllpLink) -> None:
        _log.failure("HIS order listener: no session for {peer}", failure, peer=link.peer)

    async def _session(self, link: MllpLink, state: _Link | None) -> SessionRecord | None:
        """The link's session, opening it again when the first attempt failed."""
        if state is None:
            return None
        if state.session is None:
            opening, state.opening = state.opening, None
            await (opening or self._open_session(link, state))
        return state.session

    async def _close_session(self, state: _Link, reason: str) -> None:
        opening, state.opening = state.opening, None
        if opening is not None:
            await opening
        if state.session is None:
            return
        try:
            await self.store.run(
                work.close_session, state.session.id, reason=reason, now=self.clock.seconds()
            )
        except Exception:  # the session stays open in the archive: logged, nothing lost
            _log.failure("HIS order listener: session {id} not closed", id=state.session.id)

    def _track(self, running: Deferred[None]) -> None:
        self._background.add(running)
        running.addBoth(self._untrack, running)

    def _untrack(self, result: object, running: Deferred[None]) -> None:
        self._background.discard(running)
        if isinstance(result, Failure):
            _log.failure("HIS order listener: background work failed", result)


@dataclass(frozen=True, slots=True)
class _SaveArgs:
    connection: str
    session_id: int
    routes: Mapping[str, Sequence[QueueTarget]]
    now: float


def _record_message(
    conn: sa.Connection,
    raw: bytes,
    verdict: Verdict,
    frames: Sequence[FrameIn],
    args: _SaveArgs,
) -> _Stored:
    """One unit of work: archive the frames, keep the message, apply its orders."""
    work.append_frames(conn, frames)
    accepted = verdict.code == "AA"
    record = work.save_message(
        conn,
        raw,
        direction=Direction.IN,
        protocol="hl7",
        kind=verdict.kind,
        now=args.now,
        connection=args.connection,
        session_id=args.session_id,
        state=MessageState.RECEIVED if accepted else verdict.state,
        reason=verdict.reason,
    )
    if not accepted:
        return _Stored(record, None)
    saved = work.save_his_orders(
        conn, verdict.orders, routes=args.routes, now=args.now, message_id=record.id
    )
    return _Stored(record, saved)
