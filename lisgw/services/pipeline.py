"""From an analyzer's records to stored messages, routed results and outbox rows.

Layer: service core, synchronous: no Twisted. Live ingest (lisgw.services.ingest) and crash
recovery (lisgw.services.recovery) both go through here, so a transfer recovered from the
archive after a crash is processed exactly as it would have been at its EOT.

* ``TransferReader`` reads one connection's traffic: ASTM records (one transfer, ENQ to
  EOT) or one HL7 payload → ``Decoded`` messages, with the connection's pinned driver, or
  the one detected from its first message (then kept for the connection).
* ``store_transfer`` is one unit of work: each message kept (raw bytes, normalized JSON,
  state), results routed (lisgw.routing.route against the open orders and the identities
  already stored, read in the same transaction) and saved with their ORU^R01 payloads
  (lisgw.his.results, one per specimen or order as the HIS profile says), host queries
  recorded, and the session closed — all or nothing. A crash before the commit leaves the
  session open for recovery; after it, the session is closed and never processed again.

Which messages are results: a transmission that ended with EOT gives complete messages. One
that ended without EOT (connection lost, timeout, sender gave up, a crash) still gives the
messages an ``L`` record closed: every frame of them was acknowledged, and a sender does not
send an acknowledged frame again (E1381 §6.3, §6.5.1), so dropping them would lose results
(a resend after all is recognised by the results' content identities). The message the
records ran out in is incomplete: kept for the technician, never results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import sqlalchemy as sa

from lisgw.assemble import (
    AssembledMessage,
    AstmSettings,
    assemble_records,
    normalize_message,
    read_hl7,
)
from lisgw.astm.link import LinkOptions
from lisgw.astm.message import AstmMessage
from lisgw.drivers import Catalogue, CompiledProfile
from lisgw.drivers.mapping import TestCodeMap
from lisgw.errors import CodecError, LocalProtocolError
from lisgw.his.profile import HisProfile
from lisgw.his.results import (
    build_result_message,
    control_id_for,
    delivery_groups,
    group_placer,
    hl7_now,
    payload_identity,
)
from lisgw.his.types import HisOrder, RoutedResult
from lisgw.hl7.message import Hl7Message
from lisgw.model import Kind, NormalizedMessage, Protocol
from lisgw.routing import (
    RoutingConfig,
    RoutingOutcome,
    message_identities,
    normalize_sample_id,
    route,
)
from lisgw.store import work
from lisgw.store.ingest_work import dead_on_arrival
from lisgw.store.order_lookups import orders_for_routing
from lisgw.store.records import Direction, FrameIn, MessageState, OutboxPayload

__all__ = [
    "Decoded",
    "IngestContext",
    "TransferReader",
    "TransferStored",
    "payload_identity",
    "store_hl7_message",
    "store_transfer",
]

INCOMPLETE_REASON = "transmission ended without EOT inside this message: never results"


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message of a transfer, ready to keep: its raw bytes and normalized form.

    ``rejected`` says why a message could not be read at all ('' otherwise).
    """

    raw: bytes
    message: NormalizedMessage
    rejected: str = ""


@dataclass(frozen=True, slots=True)
class IngestContext:
    """What storing one connection's messages needs besides the messages."""

    connection: str
    his_profile: HisProfile
    routing: RoutingConfig
    codes: TestCodeMap | None
    analyzer: str = ""  # OBX-18; the connection's name when empty


@dataclass(frozen=True, slots=True)
class TransferStored:
    """What ``store_transfer`` kept: message ids and what was new."""

    message_ids: tuple[int, ...] = ()
    results: int = 0
    duplicates: int = 0
    review: int = 0
    outbox: int = 0
    dead: int = 0
    queries: int = 0
    incomplete: int = 0

    def __add__(self, other: TransferStored) -> TransferStored:
        return TransferStored(
            self.message_ids + other.message_ids,
            self.results + other.results,
            self.duplicates + other.duplicates,
            self.review + other.review,
            self.outbox + other.outbox,
            self.dead + other.dead,
            self.queries + other.queries,
            self.incomplete + other.incomplete,
        )


