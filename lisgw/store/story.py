"""The whole story of one sample, for ``lisgw sample SAMPLE_ID``: one read-side unit of work.

Layer: store. Imports sqlalchemy and lisgw.routing (sample ID normalization). Read only.

``sample_story`` gathers, in one transaction, everything the store knows of a sample: its
orders and their tests, the queue rows (order downloads, with attempts and errors), the host
queries that asked for it and the replies sent, its results (with their delivery and review
state), the outbox deliveries, the review items and the audit rows of all of these.
``story_events`` turns that into one time-ordered list of events.

Every lookup is indexed: orders, results and outbox by sample ID (ix_orders_sample_id,
ix_results_sample_id, ix_outbox_sample_id_state_id); tests, queue rows, reviews, replies and
audit rows by their parent's id. Host queries keep their sample IDs as JSON, which no index
covers: they are found through the messages of the sample's analyzers received within a
day of the sample's other events (ix_messages_connection_received_at, ix_queries_message_id)
and filtered here. A query for the sample outside that window, or from an analyzer that
neither got its orders nor sent its results, is not shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from lisgw.routing import normalize_sample_id
from lisgw.store.outbox import outbox_row
from lisgw.store.records import AuditRecord, OutboxRow
from lisgw.store.result_views import ResultView, result_query, result_view
from lisgw.store.schema import (
    audit,
    messages,
    order_tests,
    orders,
    outbox,
    queries,
    replies,
    review,
)
from lisgw.store.schema import results as results_table
from lisgw.store.views import OrderSummary, OrderTestView, queue_items

__all__ = [
    "QueryView",
    "ReviewView",
    "SampleOrder",
    "SampleStory",
    "StoryEvent",
    "sample_story",
    "story_events",
]

QUERY_WINDOW: Final = 86_400.0  # how far around the sample's events host queries are sought


@dataclass(frozen=True, slots=True)
class QueryView:
    """A host query that named the sample, and the reply sent (when answered)."""

    id: int
    connection: str
    query_tag: str
    state: str
    received_at: float
    answered_at: float | None
    reply_tests: int | None


@dataclass(frozen=True, slots=True)
class SampleOrder:
    summary: OrderSummary
    tests: tuple[OrderTestView, ...]


@dataclass(frozen=True, slots=True)
class ReviewView:
    id: int
    result_id: int
    state: str
    reason: str
    assignee: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class SampleStory:
    sample_id: str
    orders: tuple[SampleOrder, ...]
    queries: tuple[QueryView, ...]
    results: tuple[ResultView, ...]
    outbox: tuple[OutboxRow, ...]
    reviews: tuple[ReviewView, ...]
    audit: tuple[AuditRecord, ...]

    @property
    def empty(self) -> bool:
        return not (self.orders or self.queries or self.results or self.outbox)


@dataclass(frozen=True, slots=True)
class StoryEvent:
    """One line of the story: when, what kind, about what, and what happened."""

    at: float
    kind: str  # order, queue, download, query, result, outbox, review, audit
    ref: str  # the entity: placer, "outbox 12", "result 7" …
    text: str


def sample_story(conn: sa.Connection, sample_id: str, *, limit: int = 1000) -> SampleStory:
    """Everything about one sample (module docstring); each part capped at ``limit`` rows."""
    sample = normalize_sample_id(sample_id)
    order_rows = conn.execute(
        sa.select(orders).where(orders.c.sample_id == sample).order_by(orders.c.id).limit(limit)
    ).all()
    test_rows = (
        conn.execute(
            sa.select(order_tests)
            .where(order_tests.c.order_id.in_([row.id for row in order_rows]))
            .order_by(order_tests.c.id)
        ).all()
        if order_rows
        else []
    )
    queue = queue_items(conn, [t.id for t in test_rows])
    story_orders = []
    for row in order_rows:
        tests = [t for t in test_rows if t.order_id == row.id]
        views = tuple(
            OrderTestView(t.his_code, t.name, t.state, tuple(queue.get(t.id, ()))) for t in tests
        )
        resulted = sum(1 for t in tests if t.state == "resulted")
        summary = OrderSummary(
            row.id,
            row.placer,
            row.sample_id,
            row.patient_id,
            row.patient_name,
            row.priority,
            row.state,
            len(tests),
            resulted,
            row.created_at,
            row.updated_at,
        )
        story_orders.append(SampleOrder(summary, views))
    result_rows = [
        result_view(row)
        for row in conn.execute(
            result_query()
            .where(results_table.c.sample_id == sample)
            .order_by(results_table.c.id)
            .limit(limit)
        )
    ]
    outbox_rows = [
        outbox_row(row)
        for row in conn.execute(
            sa.select(outbox).where(outbox.c.sample_id == sample).order_by(outbox.c.id).limit(limit)
        )
    ]
    reviews = _reviews(conn, [r.id for r in result_rows if r.review_id is not None])
    times = [o.summary.created_at for o in story_orders] + [r.created_at for r in result_rows]
    times += [row.created_at for row in outbox_rows]
    analyzers = {r.connection for r in result_rows}
    analyzers.update(q.connection for o in story_orders for t in o.tests for q in t.queue)
    found_queries = _queries(conn, sample, sorted(analyzers), times, limit)
    trail = _audit(
        conn,
        [("order", o.summary.placer) for o in story_orders]
        + [("outbox", str(row.id)) for row in outbox_rows]
        + [("review", str(r.id)) for r in reviews],
    )
    return SampleStory(
        sample_id=sample,
        orders=tuple(story_orders),
        queries=tuple(found_queries),
        results=tuple(result_rows),
        outbox=tuple(outbox_rows),
        reviews=tuple(reviews),
        audit=tuple(trail),
    )


def _reviews(conn: sa.Connection, result_ids: Sequence[int]) -> list[ReviewView]:
    if not result_ids:
        return []
    rows = conn.execute(
        sa.select(review).where(review.c.result_id.in_(result_ids)).order_by(review.c.id)
    )
    return [
        ReviewView(r.id, r.result_id, r.state, r.reason, r.assignee, r.created_at, r.updated_at)
        for r in rows
    ]


def _queries(
    conn: sa.Connection, sample: str, analyzers: Sequence[str], times: Sequence[float], limit: int
) -> list[QueryView]:
    if not analyzers or not times:
        return []
    low, high = min(times) - QUERY_WINDOW, max(times) + QUERY_WINDOW
    rows = conn.execute(
        sa.select(queries, replies.c.tests.label("reply_tests"))
        .select_from(
            messages.join(queries, queries.c.message_id == messages.c.id).outerjoin(
                replies, replies.c.query_id == queries.c.id
            )
        )
        .where(
            messages.c.connection.in_(analyzers),
            messages.c.received_at >= low,
            messages.c.received_at <= high,
        )
        .order_by(queries.c.id)
    )
    found = []
    for row in rows:
        if sample not in {normalize_sample_id(s) for s in row.sample_ids}:
            continue
        found.append(
            QueryView(
                row.id,
                row.connection or "",
                row.query_tag,
                row.state,
                row.received_at,
                row.answered_at,
                row.reply_tests,
            )
        )
        if len(found) >= limit:
            break
    return found


def _audit(conn: sa.Connection, entities: Sequence[tuple[str, str]]) -> list[AuditRecord]:
    """Audit rows of these entities (ix_audit_entity_entity_id), oldest first."""
    found: dict[int, AuditRecord] = {}
    by_kind: dict[str, list[str]] = {}
    for kind, entity_id in entities:
        by_kind.setdefault(kind, []).append(entity_id)
    for kind, ids in by_kind.items():
        rows = conn.execute(
            sa.select(audit).where(audit.c.entity == kind, audit.c.entity_id.in_(ids))
        )
        found.update({row.id: AuditRecord(**row._asdict()) for row in rows})
    return [found[key] for key in sorted(found)]


def story_events(story: SampleStory) -> list[StoryEvent]:
    """The story as one list of events in time order (ties: the order gathered)."""
    events: list[StoryEvent] = []
    for order in story.orders:
        o = order.summary
        codes = ", ".join(t.his_code for t in order.tests)
        events.append(StoryEvent(o.created_at, "order", o.placer, f"order from HIS: {codes}"))
        for test in order.tests:
            for q in test.queue:
                events.append(
                    StoryEvent(
                        q.created_at,
                        "queue",
                        o.placer,
                        f"{test.his_code} queued for {q.connection} as {q.analyzer_code}",
                    )
                )
                if q.sent_at is not None:
                    events.append(
                        StoryEvent(
                            q.sent_at,
                            "download",
                            o.placer,
                            f"{test.his_code} sent to {q.connection} ({q.state})",
                        )
                    )
                elif q.attempts:
                    error = f": {q.last_error}" if q.last_error else ""
                    at = q.next_attempt_at if q.next_attempt_at is not None else q.created_at
                    text = f"{test.his_code} to {q.connection}: {q.attempts} attempt(s){error}"
                    events.append(StoryEvent(at, "download", o.placer, text))
    for query in story.queries:
        events.append(
            StoryEvent(query.received_at, "query", f"query {query.id}", f"{query.connection} asked")
        )
        if query.answered_at is not None:
            tests = query.reply_tests if query.reply_tests is not None else 0
            events.append(
                StoryEvent(
                    query.answered_at, "query", f"query {query.id}", f"answered: {tests} test(s)"
                )
            )
    for r in story.results:
        value = f"{r.test}={r.value}{' ' + r.units if r.units else ''}"
        where = f"order {r.order_placer}" if r.order_placer else r.reason or "no order"
        text = f"{value} from {r.connection}: {r.match} ({where})"
        events.append(StoryEvent(r.created_at, "result", f"result {r.id}", text))
    for row in story.outbox:
        ref = f"outbox {row.id}"
        events.append(StoryEvent(row.created_at, "outbox", ref, "queued for the HIS"))
        if row.first_failed_at is not None:
            text = f"failing since then ({row.attempts} attempt(s)): {row.last_error}"
            events.append(StoryEvent(row.first_failed_at, "outbox", ref, text))
        if row.delivered_at is not None:
            events.append(StoryEvent(row.delivered_at, "outbox", ref, "delivered (AA)"))
    for item in story.reviews:
        ref = f"review {item.id}"
        text = f"result {item.result_id} to review: {item.reason}"
        events.append(StoryEvent(item.created_at, "review", ref, text))
    for record in story.audit:
        detail = f": {record.detail}" if record.detail else ""
        text = f"{record.action} by {record.actor}{detail}"
        events.append(StoryEvent(record.at, "audit", f"{record.entity} {record.entity_id}", text))
    return sorted(events, key=lambda e: e.at)
