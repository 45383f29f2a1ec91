"""Read-side units of work for the technician CLI: the live status and orders.

Layer: store. Imports sqlalchemy. Each function is one unit of work (see lisgw.store.archive
for the conventions) returning frozen dataclasses; nothing here writes. Results are listed by
lisgw.store.result_views, the sample story told by lisgw.store.story, the outbox and review
queue listed and acted upon by lisgw.store.queues.

Stores hold millions of rows, so every listing walks an index: the primary key, newest
first, ``LIMIT n``, or an index on the filtered column (sample IDs, states, connections).
Time filters (``since``/``until``) become id bounds first (``id_bounds``): ids grow with
creation time, so a few primary-key probes find the id range of a time window, and the
listing walks only that range (the exact time filter still applies within it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from lisgw.store.records import OutboxState, QueueState, ReviewState, TestState
from lisgw.store.schema import (
    connection_status,
    connections,
    messages,
    nodes,
    order_queue,
    order_tests,
    orders,
    outbox,
    review,
)
from lisgw.store.status import NodeStatus

__all__ = [
    "ANY_TIME",
    "HIS_ORDERS_CONNECTION",
    "ConnectionView",
    "OrderDetail",
    "OrderSummary",
    "OrderTestView",
    "QueueItem",
    "StatusView",
    "TimeWindow",
    "get_order",
    "id_bounds",
    "list_orders",
    "live_status",
    "queue_items",
    "windowed",
]

HIS_ORDERS_CONNECTION: Final = "his-orders"  # the HIS order listener's connection name
# Rows of one table may be created slightly out of id order (two processes, clock steps):
# the id bound of a time window is looked up this much earlier/later, to keep them.
_ID_MARGIN: Final = 300.0


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """``since <= t < until``; either end open when None."""

    since: float | None = None
    until: float | None = None

    def applies(self) -> bool:
        return self.since is not None or self.until is not None


ANY_TIME: Final = TimeWindow()


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """A connection as configured (``connections``) and as last reported (``state`` None
    when the gateway never reported it)."""

    name: str
    driver: str
    protocol: str
    transport: str
    instrument: str
    state: str | None
    node: str
    peer: str
    since: float | None
    last_message_at: float | None
    reconnects: int
    errors: int
    last_error: str
    updated_at: float | None


@dataclass(frozen=True, slots=True)
class StatusView:
    nodes: tuple[NodeStatus, ...]
    connections: tuple[ConnectionView, ...]
    outbox: Mapping[str, int]  # pending, inflight, dead
    oldest_pending_at: float | None
    queued: Mapping[str, int]  # order tests waiting, per analyzer connection
    review: Mapping[str, int]
    his_last_delivered_at: float | None
    his_last_error: str
    his_orders_last_at: float | None


@dataclass(frozen=True, slots=True)
class OrderSummary:
    id: int
    placer: str
    sample_id: str
    patient_id: str
    patient_name: str
    priority: str
    state: str
    tests: int
    resulted: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One order test queued for one analyzer (downloads and host-query replies)."""

    id: int
    connection: str
    analyzer_code: str
    state: str
    created_at: float
    sent_at: float | None
    attempts: int
    last_error: str
    next_attempt_at: float | None


@dataclass(frozen=True, slots=True)
class OrderTestView:
    his_code: str
    name: str
    state: str
    queue: tuple[QueueItem, ...]


@dataclass(frozen=True, slots=True)
class OrderDetail:
    summary: OrderSummary
    filler: str
    ordered_at: str
    message_id: int | None
    tests: tuple[OrderTestView, ...]


# -- time windows ------------------------------------------------------------------------


def id_bounds(
    conn: sa.Connection, table: sa.Table, column: str, window: TimeWindow
) -> tuple[int | None, int | None]:
    """The id range that holds the rows created in ``window`` (see the module docstring)."""
    low = high = None
    if window.since is not None:
        low = _first_id_from(conn, table, column, window.since - _ID_MARGIN)
    if window.until is not None:
        first_after = _first_id_from(conn, table, column, window.until + _ID_MARGIN)
        high = None if first_after is None else first_after - 1
    return low, high


