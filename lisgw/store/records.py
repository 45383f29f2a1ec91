"""What the store's units of work take and return: frozen dataclasses and state enums.

Layer: store (pure data). Imports the standard library and the domain types only. A unit of
work (lisgw.store.work) never returns rows, sessions or result proxies: it returns these, so
that nothing that leaves the store's thread pool can touch a connection again.

The state enums are ``StrEnum``: their values are what the database holds (each state column
has a CHECK constraint listing them, lisgw.store.schema), and they compare equal to plain
strings.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lisgw.his.types import HisOrder, OrderedTest

__all__ = [
    "AuditRecord",
    "ConnectionRecord",
    "ConnectionState",
    "Direction",
    "FrameIn",
    "FrameRecord",
    "FramesAppended",
    "MessageRecord",
    "MessageState",
    "OrderAction",
    "OrderRecord",
    "OrderState",
    "OrderTestRecord",
    "OrdersSaved",
    "OutboxPayload",
    "OutboxRow",
    "OutboxState",
    "QueryRecord",
    "QueryState",
    "QueueState",
    "QueueTarget",
    "QueuedTest",
    "ReplyRecord",
    "ResultRecord",
    "ReviewRecord",
    "ReviewState",
    "RoutedSaved",
    "SavedOrder",
    "SessionRecord",
    "TestState",
]


class Direction(enum.StrEnum):
    IN = "in"  # from the peer (analyzer or HIS) to the gateway
    OUT = "out"  # from the gateway to the peer


class MessageState(enum.StrEnum):
    RECEIVED = "received"  # committed, not yet processed: recovery picks these up
    PROCESSED = "processed"  # orders saved, query answered, or kept as information
    ROUTED = "routed"  # results routed and saved (lisgw.store.work.save_routed_results)
    REJECTED = "rejected"  # malformed or unsupported: kept raw, with the reason
    INCOMPLETE = "incomplete"  # transmission ended without EOT: never results
    SENT = "sent"  # outbound: written to the peer


class OrderState(enum.StrEnum):
    OPEN = "open"  # no test resulted yet
    PARTIAL = "partial"  # some tests resulted
    COMPLETE = "complete"  # every test resulted or cancelled
    CANCELLED = "cancelled"  # the HIS cancelled it


class TestState(enum.StrEnum):
    __test__ = False  # not a pytest test class, whatever its name

    OPEN = "open"
    RESULTED = "resulted"
    CANCELLED = "cancelled"


class QueueState(enum.StrEnum):
    QUEUED = "queued"  # waiting for the analyzer's host query (or a download)
    SENT = "sent"  # sent to the analyzer
    CANCELLED = "cancelled"


class ReviewState(enum.StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    DISCARDED = "discarded"


class ConnectionState(enum.StrEnum):
    """An analyzer line as the running gateway last reported it (connection_status)."""

    LISTENING = "listening"  # tcp-server: waiting for the analyzer to connect
    CONNECTING = "connecting"  # tcp-client / serial: opening the line
    CONNECTED = "connected"
    WAITING = "waiting"  # tcp-client / serial: backing off before the next attempt
    DOWN = "down"  # the device or peer is missing; retrying
    STOPPED = "stopped"  # the gateway stopped


class QueryState(enum.StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    CANCELLED = "cancelled"


class OutboxState(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    INFLIGHT = "inflight"  # claimed by a worker until lease_until
    DELIVERED = "delivered"  # the HIS answered AA
    DEAD = "dead"  # AE/AR or retries exhausted: last_error says why


class OrderAction(enum.StrEnum):
    """What ``save_his_orders`` did with one HIS order."""

    CREATED = "created"
    UPDATED = "updated"  # tests or order data changed (change, or a new for a known placer)
    UNCHANGED = "unchanged"  # the same order again (the HIS resent it)
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # a cancel for a placer the store never saw: nothing to do


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    name: str
    driver: str
    protocol: str
    transport: str
    instrument_name: str
    instrument_serial: str
    instrument_software: str
    first_seen_at: float
    last_seen_at: float


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: int
    connection: str
    protocol: str
    peer: str
    opened_at: float
    closed_at: float | None
    close_reason: str
    frames: int


@dataclass(frozen=True, slots=True)
class FrameIn:
    """One accepted frame (or MLLP message) to archive: bytes exact, as on the wire.

    ``seq`` numbers the frames of a session in wire order, both directions together; the
    pair (session, seq) is the frame's identity, so appending the same frame twice (a retry
    after a commit whose outcome was unknown) stores it once.
    """

    session_id: int
    seq: int
    direction: Direction
    data: bytes
    at: float


@dataclass(frozen=True, slots=True)
class FramesAppended:
    inserted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class FrameRecord:
    id: int
    session_id: int
    seq: int
    direction: Direction
    data: bytes
    at: float


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    session_id: int | None
    connection: str | None
    direction: Direction
    protocol: str
    kind: str
    driver: str
    raw: bytes
    state: MessageState
    reason: str
    received_at: float
    normalized: Mapping[str, Any] | None = None  # read-only view of the JSON


@dataclass(frozen=True, slots=True)
class QueueTarget:
    """An analyzer that performs a HIS test: its connection and its own code for the test."""

    connection: str
    analyzer_code: str


@dataclass(frozen=True, slots=True)
class SavedOrder:
    """``unrouted`` lists the order's HIS codes no analyzer performs (no queue row)."""

    placer: str
    action: OrderAction
    order_id: int | None
    queued: tuple[QueueTarget, ...] = ()
    unrouted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OrdersSaved:
    orders: tuple[SavedOrder, ...]


