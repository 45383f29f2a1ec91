"""Routed results: stored once by identity, review rows, outbox rows, orders completed."""

from __future__ import annotations

import pytest

from lisgw.errors import StoreError
from lisgw.routing import RoutingConfig, RoutingOutcome
from lisgw.store import work
from lisgw.store.records import MessageState, OrderState, OutboxState, ReviewState, TestState
from lisgw.store.runner import Store

from .factories import (
    NOW,
    ROUTES,
    his_order,
    payload,
    result,
    results_message,
    route_and_save,
    store_message,
)


def _order(store: Store, placer: str, sample_id: str, *codes: str) -> None:
    store.run_sync(
        work.save_his_orders, [his_order(placer, sample_id, *codes)], routes=ROUTES, now=NOW
    )


def test_matched_results_complete_the_order(store: Store) -> None:
    _order(store, "P1", "S1", "HEM-WBC", "HEM-RBC")
    _, saved = store.run_sync(route_and_save, results_message("S1", result("WBC")))
    assert [r.match for r in saved.results] == ["matched"]
    assert saved.results[0].order_placer == "P1" and saved.results[0].his_code == "HEM-WBC"
    assert saved.duplicates == () and saved.review == ()
    (row,) = saved.outbox
    assert (row.state, row.sample_id, row.order_placer, row.attempts) == (
        OutboxState.PENDING,
        "S1",
        "P1",
        0,
    )
    assert saved.results[0].outbox_id == row.id
    order = store.run_sync(work.orders_by_placer, ["P1"])["P1"]
    assert order.state == OrderState.PARTIAL
    assert {t.his_code: t.state for t in order.tests}["HEM-WBC"] == TestState.RESULTED
    store.run_sync(route_and_save, results_message("S1", result("RBC")), now=NOW + 1)
    assert store.run_sync(work.orders_by_placer, ["P1"])["P1"].state == OrderState.COMPLETE
    message = store.run_sync(work.get_message, saved.results[0].message_id)
    assert message.state == MessageState.ROUTED


def test_resent_session_stores_and_delivers_nothing_twice(store: Store) -> None:
    _order(store, "P1", "S1", "HEM-WBC", "HEM-RBC")
    message = results_message("S1", result("WBC"), result("RBC"))
    _, first = store.run_sync(route_and_save, message)
    outcome, again = store.run_sync(route_and_save, message, now=NOW + 60)
    assert [r.match for r in outcome.results] == ["duplicate", "duplicate"]
    assert again.results == () and again.outbox == () and again.review == ()
    assert set(again.duplicates) == {r.identity for r in first.results}
    assert len(store.run_sync(work.outbox_rows)) == 1


def test_identity_conflicts_are_skipped_even_when_routing_missed_them(store: Store) -> None:
    """Two processes routing the same message at once: the UNIQUE identity wins, no error."""
    _order(store, "P1", "S1", "HEM-WBC")
    message = results_message("S1", result("WBC"))
    outcome, first = store.run_sync(route_and_save, message)
    replay = store.run_sync(store_message, message)
    again = store.run_sync(work.save_routed_results, replay.id, outcome, [], NOW + 1)
    assert again.results == ()
    assert again.duplicates == (first.results[0].identity,)


def test_correction_is_stored_and_delivered_again(store: Store) -> None:
    _order(store, "P1", "S1", "HEM-WBC")
    store.run_sync(route_and_save, results_message("S1", result("WBC", "5.0")))
    _, corrected = store.run_sync(
        route_and_save, results_message("S1", result("WBC", "5.2", status="C")), now=NOW + 5
    )
    assert [(r.match, r.correction) for r in corrected.results] == [("matched", True)]
    assert len(corrected.outbox) == 1
    assert [r.sample_id for r in store.run_sync(work.outbox_rows)] == ["S1", "S1"]