def _first_id_from(conn: sa.Connection, table: sa.Table, column: str, at: float) -> int | None:
    """The smallest id whose row has ``column >= at``, assuming the column grows with the id;
    a binary search of primary-key probes. None when no row is that recent."""
    id_col, time_col = table.c.id, table.c[column]
    low, high = conn.execute(sa.select(sa.func.min(id_col), sa.func.max(id_col))).one()
    if low is None:
        return None
    probe = sa.select(time_col).order_by(id_col).limit(1)

    def recent_from(first: int) -> bool:  # the first row with id >= first is recent enough
        return bool(conn.execute(probe.where(id_col >= first)).scalar_one() >= at)

    if not recent_from(high):
        return None
    while low < high:
        middle = (low + high) // 2
        if recent_from(middle):
            high = middle
        else:
            low = middle + 1
    return int(low)


def windowed(
    conn: sa.Connection, query: sa.Select[Any], table: sa.Table, column: str, window: TimeWindow
) -> sa.Select[Any]:
    """``query`` limited to the rows of ``table`` created in ``window`` (id range first)."""
    if not window.applies():
        return query
    low, high = id_bounds(conn, table, column, window)
    if window.since is not None:
        query = query.where(table.c[column] >= window.since)
        query = query.where(table.c.id >= low) if low is not None else query.where(sa.false())
    if window.until is not None:
        query = query.where(table.c[column] < window.until)
        if high is not None:
            query = query.where(table.c.id <= high)
    return query


# -- status ------------------------------------------------------------------------------


