"""Run units of work: on a thread pool from Twisted, or inline (tests, the CLI).

Layer: store (the only store module that imports twisted). ``Store.run(fn, *args)`` calls
``fn(conn, *args)`` on a thread of the store's pool, in one transaction (``engine.begin()``:
committed when ``fn`` returns, rolled back when it raises), and returns a Deferred that
fires, in the reactor thread, with what ``fn`` returned — a frozen dataclass, never a row.
``Store.run_sync`` does the same inline. This is buildbot's pattern (master/buildbot/db):
the reactor never blocks on the database, and nothing that leaves the thread can touch a
connection.

Errors: a database error (connection lost, disk full, constraint violated, server gone)
becomes ``StoreError`` naming the database; errors lisgw raises on purpose (``LisgwError``)
pass as they are. Either way nothing was committed: a caller waiting to acknowledge a frame
sends no positive ACK.

Threads: SQLite has one writer at a time, and a second thread would only wait on the write
lock (SQLite's busy handler sleeps, which costs latency), so a SQLite store runs its units on
one thread by default; PostgreSQL gets ``POSTGRESQL_THREADS`` (nine: the frame journal's
flush, five transfer transactions (lisgw.services.batcher), and three for the outbox,
host-query lookups, downloads and status). ``Store.read`` runs read-only units (the
host-query lookup) on two threads of their own on SQLite, so a reply never waits for the
writers' queue (issue 6). The pool is created and started on the first
``run`` unless one is given; ``close`` stops a pool the store created and disposes of the
engine. The reactor is injected (the global one is used only when none is given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, Final, ParamSpec, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from lisgw.store.database import READ_ONLY_OPTION, store_error

__all__ = ["Store"]

P = ParamSpec("P")
POSTGRESQL_THREADS: Final = 9
T = TypeVar("T")


class Store:
    """The store as the services see it: an engine plus a thread pool to run units on."""

    def __init__(
        self,
        engine: Engine,
        *,
        reactor: IReactorFromThreads | None = None,
        threadpool: ThreadPool | None = None,
        max_threads: int | None = None,
    ) -> None:
        self.engine = engine
        self._reactor = reactor
        self._threadpool = threadpool
        self._owns_pool = threadpool is None
        default_threads = 1 if engine.dialect.name == "sqlite" else POSTGRESQL_THREADS
        self._max_threads = max_threads if max_threads is not None else default_threads
        self._reader: Engine = engine.execution_options(**{READ_ONLY_OPTION: True})
        self._autocommit: Engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_pool: ThreadPool | None = None

    def run(
        self,
        fn: Callable[Concatenate[sa.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """``fn(conn, *args, **kwargs)`` in one transaction on the pool; its result."""

        def call() -> T:
            return self._call(fn, *args, **kwargs)

        return deferToThreadPool(self._get_reactor(), self._get_pool(), call)

    def read(
        self,
        fn: Callable[Concatenate[sa.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """``fn(conn, ...)``, a unit that only READS, on threads of its own: it never waits
        behind the writers' queue (SQLite: a deferred transaction that, under WAL, sees the
        last commit without the write lock; PostgreSQL: the same pool as ``run``). A unit
        that writes must use ``run``."""
        if self.engine.dialect.name != "sqlite":
            return self.run(fn, *args, **kwargs)

        def call() -> T:
            return self._call_on(self._reader, fn, *args, **kwargs)

        if self._read_pool is None:
            self._read_pool = ThreadPool(0, 2, name="lisgw-store-read")
        if not self._read_pool.started:
            self._read_pool.start()
        return deferToThreadPool(self._get_reactor(), self._read_pool, call)

    def run_statement(
        self,
        fn: Callable[Concatenate[sa.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """``fn(conn, ...)``, a unit that is ONE statement, on the pool in autocommit mode:
        the statement is its own transaction, atomic and (synchronous_commit) durable when
        it returns, without the BEGIN and COMMIT round trips of ``run``. PostgreSQL only
        (the frame journal's frames-only flushes, issue 6); on SQLite it is ``run``."""
        if self.engine.dialect.name == "sqlite":
            return self.run(fn, *args, **kwargs)

        def call() -> T:
            try:
                with self._autocommit.connect() as conn:
                    return fn(conn, *args, **kwargs)
            except sa.exc.SQLAlchemyError as error:
                raise store_error(self.engine, error) from error

        return deferToThreadPool(self._get_reactor(), self._get_pool(), call)

    def run_sync(
        self,
        fn: Callable[Concatenate[sa.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``fn(conn, *args, **kwargs)`` in one transaction, inline; its result."""
        return self._call(fn, *args, **kwargs)

    def close(self) -> None:
        """Stop the thread pool the store created, close the engine's connections."""
        if self._owns_pool and self._threadpool is not None and self._threadpool.started:
            self._threadpool.stop()
        if self._read_pool is not None and self._read_pool.started:
            self._read_pool.stop()
        self.engine.dispose()

    def _call(
        self,
        fn: Callable[Concatenate[sa.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return self._call_on(self.engine, fn, *args, **kwargs)

    def _call_on(
        self,
        engine: Engine,
        fn: Callable[Concatenate[sa.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        try:
            with engine.begin() as conn:
                return fn(conn, *args, **kwargs)
        except sa.exc.SQLAlchemyError as error:
            raise store_error(self.engine, error) from error

    def _get_reactor(self) -> IReactorFromThreads:
        if self._reactor is None:
            from twisted.internet import reactor as global_reactor

            self._reactor = cast(IReactorFromThreads, global_reactor)
        return self._reactor

    def _get_pool(self) -> ThreadPool:
        if self._threadpool is None:
            self._threadpool = ThreadPool(0, self._max_threads, name="lisgw-store")
        if self._owns_pool and not self._threadpool.started:
            self._threadpool.start()
        return self._threadpool
