"""Units of work for the raw archive: connections, sessions, frames, messages, audit.

Layer: store. Each function is one unit of work: it takes an open ``sqlalchemy.Connection``
inside a transaction (lisgw.store.runner.Store opens and commits it) and returns frozen
dataclasses from lisgw.store.records, never rows.

Durability before acknowledgement (issue 5): the link services call ``append_frames`` with
every frame they accepted since the last commit — from one link or from many — and send the
ACKs only once it has returned; one transaction, one fsync, however many frames: that is
the group commit. A frame is identified by (session, seq), so a batch retried after a
commit whose outcome is unknown stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Required, TypedDict, Unpack

import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.model import Instrument, NormalizedMessage
from lisgw.store._bulk import insert_many
from lisgw.store._sql import ensure_connection, write_audit
from lisgw.store.records import (
    AuditRecord,
    ConnectionRecord,
    Direction,
    FrameIn,
    FrameRecord,
    FramesAppended,
    MessageRecord,
    MessageState,
    SessionRecord,
)
from lisgw.store.schema import audit, connections, frames, messages, sessions

__all__ = [
    "add_audit",
    "append_frames",
    "audit_trail",
    "close_session",
    "end_session",
    "get_connection",
    "get_message",
    "keep_message",
    "messages_in_state",
    "note_instrument",
    "open_session",
    "register_connection",
    "save_message",
    "session_frames",
    "set_message_state",
    "touch_instrument",
]

# note_instrument: an unchanged instrument's last_seen_at is written at most this often (s).
SEEN_REFRESH: Final = 60.0
_FRAME_COLUMNS: Final = ("session_id", "seq", "direction", "data", "at")

# Statements of the per-transfer path, built once (no statement built per call).
_CONNECTION_BY_NAME: Final = sa.select(connections).where(
    connections.c.name == sa.bindparam("name")
)
_TOUCH_INSTRUMENT: Final = (
    sa.update(connections)
    .where(
        connections.c.name == sa.bindparam("conn_name"),
        sa.or_(
            connections.c.instrument_name != sa.bindparam("inst_name"),
            connections.c.instrument_serial != sa.bindparam("inst_serial"),
            connections.c.instrument_software != sa.bindparam("inst_software"),
            connections.c.last_seen_at < sa.bindparam("stale_before"),
        ),
    )
    .values(
        instrument_name=sa.bindparam("inst_name"),
        instrument_serial=sa.bindparam("inst_serial"),
        instrument_software=sa.bindparam("inst_software"),
        last_seen_at=sa.bindparam("seen_at"),
    )
)
_OPEN_SESSION: Final = sa.insert(sessions).returning(*sessions.c)
_END_SESSION: Final = (
    sa.update(sessions)
    .where(sessions.c.id == sa.bindparam("session"), sessions.c.closed_at.is_(None))
    .values(closed_at=sa.bindparam("ended_at"), close_reason=sa.bindparam("why"))
)
_SESSION_WITH_COUNT: Final = sa.select(
    sessions,
    sa.select(sa.func.count())
    .select_from(frames)
    .where(frames.c.session_id == sessions.c.id)
    .scalar_subquery()
    .label("frame_count"),
).where(sessions.c.id == sa.bindparam("id"))


def register_connection(
    conn: sa.Connection,
    name: str,
    *,
    driver: str = "",
    protocol: str = "",
    transport: str = "",
    now: float,
) -> ConnectionRecord:
    """Create or update a connection (an analyzer or HIS link named in the config)."""
    ensure_connection(conn, name, now)
    values = {"driver": driver, "protocol": protocol, "transport": transport, "last_seen_at": now}
    conn.execute(sa.update(connections).where(connections.c.name == name).values(values))
    return get_connection(conn, name)


def note_instrument(
    conn: sa.Connection, name: str, instrument: Instrument, *, now: float
) -> ConnectionRecord:
    """Record the instrument a connection announced (ASTM H.5, HL7 MSH-3): the
    connection's row is created when missing, then ``touch_instrument``; returns the row."""
    ensure_connection(conn, name, now)
    touch_instrument(conn, name, instrument, now=now)
    return get_connection(conn, name)


