"""Read-side units of work for the technician CLI: results, with their delivery and review.

Layer: store. Imports sqlalchemy. Each function is one unit of work (see lisgw.store.archive
for the conventions) returning frozen dataclasses; nothing here writes. Listings walk the
primary key newest first (time windows as id ranges, lisgw.store.views.windowed) or
ix_results_sample_id; each result is joined to its outbox row (primary key) and review item
(uq_review_result_id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lisgw.store.schema import outbox, results, review
from lisgw.store.views import ANY_TIME, TimeWindow, windowed

__all__ = ["ResultView", "get_result", "list_results", "result_query", "result_view"]


@dataclass(frozen=True, slots=True)
class ResultView:
    id: int
    created_at: float
    connection: str
    driver: str
    sample_id: str
    qc: bool
    test: str
    his_code: str
    loinc: str
    value: str
    units: str
    reference_range: str
    flags: str
    status: str
    completed_at: str
    match: str
    reason: str
    order_placer: str
    correction: bool
    message_id: int
    outbox_id: int | None
    delivery: str  # the outbox row's state, or "" when the result goes nowhere
    delivered_at: float | None
    review_id: int | None
    review_state: str


def list_results(
    conn: sa.Connection,
    *,
    analyzer: str | None = None,
    sample_id: str | None = None,
    match: str | None = None,
    delivery: str | None = None,
    window: TimeWindow = ANY_TIME,
    limit: int = 50,
) -> list[ResultView]:
    """Results, newest first, filtered; ``delivery`` is an outbox state or ``none``."""
    query = _result_query()
    if analyzer is not None:
        query = query.where(results.c.connection == analyzer)
    if sample_id is not None:
        query = query.where(results.c.sample_id == sample_id)
    if match is not None:
        query = query.where(results.c.match == match)
    if delivery == "none":
        query = query.where(results.c.outbox_id.is_(None))
    elif delivery is not None:
        query = query.where(outbox.c.state == delivery)
    query = windowed(conn, query, results, "created_at", window)
    rows = conn.execute(query.order_by(results.c.id.desc()).limit(limit))
    return [result_view(row) for row in rows]


def get_result(conn: sa.Connection, result_id: int) -> tuple[ResultView, dict[str, Any]] | None:
    """One result and its normalized JSON (the analyzer's values as decoded)."""
    query = _result_query().add_columns(results.c.result).where(results.c.id == result_id)
    row = conn.execute(query).one_or_none()
    if row is None:
        return None
    return result_view(row), dict(row.result)


def _result_query() -> sa.Select[Any]:
    source = results.outerjoin(outbox, outbox.c.id == results.c.outbox_id).outerjoin(
        review, review.c.result_id == results.c.id
    )
    columns = [c for c in results.c if c.name != "result"]
    return sa.select(
        *columns,
        outbox.c.state.label("delivery"),
        outbox.c.delivered_at.label("delivered_at"),
        review.c.id.label("review_id"),
        review.c.state.label("review_state"),
    ).select_from(source)


def result_view(row: sa.Row[Any]) -> ResultView:
    """A row of ``_result_query`` as a record (lisgw.store.story uses it too)."""
    return ResultView(
        id=row.id,
        created_at=row.created_at,
        connection=row.connection,
        driver=row.driver,
        sample_id=row.sample_id,
        qc=bool(row.qc),
        test=row.test,
        his_code=row.his_code,
        loinc=row.loinc,
        value=row.value,
        units=row.units,
        reference_range=row.reference_range,
        flags=row.flags,
        status=row.status,
        completed_at=row.completed_at,
        match=row.match,
        reason=row.reason,
        order_placer=row.order_placer,
        correction=bool(row.correction),
        message_id=row.message_id,
        outbox_id=row.outbox_id,
        delivery=row.delivery or "",
        delivered_at=row.delivered_at,
        review_id=row.review_id,
        review_state=row.review_state or "",
    )


def result_query() -> sa.Select[Any]:
    """The results joined with their delivery and review (for lisgw.store.story)."""
    return _result_query()
