"""Small units of work for analyzer ingest and crash recovery.

Layer: store. Each function is one unit of work (see lisgw.store.archive for the
conventions): it takes a ``sqlalchemy.Connection`` inside the caller's transaction and
returns frozen dataclasses from lisgw.store.records, never rows.

* ``open_sessions``: the sessions a crash left open (no ``closed_at``), which recovery reads
  back from their committed frames (lisgw.services.recovery);
* ``session_message_ids``: the messages already kept for a session, so that recovery never
  processes a session twice;
* ``dead_on_arrival``: outbox rows whose payload could not be built (a value the HIS
  profile's character set cannot carry, lisgw.his.results), put in dead letter with the
  reason at once, for a technician to see: no worker ever claims them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from lisgw.store._sql import chunks, unique, write_audit
from lisgw.store.records import OutboxState, SessionRecord
from lisgw.store.schema import frames, messages, outbox, sessions

__all__ = ["dead_on_arrival", "open_sessions", "session_message_ids"]


def open_sessions(
    conn: sa.Connection, *, protocol: str | None = None, connections: Sequence[str] | None = None
) -> list[SessionRecord]:
    """Sessions not closed yet, oldest first, with their frame counts.

    ``protocol`` and ``connections`` narrow the search: a gateway recovers only the
    analyzer connections it serves (several processes may share one PostgreSQL store).
    """
    count = (
        sa.select(sa.func.count())
        .select_from(frames)
        .where(frames.c.session_id == sessions.c.id)
        .scalar_subquery()
    )
    query = sa.select(sessions, count.label("frames")).where(sessions.c.closed_at.is_(None))
    if protocol is not None:
        query = query.where(sessions.c.protocol == protocol)
    if connections is not None:
        names = unique(connections)
        if not names:
            return []
        query = query.where(sessions.c.connection.in_(names))
    rows = conn.execute(query.order_by(sessions.c.id))
    return [SessionRecord(**row._asdict()) for row in rows]


def session_message_ids(conn: sa.Connection, session_id: int) -> list[int]:
    """The ids of the messages kept for a session, in order."""
    query = (
        sa.select(messages.c.id).where(messages.c.session_id == session_id).order_by(messages.c.id)
    )
    return [int(message_id) for message_id in conn.execute(query).scalars()]


def dead_on_arrival(
    conn: sa.Connection, outbox_ids: Sequence[int], *, reason: str, now: float
) -> int:
    """Put pending outbox rows in dead letter with ``reason`` (audited); how many moved."""
    moved = 0
    for part in chunks(unique(outbox_ids)):
        result = conn.execute(
            sa.update(outbox)
            .where(outbox.c.id.in_(part), outbox.c.state == str(OutboxState.PENDING))
            .values(state=str(OutboxState.DEAD), last_error=reason, first_failed_at=now)
        )
        moved += result.rowcount
    for outbox_id in unique(outbox_ids):
        write_audit(
            conn,
            actor="gateway",
            action="outbox.dead",
            entity="outbox",
            entity_id=outbox_id,
            now=now,
            detail="payload could not be built",
        )
    return moved
