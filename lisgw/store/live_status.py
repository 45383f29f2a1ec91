"""The read unit behind ``lisgw top``: one snapshot of the gateway's live state.

Layer: store. Imports sqlalchemy, lisgw.store.schema and lisgw.store.status (the shapes of
the ``nodes`` and ``connection_status`` rows the running gateway writes). ``live_status`` is
one read-only unit of work, run every second by ``top`` in another process while the
gateway runs, so it reads indexes only, never a table that grows without bound:

* nodes and connection lines: one row per gateway process and per connection;
* order downloads queued per connection: ``ix_order_queue_connection_state``;
* outbox depths (pending, inflight, dead) and the oldest pending row:
  ``ix_outbox_state_next_attempt_at`` (delivered rows, most of the table, are not read);
* open review items: ``ix_review_state``;
* results per connection in the last minute and hour: a primary-key range from the first
  result of the hour, found by bisection on the id (lisgw.store.live.first_id_at) the first
  time and by a short walk from the previous snapshot's start after that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from lisgw.store.live import connection_names, first_id_at
from lisgw.store.records import ConnectionState, OutboxState, QueueState, ReviewState
from lisgw.store.schema import connection_status, nodes, order_queue, outbox, results, review
from lisgw.store.status import LineStatus, NodeStatus

__all__ = ["ConnectionLine", "LiveStatus", "QueueDepths", "gateway_nodes", "live_status"]

MINUTE: Final = 60.0
HOUR: Final = 3600.0
DEPTH_STATES: Final = (str(OutboxState.PENDING), str(OutboxState.INFLIGHT), str(OutboxState.DEAD))


@dataclass(frozen=True, slots=True)
class ConnectionLine:
    """One connection as ``top`` shows it: the gateway's report (None when it has not
    reported this connection) and what the store holds for it."""

    name: str
    status: LineStatus | None
    downloads_queued: int
    results_last_minute: int
    results_last_hour: int


@dataclass(frozen=True, slots=True)
class QueueDepths:
    """What waits: outbox rows by state (pending, inflight, dead), the oldest pending
    row's time, open review items, order downloads queued for the analyzers."""

    outbox: Mapping[str, int]
    oldest_pending_at: float | None
    review_open: int
    downloads_queued: int


@dataclass(frozen=True, slots=True)
class LiveStatus:
    """One snapshot for ``top``. ``results_from_id``: the first result id of the last hour,
    to pass back as ``results_hint`` next time (the window only moves forward)."""

    now: float
    nodes: tuple[NodeStatus, ...]
    connections: tuple[ConnectionLine, ...]
    queues: QueueDepths
    results_from_id: int = 0


def live_status(
    conn: sa.Connection,
    now: float,
    *,
    connections: Sequence[str] | None = None,
    results_hint: int = 0,
) -> LiveStatus:
    """Nodes, connection lines (every known connection, or ``connections``), queue depths
    and results of the last minute and hour; ``results_hint`` is the previous snapshot's
    ``results_from_id``."""
    names = list(connections) if connections is not None else connection_names(conn)
    lines = {row.name: _line(row) for row in conn.execute(sa.select(connection_status))}
    queued = _downloads_queued(conn, names)
    from_id = _hour_start(conn, now, results_hint)
    recent = _recent_results(conn, now, from_id, names)
    shown = tuple(
        ConnectionLine(
            name=name,
            status=lines.get(name),
            downloads_queued=queued.get(name, 0),
            results_last_minute=recent.get(name, (0, 0))[0],
            results_last_hour=recent.get(name, (0, 0))[1],
        )
        for name in names
    )
    return LiveStatus(
        now=now,
        nodes=gateway_nodes(conn),
        connections=shown,
        queues=_queue_depths(conn, sum(queued.values())),
        results_from_id=from_id,
    )


def gateway_nodes(conn: sa.Connection) -> tuple[NodeStatus, ...]:
    """Every gateway process that has run on this store, by name."""
    rows = conn.execute(sa.select(nodes).order_by(nodes.c.name))
    return tuple(NodeStatus(**row._asdict()) for row in rows)


def _line(row: sa.Row[Any]) -> LineStatus:
    values = row._asdict()
    values["state"] = ConnectionState(values["state"])
    return LineStatus(**values)


def _downloads_queued(conn: sa.Connection, names: Sequence[str]) -> dict[str, int]:
    if not names:
        return {}
    # ix_order_queue_connection_state: connection first, so the IN list uses it.
    query = (
        sa.select(order_queue.c.connection, sa.func.count())
        .where(order_queue.c.connection.in_(list(names)))
        .where(order_queue.c.state == str(QueueState.QUEUED))
        .group_by(order_queue.c.connection)
    )
    return {name: int(count) for name, count in conn.execute(query)}


def _hour_start(conn: sa.Connection, now: float, hint: int) -> int:
    """The first result id of the last hour: a short walk from ``hint`` (the window moved
    on by one poll), or a bisection when there is no hint or nothing after it."""
    cutoff = now - HOUR
    if hint > 0:
        step = conn.execute(
            sa.select(results.c.id)
            .where(results.c.id >= hint, results.c.created_at >= cutoff)
            .order_by(results.c.id)
            .limit(1)
        ).scalar()
        if step is not None:
            return int(step)
    return first_id_at(conn, results, results.c.created_at, cutoff, low=max(hint, 0))


def _recent_results(
    conn: sa.Connection, now: float, from_id: int, names: Sequence[str]
) -> dict[str, tuple[int, int]]:
    if not names:
        return {}
    last_minute = sa.case((results.c.created_at >= now - MINUTE, 1), else_=0)
    query = (
        sa.select(results.c.connection, sa.func.sum(last_minute), sa.func.count())
        .where(results.c.id >= from_id, results.c.created_at >= now - HOUR)
        .where(results.c.connection.in_(list(names)))
        .group_by(results.c.connection)
    )
    return {name: (int(minute or 0), int(hour)) for name, minute, hour in conn.execute(query)}


def _queue_depths(conn: sa.Connection, downloads: int) -> QueueDepths:
    counts = dict.fromkeys(DEPTH_STATES, 0)
    oldest: float | None = None
    query = (
        sa.select(outbox.c.state, sa.func.count(), sa.func.min(outbox.c.created_at))
        .where(outbox.c.state.in_(DEPTH_STATES))
        .group_by(outbox.c.state)
    )
    for state, count, first in conn.execute(query):
        counts[state] = int(count)
        if state == str(OutboxState.PENDING):
            oldest = first
    is_open = review.c.state == str(ReviewState.OPEN)
    open_reviews = conn.scalar(sa.select(sa.func.count()).select_from(review).where(is_open))
    return QueueDepths(counts, oldest, int(open_reviews or 0), downloads)
