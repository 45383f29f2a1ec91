"""Schema migrations: Alembic configured in code, run on either backend.

Layer: store. Imports alembic and sqlalchemy. No alembic.ini is read: ``alembic_config``
points Alembic at lisgw/store/migrations (shipped in the wheel) and the functions here hand
env.py an open connection. Every function takes a URL or an Engine (tests pass an engine
whose ``search_path`` selects a throwaway PostgreSQL schema).

Revisions are numbered (``0001``, ``0002`` …, one file each under migrations/versions) and
linear. Each is tested up and down on SQLite and PostgreSQL, and a test checks that the
head revision and lisgw.store.schema agree (``differences`` is empty).

On SQLite, DDL runs in the same ``BEGIN IMMEDIATE`` transaction as everything else (see
lisgw.store.database), so a failed upgrade leaves the previous revision intact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

from lisgw.store.database import make_engine, store_error
from lisgw.store.schema import metadata

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current",
    "differences",
    "downgrade",
    "head",
    "revisions",
    "upgrade",
]

MIGRATIONS_DIR: Final = Path(__file__).resolve().with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for the store's migrations (``url`` only for offline SQL)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the newest by default), in one transaction."""
    _run(target, lambda config: command.upgrade(config, revision))


def downgrade(target: str | URL | Engine, revision: str) -> None:
    """Downgrade the database to ``revision`` ("base": no tables at all)."""
    _run(target, lambda config: command.downgrade(config, revision))


def current(target: str | URL | Engine) -> str | None:
    """The database's revision, None when it has never been migrated."""
    with _connection(target) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head() -> str:
    """The newest revision shipped with this version of lisgw."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no Alembic revisions under {MIGRATIONS_DIR}")
    return revision


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions("base", "heads")))]


def differences(target: str | URL | Engine, models: sa.MetaData = metadata) -> list[Any]:
    """What Alembic's autogenerate finds between the database and ``models``.

    Empty when the database is at head and the revisions create exactly the models
    (lisgw.store.schema, by default).
    """
    with _connection(target) as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, models))


def _run(target: str | URL | Engine, action: Callable[[Config], None]) -> None:
    with _connection(target) as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config)


@contextmanager
def _connection(target: str | URL | Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction, committed at the end; a URL gets a throwaway engine."""
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with engine.begin() as connection:
            yield connection
    except sa.exc.SQLAlchemyError as error:
        raise store_error(engine, error) from error
    finally:
        if engine is not target:
            engine.dispose()
