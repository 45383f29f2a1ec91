"""Group commit for units of work: the transfers that end together share one transaction.

Layer: service (Twisted). Runs store units of work (``fn(conn, ...)``, lisgw.store.work)
through ``Store.run``; the clock is injected.

Why (issue 6): the store runs on one thread (SQLite has one writer), so the gateway's
sessions/s is bounded by that thread's time per session, and a commit (an fsync with
durability on) is a large part of it. The frame journal (lisgw.services.journal) already
shares commits between links for frames; ``UnitBatcher`` does the same for what comes
after the EOT: ``run(fn, *args)`` queues the unit, and one flush runs every unit queued
(up to ``max_batch``) one after the other in ONE transaction, then fires their Deferreds
in queue order with what each returned. A unit queued while nothing is in flight starts a
flush at once (no added latency: a quiet gateway commits each transfer as before); units
queued while a flush is in flight wait for it and go together in the next one, which
starts as soon as it returns. Under load that is the group commit: with one store thread
the units pile up exactly while the thread is busy.

``max_inflight`` (default 1) lets that many flushes run at once, each on its own pool thread
and transaction: for PostgreSQL, whose transactions run concurrently and whose per-statement
round trips leave one thread mostly waiting (issue 6: at 50 analyzers × 1 session/s one flush
at a time fell seconds behind). Units of one line never race each other there: a line's
ingest queues its next transfer only after the previous one committed
(lisgw.services.ingest). SQLite keeps 1 (one writer: a second flush would only wait).

Guarantees are those of ``Store.run``, per unit: a Deferred fires only after the
transaction holding its unit committed, and fails when its unit was not committed. If a
batched transaction fails, nothing of it was committed; each of its units is then run
again ALONE (its own transaction, in queue order), so one bad unit (a constraint it breaks,
a driver bug raising in the unit) fails only its own Deferred, and a store that is down
fails each of them with its error (callers retry, as they do with ``Store.run``). Units in
one batch see each other's writes (they run in order in the same transaction), exactly as
if they had been committed one after the other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import sqlalchemy as sa
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.errors import LocalProtocolError
from lisgw.store.runner import Store

__all__ = ["BatcherStats", "UnitBatcher"]

_log = Logger()
P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_MAX_BATCH: Final = 64


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters since start: transactions committed, units they held, batched transactions
    that failed (their units then ran alone), the largest batch."""

    flushes: int = 0
    units: int = 0
    failed_batches: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Unit:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    done: Deferred[Any]


def _run_units(conn: sa.Connection, units: list[_Unit]) -> list[Any]:
    """One unit of work made of several: each in turn, on the same transaction."""
    return [unit.fn(conn, *unit.args, **unit.kwargs) for unit in units]


class UnitBatcher:
    """Group commit of units of work (module docstring)."""

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_inflight: int = 1,
    ) -> None:
        if max_batch < 1:
            raise LocalProtocolError("max_batch must be at least 1")
        if max_inflight < 1:
            raise LocalProtocolError("max_inflight must be at least 1")
        self.store = store
        self.clock = clock
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: deque[_Unit] = deque()
        self._inflight = 0
        self._stats = BatcherStats()

    @property
    def stats(self) -> BatcherStats:
        return self._stats

    def run(
        self,
        fn: Callable[Concatenate[sa.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """``fn(conn, *args, **kwargs)`` in a transaction shared with the units queued with
        it; fires with its result once committed, fails when it was not (as Store.run)."""
        done: Deferred[T] = Deferred()
        self._queue.append(_Unit(fn, args, kwargs, done))
        self._schedule()
        return done

    def _schedule(self) -> None:
        while self._inflight < self.max_inflight and self._queue:
            self._flush()

    def _flush(self) -> None:
        batch: list[_Unit] = []
        while self._queue and len(batch) < self.max_batch:
            batch.append(self._queue.popleft())
        self._inflight += 1
        # maybeDeferred: a store that raises at once (its pool stopped) fails the batch too.
        running: Deferred[list[Any]] = maybeDeferred(self.store.run, _run_units, batch)
        running.addCallbacks(
            self._flushed, self._batch_failed, callbackArgs=(batch,), errbackArgs=(batch,)
        )
        running.addErrback(self._internal_error)

    def _flushed(self, outcomes: list[Any], batch: list[_Unit]) -> None:
        stats = self._stats
        self._stats = BatcherStats(
            stats.flushes + 1,
            stats.units + len(batch),
            stats.failed_batches,
            max(stats.largest_batch, len(batch)),
        )
        self._inflight -= 1
        for unit, outcome in zip(batch, outcomes, strict=True):
            unit.done.callback(outcome)
        self._schedule()

    def _batch_failed(self, failure: Failure, batch: list[_Unit]) -> Deferred[None] | None:
        if len(batch) == 1:
            self._inflight -= 1
            batch[0].done.errback(failure)
            self._schedule()
            return None
        stats = self._stats
        self._stats = BatcherStats(
            stats.flushes, stats.units, stats.failed_batches + 1, stats.largest_batch
        )
        _log.warn(
            "{count} units of work not committed together ({error}); running each alone",
            count=len(batch),
            error=failure.getErrorMessage(),
        )
        return Deferred.fromCoroutine(self._one_by_one(batch))

    async def _one_by_one(self, batch: list[_Unit]) -> None:
        try:
            for unit in batch:
                try:
                    outcome = await maybeDeferred(
                        self.store.run, unit.fn, *unit.args, **unit.kwargs
                    )
                except Exception as error:
                    unit.done.errback(error)
                else:
                    self._count_alone()
                    unit.done.callback(outcome)
        finally:
            self._inflight -= 1
            self._schedule()

    def _count_alone(self) -> None:
        stats = self._stats
        self._stats = BatcherStats(
            stats.flushes + 1, stats.units + 1, stats.failed_batches, stats.largest_batch
        )

    def _internal_error(self, failure: Failure) -> None:
        _log.failure("unit batcher: internal error", failure)