class TransferReader:
    """Decodes one connection's transfers with its driver (module docstring).

    ``driver`` pins a driver ("name" or "name@version"; ConfigError when unknown); None
    detects it from the first message and keeps the first non-generic match.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        protocol: str,
        driver: str | None,
        encoding: str,
        tz: str | None,
    ) -> None:
        self.catalogue = catalogue
        self.protocol = protocol
        self.encoding = encoding
        self.tz = tz
        self.pinned = catalogue.get(driver) if driver else None
        self.detected: CompiledProfile | None = None

    @property
    def driver(self) -> CompiledProfile:
        """The driver messages are read with now: pinned, detected, else the generic one."""
        return self.pinned or self.detected or self.catalogue.fallback(self.protocol)

    def link_options(self) -> LinkOptions:
        """The E1381 options of the line: the pinned driver's, else the generic driver's
        (a running line cannot change them when a driver is detected later)."""
        profile = self.pinned or self.catalogue.fallback("astm")
        return AstmSettings.of(profile, encoding=self.encoding).link

    def astm(self, records: Sequence[bytes], *, ended: bool, offset: int = 0) -> list[Decoded]:
        """One transfer's records → its messages; ``ended``: it ended with EOT."""
        profile = self.driver
        assembled, skipped = self._assemble(records, profile)
        if self.pinned is None and self.detected is None and assembled:
            detected = self.catalogue.detect(assembled[0].message)
            if not detected.generic:
                self.detected = detected
            if detected.records_lenient != profile.records_lenient:
                assembled, skipped = self._assemble(records, detected)
            profile = detected
        decoded: list[Decoded] = []
        warnings: Sequence[str] = skipped
        for item in assembled:
            incomplete = item.open_at_end and not ended
            decoded.append(
                self._normalized(item.raw, item.message, profile, offset, incomplete, warnings)
            )
            warnings = ()
        return decoded

    def hl7(self, payload: bytes, *, offset: int = 0) -> Decoded:
        """One HL7 message → its Decoded form (rejected when it is not HL7 at all)."""
        try:
            parsed, warnings = read_hl7(payload, self.encoding)
        except CodecError as error:
            reason = f"not an HL7 message: {error}"
            unread = NormalizedMessage(Protocol.HL7, Kind.UNKNOWN, warnings=(reason,))
            return Decoded(payload, unread, rejected=reason)
        profile = self.driver
        if self.pinned is None and self.detected is None:
            profile = self.catalogue.detect(parsed)
            if not profile.generic:
                self.detected = profile
        return self._normalized(payload, parsed, profile, offset, False, warnings)

    def _assemble(
        self, records: Sequence[bytes], profile: CompiledProfile
    ) -> tuple[list[AssembledMessage], list[str]]:
        return assemble_records(records, encoding=self.encoding, lenient=profile.records_lenient)

    def _normalized(
        self,
        raw: bytes,
        message: AstmMessage | Hl7Message,
        profile: CompiledProfile,
        offset: int,
        incomplete: bool,
        warnings: Sequence[str],
    ) -> Decoded:
        try:
            normalized = normalize_message(
                message,
                profile,
                offset=offset,
                tz=self.tz,
                incomplete=incomplete,
                warnings=warnings,
            )
        except Exception as error:  # a driver bug must not stop the line: keep the bytes
            reason = f"driver {profile.key} failed: {type(error).__name__}: {error}"
            protocol = Protocol.HL7 if isinstance(message, Hl7Message) else Protocol.ASTM
            unread = NormalizedMessage(protocol, Kind.UNKNOWN, warnings=(reason,))
            return Decoded(raw, replace(unread, driver=profile.key), rejected=reason)
        return Decoded(raw, normalized)


def store_transfer(
    conn: sa.Connection,
    messages: Sequence[Decoded],
    context: IngestContext,
    *,
    session_id: int | None,
    now: float,
    close_reason: str | None = None,
    legacy: bool = False,
) -> TransferStored:
    """One unit of work: keep, route and queue a transfer's messages; close its session.

    ``legacy``: save results the former way (lisgw.store.results.save_routed_results),
    for bench/store_units.py's before/after comparison only.
    """
    stored = TransferStored()
    for decoded in messages:
        stored += _store_message(conn, decoded, context, session_id, now, legacy)
    if session_id is not None and close_reason is not None:
        work.end_session(conn, session_id, reason=close_reason, now=now)
    return stored


def store_hl7_message(
    conn: sa.Connection, decoded: Decoded, context: IngestContext, *, peer: str, now: float
) -> TransferStored:
    """One unit of work for an analyzer's HL7 message: its own session (opened and closed
    here: the message is the whole exchange), the raw frame, then ``store_transfer``."""
    session = work.open_session(conn, context.connection, protocol="hl7", peer=peer, now=now)
    work.append_frames(conn, [FrameIn(session.id, 1, Direction.IN, decoded.raw, now)])
    return store_transfer(
        conn, [decoded], context, session_id=session.id, now=now, close_reason="message"
    )


def _state_of(decoded: Decoded) -> tuple[MessageState, str]:
    message = decoded.message
    if decoded.rejected:
        return MessageState.REJECTED, decoded.rejected
    if message.incomplete:
        return MessageState.INCOMPLETE, INCOMPLETE_REASON
    if message.kind is Kind.RESULTS:
        return MessageState.RECEIVED, ""  # save_routed_results marks it routed
    return MessageState.PROCESSED, ""