def live_status(conn: sa.Connection) -> StatusView:
    """Everything ``lisgw status`` shows, read in one transaction."""
    node_rows = conn.execute(sa.select(nodes).order_by(nodes.c.name)).all()
    # Delivered rows are most of the table: only the open states are counted (by index).
    counts = {
        str(state): conn.execute(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.state == str(state))
        ).scalar_one()
        for state in (OutboxState.PENDING, OutboxState.INFLIGHT, OutboxState.DEAD)
    }
    oldest = conn.execute(
        sa.select(sa.func.min(outbox.c.created_at)).where(
            outbox.c.state.in_([str(OutboxState.PENDING), str(OutboxState.INFLIGHT)])
        )
    ).scalar_one()
    queued = conn.execute(
        sa.select(order_queue.c.connection, sa.func.count())
        .where(order_queue.c.state == str(QueueState.QUEUED))
        .group_by(order_queue.c.connection)
    ).all()
    review_counts = dict.fromkeys((str(s) for s in (ReviewState.OPEN, ReviewState.ASSIGNED)), 0)
    for state in review_counts:
        review_counts[state] = conn.execute(
            sa.select(sa.func.count()).select_from(review).where(review.c.state == state)
        ).scalar_one()
    last_delivered = conn.execute(
        sa.select(outbox.c.delivered_at)
        .where(outbox.c.state == str(OutboxState.DELIVERED))
        .order_by(outbox.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    last_error = conn.execute(
        sa.select(outbox.c.last_error)
        .where(outbox.c.state == str(OutboxState.PENDING), outbox.c.last_error != "")
        .order_by(outbox.c.next_attempt_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    return StatusView(
        nodes=tuple(NodeStatus(**row._asdict()) for row in node_rows),
        connections=tuple(_connection_views(conn)),
        outbox=counts,
        oldest_pending_at=oldest,
        queued={row[0]: int(row[1]) for row in queued},
        review={state: int(count) for state, count in review_counts.items()},
        his_last_delivered_at=last_delivered,
        his_last_error=last_error or "",
        his_orders_last_at=_last_message_at(conn, HIS_ORDERS_CONNECTION),
    )


def _connection_views(conn: sa.Connection) -> list[ConnectionView]:
    joined = connections.outerjoin(
        connection_status, connection_status.c.name == connections.c.name
    )
    rows = conn.execute(
        sa.select(connections, *(connection_status.c[name] for name in _STATUS_COLUMNS))
        .select_from(joined)
        .where(connections.c.name != HIS_ORDERS_CONNECTION)
        .order_by(connections.c.name)
    ).all()
    views = []
    for row in rows:
        if row.state is None and not row.transport:
            continue  # a name seen in a message but never configured (tests, old configs)
        last = _last_message_at(conn, row.name)
        if row.last_message_at is not None:
            last = max(last or 0.0, row.last_message_at)
        views.append(
            ConnectionView(
                name=row.name,
                driver=row.driver,
                protocol=row.protocol,
                transport=row.transport,
                instrument=" ".join(p for p in (row.instrument_name, row.instrument_serial) if p),
                state=row.state,
                node=row.node or "",
                peer=row.peer or "",
                since=row.since,
                last_message_at=last,
                reconnects=row.reconnects or 0,
                errors=row.errors or 0,
                last_error=row.last_error or "",
                updated_at=row.updated_at,
            )
        )
    return views


_STATUS_COLUMNS: Final = (
    "node",
    "state",
    "peer",
    "since",
    "last_message_at",
    "reconnects",
    "errors",
    "last_error",
    "updated_at",
)


def _last_message_at(conn: sa.Connection, connection: str) -> float | None:
    """Newest inbound message of a connection: ix_messages_connection_received_at."""
    value = conn.execute(
        sa.select(sa.func.max(messages.c.received_at)).where(messages.c.connection == connection)
    ).scalar_one()
    return None if value is None else float(value)


# -- orders ------------------------------------------------------------------------------


def list_orders(
    conn: sa.Connection,
    *,
    analyzer: str | None = None,
    sample_id: str | None = None,
    state: str | None = None,
    window: TimeWindow = ANY_TIME,
    limit: int = 50,
) -> list[OrderSummary]:
    """Orders, newest first, filtered."""
    query = sa.select(orders)
    if sample_id is not None:
        query = query.where(orders.c.sample_id == sample_id)
    if state is not None:
        query = query.where(orders.c.state == state)
    if analyzer is not None:
        queued = (
            sa.select(order_queue.c.id)
            .join(order_tests, order_tests.c.id == order_queue.c.order_test_id)
            .where(order_tests.c.order_id == orders.c.id, order_queue.c.connection == analyzer)
            .exists()
        )
        query = query.where(queued)
    query = windowed(conn, query, orders, "created_at", window)
    rows = conn.execute(query.order_by(orders.c.id.desc()).limit(limit)).all()
    tally = _test_tally(conn, [row.id for row in rows])
    return [_summary(row, *tally.get(row.id, (0, 0))) for row in rows]


def get_order(conn: sa.Connection, key: str) -> OrderDetail | None:
    """One order by placer number (or by ``#id``), with its tests and their queue rows."""
    if key.startswith("#") and key[1:].isdigit():
        condition = orders.c.id == int(key[1:])
    else:
        condition = orders.c.placer == key
    row = conn.execute(sa.select(orders).where(condition)).one_or_none()
    if row is None:
        return None
    tests = conn.execute(
        sa.select(order_tests).where(order_tests.c.order_id == row.id).order_by(order_tests.c.id)
    ).all()
    queue = queue_items(conn, [t.id for t in tests])
    views = tuple(
        OrderTestView(t.his_code, t.name, t.state, tuple(queue.get(t.id, ()))) for t in tests
    )
    resulted = sum(1 for t in tests if t.state == TestState.RESULTED)
    return OrderDetail(
        summary=_summary(row, len(tests), resulted),
        filler=row.filler,
        ordered_at=row.ordered_at,
        message_id=row.message_id,
        tests=views,
    )


def queue_items(conn: sa.Connection, order_test_ids: list[int]) -> dict[int, list[QueueItem]]:
    """Queue rows by order test (uq_order_queue_order_test_id_connection)."""
    found: dict[int, list[QueueItem]] = {}
    if not order_test_ids:
        return found
    rows = conn.execute(
        sa.select(order_queue)
        .where(order_queue.c.order_test_id.in_(order_test_ids))
        .order_by(order_queue.c.id)
    )
    for q in rows:
        found.setdefault(q.order_test_id, []).append(
            QueueItem(
                q.id,
                q.connection,
                q.analyzer_code,
                q.state,
                q.created_at,
                q.sent_at,
                q.attempts,
                q.last_error,
                q.next_attempt_at,
            )
        )
    return found


def _test_tally(conn: sa.Connection, order_ids: list[int]) -> dict[int, tuple[int, int]]:
    if not order_ids:
        return {}
    resulted = sa.func.sum(sa.case((order_tests.c.state == str(TestState.RESULTED), 1), else_=0))
    rows = conn.execute(
        sa.select(order_tests.c.order_id, sa.func.count(), resulted)
        .where(order_tests.c.order_id.in_(order_ids))
        .group_by(order_tests.c.order_id)
    )
    return {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}


def _summary(row: sa.Row[Any], tests: int, resulted: int) -> OrderSummary:
    return OrderSummary(
        id=row.id,
        placer=row.placer,
        sample_id=row.sample_id,
        patient_id=row.patient_id,
        patient_name=row.patient_name,
        priority=row.priority,
        state=row.state,
        tests=tests,
        resulted=resulted,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
