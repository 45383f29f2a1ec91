"""The queues technicians work on: the outbox and the review queue, listed and acted upon.

Layer: store. Imports sqlalchemy. Each function is one unit of work (see lisgw.store.archive
for the conventions). Listings are read only and indexed: by state (ix_outbox_state_next_
attempt_at, ix_review_state), by sample (ix_outbox_sample_id_state_id), or newest first on
the primary key within a time window (lisgw.store.views.id_bounds).

Actions, each written to the audit trail with the technician's user name:

* ``retry_outbox``: a dead letter goes back to pending, attempts reset
  (lisgw.store.outbox.outbox_requeue); a pending row waiting for its next attempt is made
  due now (``outbox.retry-now``). Rows in flight or delivered are refused.
* ``assign_review`` / ``discard_review``: a review item is assigned to someone, or
  discarded with a note (lisgw.store.results.set_review_state). Items already resolved or
  discarded are refused.

Refusals raise ``StoreError`` naming the row and why; nothing is changed then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.store._sql import write_audit
from lisgw.store.outbox import outbox_requeue, outbox_row
from lisgw.store.records import OutboxRow, OutboxState, ReviewState
from lisgw.store.results import set_review_state
from lisgw.store.schema import outbox, results, review
from lisgw.store.views import ANY_TIME, TimeWindow, windowed

__all__ = [
    "OutboxRetried",
    "ReviewItem",
    "assign_review",
    "discard_review",
    "get_review",
    "list_outbox",
    "list_review",
    "outbox_by_ids",
    "retry_outbox",
]


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """A review row with the result it is about."""

    id: int
    result_id: int
    state: str
    reason: str
    assignee: str
    note: str
    created_at: float
    updated_at: float
    connection: str
    sample_id: str
    test: str
    value: str
    units: str
    match: str


@dataclass(frozen=True, slots=True)
class OutboxRetried:
    """What ``retry_outbox`` did to one row: ``requeued`` (was dead) or ``due-now``."""

    row: OutboxRow
    action: str
    was: str


def list_outbox(
    conn: sa.Connection,
    *,
    state: str | None = None,
    reason: str | None = None,
    sample_id: str | None = None,
    analyzer: str | None = None,
    window: TimeWindow = ANY_TIME,
    limit: int = 50,
) -> list[OutboxRow]:
    """Outbox rows, newest first; ``reason`` matches the last error, case-insensitively."""
    query = sa.select(outbox)
    if state is not None:
        query = query.where(outbox.c.state == state)
    if sample_id is not None:
        query = query.where(outbox.c.sample_id == sample_id)
    if analyzer is not None:
        query = query.where(outbox.c.connection == analyzer)
    if reason:
        query = query.where(sa.func.lower(outbox.c.last_error).contains(reason.lower()))
    query = windowed(conn, query, outbox, "created_at", window)
    rows = conn.execute(query.order_by(outbox.c.id.desc()).limit(limit))
    return [outbox_row(row) for row in rows]


def outbox_by_ids(conn: sa.Connection, ids: Sequence[int]) -> dict[int, OutboxRow]:
    """The outbox rows with these ids (missing ones absent)."""
    if not ids:
        return {}
    rows = conn.execute(sa.select(outbox).where(outbox.c.id.in_(sorted(set(ids)))))
    return {row.id: outbox_row(row) for row in rows}


def retry_outbox(
    conn: sa.Connection, ids: Sequence[int], *, actor: str, now: float
) -> list[OutboxRetried]:
    """Send these rows again (module docstring); all or nothing: one refusal changes none."""
    found = outbox_by_ids(conn, ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise StoreError(f"no outbox row {', '.join(str(i) for i in missing)}")
    done: list[OutboxRetried] = []
    for outbox_id in ids:
        before = found[outbox_id]
        if before.state == OutboxState.DEAD:
            row = outbox_requeue(conn, outbox_id, actor=actor, now=now)
            done.append(OutboxRetried(row, "requeued", str(before.state)))
        elif before.state == OutboxState.PENDING:
            row = _due_now(conn, before, actor, now)
            done.append(OutboxRetried(row, "due-now", str(before.state)))
        else:
            raise StoreError(
                f"outbox row {outbox_id} is {before.state}: only dead or pending rows are retried"
            )
    return done


def _due_now(conn: sa.Connection, before: OutboxRow, actor: str, now: float) -> OutboxRow:
    row = conn.execute(
        sa.update(outbox)
        .where(outbox.c.id == before.id, outbox.c.state == str(OutboxState.PENDING))
        .values(next_attempt_at=now)
        .returning(*outbox.c)
    ).one_or_none()
    if row is None:
        raise StoreError(f"outbox row {before.id} changed meanwhile: try again")
    write_audit(
        conn,
        actor=actor,
        action="outbox.retry-now",
        entity="outbox",
        entity_id=before.id,
        now=now,
        detail=f"was due at {before.next_attempt_at:.0f}: {before.last_error}",
    )
    return outbox_row(row)


def list_review(
    conn: sa.Connection,
    *,
    state: str | None = str(ReviewState.OPEN),
    analyzer: str | None = None,
    sample_id: str | None = None,
    window: TimeWindow = ANY_TIME,
    limit: int = 50,
) -> list[ReviewItem]:
    """Review items with their results, oldest first (the queue's order); ``state`` None
    lists every state."""
    query = _review_query()
    if state is not None:
        query = query.where(review.c.state == state)
    if analyzer is not None:
        query = query.where(results.c.connection == analyzer)
    if sample_id is not None:
        query = query.where(results.c.sample_id == sample_id)
    query = windowed(conn, query, review, "created_at", window)
    return [_item(row) for row in conn.execute(query.order_by(review.c.id).limit(limit))]


def get_review(conn: sa.Connection, review_id: int) -> ReviewItem | None:
    row = conn.execute(_review_query().where(review.c.id == review_id)).one_or_none()
    return None if row is None else _item(row)


def assign_review(
    conn: sa.Connection, review_id: int, *, assignee: str, actor: str, now: float, note: str = ""
) -> ReviewItem:
    """Assign an open (or assigned) item to ``assignee``; audited as ``review.assigned``."""
    _open_item(conn, review_id, "assigned")
    set_review_state(
        conn, review_id, ReviewState.ASSIGNED, actor=actor, now=now, assignee=assignee, note=note
    )
    return _existing(conn, review_id)


def discard_review(
    conn: sa.Connection, review_id: int, *, actor: str, now: float, note: str = ""
) -> ReviewItem:
    """Discard an open or assigned item (the result is not delivered); audited."""
    _open_item(conn, review_id, "discarded")
    set_review_state(conn, review_id, ReviewState.DISCARDED, actor=actor, now=now, note=note)
    return _existing(conn, review_id)


def _open_item(conn: sa.Connection, review_id: int, verb: str) -> ReviewItem:
    item = _existing(conn, review_id)
    if item.state not in (ReviewState.OPEN, ReviewState.ASSIGNED):
        raise StoreError(f"review item {review_id} is {item.state}: it cannot be {verb}")
    return item


def _existing(conn: sa.Connection, review_id: int) -> ReviewItem:
    item = get_review(conn, review_id)
    if item is None:
        raise StoreError(f"no review item {review_id}")
    return item


def _review_query() -> sa.Select[Any]:
    return sa.select(
        review,
        results.c.connection,
        results.c.sample_id,
        results.c.test,
        results.c.value,
        results.c.units,
        results.c.match,
    ).select_from(review.join(results, results.c.id == review.c.result_id))


def _item(row: sa.Row[Any]) -> ReviewItem:
    return ReviewItem(
        id=row.id,
        result_id=row.result_id,
        state=row.state,
        reason=row.reason,
        assignee=row.assignee,
        note=row.note,
        created_at=row.created_at,
        updated_at=row.updated_at,
        connection=row.connection,
        sample_id=row.sample_id,
        test=row.test,
        value=row.value,
        units=row.units,
        match=row.match,
    )
