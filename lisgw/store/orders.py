"""Units of work for HIS orders: new, change and cancel, and the analyzers' queue rows.

Layer: store. Imports sqlalchemy and lisgw.his.types. Each function is one unit of work
(see lisgw.store.archive for the conventions).

How an order message changes the store (issue 5, "Inbound orders"):

* **new** for an unknown placer number: the order, its tests (state open) and one queue row
  per analyzer that performs each test (``routes``: HIS code → analyzers).
* **new** or **change** for a known placer: the order's data is updated where the message
  carries a value (an empty field never erases one), tests missing from the message are
  cancelled (when it lists tests), new ones added, cancelled ones listed again reopened.
  The same order sent twice is ``unchanged``: the HIS resending an order is harmless.
* **cancel**: the whole order, or only the tests it lists when it lists some but not all;
  open tests and their queue rows are cancelled, resulted tests stay resulted. A cancel for
  an unknown placer is reported ``unknown`` and changes nothing.

The lookups (open orders for routing, orders by placer, queued tests) are in
lisgw.store.order_lookups. Sample IDs are compared exactly as stored: callers store and look
up normalized IDs (lisgw.routing.normalize_sample_id). Every created, updated and cancelled
order leaves an audit row (placer and test codes only: never patient data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.his.types import HisOrder, OrderedTest
from lisgw.store._bulk import marks
from lisgw.store._sql import chunks, ensure_connection, insert_ignore, unique, write_audit
from lisgw.store.records import (
    MessageState,
    OrderAction,
    OrdersSaved,
    OrderState,
    QueueState,
    QueueTarget,
    SavedOrder,
    TestState,
)
from lisgw.store.schema import messages, order_queue, order_tests, orders

__all__ = ["refresh_order_states", "save_his_orders"]

_ORDER_FIELDS = ("filler", "sample_id", "patient_id", "patient_name", "priority", "ordered_at")


def save_his_orders(
    conn: sa.Connection,
    his_orders: Sequence[HisOrder],
    *,
    routes: Mapping[str, Sequence[QueueTarget]],
    now: float,
    message_id: int | None = None,
    actor: str = "his",
) -> OrdersSaved:
    """Apply the orders of one HIS message; mark the message processed when given."""
    saved = tuple(_save_order(conn, o, routes, now, message_id, actor) for o in his_orders)
    if message_id is not None:
        conn.execute(
            sa.update(messages)
            .where(messages.c.id == message_id)
            .values(state=str(MessageState.PROCESSED), updated_at=now)
        )
    return OrdersSaved(saved)


def _save_order(
    conn: sa.Connection,
    order: HisOrder,
    routes: Mapping[str, Sequence[QueueTarget]],
    now: float,
    message_id: int | None,
    actor: str,
) -> SavedOrder:
    existing = conn.execute(sa.select(orders).where(orders.c.placer == order.placer)).one_or_none()
    if order.control == "cancel":
        action, order_id = _cancel(conn, order, existing, now)
        queued: tuple[QueueTarget, ...] = ()
        unrouted: tuple[str, ...] = ()
    elif order.control in ("new", "change"):
        action, order_id = _create_or_update(conn, order, existing, now, message_id)
        queued, unrouted = _queue(conn, order_id, routes, now)
    else:
        raise StoreError(f"order {order.placer!r}: unknown order control {order.control!r}")
    if action not in (OrderAction.UNCHANGED, OrderAction.UNKNOWN):
        codes = ",".join(t.his_code for t in order.tests)
        write_audit(
            conn,
            actor=actor,
            action=f"order.{action}",
            entity="order",
            entity_id=order.placer,
            now=now,
            detail=f"control={order.control} tests={codes}",
        )
    return SavedOrder(order.placer, action, order_id, queued, unrouted)


def _create_or_update(
    conn: sa.Connection,
    order: HisOrder,
    existing: sa.Row[Any] | None,
    now: float,
    message_id: int | None,
) -> tuple[OrderAction, int]:
    if existing is None:
        values = {name: getattr(order, name) for name in _ORDER_FIELDS}
        values.update(
            placer=order.placer,
            state=str(OrderState.OPEN),
            message_id=message_id,
            created_at=now,
            updated_at=now,
        )
        order_id = int(conn.execute(sa.insert(orders).returning(orders.c.id), values).scalar_one())
        _apply_tests(conn, order_id, order.tests, cancel_missing=False)
        return OrderAction.CREATED, order_id
    order_id = existing.id
    changes = {
        name: getattr(order, name)
        for name in _ORDER_FIELDS
        if getattr(order, name) and getattr(order, name) != getattr(existing, name)
    }
    tests_changed = _apply_tests(conn, order_id, order.tests, cancel_missing=bool(order.tests))
    state_changed = _refresh_state(conn, order_id, existing.state)
    if not (changes or tests_changed or state_changed):
        return OrderAction.UNCHANGED, order_id
    changes.update(updated_at=now, message_id=message_id or existing.message_id)
    conn.execute(sa.update(orders).where(orders.c.id == order_id).values(changes))
    return OrderAction.UPDATED, order_id


def _cancel(
    conn: sa.Connection, order: HisOrder, existing: sa.Row[Any] | None, now: float
) -> tuple[OrderAction, int | None]:
    if existing is None:
        return OrderAction.UNKNOWN, None
    order_id = int(existing.id)
    current = {row.his_code: row.state for row in _test_rows(conn, order_id)}
    listed = {t.his_code for t in order.tests}
    partial = bool(listed) and any(code not in listed for code in current)
    codes = listed if partial else set(current)
    changed = _cancel_tests(conn, order_id, codes)
    if partial:
        changed = _refresh_state(conn, order_id, existing.state) or changed
    elif existing.state != OrderState.CANCELLED:
        conn.execute(
            sa.update(orders).where(orders.c.id == order_id).values(state=str(OrderState.CANCELLED))
        )
        changed = True
    if not changed:
        return OrderAction.UNCHANGED, order_id
    conn.execute(sa.update(orders).where(orders.c.id == order_id).values(updated_at=now))
    return (OrderAction.UPDATED if partial else OrderAction.CANCELLED), order_id


def _apply_tests(
    conn: sa.Connection, order_id: int, tests: Sequence[OrderedTest], *, cancel_missing: bool
) -> bool:
    """Make the order's tests those listed; whether anything changed."""
    current = {row.his_code: row for row in _test_rows(conn, order_id)}
    listed = {t.his_code: t for t in tests}
    changed = False
    for code, test in listed.items():
        row = current.get(code)
        if row is None:
            conn.execute(
                sa.insert(order_tests),
                {
                    "order_id": order_id,
                    "his_code": code,
                    "name": test.name,
                    "state": str(TestState.OPEN),
                },
            )
            changed = True
        elif row.state == TestState.CANCELLED or (test.name and test.name != row.name):
            state = TestState.OPEN if row.state == TestState.CANCELLED else row.state
            conn.execute(
                sa.update(order_tests)
                .where(order_tests.c.id == row.id)
                .values(state=str(state), name=test.name or row.name)
            )
            changed = True
    if cancel_missing:
        missing = {code for code, row in current.items() if code not in listed}
        changed = _cancel_tests(conn, order_id, missing) or changed
    return changed


