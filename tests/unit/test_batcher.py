"""UnitBatcher (lisgw.services.batcher): units queued while a flush is in flight share one
transaction; a failed batch is re-run unit by unit so only the bad unit fails.

A fake store stands in for Store.run: it records each transaction's units and fires when
the test says, so no thread or database is involved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from lisgw.errors import LocalProtocolError, StoreError
from lisgw.services.batcher import UnitBatcher


class FakeStore:
    """Store.run look-alike: ``fn(conn)`` runs when ``finish`` is called."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self.transactions = 0

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.pending.append((lambda conn: fn(conn, *args, **kwargs), (), done))
        return done

    def finish(self, index: int = 0) -> None:
        call, _, done = self.pending.pop(index)
        self.transactions += 1
        try:
            result = call("conn")
        except StoreError as error:
            done.errback(error)
        else:
            done.callback(result)


def unit(conn: str, value: int, log: list[int]) -> int:
    log.append(value)
    if value < 0:
        raise StoreError(f"unit {value} breaks a constraint")
    return value * 10


def test_units_queued_during_a_flush_share_the_next_transaction() -> None:
    store = FakeStore()
    batcher = UnitBatcher(store, Clock())  # type: ignore[arg-type]
    log: list[int] = []
    results: list[int] = []
    batcher.run(unit, 1, log).addCallback(results.append)  # starts a flush at once
    for value in (2, 3, 4):
        batcher.run(unit, value, log).addCallback(results.append)
    assert len(store.pending) == 1
    store.finish()
    assert results == [10]
    assert len(store.pending) == 1  # 2, 3, 4 together
    store.finish()
    assert results == [10, 20, 30, 40]
    assert store.transactions == 2
    assert batcher.stats.largest_batch == 3 and batcher.stats.units == 4


def test_a_failed_batch_runs_each_unit_alone_and_only_the_bad_one_fails() -> None:
    store = FakeStore()
    batcher = UnitBatcher(store, Clock())  # type: ignore[arg-type]
    log: list[int] = []
    outcomes: list[object] = []
    batcher.run(unit, 1, log).addCallback(outcomes.append)
    for value in (2, -3, 4):
        batcher.run(unit, value, log).addCallbacks(
            outcomes.append, lambda f: outcomes.append(f.getErrorMessage())
        )
    store.finish()  # unit 1 alone
    store.finish()  # 2, -3, 4 together: fails
    for _ in range(3):  # then each alone
        store.finish()
    assert outcomes == [10, 20, "unit -3 breaks a constraint", 40]
    assert batcher.stats.failed_batches == 1
    assert not store.pending


def test_max_inflight_runs_that_many_flushes_at_once_in_any_commit_order() -> None:
    """PostgreSQL's setting: two transactions in flight; each fires when it commits, and a
    third flush starts as soon as either returns."""
    store = FakeStore()
    batcher = UnitBatcher(store, Clock(), max_inflight=2)  # type: ignore[arg-type]
    log: list[int] = []
    results: list[int] = []
    for value in (1, 2, 3, 4):
        batcher.run(unit, value, log).addCallback(results.append)
    assert len(store.pending) == 2  # 1 alone, 2 alone; 3 and 4 wait
    store.finish(1)  # the second commits first
    assert results == [20]
    assert len(store.pending) == 2  # 1 still in flight; 3 and 4 together
    store.finish(0)
    assert results == [20, 10]
    assert len(store.pending) == 1
    store.finish()
    assert results == [20, 10, 30, 40]
    assert store.transactions == 3 and batcher.stats.largest_batch == 2


def test_a_failed_flush_frees_its_slot_while_another_is_in_flight() -> None:
    store = FakeStore()
    batcher = UnitBatcher(store, Clock(), max_inflight=2)  # type: ignore[arg-type]
    log: list[int] = []
    outcomes: list[object] = []
    for value in (1, -2, 3):
        batcher.run(unit, value, log).addCallbacks(
            outcomes.append, lambda f: outcomes.append(f.getErrorMessage())
        )
    store.finish(1)  # -2 alone fails: its slot is free again, 3 starts
    assert outcomes == ["unit -2 breaks a constraint"]
    assert len(store.pending) == 2
    store.finish(1)
    store.finish(0)
    assert outcomes == ["unit -2 breaks a constraint", 30, 10]
    assert len(store.pending) == 0


def test_max_inflight_must_be_positive() -> None:
    with pytest.raises(LocalProtocolError, match="max_inflight"):
        UnitBatcher(FakeStore(), Clock(), max_inflight=0)  # type: ignore[arg-type]
