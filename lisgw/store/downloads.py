"""Units of work for orders going to analyzers: host-query lookups and batch downloads.

Layer: store. Imports sqlalchemy. Each function is one unit of work (see
lisgw.store.archive for the conventions); the services lisgw.services.responder and
lisgw.services.download run them through ``Store.run``.

* ``query_lookup`` — what a host query needs, in one transaction: the query row the ingest
  recorded for the message, and the open tests of the asked samples for that analyzer. The
  lookup goes orders (``ix_orders_sample_id``) → order_tests (unique ``order_id, his_code``)
  → order_queue (unique ``order_test_id, connection``): index lookups whatever the number of
  orders stored. Tests already downloaded (``sent``) are answered again: an analyzer asking
  for a sample again (a rerun, a lost worklist) must get its tests, not "no orders".
* ``due_downloads`` — queued tests of one analyzer whose next attempt is due
  (``ix_order_queue_connection_state``), oldest first, whole samples only.
* ``record_reply`` — the reply the analyzer accepted kept and linked to its query, its
  tests marked sent.
* ``record_download`` — the message sent kept raw (outbound, ``orders``) and its tests
  marked sent; ``download_failed`` — attempts + 1, the reason, the next attempt's time (the
  tests stay queued, visible with ``lisgw`` queue commands).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from lisgw.store._sql import chunks, unique
from lisgw.store.archive import save_message
from lisgw.store.order_lookups import mark_queue_sent
from lisgw.store.queries import save_reply
from lisgw.store.records import (
    Direction,
    MessageState,
    OrderState,
    QueuedTest,
    QueueState,
    TestState,
)
from lisgw.store.schema import order_queue, order_tests, orders, queries

__all__ = [
    "QueryLookup",
    "download_failed",
    "due_downloads",
    "query_lookup",
    "record_download",
    "record_reply",
]


@dataclass(frozen=True, slots=True)
class QueryLookup:
    """The query row of a stored query message (None if the ingest recorded none) and the
    open tests of its samples for the analyzer."""

    query_id: int | None
    tests: tuple[QueuedTest, ...]


def _queued_select() -> sa.Select[tuple[object, ...]]:
    return sa.select(
        order_queue.c.id.label("queue_id"),
        order_queue.c.connection,
        order_queue.c.analyzer_code,
        orders.c.placer,
        orders.c.sample_id,
        order_tests.c.his_code,
        orders.c.priority,
        orders.c.patient_id,
        orders.c.patient_name,
        orders.c.ordered_at,
    ).select_from(
        orders.join(order_tests, order_tests.c.order_id == orders.c.id).join(
            order_queue, order_queue.c.order_test_id == order_tests.c.id
        )
    )


def query_lookup(
    conn: sa.Connection, message_id: int, connection: str, sample_ids: Sequence[str]
) -> QueryLookup:
    """The query recorded for ``message_id`` and the open tests of ``sample_ids`` that
    ``connection`` performs (queued or already sent), in queue order."""
    query_id = conn.execute(
        sa.select(queries.c.id).where(queries.c.message_id == message_id).limit(1)
    ).scalar_one_or_none()
    found: list[QueuedTest] = []
    for part in chunks(unique(sample_ids)):
        select = _queued_select().where(
            orders.c.sample_id.in_(part),
            orders.c.state != str(OrderState.CANCELLED),
            order_tests.c.state == str(TestState.OPEN),
            order_queue.c.connection == connection,
            order_queue.c.state.in_((str(QueueState.QUEUED), str(QueueState.SENT))),
        )
        found.extend(QueuedTest(**row._asdict()) for row in conn.execute(select))
    found.sort(key=lambda test: test.queue_id)
    return QueryLookup(None if query_id is None else int(query_id), tuple(found))


def due_downloads(
    conn: sa.Connection, connection: str, *, now: float, limit: int = 200
) -> list[QueuedTest]:
    """Queued tests of ``connection`` due for a download (never tried, or their next
    attempt has come), oldest first; at most about ``limit`` rows, whole samples only."""
    due = sa.or_(order_queue.c.next_attempt_at.is_(None), order_queue.c.next_attempt_at <= now)
    select = (
        _queued_select()
        .where(
            order_queue.c.connection == connection,
            order_queue.c.state == str(QueueState.QUEUED),
            order_tests.c.state == str(TestState.OPEN),
            orders.c.state != str(OrderState.CANCELLED),
            due,
        )
        .order_by(order_queue.c.id)
        .limit(limit + 1)
    )
    rows = [QueuedTest(**row._asdict()) for row in conn.execute(select)]
    if len(rows) <= limit:
        return rows
    # The last sample may be cut: leave it whole for the next batch (unless it is alone).
    last = rows[-1].sample_id
    kept = [row for row in rows[:limit] if row.sample_id != last]
    return kept or rows[:limit]


def record_download(
    conn: sa.Connection,
    connection: str,
    raw: bytes,
    queue_ids: Sequence[int],
    *,
    now: float,
    protocol: str = "astm",
    kind: str = "orders",
) -> int:
    """Keep the message the analyzer accepted (outbound) and mark its tests sent; how many
    were still queued."""
    save_message(
        conn,
        raw,
        direction=Direction.OUT,
        protocol=protocol,
        kind=kind,
        now=now,
        connection=connection,
        state=MessageState.SENT,
    )
    return mark_queue_sent(conn, queue_ids, now=now)


def record_reply(
    conn: sa.Connection,
    query_id: int,
    raw: bytes,
    queue_ids: Sequence[int],
    *,
    now: float,
    session_id: int | None = None,
) -> int:
    """The reply the analyzer accepted, kept (``save_reply``: the query answered) and its
    tests marked sent, in one transaction; how many were still queued."""
    save_reply(conn, query_id, raw, tests=len(set(queue_ids)), now=now, session_id=session_id)
    return mark_queue_sent(conn, queue_ids, now=now)


def download_failed(
    conn: sa.Connection,
    queue_ids: Sequence[int],
    *,
    error: str,
    next_attempt_at: float,
) -> int:
    """One more failed attempt for these queued tests: attempts + 1, ``last_error``,
    ``next_attempt_at``; how many were still queued."""
    count = 0
    for part in chunks(unique(queue_ids)):
        result = conn.execute(
            sa.update(order_queue)
            .where(order_queue.c.id.in_(part), order_queue.c.state == str(QueueState.QUEUED))
            .values(
                attempts=order_queue.c.attempts + 1,
                last_error=error,
                next_attempt_at=next_attempt_at,
            )
        )
        count += result.rowcount
    return count
