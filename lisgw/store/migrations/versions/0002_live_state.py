"""Live state for the technician CLI and order downloads: connection_status, nodes, and
the download attempts on order_queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Layer: store (Alembic revision). Frozen like 0001: no import of lisgw.store.schema.

* ``connection_status``: one row per analyzer connection, written by the running gateway
  when the line's state changes (listening, connecting, connected, waiting, down,
  stopped), so that ``lisgw status`` and ``lisgw top`` see it from another process.
* ``nodes``: one row per gateway process sharing the store, with its heartbeat; a node
  whose heartbeat is old is not running.
* ``order_queue.attempts``, ``last_error``, ``next_attempt_at``: order downloads that the
  analyzer refused or that could not be sent, retried and visible.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CONNECTION_STATES = ("listening", "connecting", "connected", "waiting", "down", "stopped")


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), nullable=nullable)


def upgrade() -> None:
    listed = ", ".join(f"'{state}'" for state in CONNECTION_STATES)
    op.create_table(
        "connection_status",
        _text("name"),
        _text("node"),
        sa.Column("state", sa.String(length=16), nullable=False),
        _text("peer"),
        _time("since"),
        _time("last_message_at", nullable=True),
        sa.Column("reconnects", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        _text("last_error"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_connection_status")),
        sa.ForeignKeyConstraint(
            ["name"], ["connections.name"], name=op.f("fk_connection_status_name_connections")
        ),
        sa.CheckConstraint(f"state IN ({listed})", name=op.f("ck_connection_status_state")),
    )
    op.create_table(
        "nodes",
        _text("name"),
        sa.Column("pid", sa.Integer(), nullable=False),
        _text("version"),
        _time("started_at"),
        _time("heartbeat_at"),
        _time("stopped_at", nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_nodes")),
    )
    with op.batch_alter_table("order_queue") as batch:
        batch.add_column(
            sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=False, server_default=""))
        batch.add_column(_time("next_attempt_at", nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_queue") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("last_error")
        batch.drop_column("attempts")
    op.drop_table("nodes")
    op.drop_table("connection_status")
