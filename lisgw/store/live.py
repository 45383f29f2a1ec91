"""Read units for the live views: ``lisgw tail`` (new traffic) and ``lisgw top`` (live state).

Layer: store. Imports sqlalchemy and lisgw.store.schema. Each function is one read-only unit of work
``f(conn, ...)`` returning frozen dataclasses; the commands run them in another process than
the gateway, on the same store, while it runs, every half second or second: every query
below is a primary-key range or an index lookup, never a scan of a table that grows.

* Traffic (tail): ``new_frames`` (the raw archive, frames joined to their session for the
  connection and protocol), ``new_messages`` (decoded messages with kind, state and reason;
  the raw bytes of outbound ones, which the frames table does not hold) and
  ``new_outbox_rows`` / ``outbox_by_ids`` / ``open_outbox_ids`` (ORU^R01 deliveries to the
  HIS). Rows come in id order after a cursor; a row of a filtered-out connection comes back
  with ``data`` (or ``raw``) None, so the caller sees every id and can tell a gap (an id not
  committed yet: PostgreSQL allocates ids before commit) from a row it does not want.
* Where to start: ``first_id_at`` finds the first id stored at or after a time by bisection
  on the primary key (ids grow with time: rows are stored as they arrive), ``nth_last_id``
  the id N rows back.
* Live state (top): lisgw.store.live_status.

``read_only_engine``: the technician commands read a SQLite store with a plain deferred
``BEGIN`` and ``query_only`` on, not the ``BEGIN IMMEDIATE`` the gateway's engine issues
(lisgw.store.database), so polling never takes the write lock from the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from lisgw.store.database import BUSY_TIMEOUT_MS
from lisgw.store.records import OutboxState
from lisgw.store.schema import (
    connections,
    frames,
    messages,
    outbox,
    sessions,
)

__all__ = [
    "Delivery",
    "FrameRow",
    "MessageRow",
    "connection_names",
    "first_id_at",
    "last_id",
    "new_frames",
    "new_messages",
    "new_outbox_rows",
    "nth_last_id",
    "open_outbox_ids",
    "outbox_by_ids",
    "read_only_engine",
]

_OPEN_OUTBOX: Final = (str(OutboxState.PENDING), str(OutboxState.INFLIGHT))


@dataclass(frozen=True, slots=True)
class FrameRow:
    """One archived frame with its session's connection and protocol; ``data`` is None
    when the connection is filtered out."""

    id: int
    session_id: int
    seq: int
    connection: str
    protocol: str
    direction: str
    at: float
    data: bytes | None


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One decoded message; ``raw`` only for outbound messages of wanted connections
    (inbound ones are in the frames), ``wanted`` False when filtered out."""

    id: int
    session_id: int | None
    connection: str
    direction: str
    protocol: str
    kind: str
    state: str
    reason: str
    received_at: float
    wanted: bool
    raw: bytes | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: an ORU^R01 for the HIS and how far its delivery got."""

    id: int
    connection: str
    sample_id: str
    control_id: str
    state: str
    attempts: int
    last_error: str
    created_at: float
    delivered_at: float | None
    first_failed_at: float | None
    payload: bytes


def read_only_engine(engine: Engine) -> Engine:
    """An engine for reading the store ``engine`` opens (module docstring); PostgreSQL's
    is returned as is. The caller disposes of both."""
    if engine.dialect.name != "sqlite":
        return engine
    reader = sa.create_engine(engine.url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    event.listen(reader, "connect", _reader_on_connect)
    event.listen(reader, "begin", _reader_on_begin)
    return reader


def _reader_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we begin (deferred) in _reader_on_begin
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA query_only=ON")
    finally:
        cursor.close()


def _reader_on_begin(connection: sa.Connection) -> None:
    # Deferred: a read snapshot of the WAL, no lock that would make the gateway wait.
    connection.exec_driver_sql("BEGIN")


# -- traffic (tail) -----------------------------------------------------------------------


def connection_names(conn: sa.Connection) -> list[str]:
    """Every connection the store knows, by name."""
    return list(conn.scalars(sa.select(connections.c.name).order_by(connections.c.name)))


def last_id(conn: sa.Connection, table: sa.Table) -> int:
    """The largest id of ``table`` (0 when empty)."""
    return int(conn.scalar(sa.select(sa.func.max(table.c.id))) or 0)


def nth_last_id(
    conn: sa.Connection, table: sa.Table, count: int, *, connections: Sequence[str] | None = None
) -> int:
    """The id before the last ``count`` rows of ``table`` (frames or messages; of
    ``connections`` only when given): the cursor that shows them next (0: from the start)."""
    if count <= 0:
        return last_id(conn, table)
    query = sa.select(table.c.id)
    if connections is not None and table is frames:
        query = query.join(sessions, sessions.c.id == frames.c.session_id)
        query = query.where(sessions.c.connection.in_(list(connections)))
    elif connections is not None:
        query = query.where(table.c.connection.in_(list(connections)))
    query = query.order_by(table.c.id.desc()).offset(count).limit(1)
    return int(conn.scalar(query) or 0)


def first_id_at(
    conn: sa.Connection, table: sa.Table, column: sa.Column[Any], at: float, *, low: int = 0
) -> int:
    """The first id (from ``low`` on) whose ``column`` is at or after ``at``, found by
    bisection on the primary key (ids grow with time); last id + 1 when there is none."""
    high = last_id(conn, table) + 1
    while low < high:
        middle = (low + high) // 2
        row = conn.execute(
            sa.select(table.c.id, column).where(table.c.id >= middle).order_by(table.c.id).limit(1)
        ).one_or_none()
        if row is None or row[1] >= at:
            high = middle
        else:
            low = int(row[0]) + 1
    return low


def _wanted(column: sa.ColumnElement[Any], names: Sequence[str] | None) -> sa.ColumnElement[bool]:
    return sa.true() if names is None else column.in_(list(names))


def new_frames(
    conn: sa.Connection,
    after: int,
    *,
    connections: Sequence[str] | None = None,
    limit: int = 500,
    ids: Sequence[int] = (),
) -> list[FrameRow]:
    """Frames with an id after ``after`` (up to ``limit``), or with one of ``ids``."""
    wanted = _wanted(sessions.c.connection, connections)
    query = sa.select(
        frames.c.id,
        frames.c.session_id,
        frames.c.seq,
        sessions.c.connection,
        sessions.c.protocol,
        frames.c.direction,
        frames.c.at,
        sa.case((wanted, frames.c.data), else_=sa.null()).label("data"),
    ).join(sessions, sessions.c.id == frames.c.session_id)
    if ids:
        query = query.where(frames.c.id.in_(list(ids)))
    else:
        query = query.where(frames.c.id > after).limit(limit)
    return [FrameRow(**row._asdict()) for row in conn.execute(query.order_by(frames.c.id))]


def new_messages(
    conn: sa.Connection,
    after: int,
    *,
    connections: Sequence[str] | None = None,
    limit: int = 500,
    ids: Sequence[int] = (),
) -> list[MessageRow]:
    """Messages with an id after ``after`` (up to ``limit``), or with one of ``ids``."""
    wanted = _wanted(messages.c.connection, connections)
    outbound = sa.and_(wanted, messages.c.direction == "out")
    query = sa.select(
        messages.c.id,
        messages.c.session_id,
        sa.func.coalesce(messages.c.connection, "").label("connection"),
        messages.c.direction,
        messages.c.protocol,
        messages.c.kind,
        messages.c.state,
        messages.c.reason,
        messages.c.received_at,
        sa.case((wanted, sa.true()), else_=sa.false()).label("wanted"),
        sa.case((outbound, messages.c.raw), else_=sa.null()).label("raw"),
    )
    if ids:
        query = query.where(messages.c.id.in_(list(ids)))
    else:
        query = query.where(messages.c.id > after).limit(limit)
    rows = conn.execute(query.order_by(messages.c.id))
    return [MessageRow(**{**row._asdict(), "wanted": bool(row.wanted)}) for row in rows]


def _delivery_query() -> sa.Select[Any]:
    return sa.select(
        outbox.c.id,
        outbox.c.connection,
        outbox.c.sample_id,
        outbox.c.control_id,
        outbox.c.state,
        outbox.c.attempts,
        outbox.c.last_error,
        outbox.c.created_at,
        outbox.c.delivered_at,
        outbox.c.first_failed_at,
        outbox.c.payload,
    )


def new_outbox_rows(conn: sa.Connection, after: int, *, limit: int = 500) -> list[Delivery]:
    """Outbox rows with an id after ``after``, in id order."""
    query = _delivery_query().where(outbox.c.id > after).order_by(outbox.c.id).limit(limit)
    return [Delivery(**row._asdict()) for row in conn.execute(query)]


def outbox_by_ids(conn: sa.Connection, ids: Sequence[int]) -> list[Delivery]:
    """The outbox rows with these ids (those a follower watches until they are delivered)."""
    if not ids:
        return []
    query = _delivery_query().where(outbox.c.id.in_(list(ids))).order_by(outbox.c.id)
    return [Delivery(**row._asdict()) for row in conn.execute(query)]


def open_outbox_ids(conn: sa.Connection, *, after: int = 0, up_to: int, limit: int) -> list[int]:
    """Ids of pending or inflight outbox rows in (``after``, ``up_to``], oldest first."""
    query = (
        sa.select(outbox.c.id)
        .where(outbox.c.state.in_(_OPEN_OUTBOX), outbox.c.id > after, outbox.c.id <= up_to)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    return [int(value) for value in conn.scalars(query)]
