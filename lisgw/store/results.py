"""Units of work for routed results: save them with their outbox rows; the review queue.

Layer: store. Imports sqlalchemy, lisgw.routing (RoutingOutcome) and lisgw.his.types. Each
function is one unit of work (see lisgw.store.archive for the conventions).

``save_routed_results`` stores, in the caller's one transaction, what routing made of one
message: every result that is not a duplicate (results.identity is UNIQUE: a result whose
identity is already stored is skipped, never an error, and reported in ``duplicates``), a
review row for each unmatched one, the outbox rows the HIS bridge built for the results to
deliver (outbox.identity is UNIQUE too), the link from each result to the outbox row that
carries it, and the order tests the matched results complete. Committing the results and
their outbox rows together is what makes delivery exactly-once: a crash either loses both
(the message is routed again from the archive) or keeps both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.routing import RoutingOutcome
from lisgw.store._bulk import marks
from lisgw.store._sql import chunks, insert_ignore, unique, write_audit
from lisgw.store.bulk_results import insert_results, insert_reviews
from lisgw.store.orders import refresh_order_states
from lisgw.store.outbox import outbox_row
from lisgw.store.records import (
    MessageState,
    OutboxPayload,
    OutboxRow,
    OutboxState,
    ResultRecord,
    ReviewRecord,
    ReviewState,
    RoutedSaved,
    TestState,
)
from lisgw.store.schema import messages, outbox, results, review

__all__ = [
    "known_identities",
    "review_queue",
    "save_routed_results",
    "set_review_state",
]


def known_identities(conn: sa.Connection, identities: Sequence[str]) -> set[str]:
    """The identities among these that are already stored as results.

    SQLite: plain SQL through the driver (SQLAlchemy's expanding IN is compiled on every
    call). PostgreSQL: one ``= ANY(array)`` query sent unprepared, so it is planned with its values
    every time. psycopg prepares a statement on its fifth run, and PostgreSQL may then keep a
    generic plan chosen while ``results`` was nearly empty: a sequential scan, which on a
    table growing faster than autovacuum re-analyzes it cost 2–3 ms per transfer after a few
    thousand rows (issue 6's load bench) instead of 0.1 ms through the unique index.
    """
    if conn.dialect.name == "postgresql":
        wanted = unique(identities)
        if not wanted:
            return set()
        cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(_KNOWN_SQL, (wanted,), prepare=False)
            return {row[0] for row in cursor.fetchall()}
        finally:
            cursor.close()
    known: set[str] = set()
    for part in chunks(unique(identities)):  # SQLite: plain SQL, no expanding-IN compile
        sql = f"SELECT identity FROM results WHERE identity IN ({', '.join('?' * len(part))})"
        known.update(row[0] for row in conn.exec_driver_sql(sql, tuple(part)))
    return known


_KNOWN_SQL = "SELECT identity FROM results WHERE identity = ANY(%s)"


def save_routed_results(
    conn: sa.Connection,
    message_id: int,
    outcome: RoutingOutcome,
    outbox_payloads: Sequence[OutboxPayload],
    now: float,
    *,
    legacy: bool = False,
    mark_routed: bool = True,
) -> RoutedSaved:
    """Store one message's routed results and their deliveries; mark the message routed
    (``mark_routed=False``: the caller inserted it ROUTED with ``outcome.ignored`` as reason).

    Results and review rows go in with plain executemany (lisgw.store._bulk), their ids read
    back by message_id; ``legacy`` uses the former per-row ``INSERT … RETURNING`` through
    SQLAlchemy instead (kept for bench/store_units.py's before/after comparison).
    """
    new_outbox = _insert_outbox(conn, outbox_payloads, now)
    carrier = _carriers(conn, outbox_payloads, {row.identity: row.id for row in new_outbox})
    if legacy:
        stored, duplicates = _insert_results(conn, message_id, outcome, carrier, now)
        reviews = _insert_reviews(conn, stored, outcome, now)
    else:
        stored, duplicates = insert_results(conn, message_id, outcome, carrier, now)
        reviews = insert_reviews(conn, message_id, stored, outcome, now)
    _complete_tests(conn, stored, now, legacy)
    if not mark_routed:
        return RoutedSaved(tuple(stored), tuple(duplicates), tuple(reviews), tuple(new_outbox))
    updated = conn.execute(
        sa.update(messages)
        .where(messages.c.id == message_id)
        .values(state=str(MessageState.ROUTED), reason=outcome.ignored, updated_at=now)
    )
    if updated.rowcount != 1:
        raise StoreError(f"no message {message_id}")
    return RoutedSaved(tuple(stored), tuple(duplicates), tuple(reviews), tuple(new_outbox))


def review_queue(
    conn: sa.Connection, *, state: ReviewState | None = ReviewState.OPEN, limit: int = 1000
) -> list[ReviewRecord]:
    """Review rows (open ones by default), oldest first."""
    query = sa.select(review)
    if state is not None:
        query = query.where(review.c.state == str(state))
    return [_review(row) for row in conn.execute(query.order_by(review.c.id).limit(limit))]


def set_review_state(
    conn: sa.Connection,
    review_id: int,
    state: ReviewState,
    *,
    actor: str,
    now: float,
    assignee: str | None = None,
    note: str = "",
) -> ReviewRecord:
    """A technician assigns, resolves or discards a review row (audited)."""
    values: dict[str, Any] = {"state": str(state), "updated_at": now}
    if assignee is not None:
        values["assignee"] = assignee
    if note:
        values["note"] = note
    row = conn.execute(
        sa.update(review).where(review.c.id == review_id).values(values).returning(*review.c)
    ).one_or_none()
    if row is None:
        raise StoreError(f"no review row {review_id}")
    write_audit(
        conn,
        actor=actor,
        action=f"review.{state}",
        entity="review",
        entity_id=review_id,
        now=now,
        detail=note,
    )
    return _review(row)


def _insert_outbox(
    conn: sa.Connection, payloads: Sequence[OutboxPayload], now: float
) -> list[OutboxRow]:
    if not payloads:
        return []
    rows = [
        {
            "identity": p.identity,
            "connection": p.connection,
            "sample_id": p.sample_id,
            "order_placer": p.order_placer,
            "control_id": p.control_id,
            "payload": p.payload,
            "state": str(OutboxState.PENDING),
            "attempts": 0,
            "next_attempt_at": now,
            "claimed_by": None,
            "lease_until": None,
            "last_error": "",
            "first_failed_at": None,
            "created_at": now,
            "delivered_at": None,
        }
        for p in payloads
    ]
    statement = insert_ignore(conn, outbox, ["identity"], returning=True)
    # RETURNING order is not the VALUES order: sort by id, which is the per-sample order.
    return sorted((outbox_row(row) for row in conn.execute(statement, rows)), key=lambda r: r.id)


def _carriers(
    conn: sa.Connection, payloads: Sequence[OutboxPayload], inserted: dict[str, int]
) -> dict[str, int]:
    """Result identity → id of the outbox row that carries it: ``inserted`` (payload
    identity → id, the rows just inserted), or read for a payload already stored."""
    ids = dict(inserted)
    stored = [identity for identity in unique(p.identity for p in payloads) if identity not in ids]
    for part in chunks(stored):
        query = sa.select(outbox.c.identity, outbox.c.id).where(outbox.c.identity.in_(part))
        ids.update({row.identity: row.id for row in conn.execute(query)})
    carrier: dict[str, int] = {}
    for payload in payloads:
        for identity in payload.result_identities:
            carrier.setdefault(identity, ids[payload.identity])
    return carrier


def _insert_results(
    conn: sa.Connection,
    message_id: int,
    outcome: RoutingOutcome,
    carrier: dict[str, int],
    now: float,
) -> tuple[list[ResultRecord], list[str]]:
    duplicates = [r.identity for r in outcome.results if r.match == "duplicate"]
    fresh = [r for r in outcome.results if r.match != "duplicate"]
    if not fresh:
        return [], duplicates
    rows = [
        {
            "identity": r.identity,
            "message_id": message_id,
            "connection": r.connection,
            "driver": r.driver,
            "sample_id": r.sample_id,
            "qc": r.qc,
            "test": r.result.test,
            "his_code": r.his_code,
            "loinc": r.loinc,
            "value": r.result.value,
            "units": r.result.units,
            "reference_range": r.result.reference_range,
            "flags": r.result.flags,
            "status": r.result.status,
            "completed_at": r.result.completed_at,
            "result": r.result.to_json(),
            "match": r.match,
            "reason": r.reason,
            "order_placer": r.order_placer,
            "correction": r.correction,
            "outbox_id": carrier.get(r.identity),
            "created_at": now,
        }
        for r in fresh
    ]
    statement = insert_ignore(conn, results, ["identity"]).returning(
        results.c.id, results.c.identity
    )
    new_ids = {row.identity: row.id for row in conn.execute(statement, rows)}
    stored: list[ResultRecord] = []
    for r in fresh:
        result_id = new_ids.pop(r.identity, None)  # pop: a second copy in one message is a dup
        if result_id is None:
            duplicates.append(r.identity)
            continue
        stored.append(
            ResultRecord(
                id=result_id,
                identity=r.identity,
                message_id=message_id,
                connection=r.connection,
                sample_id=r.sample_id,
                test=r.result.test,
                his_code=r.his_code,
                match=r.match,
                reason=r.reason,
                order_placer=r.order_placer,
                correction=r.correction,
                outbox_id=carrier.get(r.identity),
            )
        )
    return stored, duplicates


def _insert_reviews(
    conn: sa.Connection, stored: Sequence[ResultRecord], outcome: RoutingOutcome, now: float
) -> list[ReviewRecord]:
    review_identities = {r.identity for r in outcome.review}
    rows = [
        {
            "result_id": r.id,
            "reason": r.reason,
            "state": str(ReviewState.OPEN),
            "assignee": "",
            "note": "",
            "created_at": now,
            "updated_at": now,
        }
        for r in stored
        if r.identity in review_identities
    ]
    if not rows:
        return []
    returned = conn.execute(sa.insert(review).returning(*review.c), rows)
    return sorted((_review(row) for row in returned), key=lambda r: r.id)


def _complete_tests(
    conn: sa.Connection, stored: Sequence[ResultRecord], now: float, legacy: bool = False
) -> None:
    """Mark the order tests matched results complete, then re-derive those orders' states."""
    matched = [r for r in stored if r.match == "matched" and r.order_placer and r.his_code]
    if not matched:
        return
    by_order: dict[str, list[str]] = {}
    for r in matched:
        by_order.setdefault(r.order_placer, []).append(r.his_code)
    groups = list(by_order.items())  # one statement per order, not one per result
    if legacy:  # the former shape, one per result: bench/store_units.py's comparison only
        groups = [(r.order_placer, [r.his_code]) for r in matched]
    dialect = conn.dialect
    for placer, his_codes in groups:  # plain SQL: once per matched order, every transfer
        codes = unique(his_codes)
        conn.exec_driver_sql(
            f"UPDATE order_tests SET state = {marks(dialect, 1)} "
            f"WHERE order_id = (SELECT id FROM orders WHERE placer = {marks(dialect, 1)}) "
            f"AND his_code IN ({marks(dialect, len(codes))}) AND state = {marks(dialect, 1)}",
            (str(TestState.RESULTED), placer, *codes, str(TestState.OPEN)),
        )
    refresh_order_states(conn, [r.order_placer for r in matched], now)


def _review(row: sa.Row[Any]) -> ReviewRecord:
    return ReviewRecord(
        id=row.id,
        result_id=row.result_id,
        reason=row.reason,
        state=ReviewState(row.state),
        assignee=row.assignee,
        note=row.note,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
