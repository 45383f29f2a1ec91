"""Units of work for host queries (an analyzer asks for its orders) and their replies.

Layer: store. Imports sqlalchemy and lisgw.model. Each function is one unit of work (see
lisgw.store.archive for the conventions). The query's message and the reply's message are
kept raw in ``messages`` like every other; these rows link them and say what was answered.

``cancel_query`` applies an analyzer's query cancel (HL7 QCN^J01, which names the query by its
tag, QID-1 = the query's QPD-2): the connection's latest open query with that tag becomes
``cancelled``. ``cancel_open_queries`` applies an E1394 abort (a Q record with request status
``A``, which names no query): the connection's open queries up to the abort's own become
``cancelled``. An answered query stays answered (the reply went
out: history is not rewritten); no open query with the tag gives None, for the caller to note.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.model import Query
from lisgw.store.archive import save_message
from lisgw.store.records import Direction, MessageState, QueryRecord, QueryState, ReplyRecord
from lisgw.store.schema import messages, queries, replies

__all__ = ["cancel_open_queries", "cancel_query", "save_query", "save_reply"]


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


def cancel_query(
    conn: sa.Connection, connection: str, query_tag: str, *, now: float
) -> QueryRecord | None:
    """Mark ``connection``'s latest open query tagged ``query_tag`` cancelled (None: none).

    ``now`` is when the cancel arrived; the schema keeps no separate cancel time, so it is
    recorded as ``answered_at`` (the query's end), the state saying how it ended.
    """
    if not query_tag:
        return None
    found = conn.execute(
        sa.select(queries.c.id)
        .where(
            queries.c.connection == connection,
            queries.c.query_tag == query_tag,
            queries.c.state == str(QueryState.OPEN),
        )
        .order_by(queries.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if found is None:
        return None
    row = conn.execute(
        sa.update(queries)
        .where(queries.c.id == found)
        .values(state=str(QueryState.CANCELLED), answered_at=now)
        .returning(*queries.c)
    ).one()
    return _query(row)


def cancel_open_queries(
    conn: sa.Connection, connection: str, *, up_to_message_id: int, now: float
) -> int:
    """Mark ``connection``'s open queries carried by messages up to ``up_to_message_id``
    (the abort's own message included) cancelled; how many."""
    result = conn.execute(
        sa.update(queries)
        .where(
            queries.c.connection == connection,
            queries.c.state == str(QueryState.OPEN),
            queries.c.message_id <= up_to_message_id,
        )
        .values(state=str(QueryState.CANCELLED), answered_at=now)
    )
    return int(result.rowcount)


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
