"""Units of work for the outbox: claim due deliveries, record their outcome, requeue.

Layer: store. Imports sqlalchemy. Each function is one unit of work (see
lisgw.store.archive for the conventions).

Row life: ``pending`` → (claimed) ``inflight`` → ``delivered`` on the HIS's AA; back to
``pending`` with a later ``next_attempt_at`` on a failure (``outbox_retry``); ``dead`` on
AE/AR or exhausted retries (``outbox_dead``), from where a technician may ``outbox_requeue``.

``claim_outbox`` is safe with several workers and several gateway processes on one
PostgreSQL database: candidates are selected ``FOR UPDATE … SKIP LOCKED`` (a row another
worker is claiming is skipped, not waited for) and updated to ``inflight`` in the same
transaction, so no two workers ever hold the same row. On SQLite the transaction already
holds the single write lock (``BEGIN IMMEDIATE``, lisgw.store.database), which serializes
claims. A worker that dies leaves its rows ``inflight`` until their lease runs out; then any
worker may claim them again (``attempts`` counts claims, so such an attempt is counted).

Per-sample order: a row is claimable only when no earlier row (smaller id) for the same
sample is ``pending`` or ``inflight``; a ``dead`` row does not block the rows after it (a
dead letter waits for a technician; the sample's later results, corrections included, still
go). Rows with an empty sample ID are all one "sample", delivered in order. The order is that
of the ids, which is the order in which rows were saved for one connection (its messages
are routed one after another); rows of one sample saved at the same moment by two
connections are ordered by whichever got its id first.

Outcomes are recorded only by the worker that holds the claim (``claimed_by``): a worker
whose lease ran out and whose row was reclaimed changes nothing. ``outbox_delivered`` is the
exception: an AA is a fact, whoever got it, so it marks the row delivered in any state.
Dead-lettering, late deliveries of a dead row and requeues leave audit rows; routine claims
and retries are recorded in the row itself (attempts, last_error, first_failed_at).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.store._sql import chunks, write_audit
from lisgw.store.records import OutboxRow, OutboxState
from lisgw.store.schema import outbox

__all__ = [
    "claim_outbox",
    "outbox_counts",
    "outbox_dead",
    "outbox_delivered",
    "outbox_delivered_many",
    "outbox_requeue",
    "outbox_retry",
    "outbox_row",
    "outbox_rows",
]

_OPEN: Final = (str(OutboxState.PENDING), str(OutboxState.INFLIGHT))


def claim_outbox(
    conn: sa.Connection, worker: str, now: float, limit: int, lease: float
) -> list[OutboxRow]:
    """Claim up to ``limit`` due rows for ``worker`` until ``now + lease``, oldest first."""
    if limit <= 0:
        return []
    ids = list(conn.execute(_CANDIDATES, {"now": now, "limit": limit}).scalars())
    if not ids:
        return []
    values = {"ids": ids, "now": now, "worker": worker, "lease_end": now + lease}
    claimed = conn.execute(_CLAIM, values)
    return sorted((outbox_row(row) for row in claimed), key=lambda r: r.id)


def _candidates() -> sa.Select[tuple[int]]:
    """Due rows with no earlier open row of their sample, oldest first (``now``, ``limit``
    bound at execution)."""
    row, earlier = outbox.alias("o"), outbox.alias("e")
    blocked = (
        sa.select(earlier.c.id)
        .where(
            earlier.c.sample_id == row.c.sample_id,
            earlier.c.id < row.c.id,
            earlier.c.state.in_(_OPEN),
        )
        .exists()
    )
    # PostgreSQL: FOR UPDATE OF o SKIP LOCKED; SQLAlchemy renders nothing on SQLite.
    return (
        sa.select(row.c.id)
        .where(_due(row), ~blocked)
        .order_by(row.c.id)
        .limit(sa.bindparam("limit"))
        .with_for_update(skip_locked=True, of=row)
    )


def _due(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """Pending and due, or inflight with its lease run out, at the bound ``now``."""
    now: sa.BindParameter[float] = sa.bindparam("now")
    return sa.or_(
        sa.and_(table.c.state == str(OutboxState.PENDING), table.c.next_attempt_at <= now),
        sa.and_(table.c.state == str(OutboxState.INFLIGHT), table.c.lease_until <= now),
    )


# Built once: a dispatcher pass binds its values (no statement built per pass).
_CANDIDATES: Final = _candidates()
# The due condition again: a row some other transaction claimed meanwhile (possible only if
# the row lock were missing) is re-checked by PostgreSQL on update and left out.
_CLAIM: Final = (
    sa.update(outbox)
    .where(outbox.c.id.in_(sa.bindparam("ids", expanding=True)), _due(outbox))
    .values(
        state=str(OutboxState.INFLIGHT),
        claimed_by=sa.bindparam("worker"),
        lease_until=sa.bindparam("lease_end"),
        attempts=outbox.c.attempts + 1,
    )
    .returning(*outbox.c)
)


def outbox_delivered(
    conn: sa.Connection, outbox_id: int, *, now: float, worker: str = ""
) -> OutboxRow:
    """The HIS acknowledged the row (AA): delivered, whoever held it. Idempotent."""
    before = _get(conn, outbox_id)
    if before.state == OutboxState.DELIVERED:
        return before
    row = _update(
        conn,
        outbox_id,
        state=str(OutboxState.DELIVERED),
        delivered_at=now,
        claimed_by=None,
        lease_until=None,
    )
    if before.state == OutboxState.DEAD:
        _audit(conn, worker or "gateway", "outbox.delivered", row, now, "AA after dead letter")
    return row


def outbox_delivered_many(
    conn: sa.Connection, outbox_ids: Sequence[int], *, now: float, worker: str = ""
) -> int:
    """``outbox_delivered`` for several rows (a dispatcher pass), in two statements: how many
    rows changed state. Rows already delivered stay as they are; a dead row (the AA came
    after a dead letter) goes through ``outbox_delivered`` to be audited."""
    changed = 0
    for part in chunks(sorted(set(outbox_ids))):
        dead = list(conn.execute(_DEAD_AMONG, {"ids": part}).scalars())
        for outbox_id in dead:
            outbox_delivered(conn, outbox_id, now=now, worker=worker)
        result = conn.execute(_DELIVERED, {"ids": part, "at": now})
        changed += len(dead) + result.rowcount
    return changed


_DEAD_AMONG: Final = sa.select(outbox.c.id).where(
    outbox.c.id.in_(sa.bindparam("ids", expanding=True)),
    outbox.c.state == str(OutboxState.DEAD),
)
_DELIVERED: Final = (
    sa.update(outbox)
    .where(
        outbox.c.id.in_(sa.bindparam("ids", expanding=True)),
        outbox.c.state.notin_((str(OutboxState.DELIVERED), str(OutboxState.DEAD))),
    )
    .values(
        state=str(OutboxState.DELIVERED),
        delivered_at=sa.bindparam("at"),
        claimed_by=None,
        lease_until=None,
    )
)


def outbox_retry(
    conn: sa.Connection,
    outbox_id: int,
    *,
    worker: str,
    next_attempt_at: float,
    error: str,
    now: float,
) -> OutboxRow:
    """The attempt failed (no ACK, refused, timeout): pending again at ``next_attempt_at``.

    Only the worker holding the claim may do this; otherwise the row is returned unchanged.
    ``first_failed_at`` keeps the time of the first failure since the row was created or
    requeued: the dispatcher dead-letters the row when failures have lasted too long.
    """
    row = _update_claimed(
        conn,
        outbox_id,
        worker,
        state=str(OutboxState.PENDING),
        next_attempt_at=next_attempt_at,
        last_error=error,
        first_failed_at=sa.func.coalesce(outbox.c.first_failed_at, now),
        claimed_by=None,
        lease_until=None,
    )
    return row if row is not None else _get(conn, outbox_id)


def outbox_dead(
    conn: sa.Connection, outbox_id: int, *, worker: str, reason: str, now: float
) -> OutboxRow:
    """Dead letter (AE/AR from the HIS, or retries exhausted), with the reason; audited.

    Only the worker holding the claim may do this; otherwise the row is returned unchanged.
    """
    row = _update_claimed(
        conn,
        outbox_id,
        worker,
        state=str(OutboxState.DEAD),
        last_error=reason,
        first_failed_at=sa.func.coalesce(outbox.c.first_failed_at, now),
        claimed_by=None,
        lease_until=None,
    )
    if row is None:
        return _get(conn, outbox_id)
    _audit(conn, worker, "outbox.dead", row, now, reason)
    return row


def outbox_requeue(conn: sa.Connection, outbox_id: int, *, actor: str, now: float) -> OutboxRow:
    """A technician sends a dead letter again: pending now, attempts and failures reset."""
    before = _get(conn, outbox_id)
    if before.state != OutboxState.DEAD:
        raise StoreError(f"outbox row {outbox_id} is {before.state}: only dead rows are requeued")
    row = _update(
        conn,
        outbox_id,
        state=str(OutboxState.PENDING),
        next_attempt_at=now,
        attempts=0,
        first_failed_at=None,
    )
    _audit(conn, actor, "outbox.requeue", row, now, f"was dead: {before.last_error}")
    return row


def outbox_rows(
    conn: sa.Connection,
    *,
    state: OutboxState | None = None,
    sample_id: str | None = None,
    limit: int = 1000,
) -> list[OutboxRow]:
    """Outbox rows in id order (the CLI, the tests)."""
    query = sa.select(outbox)
    if state is not None:
        query = query.where(outbox.c.state == str(state))
    if sample_id is not None:
        query = query.where(outbox.c.sample_id == sample_id)
    return [outbox_row(row) for row in conn.execute(query.order_by(outbox.c.id).limit(limit))]


def outbox_counts(conn: sa.Connection) -> dict[OutboxState, int]:
    """How many rows are in each state (every state listed, zeros included)."""
    counts = dict.fromkeys(OutboxState, 0)
    query = sa.select(outbox.c.state, sa.func.count()).group_by(outbox.c.state)
    for state, count in conn.execute(query):
        counts[OutboxState(state)] = int(count)
    return counts


def outbox_row(row: sa.Row[Any]) -> OutboxRow:
    """An outbox table row as a record."""
    return OutboxRow(
        id=row.id,
        identity=row.identity,
        connection=row.connection,
        sample_id=row.sample_id,
        order_placer=row.order_placer,
        control_id=row.control_id,
        payload=row.payload,
        state=OutboxState(row.state),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        claimed_by=row.claimed_by,
        lease_until=row.lease_until,
        last_error=row.last_error,
        first_failed_at=row.first_failed_at,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )


def _get(conn: sa.Connection, outbox_id: int) -> OutboxRow:
    row = conn.execute(sa.select(outbox).where(outbox.c.id == outbox_id)).one_or_none()
    if row is None:
        raise StoreError(f"no outbox row {outbox_id}")
    return outbox_row(row)


def _update(conn: sa.Connection, outbox_id: int, **values: Any) -> OutboxRow:
    statement = sa.update(outbox).where(outbox.c.id == outbox_id).values(values)
    return outbox_row(conn.execute(statement.returning(*outbox.c)).one())


def _update_claimed(
    conn: sa.Connection, outbox_id: int, worker: str, **values: Any
) -> OutboxRow | None:
    statement = (
        sa.update(outbox)
        .where(
            outbox.c.id == outbox_id,
            outbox.c.state == str(OutboxState.INFLIGHT),
            outbox.c.claimed_by == worker,
        )
        .values(values)
        .returning(*outbox.c)
    )
    row = conn.execute(statement).one_or_none()
    return outbox_row(row) if row is not None else None


def _audit(
    conn: sa.Connection, actor: str, action: str, row: OutboxRow, now: float, detail: str
) -> None:
    write_audit(
        conn, actor=actor, action=action, entity="outbox", entity_id=row.id, now=now, detail=detail
    )
