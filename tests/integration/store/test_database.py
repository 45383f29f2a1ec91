"""Engines: SQLite durability settings, clear errors for bad URLs and unreachable servers."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lisgw.errors import StoreError
from lisgw.store import work
from lisgw.store.database import default_url, describe, make_engine
from lisgw.store.records import Direction, FrameIn
from lisgw.store.runner import Store

from .factories import NOW

# synchronous 2 is FULL: the WAL is fsynced at every commit.
_SETTINGS = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30_000}


def _pragma(conn: sa.Connection, name: str) -> object:
    return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_sqlite_durability_settings(tmp_path: Path) -> None:
    engine = make_engine(default_url(tmp_path))
    try:
        # Two DBAPI connections at once: the settings hold on every connection of the pool.
        first, second = engine.raw_connection(), engine.raw_connection()
        try:
            for raw in (first, second):
                cursor = raw.cursor()
                read = {p: cursor.execute(f"PRAGMA {p}").fetchone()[0] for p in _SETTINGS}
                cursor.close()
                assert read == _SETTINGS
        finally:
            first.close()
            second.close()
        assert (tmp_path / "lisgw.sqlite").is_file()
    finally:
        engine.dispose()


def test_sqlite_settings_inside_a_unit_of_work(tmp_path: Path) -> None:
    store = Store(make_engine(default_url(tmp_path)))
    try:
        settings = store.run_sync(
            lambda conn: tuple(
                _pragma(conn, p) for p in ("journal_mode", "synchronous", "foreign_keys")
            )
        )
    finally:
        store.close()
    assert settings == ("wal", 2, 1)


def test_sqlite_transactions_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a unit of work holds the write lock before its first statement."""
    engine = make_engine(default_url(tmp_path))
    try:
        with engine.begin():
            other = sqlite3.connect(tmp_path / "lisgw.sqlite", timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
    finally:
        engine.dispose()


def test_foreign_keys_are_enforced(store: Store) -> None:
    frame = FrameIn(session_id=999, seq=0, direction=Direction.IN, data=b"x", at=NOW)
    with pytest.raises(StoreError, match=r"(?i)foreign key"):
        store.run_sync(work.append_frames, [frame])


def test_default_url_is_a_file_in_the_data_directory(tmp_path: Path) -> None:
    assert default_url(tmp_path) == f"sqlite:///{tmp_path}/lisgw.sqlite"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u@localhost/db", "unsupported database"),
        ("postgresql+nosuchdriver://u@localhost/db", "cannot use database"),
        ("sqlite://", "needs a file"),
        ("sqlite:///:memory:", "needs a file"),
    ],
)
def test_bad_urls_raise_store_error(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        make_engine(url)


def test_unopenable_sqlite_file_names_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/dir/lisgw.sqlite"
    with pytest.raises(StoreError, match=re.escape("missing/dir/lisgw.sqlite")):
        make_engine(url)


def test_unreachable_server_names_the_url_without_password() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    url = "postgresql+psycopg://lab:secret@127.0.0.1:1/lisgw"
    with pytest.raises(StoreError) as raised:
        make_engine(url)
    assert "127.0.0.1:1/lisgw" in str(raised.value)
    assert "secret" not in str(raised.value)


def test_describe_hides_the_password(engine: Engine) -> None:
    assert "secret" not in describe("postgresql+psycopg://lab:secret@db/lisgw")
    assert describe(engine).startswith(engine.dialect.name)


def _kill_backend(engine: Engine, store: Store) -> int:
    """Terminate the server process behind the store's pooled connection; its pid."""
    pid = int(store.run_sync(lambda conn: conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()))
    admin = make_engine(engine.url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        admin.dispose()
    return pid


def test_postgresql_pool_survives_a_lost_server_connection(
    engine: Engine, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle connections are pinged and replaced; one in steady use fails its unit once (the
    caller NAKs or retries), then the pool reconnects (no ping on every checkout: issue 6)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server connection to lose")
    from lisgw.store import database

    session = store.run_sync(work.open_session, "c1", protocol="astm", peer="p", now=NOW).id
    frame = FrameIn(session, 1, Direction.IN, b"\x05", NOW)
    # In steady use (checked in just now): not pinged, so the unit that finds out fails.
    monkeypatch.setattr(database, "PING_IDLE", 3600.0)
    first = _kill_backend(engine, store)
    with pytest.raises(StoreError):
        store.run_sync(work.append_frames, [frame])
    assert store.run_sync(work.append_frames, [frame]).inserted == 1
    # Idle long enough: pinged at checkout, the dead connection replaced, nothing fails.
    monkeypatch.setattr(database, "PING_IDLE", 0.0)
    second = _kill_backend(engine, store)
    again = FrameIn(session, 2, Direction.IN, b"\x04", NOW)
    assert store.run_sync(work.append_frames, [again]).inserted == 1
    now_pid = store.run_sync(lambda conn: conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
    assert first != second != now_pid
