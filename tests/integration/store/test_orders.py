"""HIS orders: new, resend, change, cancel; per-analyzer queues; lookups for routing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lisgw.errors import StoreError
from lisgw.his.types import HisOrder
from lisgw.routing import OpenOrder
from lisgw.store import work
from lisgw.store.records import (
    Direction,
    MessageState,
    OrderAction,
    OrderState,
    QueueTarget,
    SavedOrder,
    TestState,
)
from lisgw.store.runner import Store

from .factories import CONNECTION, NOW, ROUTES, his_order


def _save(
    store: Store, *orders: HisOrder, now: float = NOW, message_id: int | None = None
) -> tuple[SavedOrder, ...]:
    saved = store.run_sync(
        work.save_his_orders, list(orders), routes=ROUTES, now=now, message_id=message_id
    )
    return saved.orders


def _states(store: Store, placer: str) -> tuple[OrderState, dict[str, TestState]]:
    record = store.run_sync(work.orders_by_placer, [placer])[placer]
    return record.state, {t.his_code: t.state for t in record.tests}


def test_new_order_is_stored_and_queued_per_analyzer(store: Store) -> None:
    message = store.run_sync(
        work.save_message,
        b"MSH|...ORM^O01",
        direction=Direction.IN,
        protocol="hl7",
        kind="orders",
        now=NOW,
        connection="his-in",
    )
    (saved,) = _save(
        store, his_order("P1", "S1", "HEM-WBC", "HEM-HGB", "CHEM-NA"), message_id=message.id
    )
    assert saved.action == OrderAction.CREATED and saved.order_id is not None
    assert saved.queued == (
        QueueTarget(CONNECTION, "WBC"),
        QueueTarget(CONNECTION, "HGB"),
        QueueTarget("xn-2", "HGB"),
    )
    assert saved.unrouted == ("CHEM-NA",)
    assert store.run_sync(work.get_message, message.id).state == MessageState.PROCESSED
    record = store.run_sync(work.orders_by_placer, ["P1", "nope"])
    assert list(record) == ["P1"]
    order = record["P1"].as_his_order()
    assert (order.sample_id, order.patient_id, order.priority) == ("S1", "P-0001", "R")
    assert [t.his_code for t in order.tests] == ["HEM-WBC", "HEM-HGB", "CHEM-NA"]
    queued = store.run_sync(work.queued_tests_for, CONNECTION)
    assert [(q.placer, q.sample_id, q.his_code, q.analyzer_code) for q in queued] == [
        ("P1", "S1", "HEM-WBC", "WBC"),
        ("P1", "S1", "HEM-HGB", "HGB"),
    ]
    assert [q.analyzer_code for q in store.run_sync(work.queued_tests_for, "xn-2", ["S1"])] == [
        "HGB"
    ]
    assert store.run_sync(work.queued_tests_for, "xn-2", ["S9"]) == []


def test_the_same_order_twice_is_unchanged(store: Store) -> None:
    order = his_order("P1", "S1", "HEM-WBC")
    _save(store, order)
    (again,) = _save(store, order, now=NOW + 5)
    assert again.action == OrderAction.UNCHANGED
    assert len(store.run_sync(work.queued_tests_for, CONNECTION)) == 1
    assert [a.action for a in store.run_sync(work.audit_trail, entity="order")] == ["order.created"]


def test_change_adds_and_cancels_tests(store: Store) -> None:
    _save(store, his_order("P1", "S1", "HEM-WBC", "HEM-RBC"))
    (changed,) = _save(
        store, his_order("P1", "S1", "HEM-RBC", "HEM-HGB", control="change"), now=NOW + 1
    )
    assert changed.action == OrderAction.UPDATED
    assert _states(store, "P1") == (
        OrderState.OPEN,
        {"HEM-WBC": TestState.CANCELLED, "HEM-RBC": TestState.OPEN, "HEM-HGB": TestState.OPEN},
    )
    queued = {q.his_code for q in store.run_sync(work.queued_tests_for, CONNECTION)}
    assert queued == {"HEM-RBC", "HEM-HGB"}


def test_change_of_order_data_keeps_values_the_message_leaves_empty(store: Store) -> None:
    _save(store, his_order("P1", "S1", "HEM-WBC"))
    change = replace(his_order("P1", "S2", "HEM-WBC", control="change"), patient_id="")
    (saved,) = _save(store, change, now=NOW + 1)
    record = store.run_sync(work.orders_by_placer, ["P1"])["P1"]
    assert saved.action == OrderAction.UPDATED
    assert (record.sample_id, record.patient_id, record.updated_at) == ("S2", "P-0001", NOW + 1)


def test_cancel_whole_order(store: Store) -> None:
    _save(store, his_order("P1", "S1", "HEM-WBC", "HEM-HGB"))
    (cancelled,) = _save(store, his_order("P1", "S1", control="cancel"), now=NOW + 1)
    assert cancelled.action == OrderAction.CANCELLED
    state, tests = _states(store, "P1")
    assert state == OrderState.CANCELLED and set(tests.values()) == {TestState.CANCELLED}
    assert store.run_sync(work.queued_tests_for, CONNECTION) == []
    assert store.run_sync(work.open_orders_for, ["S1"]) == {}
    (again,) = _save(store, his_order("P1", "S1", control="cancel"), now=NOW + 2)
    assert again.action == OrderAction.UNCHANGED


def test_cancel_of_some_tests_only(store: Store) -> None:
    _save(store, his_order("P1", "S1", "HEM-WBC", "HEM-HGB"))
    (saved,) = _save(store, his_order("P1", "S1", "HEM-HGB", control="cancel"), now=NOW + 1)
    assert saved.action == OrderAction.UPDATED
    assert _states(store, "P1") == (
        OrderState.OPEN,
        {"HEM-WBC": TestState.OPEN, "HEM-HGB": TestState.CANCELLED},
    )


def test_cancel_of_an_unknown_order_changes_nothing(store: Store) -> None:
    (saved,) = _save(store, his_order("P404", "S1", control="cancel"))
    assert (saved.action, saved.order_id) == (OrderAction.UNKNOWN, None)
    assert store.run_sync(work.orders_by_placer, ["P404"]) == {}


def test_new_order_for_a_cancelled_placer_reopens_it(store: Store) -> None:
    _save(store, his_order("P1", "S1", "HEM-WBC"))
    _save(store, his_order("P1", "S1", control="cancel"), now=NOW + 1)
    (again,) = _save(store, his_order("P1", "S1", "HEM-WBC"), now=NOW + 2)
    assert again.action == OrderAction.UPDATED
    assert _states(store, "P1") == (OrderState.OPEN, {"HEM-WBC": TestState.OPEN})
    assert [q.his_code for q in store.run_sync(work.queued_tests_for, CONNECTION)] == ["HEM-WBC"]


def test_unknown_control_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown order control"):
        _save(store, his_order("P1", "S1", "HEM-WBC", control="hold"))
    assert store.run_sync(work.orders_by_placer, ["P1"]) == {}


def test_open_orders_for_routing(store: Store) -> None:
    _save(
        store,
        his_order("P1", "S1", "HEM-WBC", "HEM-HGB"),
        his_order("P2", "S1", "CHEM-NA"),
        his_order("P3", "S2", "HEM-RBC"),
        his_order("P4", "S3", "HEM-RBC"),
    )
    _save(store, his_order("P4", "S3", control="cancel"), now=NOW + 1)
    found = store.run_sync(work.open_orders_for, ["S1", "S2", "S3", "S4", "S1"])
    assert set(found) == {"S1", "S2"}
    assert found["S1"] == [
        OpenOrder("P1", "S1", "HEM-WBC", "WBC", CONNECTION),
        OpenOrder("P1", "S1", "HEM-HGB", "HGB", CONNECTION),
        OpenOrder("P1", "S1", "HEM-HGB", "HGB", "xn-2"),
        OpenOrder("P2", "S1", "CHEM-NA", "", ""),
    ]
    assert found["S2"] == [OpenOrder("P3", "S2", "HEM-RBC", "RBC", CONNECTION)]


def test_queue_rows_marked_sent(store: Store) -> None:
    _save(store, his_order("P1", "S1", "HEM-WBC", "HEM-RBC"))
    queued = store.run_sync(work.queued_tests_for, CONNECTION, ["S1"])
    assert store.run_sync(work.mark_queue_sent, [q.queue_id for q in queued], now=NOW + 1) == 2
    assert store.run_sync(work.queued_tests_for, CONNECTION) == []
    assert store.run_sync(work.mark_queue_sent, [q.queue_id for q in queued], now=NOW + 2) == 0


def test_order_lifecycle_is_audited_without_patient_data(store: Store) -> None:
    _save(store, his_order("P1", "S1", "HEM-WBC", "HEM-HGB"))
    _save(store, his_order("P1", "S1", "HEM-WBC", control="change"), now=NOW + 1)
    _save(store, his_order("P1", "S1", control="cancel"), now=NOW + 2)
    trail = store.run_sync(work.audit_trail, entity="order", entity_id="P1")
    assert [(a.action, a.actor, a.at) for a in trail] == [
        ("order.created", "his", NOW),
        ("order.updated", "his", NOW + 1),
        ("order.cancelled", "his", NOW + 2),
    ]
    assert all("DOE" not in a.detail and "P-0001" not in a.detail for a in trail)