def _store_message(
    conn: sa.Connection,
    decoded: Decoded,
    context: IngestContext,
    session_id: int | None,
    now: float,
    legacy: bool = False,
) -> TransferStored:
    message = decoded.message
    state, reason = _state_of(decoded)
    routed: _Routed | None = None
    if state is MessageState.RECEIVED:
        # Routed before the message is kept, so it is inserted in its final state (one
        # statement fewer per transfer than inserting it RECEIVED and marking it ROUTED).
        routed = _routing(conn, message, context, now)
        state, reason = MessageState.ROUTED, routed.outcome.ignored
    message_id = work.keep_message(
        conn,
        decoded.raw,
        direction=Direction.IN,
        protocol=str(message.protocol),
        kind=str(message.kind),
        now=now,
        connection=context.connection,
        session_id=session_id,
        driver=message.driver,
        normalized=message,
        state=state,
        reason=reason,
    )
    if message.instrument is not None and state is not MessageState.REJECTED:
        work.touch_instrument(conn, context.connection, message.instrument, now=now)
    kept = TransferStored(message_ids=(message_id,))
    if state is MessageState.INCOMPLETE:
        return kept + TransferStored(incomplete=1)
    if routed is not None:
        return kept + _save_routed(conn, message_id, routed, now, legacy)
    if message.kind is Kind.QUERY and message.query is not None:
        work.save_query(conn, message_id, message.query, now=now)
        return kept + TransferStored(queries=1)
    return kept


@dataclass(frozen=True, slots=True)
class _Routed:
    """A results message routed against the open orders, its ORU^R01 payloads built."""

    outcome: RoutingOutcome
    payloads: list[OutboxPayload]
    unbuilt: dict[str, str]


def _routing(
    conn: sa.Connection, message: NormalizedMessage, context: IngestContext, now: float
) -> _Routed:
    connection = context.connection
    sample_ids = [normalize_sample_id(s.sample_id) for s in message.specimens]
    identities = message_identities(message, connection)
    orders = orders_for_routing(conn, sample_ids)
    outcome = route(
        message,
        connection=connection,
        orders=orders.open,
        codes=context.codes,
        known=work.known_identities(conn, identities),
        config=context.routing,
        identities=identities,
    )
    payloads, unbuilt = _payloads(orders.his, outcome.to_deliver, context, now)
    return _Routed(outcome, payloads, unbuilt)


def _save_routed(
    conn: sa.Connection, message_id: int, routed: _Routed, now: float, legacy: bool = False
) -> TransferStored:
    saved = work.save_routed_results(
        conn, message_id, routed.outcome, routed.payloads, now, legacy=legacy, mark_routed=False
    )
    dead = 0
    for row in saved.outbox:
        why = routed.unbuilt.get(row.identity)
        if why is not None:
            dead += dead_on_arrival(conn, [row.id], reason=why, now=now)
    return TransferStored(
        results=len(saved.results),
        duplicates=len(saved.duplicates),
        review=len(saved.review),
        outbox=len(saved.outbox),
        dead=dead,
    )


def _payloads(
    orders: dict[str, HisOrder],
    deliver: Sequence[RoutedResult],
    context: IngestContext,
    now: float,
) -> tuple[list[OutboxPayload], dict[str, str]]:
    """The ORU^R01 of each delivery group, and why a group's could not be built.

    ``orders``: the orders routing matched against, by placer (read once with them, in the
    same transaction: lisgw.store.order_lookups.orders_for_routing)."""
    if not deliver:
        return [], {}
    profile = context.his_profile
    payloads: list[OutboxPayload] = []
    unbuilt: dict[str, str] = {}
    for group in delivery_groups(deliver, profile.results_per):
        identities = tuple(r.identity for r in group)
        identity = payload_identity(identities)
        placer = group_placer(group)
        order = orders.get(placer)
        try:
            payload = build_result_message(
                group,
                order,
                profile,
                analyzer=context.analyzer or context.connection,
                now_timestamp=hl7_now(now),
            )
        except (CodecError, LocalProtocolError) as error:
            # lisgw.his.results: a value the profile's encoding cannot carry is never
            # altered; the row goes to dead letter with the reason, for a technician.
            payload = b""
            unbuilt[identity] = f"result message not built: {error}"
        payloads.append(
            OutboxPayload(
                identity=identity,
                sample_id=group[0].sample_id,
                control_id=control_id_for(identities),
                payload=payload,
                result_identities=identities,
                order_placer=placer,
                connection=context.connection,
            )
        )
    return payloads, unbuilt
