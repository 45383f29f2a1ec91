"""Initial store: connections, raw archive, messages, orders, results, review, queries,
outbox and audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Layer: store (Alembic revision). Frozen: it never imports lisgw.store.schema, so that later
changes to the models need a revision of their own; tests/integration/store/test_migrations.py
checks that the models and the revisions agree, on SQLite and PostgreSQL. Times are float
epoch seconds, ids BIGINT (INTEGER on SQLite, the rowid): see lisgw.store.schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, primary_key=True, autoincrement=True, nullable=False)


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), nullable=nullable)


def _ref(name: str, *, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, ID, nullable=nullable)


def _state() -> sa.Column[str]:
    return sa.Column("state", sa.String(length=16), nullable=False)


def _check(table: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=op.f(f"ck_{table}_{column}"))


def _fk(table: str, column: str, target: str, target_column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.{target_column}"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _pk(table: str, column: str = "id") -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(column, name=op.f(f"pk_{table}"))


def _unique(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=op.f(f"uq_{table}_{'_'.join(columns)}"))


DIRECTIONS = ("in", "out")
MESSAGE_STATES = ("received", "processed", "routed", "rejected", "incomplete", "sent")
ORDER_STATES = ("open", "partial", "complete", "cancelled")
TEST_STATES = ("open", "resulted", "cancelled")
QUEUE_STATES = ("queued", "sent", "cancelled")
OUTBOX_STATES = ("pending", "inflight", "delivered", "dead")
MATCHES = ("matched", "qc", "unmatched", "duplicate", "extra")
REVIEW_STATES = ("open", "assigned", "resolved", "discarded")
QUERY_STATES = ("open", "answered", "cancelled")

INDEXES = (
    ("sessions", "ix_sessions_connection_opened_at", ("connection", "opened_at")),
    ("messages", "ix_messages_session_id", ("session_id",)),
    ("messages", "ix_messages_state", ("state",)),
    ("messages", "ix_messages_connection_received_at", ("connection", "received_at")),
    ("orders", "ix_orders_sample_id", ("sample_id",)),
    ("order_queue", "ix_order_queue_connection_state", ("connection", "state")),
    ("outbox", "ix_outbox_state_next_attempt_at", ("state", "next_attempt_at")),
    ("outbox", "ix_outbox_sample_id_state_id", ("sample_id", "state", "id")),
    ("results", "ix_results_message_id", ("message_id",)),
    ("results", "ix_results_sample_id", ("sample_id",)),
    ("results", "ix_results_outbox_id", ("outbox_id",)),
    ("review", "ix_review_state", ("state",)),
    ("queries", "ix_queries_message_id", ("message_id",)),
    ("replies", "ix_replies_query_id", ("query_id",)),
    ("audit", "ix_audit_entity_entity_id", ("entity", "entity_id")),
    ("audit", "ix_audit_at", ("at",)),
)

# Created in this order, dropped in the reverse one (foreign keys point backwards).
TABLES = (
    "connections",
    "sessions",
    "frames",
    "messages",
    "orders",
    "order_tests",
    "order_queue",
    "outbox",
    "results",
    "review",
    "queries",
    "replies",
    "audit",
)


def upgrade() -> None:
    _archive()
    _orders()
    _results()
    _queries_and_audit()
    for table, name, columns in INDEXES:
        op.create_index(name, table, list(columns), unique=False)


def downgrade() -> None:
    for table, name, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)


def _archive() -> None:
    op.create_table(
        "connections",
        _text("name"),
        _text("driver"),
        _text("protocol"),
        _text("transport"),
        _text("instrument_name"),
        _text("instrument_serial"),
        _text("instrument_software"),
        _time("first_seen_at"),
        _time("last_seen_at"),
        _pk("connections", "name"),
    )
    op.create_table(
        "sessions",
        _id(),
        _text("connection"),
        _text("protocol"),
        _text("peer"),
        _time("opened_at"),
        _time("closed_at", nullable=True),
        _text("close_reason"),
        _pk("sessions"),
        _fk("sessions", "connection", "connections", "name"),
    )
    op.create_table(
        "frames",
        _id(),
        _ref("session_id"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _time("at"),
        _pk("frames"),
        _fk("frames", "session_id", "sessions", "id"),
        _unique("frames", "session_id", "seq"),
        _check("frames", "direction", DIRECTIONS),
    )
    op.create_table(
        "messages",
        _id(),
        _ref("session_id", nullable=True),
        _text("connection", nullable=True),
        sa.Column("direction", sa.String(length=3), nullable=False),
        _text("protocol"),
        _text("kind"),
        _text("driver"),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("normalized", sa.JSON(), nullable=True),
        _state(),
        _text("reason"),
        _time("received_at"),
        _time("updated_at"),
        _pk("messages"),
        _fk("messages", "session_id", "sessions", "id"),
        _fk("messages", "connection", "connections", "name"),
        _check("messages", "direction", DIRECTIONS),
        _check("messages", "state", MESSAGE_STATES),
    )


def _orders() -> None:
    op.create_table(
        "orders",
        _id(),
        _text("placer"),
        _text("filler"),
        _text("sample_id"),
        _text("patient_id"),
        _text("patient_name"),
        _text("priority"),
        _text("ordered_at"),
        _state(),
        _ref("message_id", nullable=True),
        _time("created_at"),
        _time("updated_at"),
        _pk("orders"),
        _fk("orders", "message_id", "messages", "id"),
        _unique("orders", "placer"),
        _check("orders", "state", ORDER_STATES),
    )
    op.create_table(
        "order_tests",
        _id(),
        _ref("order_id"),
        _text("his_code"),
        _text("name"),
        _state(),
        _pk("order_tests"),
        _fk("order_tests", "order_id", "orders", "id"),
        _unique("order_tests", "order_id", "his_code"),
        _check("order_tests", "state", TEST_STATES),
    )
    op.create_table(
        "order_queue",
        _id(),
        _ref("order_test_id"),
        _text("connection"),
        _text("analyzer_code"),
        _state(),
        _time("created_at"),
        _time("sent_at", nullable=True),
        _pk("order_queue"),
        _fk("order_queue", "order_test_id", "order_tests", "id"),
        _fk("order_queue", "connection", "connections", "name"),
        _unique("order_queue", "order_test_id", "connection"),
        _check("order_queue", "state", QUEUE_STATES),
    )


def _results() -> None:
    op.create_table(
        "outbox",
        _id(),
        _text("identity"),
        _text("connection"),
        _text("sample_id"),
        _text("order_placer"),
        _text("control_id"),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        _state(),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at"),
        _text("claimed_by", nullable=True),
        _time("lease_until", nullable=True),
        _text("last_error"),
        _time("first_failed_at", nullable=True),
        _time("created_at"),
        _time("delivered_at", nullable=True),
        _pk("outbox"),
        _unique("outbox", "identity"),
        _check("outbox", "state", OUTBOX_STATES),
    )
    op.create_table(
        "results",
        _id(),
        _text("identity"),
        _ref("message_id"),
        _text("connection"),
        _text("driver"),
        _text("sample_id"),
        sa.Column("qc", sa.Boolean(), nullable=False),
        _text("test"),
        _text("his_code"),
        _text("loinc"),
        _text("value"),
        _text("units"),
        _text("reference_range"),
        _text("flags"),
        _text("status"),
        _text("completed_at"),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("match", sa.String(length=16), nullable=False),
        _text("reason"),
        _text("order_placer"),
        sa.Column("correction", sa.Boolean(), nullable=False),
        _ref("outbox_id", nullable=True),
        _time("created_at"),
        _pk("results"),
        _fk("results", "message_id", "messages", "id"),
        _fk("results", "outbox_id", "outbox", "id"),
        _unique("results", "identity"),
        _check("results", "match", MATCHES),
    )
    op.create_table(
        "review",
        _id(),
        _ref("result_id"),
        _text("reason"),
        _state(),
        _text("assignee"),
        _text("note"),
        _time("created_at"),
        _time("updated_at"),
        _pk("review"),
        _fk("review", "result_id", "results", "id"),
        _unique("review", "result_id"),
        _check("review", "state", REVIEW_STATES),
    )


def _queries_and_audit() -> None:
    op.create_table(
        "queries",
        _id(),
        _ref("message_id"),
        _text("connection", nullable=True),
        sa.Column("sample_ids", sa.JSON(), nullable=False),
        _text("query_tag"),
        _state(),
        _time("received_at"),
        _time("answered_at", nullable=True),
        _pk("queries"),
        _fk("queries", "message_id", "messages", "id"),
        _fk("queries", "connection", "connections", "name"),
        _check("queries", "state", QUERY_STATES),
    )
    op.create_table(
        "replies",
        _id(),
        _ref("query_id"),
        _ref("message_id"),
        sa.Column("tests", sa.Integer(), nullable=False),
        _time("sent_at"),
        _pk("replies"),
        _fk("replies", "query_id", "queries", "id"),
        _fk("replies", "message_id", "messages", "id"),
    )
    op.create_table(
        "audit",
        _id(),
        _time("at"),
        _text("actor"),
        _text("action"),
        _text("entity"),
        _text("entity_id"),
        _text("detail"),
        _pk("audit"),
    )