def touch_instrument(conn: sa.Connection, name: str, instrument: Instrument, *, now: float) -> bool:
    """Write the instrument on the connection's existing row if it changed or
    ``last_seen_at`` is older than ``SEEN_REFRESH`` seconds; whether the row was written.

    Every transfer notes its instrument (the ingest pipeline calls this one directly: its
    session already refers to the row). It is one conditional UPDATE: an unchanged
    instrument matches no row, so nothing is written and no row lock is taken (on
    PostgreSQL a written row stays locked until the transfer commits, and other units
    touching it would wait)."""
    values = {
        "conn_name": name,
        "inst_name": instrument.name,
        "inst_serial": instrument.serial,
        "inst_software": instrument.software,
        "seen_at": now,
        "stale_before": now - SEEN_REFRESH,
    }
    return bool(conn.execute(_TOUCH_INSTRUMENT, values).rowcount)


def get_connection(conn: sa.Connection, name: str) -> ConnectionRecord:
    row = conn.execute(_CONNECTION_BY_NAME, {"name": name}).one_or_none()
    if row is None:
        raise StoreError(f"no connection {name!r}")
    return ConnectionRecord(**row._asdict())


def open_session(
    conn: sa.Connection,
    connection: str,
    *,
    protocol: str,
    peer: str,
    now: float,
    ensure: bool = True,
) -> SessionRecord:
    """Start a session (a TCP connection, a serial line opening, an MLLP client).

    ``ensure=False``: the caller knows the connection's row exists (the frame journal, once
    a session of that connection was committed), which saves a statement per session."""
    if ensure:
        ensure_connection(conn, connection, now)
    values = {
        "connection": connection,
        "protocol": protocol,
        "peer": peer,
        "opened_at": now,
        "closed_at": None,
        "close_reason": "",
    }
    row = conn.execute(_OPEN_SESSION, values).one()
    return SessionRecord(**row._asdict(), frames=0)


def append_frames(
    conn: sa.Connection, batch: Sequence[FrameIn], *, one_statement: bool = False
) -> FramesAppended:
    """Archive many accepted frames in this one transaction: the group commit.

    Frames already stored (same session and seq) are skipped, never an error.
    ``one_statement``: as one multi-row INSERT, atomic by itself (for Store.run_statement).
    """
    if not batch:
        return FramesAppended(0, 0)
    # The journal's hot path (every frame, before its ACK): a plain executemany of tuples
    # (lisgw.store._bulk), the count of inserted rows from the driver, no RETURNING.
    rows = [(f.session_id, f.seq, str(f.direction), f.data, f.at) for f in batch]
    inserted = insert_many(
        conn,
        frames,
        _FRAME_COLUMNS,
        rows,
        conflict=("session_id", "seq"),
        one_statement=one_statement,
    )
    return FramesAppended(inserted=inserted, duplicates=len(rows) - inserted)


def close_session(
    conn: sa.Connection, session_id: int, *, reason: str = "", now: float
) -> SessionRecord:
    """End a session; closing a closed session keeps its first close time and reason."""
    end_session(conn, session_id, reason=reason, now=now)
    row = conn.execute(_SESSION_WITH_COUNT, {"id": session_id}).one_or_none()
    if row is None:
        raise StoreError(f"no session {session_id}")
    values = row._asdict()
    frame_count = values.pop("frame_count")
    return SessionRecord(**values, frames=int(frame_count))


def end_session(conn: sa.Connection, session_id: int, *, reason: str = "", now: float) -> None:
    """``close_session`` without reading the session back (the ingest pipeline's path)."""
    conn.execute(_END_SESSION, {"session": session_id, "ended_at": now, "why": reason})


def session_frames(conn: sa.Connection, session_id: int) -> list[FrameRecord]:
    """Every frame of a session, in wire order (recovery, the CLI's tail)."""
    rows = conn.execute(
        sa.select(frames).where(frames.c.session_id == session_id).order_by(frames.c.seq)
    )
    return [
        FrameRecord(r.id, r.session_id, r.seq, Direction(r.direction), r.data, r.at) for r in rows
    ]


class MessageFields(TypedDict, total=False):
    """``keep_message``'s keyword arguments, as ``save_message`` passes them on."""

    direction: Required[Direction]
    protocol: Required[str]
    kind: Required[str]
    now: Required[float]
    connection: str | None
    session_id: int | None
    driver: str
    normalized: NormalizedMessage | Mapping[str, Any] | None
    state: MessageState
    reason: str