def _cancel_tests(conn: sa.Connection, order_id: int, codes: set[str]) -> bool:
    """Cancel the open tests among ``codes`` and their queue rows; whether any was open."""
    if not codes:
        return False
    open_ids = (
        conn.execute(
            sa.select(order_tests.c.id).where(
                order_tests.c.order_id == order_id,
                order_tests.c.his_code.in_(sorted(codes)),
                order_tests.c.state == str(TestState.OPEN),
            )
        )
        .scalars()
        .all()
    )
    if not open_ids:
        return False
    conn.execute(
        sa.update(order_tests)
        .where(order_tests.c.id.in_(open_ids))
        .values(state=str(TestState.CANCELLED))
    )
    conn.execute(
        sa.update(order_queue)
        .where(
            order_queue.c.order_test_id.in_(open_ids),
            order_queue.c.state == str(QueueState.QUEUED),
        )
        .values(state=str(QueueState.CANCELLED))
    )
    return True


def _queue(
    conn: sa.Connection, order_id: int, routes: Mapping[str, Sequence[QueueTarget]], now: float
) -> tuple[tuple[QueueTarget, ...], tuple[str, ...]]:
    """Queue every open test for the analyzers that perform it (re-queue cancelled rows)."""
    queued: list[QueueTarget] = []
    unrouted: list[str] = []
    for row in _test_rows(conn, order_id):
        if row.state != TestState.OPEN:
            continue
        targets = routes.get(row.his_code, ())
        if not targets:
            unrouted.append(row.his_code)
        for target in targets:
            _queue_one(conn, row.id, target, now)
            queued.append(target)
    return tuple(queued), tuple(unrouted)


