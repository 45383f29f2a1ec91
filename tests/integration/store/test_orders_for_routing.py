"""orders_for_routing: the routing lookup and the ORU's orders from one read (issue 6).

The ingest pipeline builds result messages from ``OrdersForRouting.his`` instead of reading
the orders again with ``orders_by_placer``: both must give the same HisOrder for every order
routing can match (not cancelled; cancelled tests left out), on both backends.
"""

from __future__ import annotations

from lisgw.his.types import HisOrder, OrderedTest
from lisgw.store import work
from lisgw.store.order_lookups import orders_for_routing
from lisgw.store.runner import Store

from .factories import NOW, ROUTES, his_order


def _save(store: Store, *orders: HisOrder, now: float = NOW) -> None:
    store.run_sync(work.save_his_orders, list(orders), routes=ROUTES, now=now, message_id=None)


def test_his_orders_match_orders_by_placer(store: Store) -> None:
    _save(
        store,
        his_order("P1", "S1", "HEM-WBC", "HEM-HGB", "HEM-RBC"),  # HGB queued on two analyzers
        his_order("P2", "S1", "CHEM-NA"),
        his_order("P3", "S2", "HEM-RBC"),
        his_order("P4", "S3", "HEM-RBC"),
    )
    _save(store, his_order("P4", "S3", control="cancel"), now=NOW + 1)  # whole order
    _save(store, his_order("P1", "S1", "HEM-WBC", control="cancel"), now=NOW + 2)  # one test

    found = store.run_sync(orders_for_routing, ["S1", "S2", "S3", "S9"])

    assert found.open == store.run_sync(work.open_orders_for, ["S1", "S2", "S3", "S9"])
    assert set(found.his) == {"P1", "P2", "P3"}  # P4 cancelled: routing cannot match it
    records = store.run_sync(work.orders_by_placer, ["P1", "P2", "P3"])
    for placer, order in found.his.items():
        assert order == records[placer].as_his_order(), placer
    assert found.his["P1"].tests == (
        OrderedTest("HEM-HGB", "hem-hgb"),
        OrderedTest("HEM-RBC", "hem-rbc"),
    )
    assert found.his["P1"].patient_name == "DOE^JANE"


def test_no_samples_no_orders(store: Store) -> None:
    found = store.run_sync(orders_for_routing, [])
    assert (found.open, found.his) == ({}, {})
