"""A store on SQLite and PostgreSQL for the ``tail`` and ``top`` tests, and its URL for
``--store`` (PostgreSQL's carries the test schema as ``search_path``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from lisgw.store import migrate
from lisgw.store.runner import Store
from tests.integration.store.conftest import backend_engine  # noqa: F401  (fixture)


@pytest.fixture
def live_store(backend_engine: Engine) -> Iterator[Store]:  # noqa: F811
    """A migrated store the tests write traffic into (the gateway's side)."""
    migrate.upgrade(backend_engine)
    store = Store(backend_engine)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store_url(live_store: Store) -> str:
    return live_store.engine.url.render_as_string(hide_password=False)
