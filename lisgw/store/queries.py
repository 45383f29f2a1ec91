"""Units of work for host queries (an analyzer asks for its orders) and their replies.

Layer: store. Imports sqlalchemy and lisgw.model. Each function is one unit of work (see
lisgw.store.archive for the conventions). The query's message and the reply's message are
kept raw in ``messages`` like every other; these rows link them and say what was answered.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.model import Query
from lisgw.store.archive import save_message
from lisgw.store.records import Direction, MessageState, QueryRecord, QueryState, ReplyRecord
from lisgw.store.schema import messages, queries, replies

__all__ = ["save_query", "save_reply"]


def save_query(conn: sa.Connection, message_id: int, query: Query, *, now: float) -> QueryRecord:
    """Record the host query carried by a stored message (its connection is the message's)."""
    connection = conn.execute(
        sa.select(messages.c.connection).where(messages.c.id == message_id)
    ).one_or_none()
    if connection is None:
        raise StoreError(f"no message {message_id}")
    values = {
        "message_id": message_id,
        "connection": connection[0],
        "sample_ids": list(query.sample_ids),
        "query_tag": query.query_tag,
        "state": str(QueryState.OPEN),
        "received_at": now,
        "answered_at": None,
    }
    row = conn.execute(sa.insert(queries).returning(*queries.c), values).one()
    return _query(row)


def save_reply(
    conn: sa.Connection,
    query_id: int,
    raw: bytes,
    *,
    tests: int,
    now: float,
    session_id: int | None = None,
) -> ReplyRecord:
    """Keep the reply sent to a host query (raw, as an outbound message); query answered."""
    query = conn.execute(sa.select(queries).where(queries.c.id == query_id)).one_or_none()
    if query is None:
        raise StoreError(f"no query {query_id}")
    asked = conn.execute(
        sa.select(messages.c.protocol).where(messages.c.id == query.message_id)
    ).scalar_one()
    message = save_message(
        conn,
        raw,
        direction=Direction.OUT,
        protocol=asked,
        kind="query_reply",
        now=now,
        connection=query.connection,
        session_id=session_id,
        state=MessageState.SENT,
    )
    values = {"query_id": query_id, "message_id": message.id, "tests": tests, "sent_at": now}
    reply_id = conn.execute(sa.insert(replies).returning(replies.c.id), values).scalar_one()
    conn.execute(
        sa.update(queries)
        .where(queries.c.id == query_id)
        .values(state=str(QueryState.ANSWERED), answered_at=now)
    )
    return ReplyRecord(int(reply_id), query_id, message.id, tests, now)


def _query(row: sa.Row[Any]) -> QueryRecord:
    return QueryRecord(
        id=row.id,
        message_id=row.message_id,
        connection=row.connection,
        sample_ids=tuple(row.sample_ids),
        query_tag=row.query_tag,
        state=QueryState(row.state),
        received_at=row.received_at,
        answered_at=row.answered_at,
    )