def test_unmatched_results_go_to_review_with_the_reason(store: Store) -> None:
    _, saved = store.run_sync(route_and_save, results_message("S9", result("WBC"), result("XYZ")))
    assert [r.match for r in saved.results] == ["unmatched", "unmatched"]
    assert saved.outbox == ()  # send_unsolicited is off by default
    assert [r.result_id for r in saved.review] == [r.id for r in saved.results]
    assert "no order for sample 'S9'" in saved.review[0].reason
    assert "unknown test code 'XYZ'" in saved.review[1].reason
    assert store.run_sync(work.review_queue) == list(saved.review)


def test_unsolicited_results_sent_when_configured(store: Store) -> None:
    config = RoutingConfig(send_unsolicited=True)
    _, saved = store.run_sync(route_and_save, results_message("S9", result("WBC")), config=config)
    assert len(saved.review) == 1 and len(saved.outbox) == 1
    assert saved.results[0].outbox_id == saved.outbox[0].id


def test_qc_and_extra_results_are_kept(store: Store) -> None:
    _order(store, "P1", "S1", "HEM-WBC")
    _, qc = store.run_sync(route_and_save, results_message("QC-LOW", result("WBC"), qc=True))
    assert [r.match for r in qc.results] == ["qc"] and qc.outbox == () and qc.review == ()
    _, extra = store.run_sync(route_and_save, results_message("S1", result("WBC"), result("PLT")))
    assert [r.match for r in extra.results] == ["matched", "extra"]
    assert extra.review == ()
    (row,) = extra.outbox
    assert {r.outbox_id for r in extra.results} == {row.id}


def test_known_identities(store: Store) -> None:
    _, saved = store.run_sync(route_and_save, results_message("S9", result("WBC"), result("RBC")))
    stored = [r.identity for r in saved.results]
    asked = [*stored, "0" * 64, stored[0]]
    assert store.run_sync(work.known_identities, asked) == set(stored)
    assert store.run_sync(work.known_identities, []) == set()


def test_outbox_payload_offered_twice_is_stored_once(store: Store) -> None:
    message = store.run_sync(store_message, results_message("S1"))
    offered = [payload("S1", ["a"]), payload("S1", ["a"]), payload("S2", ["b"])]
    saved = store.run_sync(work.save_routed_results, message.id, RoutingOutcome(()), offered, NOW)
    assert [r.sample_id for r in saved.outbox] == ["S1", "S2"]
    again = store.run_sync(work.save_routed_results, message.id, RoutingOutcome(()), offered, NOW)
    assert again.outbox == ()


def test_save_for_a_missing_message_fails_whole(store: Store) -> None:
    with pytest.raises(StoreError):
        store.run_sync(
            work.save_routed_results, 424242, RoutingOutcome(()), [payload("S1", ["a"])], NOW
        )
    assert store.run_sync(work.outbox_rows) == []


def test_review_state_changes_are_audited(store: Store) -> None:
    _, saved = store.run_sync(route_and_save, results_message("S9", result("WBC")))
    (row,) = saved.review
    assigned = store.run_sync(
        work.set_review_state,
        row.id,
        ReviewState.ASSIGNED,
        actor="tech:bob",
        now=NOW + 1,
        assignee="bob",
    )
    assert (assigned.state, assigned.assignee, assigned.updated_at) == (
        ReviewState.ASSIGNED,
        "bob",
        NOW + 1,
    )
    store.run_sync(
        work.set_review_state,
        row.id,
        ReviewState.DISCARDED,
        actor="tech:bob",
        now=NOW + 2,
        note="rerun",
    )
    assert store.run_sync(work.review_queue) == []
    assert [r.note for r in store.run_sync(work.review_queue, state=ReviewState.DISCARDED)] == [
        "rerun"
    ]
    trail = store.run_sync(work.audit_trail, entity="review", entity_id=row.id)
    assert [(a.action, a.actor) for a in trail] == [
        ("review.assigned", "tech:bob"),
        ("review.discarded", "tech:bob"),
    ]
    with pytest.raises(StoreError, match="no review row"):
        store.run_sync(work.set_review_state, 424242, ReviewState.OPEN, actor="x", now=NOW)