def save_message(conn: sa.Connection, raw: bytes, **fields: Unpack[MessageFields]) -> MessageRecord:
    """``keep_message``, then the stored message read back (its record)."""
    return get_message(conn, keep_message(conn, raw, **fields))


def keep_message(
    conn: sa.Connection,
    raw: bytes,
    *,
    direction: Direction,
    protocol: str,
    kind: str,
    now: float,
    connection: str | None = None,
    session_id: int | None = None,
    driver: str = "",
    normalized: NormalizedMessage | Mapping[str, Any] | None = None,
    state: MessageState = MessageState.RECEIVED,
    reason: str = "",
) -> int:
    """Keep one message, raw bytes exact, with its normalized form when there is one;
    return its id (the ingest pipeline's path: nothing read back).

    The connection's row is created when missing, unless the message belongs to a session:
    a session's row already refers to its connection's (a foreign key), so the check would
    only cost a statement per message."""
    if connection is not None and session_id is None:
        ensure_connection(conn, connection, now)
    document = normalized.to_json() if isinstance(normalized, NormalizedMessage) else normalized
    values = {
        "session_id": session_id,
        "connection": connection,
        "direction": str(direction),
        "protocol": protocol,
        "kind": kind,
        "driver": driver,
        "raw": raw,
        "normalized": dict(document) if document is not None else None,
        "state": str(state),
        "reason": reason,
        "received_at": now,
        "updated_at": now,
    }
    return int(conn.execute(_KEEP_MESSAGE, values).scalar_one())


_KEEP_MESSAGE: Final = sa.insert(messages).returning(messages.c.id)


def set_message_state(
    conn: sa.Connection, message_id: int, state: MessageState, *, reason: str = "", now: float
) -> MessageRecord:
    """Move a message on (routed, rejected with the reason, processed …)."""
    row = conn.execute(
        sa.update(messages)
        .where(messages.c.id == message_id)
        .values(state=str(state), reason=reason, updated_at=now)
        .returning(*messages.c)
    ).one_or_none()
    if row is None:
        raise StoreError(f"no message {message_id}")
    return _message(row)


def get_message(conn: sa.Connection, message_id: int) -> MessageRecord:
    row = conn.execute(sa.select(messages).where(messages.c.id == message_id)).one_or_none()
    if row is None:
        raise StoreError(f"no message {message_id}")
    return _message(row)


def messages_in_state(
    conn: sa.Connection, state: MessageState, *, limit: int = 100, connection: str | None = None
) -> list[MessageRecord]:
    """Messages in ``state``, oldest first: after a restart, RECEIVED ones are reprocessed."""
    query = sa.select(messages).where(messages.c.state == str(state))
    if connection is not None:
        query = query.where(messages.c.connection == connection)
    rows = conn.execute(query.order_by(messages.c.id).limit(limit))
    return [_message(row) for row in rows]


def add_audit(
    conn: sa.Connection,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | int,
    now: float,
    detail: str = "",
) -> AuditRecord:
    """Record a technician action or a state change. Never put patient data in ``detail``."""
    audit_id = write_audit(
        conn,
        actor=actor,
        action=action,
        entity=entity,
        entity_id=entity_id,
        now=now,
        detail=detail,
    )
    return AuditRecord(audit_id, now, actor, action, entity, str(entity_id), detail)


def audit_trail(
    conn: sa.Connection, *, entity: str | None = None, entity_id: str | int | None = None
) -> list[AuditRecord]:
    """Audit rows, oldest first, for one entity or all."""
    query = sa.select(audit)
    if entity is not None:
        query = query.where(audit.c.entity == entity)
    if entity_id is not None:
        query = query.where(audit.c.entity_id == str(entity_id))
    return [AuditRecord(**row._asdict()) for row in conn.execute(query.order_by(audit.c.id))]


def _message(row: sa.Row[Any]) -> MessageRecord:
    return MessageRecord(
        id=row.id,
        session_id=row.session_id,
        connection=row.connection,
        direction=Direction(row.direction),
        protocol=row.protocol,
        kind=row.kind,
        driver=row.driver,
        raw=row.raw,
        state=MessageState(row.state),
        reason=row.reason,
        received_at=row.received_at,
        normalized=MappingProxyType(row.normalized) if row.normalized is not None else None,
    )
