"""The result and review inserts of ``save_routed_results``, on the hot path (issue 6).

Layer: store. Imports sqlalchemy, lisgw.routing and lisgw.store internals; used by
lisgw.store.results, in the caller's transaction.

One executemany per table without RETURNING (lisgw.store._bulk), then ONE select reads the
ids back: the rows of ``results`` with this ``message_id`` are exactly the ones this call
inserted (the message row is new in this transaction, and a result whose identity was
already stored is skipped by ``ON CONFLICT (identity) DO NOTHING`` and reported as a
duplicate, as before). Review rows are inserted only for unmatched results, their ids read
back by joining on the message's results. The text of a message's rows is checked once and
cleaned per value only when needed (``CleanText``'s rule, lisgw.store.schema.clean_text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa

from lisgw.routing import RoutingOutcome
from lisgw.store._bulk import clean_texts, insert_many, json_text
from lisgw.store.records import ResultRecord, ReviewRecord, ReviewState
from lisgw.store.schema import clean_text, results, review

__all__ = ["insert_results", "insert_reviews"]

_RESULT_COLUMNS = (
    "identity",
    "message_id",
    "connection",
    "driver",
    "sample_id",
    "qc",
    "test",
    "his_code",
    "loinc",
    "value",
    "units",
    "reference_range",
    "flags",
    "status",
    "completed_at",
    "result",
    "match",
    "reason",
    "order_placer",
    "correction",
    "outbox_id",
    "created_at",
)
_TEXT_AT = tuple(
    i
    for i, name in enumerate(_RESULT_COLUMNS)
    if name not in ("message_id", "qc", "result", "match", "correction", "outbox_id", "created_at")
)
_REVIEW_COLUMNS = ("result_id", "reason", "state", "assignee", "note", "created_at", "updated_at")


_IDS_OF_MESSAGE: Final = sa.select(results.c.identity, results.c.id).where(
    results.c.message_id == sa.bindparam("message_id")
)


def insert_results(
    conn: sa.Connection,
    message_id: int,
    outcome: RoutingOutcome,
    carrier: dict[str, int],
    now: float,
) -> tuple[list[ResultRecord], list[str]]:
    """Insert the message's new results; (stored records in message order, duplicates)."""
    duplicates = [r.identity for r in outcome.results if r.match == "duplicate"]
    fresh = [r for r in outcome.results if r.match != "duplicate"]
    if not fresh:
        return [], duplicates
    rows: list[list[object]] = [
        [
            r.identity,
            message_id,
            r.connection,
            r.driver,
            r.sample_id,
            r.qc,
            r.result.test,
            r.his_code,
            r.loinc,
            r.result.value,
            r.result.units,
            r.result.reference_range,
            r.result.flags,
            r.result.status,
            r.result.completed_at,
            json_text(r.result.to_json()),
            r.match,
            r.reason,
            r.order_placer,
            r.correction,
            carrier.get(r.identity),
            now,
        ]
        for r in fresh
    ]
    if clean_texts([str(row[i]) for row in rows for i in _TEXT_AT]):
        for row in rows:
            for i in _TEXT_AT:
                row[i] = clean_text(str(row[i]))
    insert_many(conn, results, _RESULT_COLUMNS, rows, conflict=("identity",))
    found = conn.execute(_IDS_OF_MESSAGE, {"message_id": message_id})
    new_ids = {identity: result_id for identity, result_id in found}
    stored: list[ResultRecord] = []
    for r, row in zip(fresh, rows, strict=True):
        result_id = new_ids.pop(row[0], None)  # pop: a second copy in one message is a dup
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


def insert_reviews(
    conn: sa.Connection,
    message_id: int,
    stored: Sequence[ResultRecord],
    outcome: RoutingOutcome,
    now: float,
) -> list[ReviewRecord]:
    """A review row for each stored unmatched result; the rows, by id."""
    review_identities = {r.identity for r in outcome.results if r.match == "unmatched"}
    wanted = [r for r in stored if r.identity in review_identities]
    if not wanted:
        return []
    state = str(ReviewState.OPEN)
    reasons = [r.reason for r in wanted]
    if clean_texts(reasons):
        reasons = [clean_text(reason) for reason in reasons]
    rows = [
        (r.id, reason, state, "", "", now, now) for r, reason in zip(wanted, reasons, strict=True)
    ]
    insert_many(conn, review, _REVIEW_COLUMNS, rows)
    query = (
        sa.select(review.c.id, review.c.result_id)
        .join(results, results.c.id == review.c.result_id)
        .where(results.c.message_id == message_id)
    )
    ids = {result_id: review_id for review_id, result_id in conn.execute(query)}
    records = [
        ReviewRecord(
            id=ids[result_id],
            result_id=result_id,
            reason=reason,
            state=ReviewState.OPEN,
            assignee="",
            note="",
            created_at=now,
            updated_at=now,
        )
        for result_id, reason, *_ in rows
    ]
    return sorted(records, key=lambda r: r.id)