@dataclass(frozen=True, slots=True)
class OrderTestRecord:
    his_code: str
    name: str
    state: TestState


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: int
    placer: str
    filler: str
    sample_id: str
    patient_id: str
    patient_name: str
    priority: str
    ordered_at: str
    state: OrderState
    tests: tuple[OrderTestRecord, ...]
    created_at: float
    updated_at: float

    def as_his_order(self) -> HisOrder:
        """The order as the HIS bridge builds results against it (cancelled tests left out)."""
        tests = tuple(
            OrderedTest(t.his_code, t.name) for t in self.tests if t.state != TestState.CANCELLED
        )
        control = "cancel" if self.state == OrderState.CANCELLED else "new"
        return HisOrder(
            control=control,
            placer=self.placer,
            filler=self.filler,
            sample_id=self.sample_id,
            patient_id=self.patient_id,
            patient_name=self.patient_name,
            tests=tests,
            priority=self.priority,
            ordered_at=self.ordered_at,
        )


@dataclass(frozen=True, slots=True)
class QueuedTest:
    """One order test waiting for an analyzer (host-query replies, order downloads)."""

    queue_id: int
    connection: str
    analyzer_code: str
    placer: str
    sample_id: str
    his_code: str
    priority: str
    patient_id: str
    patient_name: str
    ordered_at: str


@dataclass(frozen=True, slots=True)
class OutboxPayload:
    """One message for the HIS, built by the bridge, to be stored with its results.

    ``identity`` is unique in the outbox (the same payload offered twice is stored once);
    ``result_identities`` name the results it carries, linked to it in the results table.
    """

    identity: str
    sample_id: str
    control_id: str
    payload: bytes
    result_identities: tuple[str, ...] = ()
    order_placer: str = ""
    connection: str = ""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row. ``id`` is also its sequence: per sample, rows go out in id order."""

    id: int
    identity: str
    connection: str
    sample_id: str
    order_placer: str
    control_id: str
    payload: bytes
    state: OutboxState
    attempts: int
    next_attempt_at: float
    claimed_by: str | None
    lease_until: float | None
    last_error: str
    first_failed_at: float | None
    created_at: float
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class ResultRecord:
    id: int
    identity: str
    message_id: int
    connection: str
    sample_id: str
    test: str
    his_code: str
    match: str
    reason: str
    order_placer: str
    correction: bool
    outbox_id: int | None


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    id: int
    result_id: int
    reason: str
    state: ReviewState
    assignee: str
    note: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class RoutedSaved:
    """What ``save_routed_results`` stored: only what was new.

    ``duplicates`` holds the identities skipped because a result with that identity was
    already stored (or came twice in the outcome); ``outbox`` the outbox rows created.
    """

    results: tuple[ResultRecord, ...]
    duplicates: tuple[str, ...]
    review: tuple[ReviewRecord, ...]
    outbox: tuple[OutboxRow, ...]


@dataclass(frozen=True, slots=True)
class QueryRecord:
    id: int
    message_id: int
    connection: str | None
    sample_ids: tuple[str, ...]
    query_tag: str
    state: QueryState
    received_at: float
    answered_at: float | None


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    id: int
    query_id: int
    message_id: int
    tests: int
    sent_at: float


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: float
    actor: str
    action: str
    entity: str
    entity_id: str
    detail: str
