"""Engines for the two backends, set up for durability: SQLite by default, PostgreSQL in production.

Layer: store. Imports sqlalchemy (and the DBAPI drivers through it).

SQLite (``sqlite:///<data dir>/lisgw.sqlite``, the default) is opened, on every connection:

* ``journal_mode=WAL``: readers (the CLI) never block the writer, and a commit is one append
  to the write-ahead log;
* ``synchronous=FULL``: the WAL is fsynced at every commit, so a committed frame survives a
  power cut (with WAL, NORMAL could lose the last commits: not before an ACK);
* ``foreign_keys=ON`` (SQLite's default is off), and ``busy_timeout`` so that a writer waits
  for another instead of failing.

Transactions on SQLite start with ``BEGIN IMMEDIATE`` (read-only ones, on an engine with the
``READ_ONLY_OPTION`` execution option, with a plain ``BEGIN``), issued by us rather than by the
``sqlite3`` module (which begins late and commits before DDL; see SQLAlchemy's "Serializable
isolation / Savepoints / Transactional DDL"): every unit of work takes the write lock when it
starts, waits for it under ``busy_timeout``, and so never fails half-way with SQLITE_BUSY when
it upgrades from reading to writing. SQLite has one writer at a time anyway.

PostgreSQL (``postgresql+psycopg://…``, psycopg 3) runs at READ COMMITTED, SQLAlchemy's and
the server's default; ``claim_outbox`` relies on ``FOR UPDATE SKIP LOCKED`` for its
concurrency, not on the isolation level. A pooled connection idle for ``PING_IDLE`` seconds or
more is pinged when it is checked out (a dead one is replaced, so the pool survives a server
restart); one in steady use is not, since a ping on every checkout is one more round trip per
unit of work — per frame flush, on a busy gateway (issue 6). A server lost in the middle of
steady use fails the unit that finds out (``StoreError``; its caller NAKs or retries) and
SQLAlchemy discards every pooled connection of that server.

A bad URL, a missing driver, an unreachable server or an unopenable file raise ``StoreError``
naming the URL (password hidden).
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from lisgw.errors import StoreError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DEFAULT_FILE_NAME",
    "READ_ONLY_OPTION",
    "default_url",
    "describe",
    "make_engine",
    "store_error",
]

DEFAULT_FILE_NAME: Final = "lisgw.sqlite"
# Execution option of the engine Store.read uses: on SQLite, BEGIN instead of BEGIN IMMEDIATE.
READ_ONLY_OPTION: Final = "lisgw_read_only"
BUSY_TIMEOUT_MS: Final = 30_000
# PostgreSQL: connections the pool keeps (the store's nine threads and one spare).
PG_POOL_SIZE: Final = 10
# PostgreSQL: a pooled connection idle this long (s) is pinged before use.
PING_IDLE: Final = 1.0
_LAST_USED: Final = "lisgw_last_used"
_SQLITE_PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)
_BACKENDS: Final = ("sqlite", "postgresql")


def default_url(data_dir: str | os.PathLike[str]) -> str:
    """The default store: a SQLite file in the gateway's data directory."""
    path = os.path.abspath(os.fspath(data_dir))
    return f"sqlite:///{os.path.join(path, DEFAULT_FILE_NAME)}"


def make_engine(url: str | URL, *, check: bool = True, **engine_args: Any) -> Engine:
    """An engine for ``url`` with the durability settings above.

    ``check`` opens one connection at once so that a bad URL or an unreachable server is
    reported here, at startup, rather than at the first frame. ``engine_args`` go to
    ``sqlalchemy.create_engine`` (pool sizes, ``echo``).
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise StoreError(f"unsupported database {describe(parsed)}: use sqlite or postgresql")
    try:
        if backend == "sqlite":
            engine = _sqlite_engine(parsed, engine_args)
        else:
            # Room for the store's threads (lisgw.store.runner) without overflow connections,
            # which the pool closes when they are returned (a new connection per unit).
            engine_args.setdefault("pool_size", PG_POOL_SIZE)
            engine = sa.create_engine(parsed, **engine_args)
            _ping_when_idle(engine)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as error:
        raise StoreError(f"cannot use database {describe(parsed)}: {error}") from error
    if check:
        try:
            with engine.connect():
                pass
        except sa.exc.SQLAlchemyError as error:
            engine.dispose()
            raise store_error(engine, error) from error
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, but only for a connection idle ``PING_IDLE`` seconds or more
    (SQLAlchemy's custom pessimistic ping: raising DisconnectionError at checkout makes the
    pool discard the connection and try another, up to three times)."""

    @event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < PING_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # the driver's own error for a dead connection
            raise sa.exc.DisconnectionError(str(error)) from error
        if not alive:
            raise sa.exc.DisconnectionError("ping failed")

    @event.listens_for(engine.pool, "checkin")
    def _checkin(dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()


def describe(url: str | URL | Engine) -> str:
    """The URL for messages and logs, password hidden."""
    if isinstance(url, Engine):
        url = url.url
    if isinstance(url, str):
        try:
            url = make_url(url)
        except sa.exc.ArgumentError:
            return repr(url)
    return url.render_as_string(hide_password=True)


def store_error(engine: Engine, error: BaseException) -> StoreError:
    """A StoreError naming the database, for an error the driver or SQLAlchemy raised."""
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return StoreError(f"database {describe(engine)}: {text}")


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except sa.exc.ArgumentError as error:
        raise StoreError(f"not a database URL: {url!r}") from error


def _sqlite_engine(url: URL, engine_args: dict[str, Any]) -> Engine:
    if url.database in (None, "", ":memory:"):
        raise StoreError(f"database {describe(url)}: the store needs a file, not memory")
    connect_args = {"timeout": BUSY_TIMEOUT_MS / 1000, **engine_args.pop("connect_args", {})}
    engine = sa.create_engine(url, connect_args=connect_args, **engine_args)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module must not begin or commit on its own: _sqlite_on_begin does.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: sa.Connection) -> None:
    # A read-only unit (Store.read) begins DEFERRED: under WAL it reads the last commit
    # without taking the write lock, so it never waits behind the writer.
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
