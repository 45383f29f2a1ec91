"""Indexes for the technician listings: results by analyzer, orders by state, newest first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Layer: store (Alembic revision). Frozen like 0001: no import of lisgw.store.schema.

* ``ix_results_connection_id``: ``lisgw results list --analyzer NAME`` reads one analyzer's
  results newest first (``WHERE connection = ? ORDER BY id DESC LIMIT n``,
  lisgw.store.result_views): an index scan instead of reading every result.
* ``ix_orders_state_id``: ``lisgw orders list --state open`` the same way
  (lisgw.store.views).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_results_connection_id", "results", ("connection", "id")),
    ("ix_orders_state_id", "orders", ("state", "id")),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, list(columns), unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
