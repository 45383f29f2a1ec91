"""Backends for the store tests: each test runs on SQLite and on PostgreSQL.

SQLite: a fresh file under the test's tmp_path. PostgreSQL: a fresh, uniquely named schema
on the server named by LISGW_TEST_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/
test, the CI service), selected with ``search_path`` and dropped after the test. When the
server cannot be reached the PostgreSQL tests FAIL with a message naming the URL: CI starts
PostgreSQL, and a silently skipped backend would hide exactly the bugs these tests exist for.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lisgw.errors import StoreError
from lisgw.store import migrate
from lisgw.store.database import describe, make_engine
from lisgw.store.runner import Store

PG_URL = os.environ.get("LISGW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


class _PgServer:
    """One admin engine per test session; the first failure to connect is remembered."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.error: str | None = None

    def admin(self) -> Engine:
        if self.engine is None and self.error is None:
            try:
                self.engine = make_engine(PG_URL, connect_args={"connect_timeout": 5})
            except StoreError as error:
                self.error = str(error)
        if self.engine is None:
            pytest.fail(
                f"PostgreSQL is unreachable at {describe(PG_URL)} (set LISGW_TEST_PG_URL to "
                f"a server the tests may create schemas on): {self.error}",
                pytrace=False,
            )
        return self.engine


_PG = _PgServer()


def pg_schema_url(schema: str) -> sa.URL:
    """PG_URL with ``search_path`` set to ``schema``."""
    return make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})


@pytest.fixture(params=BACKENDS)
def backend_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty database on each backend (not migrated)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'lisgw.sqlite'}")
        try:
            yield engine
        finally:
            engine.dispose()
        return
    admin = _PG.admin()
    schema = f"lisgw_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = make_engine(pg_schema_url(schema))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def engine(backend_engine: Engine) -> Engine:
    """A fresh database on each backend, migrated to head."""
    migrate.upgrade(backend_engine)
    return backend_engine


@pytest.fixture
def store(engine: Engine) -> Iterator[Store]:
    """A Store on a migrated database; tests call ``store.run_sync`` (inline)."""
    store = Store(engine)
    try:
        yield store
    finally:
        store.close()
