"""Helpers the units of work share: dialect-specific inserts, chunking, audit rows.

Layer: store (internal). Imports sqlalchemy and lisgw.store.schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from lisgw.errors import StoreError
from lisgw.store.schema import audit, connections

T = TypeVar("T")

# SQLite's default bound-parameter limit is 32766 since 3.32; stay far below it.
CHUNK: Final = 500


def insert_ignore(
    connection: sa.Connection,
    table: sa.Table,
    index_elements: Sequence[str],
    *,
    returning: bool = False,
) -> Any:
    """INSERT … ON CONFLICT (index_elements) DO NOTHING, on either backend; ``returning``:
    with RETURNING of every column.

    Both dialects support it (SQLite since 3.24); with RETURNING, skipped rows return
    nothing, which is how the units of work tell new rows from duplicates. Built once per
    dialect and shape (statements are immutable): some run for every transfer (issue 6).
    """
    name = connection.dialect.name
    key = (name, table.name, tuple(index_elements), returning)
    statement = _IGNORING.get(key)
    if statement is None:
        statement = dialect_insert(connection, table).on_conflict_do_nothing(
            index_elements=index_elements
        )
        if returning:
            statement = statement.returning(*table.c)
        _IGNORING[key] = statement
    return statement


_IGNORING: dict[tuple[str, str, tuple[str, ...], bool], Any] = {}


def dialect_insert(connection: sa.Connection, table: sa.Table) -> Any:
    """The backend's own INSERT construct (it has ON CONFLICT): PostgreSQL's or SQLite's."""
    name = connection.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise StoreError(f"unsupported database dialect {name!r}")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def unique(items: Iterable[T]) -> list[T]:
    """The items without repeats, in first-seen order."""
    return list(dict.fromkeys(items))


def ensure_connection(connection: sa.Connection, name: str, now: float) -> None:
    """Create the connections row for ``name`` if there is none (two processes may race).

    Reads first: on PostgreSQL an ``INSERT … ON CONFLICT DO NOTHING`` on a row that another
    open transaction has updated waits for that transaction to end, and the frame journal's
    sessions and every stored message call this while transfers update their connection's
    row (issue 6: frame ACKs waited seconds behind transfer commits). A plain SELECT never
    waits; the insert runs only for a name not seen yet.
    """
    exists = sa.select(connections.c.name).where(connections.c.name == name)
    if connection.execute(exists).first() is not None:
        return
    values = {
        "name": name,
        "driver": "",
        "protocol": "",
        "transport": "",
        "instrument_name": "",
        "instrument_serial": "",
        "instrument_software": "",
        "first_seen_at": now,
        "last_seen_at": now,
    }
    connection.execute(insert_ignore(connection, connections, ["name"]), values)


def write_audit(
    connection: sa.Connection,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | int,
    now: float,
    detail: str = "",
) -> int:
    """Insert one audit row; its id."""
    statement = sa.insert(audit).returning(audit.c.id)
    values = {
        "at": now,
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": str(entity_id),
        "detail": detail,
    }
    return int(connection.execute(statement, values).scalar_one())
