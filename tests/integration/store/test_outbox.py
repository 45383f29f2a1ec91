"""The outbox: claims keep per-sample order, leases expire, workers never share a row."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.store import work
from lisgw.store.database import make_engine
from lisgw.store.records import OutboxRow, OutboxState
from lisgw.store.runner import Store

from .factories import NOW, fill_outbox

LEASE = 30.0


def _claim(store: Store, worker: str, now: float = NOW, limit: int = 100) -> list[OutboxRow]:
    return store.run_sync(work.claim_outbox, worker, now, limit, LEASE)


def test_claim_marks_rows_inflight_oldest_first(store: Store) -> None:
    rows = store.run_sync(fill_outbox, ["S1", "S2", "S3"])
    claimed = _claim(store, "w1", limit=2)
    assert [r.id for r in claimed] == [rows[0].id, rows[1].id]
    assert all(r.state == OutboxState.INFLIGHT and r.claimed_by == "w1" for r in claimed)
    assert all(r.lease_until == NOW + LEASE and r.attempts == 1 for r in claimed)
    assert [r.id for r in _claim(store, "w2")] == [rows[2].id]
    assert _claim(store, "w3") == []
    assert store.run_sync(work.claim_outbox, "w4", NOW, 0, LEASE) == []


def test_only_due_rows_are_claimed(store: Store) -> None:
    (row,) = store.run_sync(fill_outbox, ["S1"])
    _claim(store, "w1")
    store.run_sync(
        work.outbox_retry,
        row.id,
        worker="w1",
        next_attempt_at=NOW + 10,
        error="timeout",
        now=NOW + 1,
    )
    assert _claim(store, "w1", now=NOW + 9) == []
    assert [r.id for r in _claim(store, "w1", now=NOW + 10)] == [row.id]


def test_per_sample_order(store: Store) -> None:
    """A row waits while an earlier row of its sample is pending or inflight."""
    rows = store.run_sync(fill_outbox, ["S1", "S2", "S1", "S1", "S2"])
    first = _claim(store, "w1")
    assert [r.id for r in first] == [rows[0].id, rows[1].id]
    assert _claim(store, "w2") == []
    # A failed attempt keeps its place: the sample's later rows still wait.
    store.run_sync(
        work.outbox_retry, rows[0].id, worker="w1", next_attempt_at=NOW + 5, error="no ACK", now=NOW
    )
    assert _claim(store, "w2", now=NOW + 1) == []
    assert [r.id for r in _claim(store, "w2", now=NOW + 5)] == [rows[0].id]
    store.run_sync(work.outbox_delivered, rows[0].id, worker="w2", now=NOW + 6)
    store.run_sync(work.outbox_delivered, rows[1].id, worker="w1", now=NOW + 6)
    assert [r.id for r in _claim(store, "w1", now=NOW + 6)] == [rows[2].id, rows[4].id]


def test_a_dead_letter_does_not_block_its_sample(store: Store) -> None:
    rows = store.run_sync(fill_outbox, ["S1", "S1"])
    _claim(store, "w1")
    dead = store.run_sync(
        work.outbox_dead, rows[0].id, worker="w1", reason="AE: unknown patient", now=NOW
    )
    assert (dead.state, dead.last_error) == (OutboxState.DEAD, "AE: unknown patient")
    assert [r.id for r in _claim(store, "w1")] == [rows[1].id]


def test_expired_leases_are_claimed_again(store: Store) -> None:
    (row,) = store.run_sync(fill_outbox, ["S1"])
    _claim(store, "w1")
    assert _claim(store, "w2", now=NOW + LEASE - 1) == []
    (again,) = _claim(store, "w2", now=NOW + LEASE)
    assert (again.id, again.claimed_by, again.attempts) == (row.id, "w2", 2)
    # The first worker lost its claim: its outcome changes nothing.
    late = store.run_sync(
        work.outbox_retry, row.id, worker="w1", next_attempt_at=NOW + 99, error="late", now=NOW + 31
    )
    assert (late.state, late.claimed_by, late.last_error) == (OutboxState.INFLIGHT, "w2", "")
    late = store.run_sync(work.outbox_dead, row.id, worker="w1", reason="late", now=NOW + 31)
    assert late.state == OutboxState.INFLIGHT


def test_retry_records_the_first_failure(store: Store) -> None:
    (row,) = store.run_sync(fill_outbox, ["S1"])
    for attempt in range(3):
        now = NOW + 100 * attempt
        _claim(store, "w1", now=now)
        retried = store.run_sync(
            work.outbox_retry,
            row.id,
            worker="w1",
            next_attempt_at=now + 50,
            error=f"refused {attempt}",
            now=now,
        )
    assert (retried.state, retried.attempts, retried.first_failed_at) == (
        OutboxState.PENDING,
        3,
        NOW,
    )
    assert (retried.last_error, retried.claimed_by, retried.lease_until) == (
        "refused 2",
        None,
        None,
    )


def test_delivered_is_a_fact_and_idempotent(store: Store) -> None:
    (row,) = store.run_sync(fill_outbox, ["S1"])
    _claim(store, "w1")
    delivered = store.run_sync(work.outbox_delivered, row.id, worker="w1", now=NOW + 2)
    assert (delivered.state, delivered.delivered_at, delivered.claimed_by) == (
        OutboxState.DELIVERED,
        NOW + 2,
        None,
    )
    again = store.run_sync(work.outbox_delivered, row.id, worker="w2", now=NOW + 3)
    assert again == delivered
    assert _claim(store, "w1", now=NOW + 1000) == []


def test_dead_letter_and_requeue_are_audited(store: Store) -> None:
    (row,) = store.run_sync(fill_outbox, ["S1"])
    with pytest.raises(StoreError, match="only dead rows"):
        store.run_sync(work.outbox_requeue, row.id, actor="tech:alice", now=NOW)
    _claim(store, "w1")
    store.run_sync(
        work.outbox_retry, row.id, worker="w1", next_attempt_at=NOW, error="refused", now=NOW
    )
    _claim(store, "w1")
    store.run_sync(
        work.outbox_dead, row.id, worker="w1", reason="AR: unknown message type", now=NOW + 1
    )
    requeued = store.run_sync(work.outbox_requeue, row.id, actor="tech:alice", now=NOW + 50)
    assert (requeued.state, requeued.attempts, requeued.first_failed_at) == (
        OutboxState.PENDING,
        0,
        None,
    )
    assert requeued.next_attempt_at == NOW + 50
    trail = store.run_sync(work.audit_trail, entity="outbox", entity_id=row.id)
    assert [(a.action, a.actor, a.detail) for a in trail] == [
        ("outbox.dead", "w1", "AR: unknown message type"),
        ("outbox.requeue", "tech:alice", "was dead: AR: unknown message type"),
    ]
    assert [r.id for r in _claim(store, "w2", now=NOW + 50)] == [row.id]


def test_counts_and_listing(store: Store) -> None:
    rows = store.run_sync(fill_outbox, ["S1", "S2", "S3"])
    _claim(store, "w1", limit=2)
    store.run_sync(work.outbox_delivered, rows[0].id, now=NOW)
    counts = store.run_sync(work.outbox_counts)
    assert counts == {
        OutboxState.PENDING: 1,
        OutboxState.INFLIGHT: 1,
        OutboxState.DELIVERED: 1,
        OutboxState.DEAD: 0,
    }
    assert [r.id for r in store.run_sync(work.outbox_rows, state=OutboxState.PENDING)] == [
        rows[2].id
    ]
    assert [r.id for r in store.run_sync(work.outbox_rows, sample_id="S2")] == [rows[1].id]
    with pytest.raises(StoreError, match="no outbox row"):
        store.run_sync(work.outbox_delivered, 424242, now=NOW)


def _worker(
    store: Store,
    name: str,
    claims: list[tuple[int, str]],
    tickets: dict[int, tuple[int, int]],
    counter: Callable[[], int],
    errors: list[BaseException],
    start: threading.Barrier,
) -> None:
    """Claim a few rows at a time, deliver them, until nothing is left to claim."""
    try:
        first = True
        while True:
            rows = store.run_sync(work.claim_outbox, name, NOW, 4, LEASE)
            claimed_ticket = counter()  # after the claim committed
            if first:
                # Both workers hold a claim at once before either goes on: they overlap.
                start.wait(timeout=60)
                first = False
            if not rows:
                return
            claims.extend((row.id, name) for row in rows)
            delivered_ticket = counter()  # before the deliveries commit
            store.run_sync(_deliver_all, [r.id for r in rows], name)
            for row in rows:
                tickets[row.id] = (claimed_ticket, delivered_ticket)
    except BaseException as error:  # reported by the test in the main thread
        errors.append(error)


def _deliver_all(conn: sa.Connection, ids: list[int], worker: str) -> None:
    for outbox_id in ids:
        work.outbox_delivered(conn, outbox_id, worker=worker, now=NOW)


def test_concurrent_workers_never_claim_the_same_row(store: Store) -> None:
    """Two workers (threads, each with its own engine, as two gateway processes would have),
    many rows: no row claimed twice, every row claimed, and a sample's row claimed only after
    the delivery of the sample's previous row."""
    samples = [f"S{n % 60}" for n in range(300)]  # five rows per sample, interleaved
    rows = store.run_sync(fill_outbox, samples)
    claims: list[tuple[int, str]] = []
    tickets: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []
    count = itertools.count()
    start = threading.Barrier(2)
    workers = {name: Store(make_engine(store.engine.url)) for name in ("w1", "w2")}
    threads = [
        threading.Thread(
            target=_worker,
            args=(worker, name, claims, tickets, lambda: next(count), errors, start),
        )
        for name, worker in workers.items()
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        for worker in workers.values():
            worker.close()
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    claimed_ids = [outbox_id for outbox_id, _ in claims]
    assert len(claimed_ids) == len(set(claimed_ids)), "a row was claimed twice"
    assert sorted(claimed_ids) == [r.id for r in rows]
    assert {name for _, name in claims} == {"w1", "w2"}
    by_sample: dict[str, list[int]] = {}
    for row in rows:
        by_sample.setdefault(row.sample_id, []).append(row.id)
    for ids in by_sample.values():
        for earlier, later in itertools.pairwise(ids):
            # The delivery of `earlier` began before `later` was claimed.
            assert tickets[earlier][1] < tickets[later][0]
    assert store.run_sync(work.outbox_counts)[OutboxState.DELIVERED] == len(rows)