def _queue_one(conn: sa.Connection, order_test_id: int, target: QueueTarget, now: float) -> None:
    ensure_connection(conn, target.connection, now)
    values = {
        "order_test_id": order_test_id,
        "connection": target.connection,
        "analyzer_code": target.analyzer_code,
        "state": str(QueueState.QUEUED),
        "created_at": now,
        "sent_at": None,
    }
    conn.execute(insert_ignore(conn, order_queue, ["order_test_id", "connection"]), values)
    conn.execute(
        sa.update(order_queue)
        .where(
            order_queue.c.order_test_id == order_test_id,
            order_queue.c.connection == target.connection,
            order_queue.c.state == str(QueueState.CANCELLED),
        )
        .values(state=str(QueueState.QUEUED), analyzer_code=target.analyzer_code, sent_at=None)
    )


def _refresh_state(conn: sa.Connection, order_id: int, state: str) -> bool:
    """Derive the order's state from its tests; whether it changed."""
    states = [row.state for row in _test_rows(conn, order_id)]
    new = _derived_state(states)
    if new == state:
        return False
    conn.execute(sa.update(orders).where(orders.c.id == order_id).values(state=str(new)))
    return True


def _derived_state(states: Sequence[str]) -> OrderState:
    if states and all(s == TestState.CANCELLED for s in states):
        return OrderState.CANCELLED
    if states and not any(s == TestState.OPEN for s in states):
        return OrderState.COMPLETE
    if any(s == TestState.RESULTED for s in states):
        return OrderState.PARTIAL
    return OrderState.OPEN


def refresh_order_states(conn: sa.Connection, placers: Sequence[str], now: float) -> None:
    """Re-derive the state of these orders (after results completed some of their tests).

    One SELECT reads the orders with their tests' states, and an order whose state changes
    gets one UPDATE (state and ``updated_at``). Plain SQL: this runs for every transfer that
    matched orders (issue 6), and SQLAlchemy compiles an expanding IN on every call."""
    dialect = conn.dialect
    for part in chunks(unique(placers)):
        sql = (
            "SELECT orders.id, orders.state, order_tests.state FROM orders "
            "LEFT OUTER JOIN order_tests ON order_tests.order_id = orders.id "
            f"WHERE orders.placer IN ({marks(dialect, len(part))}) "
            f"AND orders.state != {marks(dialect, 1)} ORDER BY orders.id"
        )
        found: dict[int, tuple[str, list[str]]] = {}
        for order_id, state, test_state in conn.exec_driver_sql(
            sql, (*part, str(OrderState.CANCELLED))
        ):
            _, tests = found.setdefault(order_id, (state, []))
            if test_state is not None:
                tests.append(test_state)
        update = (
            f"UPDATE orders SET state = {marks(dialect, 1)}, updated_at = {marks(dialect, 1)} "
            f"WHERE id = {marks(dialect, 1)}"
        )
        for order_id, (state, tests) in found.items():
            new = _derived_state(tests)
            if new != state:
                conn.exec_driver_sql(update, (str(new), now, order_id))


def _test_rows(conn: sa.Connection, order_id: int) -> Sequence[sa.Row[Any]]:
    return conn.execute(
        sa.select(order_tests).where(order_tests.c.order_id == order_id).order_by(order_tests.c.id)
    ).all()
