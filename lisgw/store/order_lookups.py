"""Units of work that read HIS orders: for routing, for result messages, for analyzers.

Layer: store. Imports sqlalchemy and lisgw.routing (OpenOrder). Each function is one unit
of work (see lisgw.store.archive for the conventions). Sample IDs are compared exactly as
stored: callers pass normalized IDs (lisgw.routing.normalize_sample_id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import sqlalchemy as sa

from lisgw.his.types import HisOrder, OrderedTest
from lisgw.routing import OpenOrder
from lisgw.store._sql import chunks, unique
from lisgw.store.records import (
    OrderRecord,
    OrderState,
    OrderTestRecord,
    QueuedTest,
    QueueState,
    TestState,
)
from lisgw.store.schema import order_queue, order_tests, orders

__all__ = [
    "OrdersForRouting",
    "mark_queue_sent",
    "open_orders_for",
    "orders_by_placer",
    "orders_for_routing",
    "queued_tests_for",
]


@dataclass(frozen=True, slots=True)
class OrdersForRouting:
    """What ``orders_for_routing`` read: the open order tests by sample ID (``open``, as
    ``open_orders_for`` gives them) and those orders as the HIS bridge builds result
    messages against them, by placer number (``his``, as ``orders_by_placer``'s
    ``as_his_order`` would give them for any order in ``open``)."""

    open: dict[str, list[OpenOrder]]
    his: dict[str, HisOrder]


def open_orders_for(conn: sa.Connection, sample_ids: Sequence[str]) -> dict[str, list[OpenOrder]]:
    """The order tests results for these samples may be delivered against, by sample ID.

    That is every test not cancelled of every order not cancelled (open, partial or complete:
    a correction comes after the order is complete), once per analyzer queue row, or once
    with no analyzer when no analyzer performs it. Samples with no order are absent.
    """
    return orders_for_routing(conn, sample_ids).open


def orders_for_routing(conn: sa.Connection, sample_ids: Sequence[str]) -> OrdersForRouting:
    """``open_orders_for`` and, from the same rows, each of those orders as a HisOrder.

    The ingest pipeline routes with ``open`` and builds the ORU^R01 with ``his`` (patient,
    first test), so a transfer reads its orders once. ``his`` holds only orders not
    cancelled, with their tests not cancelled in id order — what ``as_his_order`` keeps.
    """
    found: dict[str, list[OpenOrder]] = {}
    his: dict[str, HisOrder] = {}
    tests: dict[str, list[OrderedTest]] = {}
    seen_tests: set[int] = set()
    for part in chunks(unique(sample_ids)):
        for (
            placer,
            sample_id,
            filler,
            patient_id,
            patient_name,
            priority,
            ordered_at,
            test_id,
            his_code,
            test_name,
            analyzer_code,
            connection,
        ) in conn.execute(_ROUTING_ROWS, {"samples": part}):  # ≈ 40 rows per CBC transfer
            found.setdefault(sample_id, []).append(
                OpenOrder(
                    placer=placer,
                    sample_id=sample_id,
                    his_code=his_code,
                    analyzer_code=analyzer_code or "",
                    connection=connection or "",
                )
            )
            if placer not in his:
                his[placer] = HisOrder(
                    control="new",
                    placer=placer,
                    filler=filler,
                    sample_id=sample_id,
                    patient_id=patient_id,
                    patient_name=patient_name,
                    tests=(),
                    priority=priority,
                    ordered_at=ordered_at,
                )
            if test_id not in seen_tests:
                seen_tests.add(test_id)
                tests.setdefault(placer, []).append(OrderedTest(his_code, test_name))
    complete = {placer: replace(o, tests=tuple(tests.get(placer, ()))) for placer, o in his.items()}
    return OrdersForRouting(found, complete)


_QUEUE_JOIN = sa.and_(
    order_queue.c.order_test_id == order_tests.c.id,
    order_queue.c.state != str(QueueState.CANCELLED),
)
# Built once: a transfer runs it with its sample IDs (no statement built per call).
_ROUTING_ROWS: Final = (
    sa.select(
        orders.c.placer,
        orders.c.sample_id,
        orders.c.filler,
        orders.c.patient_id,
        orders.c.patient_name,
        orders.c.priority,
        orders.c.ordered_at,
        order_tests.c.id.label("test_id"),
        order_tests.c.his_code,
        order_tests.c.name.label("test_name"),
        order_queue.c.analyzer_code,
        order_queue.c.connection,
    )
    .select_from(
        orders.join(order_tests, order_tests.c.order_id == orders.c.id).outerjoin(
            order_queue, _QUEUE_JOIN
        )
    )
    .where(
        orders.c.sample_id.in_(sa.bindparam("samples", expanding=True)),
        orders.c.state != str(OrderState.CANCELLED),
        order_tests.c.state != str(TestState.CANCELLED),
    )
    .order_by(orders.c.id, order_tests.c.id, order_queue.c.id)
)


def orders_by_placer(conn: sa.Connection, placers: Sequence[str]) -> dict[str, OrderRecord]:
    """The stored orders with these placer numbers (absent ones left out)."""
    found: dict[str, OrderRecord] = {}
    for part in chunks(unique(placers)):
        rows = conn.execute(sa.select(orders).where(orders.c.placer.in_(part))).all()
        tests = _tests_of(conn, [row.id for row in rows])
        for row in rows:
            found[row.placer] = _order_record(row, tests.get(row.id, ()))
    return found


def queued_tests_for(
    conn: sa.Connection, connection: str, sample_ids: Sequence[str] | None = None
) -> list[QueuedTest]:
    """Order tests queued for an analyzer (for these samples, or all), oldest first."""
    query = (
        sa.select(
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
        )
        .select_from(
            order_queue.join(order_tests, order_tests.c.id == order_queue.c.order_test_id).join(
                orders, orders.c.id == order_tests.c.order_id
            )
        )
        .where(
            order_queue.c.connection == connection,
            order_queue.c.state == str(QueueState.QUEUED),
            order_tests.c.state == str(TestState.OPEN),
        )
        .order_by(order_queue.c.id)
    )
    if sample_ids is not None:
        query = query.where(orders.c.sample_id.in_(unique(sample_ids)))
    return [QueuedTest(**row._asdict()) for row in conn.execute(query)]


def mark_queue_sent(conn: sa.Connection, queue_ids: Sequence[int], *, now: float) -> int:
    """Mark queued tests as sent to their analyzer; how many were still queued."""
    count = 0
    for part in chunks(unique(queue_ids)):
        result = conn.execute(
            sa.update(order_queue)
            .where(order_queue.c.id.in_(part), order_queue.c.state == str(QueueState.QUEUED))
            .values(state=str(QueueState.SENT), sent_at=now)
        )
        count += result.rowcount
    return count


def _tests_of(conn: sa.Connection, order_ids: Sequence[int]) -> dict[int, list[OrderTestRecord]]:
    tests: dict[int, list[OrderTestRecord]] = {}
    if not order_ids:
        return tests
    rows = conn.execute(
        sa.select(order_tests)
        .where(order_tests.c.order_id.in_(order_ids))
        .order_by(order_tests.c.id)
    )
    for row in rows:
        tests.setdefault(row.order_id, []).append(
            OrderTestRecord(row.his_code, row.name, TestState(row.state))
        )
    return tests


def _order_record(row: sa.Row[Any], tests: Sequence[OrderTestRecord]) -> OrderRecord:
    return OrderRecord(
        id=row.id,
        placer=row.placer,
        filler=row.filler,
        sample_id=row.sample_id,
        patient_id=row.patient_id,
        patient_name=row.patient_name,
        priority=row.priority,
        ordered_at=row.ordered_at,
        state=OrderState(row.state),
        tests=tuple(tests),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
