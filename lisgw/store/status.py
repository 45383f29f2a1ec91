"""Units of work for the gateway's live state: its ``nodes`` row and ``connection_status`` rows.

Layer: store. Imports sqlalchemy. Each function is one unit of work (see lisgw.store.archive
for the conventions). The writer is lisgw.services.status.StatusReporter in the running
gateway; the readers are the technician commands (``lisgw status``, ``top``), in another
process, through lisgw.store.views and lisgw.store.live.

Both tables are upserted (``INSERT … ON CONFLICT (name) DO UPDATE``, on SQLite and
PostgreSQL alike): one row per gateway process (``nodes``, keyed by the worker name, which
stays the same across restarts) and one row per analyzer connection (``connection_status``,
keyed by the connection name; ``node`` says which gateway process wrote it last). A
reporter tick is one transaction: the node row when due, then every changed line in one
executemany upsert (issue 6: 50 lines at 50 × 1 session/s were 100 statements a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import sqlalchemy as sa

from lisgw.store._sql import dialect_insert, ensure_connection
from lisgw.store.records import ConnectionState
from lisgw.store.schema import connection_status, nodes

__all__ = [
    "HEARTBEAT_INTERVAL",
    "STALE_HEARTBEATS",
    "LineStatus",
    "NodeStatus",
    "node_is_running",
    "publish_lines",
    "publish_node",
    "publish_status",
]

# The gateway writes its heartbeat every HEARTBEAT_INTERVAL seconds; a node whose heartbeat
# is older than STALE_HEARTBEATS intervals (or that wrote stopped_at) is not running.
HEARTBEAT_INTERVAL: Final = 5.0
STALE_HEARTBEATS: Final = 3


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One gateway process as it reports itself (``stopped_at`` None while it runs)."""

    name: str
    pid: int
    version: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None = None


@dataclass(frozen=True, slots=True)
class LineStatus:
    """One analyzer connection's line as the gateway reports it (columns of
    ``connection_status``; ``last_error`` is OS or protocol text, never payload)."""

    name: str
    node: str
    state: ConnectionState
    peer: str
    since: float
    last_message_at: float | None
    reconnects: int
    errors: int
    last_error: str
    updated_at: float


def node_is_running(node: NodeStatus, now: float) -> bool:
    """Whether the node still runs: not stopped, and a heartbeat recent enough."""
    fresh = now - node.heartbeat_at <= HEARTBEAT_INTERVAL * STALE_HEARTBEATS
    return node.stopped_at is None and fresh


def publish_status(
    conn: sa.Connection, node: NodeStatus | None, lines: Sequence[LineStatus], now: float
) -> None:
    """One write of the reporter: its node row (when given) and the lines that changed."""
    if node is not None:
        publish_node(conn, node)
    publish_lines(conn, lines, now)


def publish_node(conn: sa.Connection, node: NodeStatus) -> None:
    """Create or update this gateway's ``nodes`` row (start, heartbeat, stop)."""
    _upsert(conn, nodes, asdict(node))


def publish_lines(conn: sa.Connection, lines: Sequence[LineStatus], now: float) -> None:
    """Create or update the ``connection_status`` row of each line: one upsert statement
    (executemany) for all of them, after creating the ``connections`` rows of lines that
    have no status row yet (a status row's connection exists: foreign key)."""
    if not lines:
        return
    names = [line.name for line in lines]
    known = set(
        conn.execute(
            sa.select(connection_status.c.name).where(connection_status.c.name.in_(names))
        ).scalars()
    )
    for name in names:
        if name not in known:
            ensure_connection(conn, name, now)
    rows = []
    for line in lines:
        values = asdict(line)
        values["state"] = str(line.state)
        rows.append(values)
    conn.execute(_upsert_statement(conn, connection_status, rows[0]), rows)


def _upsert(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
    conn.execute(_upsert_statement(conn, table, values), values)


def _upsert_statement(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> Any:
    """INSERT … ON CONFLICT (name) DO UPDATE of the columns in ``values`` (its keys)."""
    insert = dialect_insert(conn, table)
    changed = {key: insert.excluded[key] for key in values if key != "name"}
    return insert.on_conflict_do_update(index_elements=["name"], set_=changed)
