"""Migrations: every revision up and down on both backends; the models equal the revisions."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lisgw.store import migrate
from lisgw.store.schema import metadata

ALEMBIC_TABLE = "alembic_version"


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {ALEMBIC_TABLE}


def test_revisions_are_numbered_and_linear() -> None:
    revisions = migrate.revisions()
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert migrate.head() == revisions[-1]
    files = sorted(p.name for p in (migrate.MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert [re.match(r"(\d{4})_\w+\.py$", f).group(1) for f in files] == revisions  # type: ignore[union-attr]


def test_every_revision_upgrades_and_downgrades(backend_engine: Engine) -> None:
    assert migrate.current(backend_engine) is None
    previous: str = "base"
    seen: list[set[str]] = [set()]
    for revision in migrate.revisions():
        migrate.upgrade(backend_engine, revision)
        assert migrate.current(backend_engine) == revision
        tables = _tables(backend_engine)
        assert tables >= seen[-1]
        migrate.downgrade(backend_engine, previous)
        assert migrate.current(backend_engine) == (None if previous == "base" else previous)
        assert _tables(backend_engine) == seen[-1]
        migrate.upgrade(backend_engine, revision)
        assert _tables(backend_engine) == tables
        seen.append(tables)
        previous = revision
    migrate.downgrade(backend_engine, "base")
    assert _tables(backend_engine) == set()


def test_head_creates_every_model_table(backend_engine: Engine) -> None:
    migrate.upgrade(backend_engine)
    assert _tables(backend_engine) == set(metadata.tables)


def test_models_equal_migrations(backend_engine: Engine) -> None:
    migrate.upgrade(backend_engine)
    assert migrate.differences(backend_engine) == []


def test_the_comparison_sees_a_difference(backend_engine: Engine) -> None:
    """The models == migrations test has teeth: a column the revisions lack is reported."""
    migrate.upgrade(backend_engine)
    changed = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(changed)
    sa.Table(
        "frames",
        changed,
        sa.Column("checksum_ok", sa.Boolean, nullable=True),
        extend_existing=True,
    )
    diffs = migrate.differences(backend_engine, changed)
    assert [d[0] for d in diffs] == ["add_column"]
    assert diffs[0][3].name == "checksum_ok"
