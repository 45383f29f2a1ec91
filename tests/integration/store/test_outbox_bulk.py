"""outbox_delivered_many: a dispatcher pass's AAs in two statements, same facts as one by one."""

from __future__ import annotations

from lisgw.store import work
from lisgw.store.outbox import outbox_delivered_many
from lisgw.store.records import OutboxState
from lisgw.store.runner import Store

from .factories import NOW, fill_outbox

LEASE = 30.0


def test_delivered_many_marks_each_row_like_delivered(store: Store) -> None:
    rows = store.run_sync(fill_outbox, ["S1", "S2", "S3", "S4"])
    store.run_sync(work.claim_outbox, "w1", NOW, 100, LEASE)
    changed = store.run_sync(
        outbox_delivered_many, [rows[0].id, rows[2].id, rows[0].id], now=NOW + 2, worker="w1"
    )
    assert changed == 2
    listed = {r.id: r for r in store.run_sync(work.outbox_rows)}
    for row in (rows[0], rows[2]):
        got = listed[row.id]
        assert (got.state, got.delivered_at, got.claimed_by, got.lease_until) == (
            OutboxState.DELIVERED,
            NOW + 2,
            None,
            None,
        )
    assert listed[rows[1].id].state == OutboxState.INFLIGHT
    assert listed[rows[3].id].claimed_by == "w1"


def test_delivered_many_is_idempotent_and_keeps_the_first_time(store: Store) -> None:
    (row,) = store.run_sync(fill_outbox, ["S1"])
    store.run_sync(work.claim_outbox, "w1", NOW, 100, LEASE)
    assert store.run_sync(outbox_delivered_many, [row.id], now=NOW + 2, worker="w1") == 1
    assert store.run_sync(outbox_delivered_many, [row.id], now=NOW + 9, worker="w2") == 0
    assert store.run_sync(outbox_delivered_many, [], now=NOW + 9) == 0
    (got,) = store.run_sync(work.outbox_rows)
    assert (got.state, got.delivered_at) == (OutboxState.DELIVERED, NOW + 2)


def test_delivered_many_after_a_dead_letter_is_audited(store: Store) -> None:
    dead, live = store.run_sync(fill_outbox, ["S1", "S2"])
    store.run_sync(work.claim_outbox, "w1", NOW, 100, LEASE)
    store.run_sync(work.outbox_dead, dead.id, worker="w1", reason="AR: busy", now=NOW + 1)
    changed = store.run_sync(outbox_delivered_many, [dead.id, live.id], now=NOW + 3, worker="w1")
    assert changed == 2
    states = {r.id: r.state for r in store.run_sync(work.outbox_rows)}
    assert states == {dead.id: OutboxState.DELIVERED, live.id: OutboxState.DELIVERED}
    trail = store.run_sync(work.audit_trail, entity="outbox", entity_id=dead.id)
    assert [(a.action, a.detail) for a in trail] == [
        ("outbox.dead", "AR: busy"),
        ("outbox.delivered", "AA after dead letter"),
    ]
