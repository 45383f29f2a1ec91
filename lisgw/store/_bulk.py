"""Plain ``executemany`` inserts for the hot path: no RETURNING, no per-row type processing.

Layer: store (internal). Imports sqlalchemy, lisgw.errors and lisgw.store.schema.

Why (issue 6): storing a CBC transfer inserted 40 result rows and 40 review rows through
SQLAlchemy's compiled ``INSERT … RETURNING`` (insertmanyvalues), which runs every column's
bind processor on every row (``CleanText`` on each text column, the JSON serializer) and
sets up a compiled statement per call: most of the store thread's CPU per session. Here the
statement is plain SQL built once per (dialect, table, columns), and the rows go to the DBAPI
cursor's ``executemany`` as tuples, so the caller is responsible for the values:

* text: ``clean_texts`` checks a message's text once (all values joined) and runs
  ``clean_text`` per value only when that check finds a NUL or a lone surrogate, so the
  stored text is exactly what ``CleanText`` would have stored;
* JSON columns: pass the ``json_text`` string (what sa.JSON would have written); on
  PostgreSQL the placeholder is cast to json;
* booleans, numbers and None: as they are (both drivers adapt them).

Skipped conflicts (``ON CONFLICT … DO NOTHING``) are not reported: callers read back what was
inserted (e.g. ids by ``message_id``) in one SELECT.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from lisgw.errors import StoreError
from lisgw.store.schema import clean_text

__all__ = ["clean_texts", "insert_many", "json_text", "marks"]

_SEPARATOR = "\x1f"
_MAX_PARAMETERS = 30_000  # below SQLite's 32766 and PostgreSQL's 65535 bound parameters
_statements: dict[tuple[str, str, tuple[str, ...], tuple[str, ...], int], str] = {}


def json_text(value: object) -> str:
    """A JSON column's text, as sa.JSON's default serializer writes it."""
    return json.dumps(value)


def clean_texts(values: Sequence[str]) -> bool:
    """Whether these texts need ``clean_text`` (one check for all of them)."""
    joined = _SEPARATOR.join(values)
    if joined.isascii():
        return "\x00" in joined
    return clean_text(joined) != joined


def insert_many(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str] = (),
    one_statement: bool = False,
) -> int:
    """INSERT the rows (sequences in ``columns`` order) with one ``executemany``;
    ``conflict``: ON CONFLICT (conflict) DO NOTHING. Returns how many rows were inserted
    (rows skipped by the conflict clause not counted).

    SQLite runs it in-process; psycopg 3 sends the rows in pipeline mode (one round trip) to
    one prepared statement. That costs about a third of the client CPU of one multi-row
    ``VALUES`` statement, whose 40 × 22 parameters psycopg converts on every call (issue 6,
    measured with 40-row CBC inserts).

    ``one_statement``: ONE multi-row ``VALUES`` statement instead, atomic on its own (for a
    unit run in autocommit mode, ``Store.run_statement``, where an executemany would commit
    row by row); refused beyond what one statement may bind, never split.
    """
    if not rows:
        return 0
    if not one_statement:
        sql = _statement(conn.dialect, table, columns, conflict, 1)
        return int(conn.exec_driver_sql(sql, list(map(tuple, rows))).rowcount)
    if len(rows) * len(columns) > _MAX_PARAMETERS:
        raise StoreError(f"{len(rows)} rows are too many for one statement on {table.name}")
    sql = _statement(conn.dialect, table, columns, conflict, len(rows))
    return int(conn.exec_driver_sql(sql, tuple(v for row in rows for v in row)).rowcount)


def _statement(
    dialect: sa.Dialect,
    table: sa.Table,
    columns: Sequence[str],
    conflict: Sequence[str],
    count: int,
) -> str:
    key = (dialect.name, table.name, tuple(columns), tuple(conflict), count)
    sql = _statements.get(key)
    if sql is None:
        sql = _statements[key] = _insert_sql(dialect, table, columns, conflict, count)
    return sql


def marks(dialect: sa.Dialect, count: int) -> str:
    """``count`` positional placeholders for a plain statement, comma-separated."""
    return ", ".join([_marker(dialect)] * count)


def _marker(dialect: sa.Dialect) -> str:
    if dialect.paramstyle == "qmark":
        return "?"
    if dialect.paramstyle in ("format", "pyformat"):
        return "%s"
    raise StoreError(f"unsupported paramstyle {dialect.paramstyle!r} ({dialect.name})")


def _insert_sql(
    dialect: sa.Dialect,
    table: sa.Table,
    columns: Sequence[str],
    conflict: Sequence[str],
    count: int,
) -> str:
    marker = _marker(dialect)
    quote = dialect.identifier_preparer.quote
    placeholders = []
    for name in columns:
        if name not in table.c:
            raise StoreError(f"table {table.name} has no column {name!r}")
        is_json = isinstance(table.c[name].type, sa.JSON)
        placeholders.append(
            f"{marker}::json" if is_json and dialect.name == "postgresql" else marker
        )
    group = "(" + ", ".join(placeholders) + ")"
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES {', '.join([group] * count)}"
    )
    if conflict:
        sql += f" ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO NOTHING"
    return sql
