"""The store's tables: SQLAlchemy 2 Core, one MetaData, the same on SQLite and PostgreSQL.

Layer: store. Imports sqlalchemy and lisgw.store.records (the state enums). The Alembic
revisions under lisgw/store/migrations/versions create exactly these tables; a test compares
the two on both backends (alembic's ``compare_metadata`` must find no difference).

What is kept (issue 5, "What it keeps"):

* ``connections`` — the analyzer and HIS links, with the instrument they last announced;
* ``sessions`` and ``frames`` — the raw archive: every accepted ASTM frame and every MLLP
  message, bytes exact, with direction, session (hence peer) and wire order;
* ``messages`` — one row per decoded message, raw bytes plus the normalized JSON and state;
* ``orders``, ``order_tests``, ``order_queue`` — HIS orders, their tests and state, and one
  queue row per analyzer that performs a test;
* ``results`` — one row per routed result, unique by content identity; ``review`` — the
  unmatched results technicians look at; ``queries`` and ``replies`` — host queries;
* ``outbox`` — deliveries to the HIS, unique by identity; ``audit`` — state changes and
  technician actions.

Times are float epoch seconds (UTC), ``DOUBLE PRECISION``, not ``DateTime``: the services'
clock is ``reactor.seconds()`` (a ``Clock`` in tests) and the units of work take ``now:
float`` from it, so leases and backoff are plain numeric comparisons that mean the same on
both backends; SQLite has no zone-aware timestamp type (SQLAlchemy stores naive text there),
and a float keeps sub-millisecond order without a zone to get wrong. Times an analyzer or the
HIS sent (``completed_at``, ``ordered_at``) are kept as the text they sent.

Free text from analyzers and the HIS is ``TEXT``, never ``VARCHAR(n)``: an analyzer sending a
longer code than foreseen must not make a commit fail, since a failed commit means no ACK.
Ids are ``BIGINT`` on PostgreSQL (the frame archive grows for years) and ``INTEGER`` on
SQLite, where only ``INTEGER PRIMARY KEY`` is the rowid.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import sqlalchemy as sa

from lisgw.store.records import (
    ConnectionState,
    Direction,
    MessageState,
    OrderState,
    OutboxState,
    QueryState,
    QueueState,
    ReviewState,
    TestState,
)

__all__ = [
    "ID",
    "NAMING_CONVENTION",
    "CleanText",
    "audit",
    "clean_text",
    "connection_status",
    "connections",
    "frames",
    "messages",
    "metadata",
    "nodes",
    "order_queue",
    "order_tests",
    "orders",
    "outbox",
    "queries",
    "replies",
    "results",
    "review",
    "sessions",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME: sa.Double[float] = sa.Double()


def clean_text(value: str) -> str:
    """Text both backends accept: NUL shown as U+2400, lone surrogates as ``\\udcXX``.

    PostgreSQL TEXT cannot hold NUL, and neither backend stores lone surrogates (what a
    ``surrogateescape`` decoding leaves of undecodable bytes). The bytes as received are in
    the raw archive (frames, messages.raw); these columns are the readable copy.
    """
    if "\x00" in value:
        value = value.replace("\x00", "\u2400")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


class CleanText(sa.types.TypeDecorator[str]):
    """TEXT written through ``clean_text``: an odd byte from an analyzer never fails a commit."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else clean_text(value)


def one_of(column: str, values: Iterable[str] | type[enum.StrEnum]) -> sa.CheckConstraint:
    """CHECK (column IN (...)), named ck_<table>_<column>."""
    listed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=column)


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def _text(name: str, *, nullable: bool = False) -> sa.Column[str]:
    """A text column, required unless said; the units of work write '' for nothing."""
    return sa.Column(name, CleanText, nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[float]:
    return sa.Column(name, TIME, nullable=nullable)


def _ref(name: str, target: str, *, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, ID, sa.ForeignKey(target), nullable=nullable)


def _state() -> sa.Column[str]:
    return sa.Column("state", sa.String(16), nullable=False)


connections = sa.Table(
    "connections",
    metadata,
    sa.Column("name", CleanText, primary_key=True),
    _text("driver"),
    _text("protocol"),
    _text("transport"),
    _text("instrument_name"),
    _text("instrument_serial"),
    _text("instrument_software"),
    _time("first_seen_at"),
    _time("last_seen_at"),
)

# One row per analyzer connection: what the running gateway last reported of its line.
connection_status = sa.Table(
    "connection_status",
    metadata,
    sa.Column("name", CleanText, sa.ForeignKey("connections.name"), primary_key=True),
    _text("node"),
    _state(),
    _text("peer"),
    _time("since"),
    _time("last_message_at", nullable=True),
    sa.Column("reconnects", sa.Integer, nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    _text("last_error"),
    _time("updated_at"),
    one_of("state", ConnectionState),
)

# One row per gateway process sharing the store (worker name), with its heartbeat.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", CleanText, primary_key=True),
    sa.Column("pid", sa.Integer, nullable=False),
    _text("version"),
    _time("started_at"),
    _time("heartbeat_at"),
    _time("stopped_at", nullable=True),
)

sessions = sa.Table(
    "sessions",
    metadata,
    _id(),
    sa.Column("connection", CleanText, sa.ForeignKey("connections.name"), nullable=False),
    _text("protocol"),
    _text("peer"),
    _time("opened_at"),
    _time("closed_at", nullable=True),
    _text("close_reason"),
    sa.Index("ix_sessions_connection_opened_at", "connection", "opened_at"),
)

frames = sa.Table(
    "frames",
    metadata,
    _id(),
    _ref("session_id", "sessions.id"),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("direction", sa.String(3), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    _time("at"),
    sa.UniqueConstraint("session_id", "seq"),
    one_of("direction", Direction),
)

messages = sa.Table(
    "messages",
    metadata,
    _id(),
    _ref("session_id", "sessions.id", nullable=True),
    sa.Column("connection", CleanText, sa.ForeignKey("connections.name"), nullable=True),
    sa.Column("direction", sa.String(3), nullable=False),
    _text("protocol"),
    _text("kind"),
    _text("driver"),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("normalized", sa.JSON, nullable=True),
    _state(),
    _text("reason"),
    _time("received_at"),
    _time("updated_at"),
    sa.Index("ix_messages_session_id", "session_id"),
    sa.Index("ix_messages_state", "state"),
    sa.Index("ix_messages_connection_received_at", "connection", "received_at"),
    one_of("direction", Direction),
    one_of("state", MessageState),
)

orders = sa.Table(
    "orders",
    metadata,
    _id(),
    _text("placer"),
    _text("filler"),
    _text("sample_id"),
    _text("patient_id"),
    _text("patient_name"),
    _text("priority"),
    _text("ordered_at"),
    _state(),
    _ref("message_id", "messages.id", nullable=True),
    _time("created_at"),
    _time("updated_at"),
    sa.UniqueConstraint("placer"),
    sa.Index("ix_orders_sample_id", "sample_id"),
    sa.Index("ix_orders_state_id", "state", "id"),  # orders list --state, newest first
    one_of("state", OrderState),
)

order_tests = sa.Table(
    "order_tests",
    metadata,
    _id(),
    _ref("order_id", "orders.id"),
    _text("his_code"),
    _text("name"),
    _state(),
    sa.UniqueConstraint("order_id", "his_code"),
    one_of("state", TestState),
)

order_queue = sa.Table(
    "order_queue",
    metadata,
    _id(),
    _ref("order_test_id", "order_tests.id"),
    sa.Column("connection", CleanText, sa.ForeignKey("connections.name"), nullable=False),
    _text("analyzer_code"),
    _state(),
    _time("created_at"),
    _time("sent_at", nullable=True),
    # Order downloads: tries so far, why the last one failed, when to try again.
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("last_error", CleanText, nullable=False, server_default=""),
    _time("next_attempt_at", nullable=True),
    sa.UniqueConstraint("order_test_id", "connection"),
    sa.Index("ix_order_queue_connection_state", "connection", "state"),
    one_of("state", QueueState),
)

outbox = sa.Table(
    "outbox",
    metadata,
    _id(),
    _text("identity"),
    _text("connection"),
    _text("sample_id"),
    _text("order_placer"),
    _text("control_id"),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    _state(),
    sa.Column("attempts", sa.Integer, nullable=False),
    _time("next_attempt_at"),
    _text("claimed_by", nullable=True),
    _time("lease_until", nullable=True),
    _text("last_error"),
    _time("first_failed_at", nullable=True),
    _time("created_at"),
    _time("delivered_at", nullable=True),
    sa.UniqueConstraint("identity"),
    # claim_outbox: due rows by state and time; per-sample order by (sample, state, id).
    sa.Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    sa.Index("ix_outbox_sample_id_state_id", "sample_id", "state", "id"),
    one_of("state", OutboxState),
)

results = sa.Table(
    "results",
    metadata,
    _id(),
    _text("identity"),
    _ref("message_id", "messages.id"),
    _text("connection"),
    _text("driver"),
    _text("sample_id"),
    sa.Column("qc", sa.Boolean, nullable=False),
    _text("test"),
    _text("his_code"),
    _text("loinc"),
    _text("value"),
    _text("units"),
    _text("reference_range"),
    _text("flags"),
    _text("status"),
    _text("completed_at"),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("match", sa.String(16), nullable=False),
    _text("reason"),
    _text("order_placer"),
    sa.Column("correction", sa.Boolean, nullable=False),
    _ref("outbox_id", "outbox.id", nullable=True),
    _time("created_at"),
    sa.UniqueConstraint("identity"),
    sa.Index("ix_results_message_id", "message_id"),
    sa.Index("ix_results_sample_id", "sample_id"),
    sa.Index("ix_results_outbox_id", "outbox_id"),
    sa.Index("ix_results_connection_id", "connection", "id"),  # results list --analyzer
    one_of("match", ("matched", "qc", "unmatched", "duplicate", "extra")),
)

review = sa.Table(
    "review",
    metadata,
    _id(),
    _ref("result_id", "results.id"),
    _text("reason"),
    _state(),
    _text("assignee"),
    _text("note"),
    _time("created_at"),
    _time("updated_at"),
    sa.UniqueConstraint("result_id"),
    sa.Index("ix_review_state", "state"),
    one_of("state", ReviewState),
)

queries = sa.Table(
    "queries",
    metadata,
    _id(),
    _ref("message_id", "messages.id"),
    sa.Column("connection", CleanText, sa.ForeignKey("connections.name"), nullable=True),
    sa.Column("sample_ids", sa.JSON, nullable=False),
    _text("query_tag"),
    _state(),
    _time("received_at"),
    _time("answered_at", nullable=True),
    sa.Index("ix_queries_message_id", "message_id"),
    one_of("state", QueryState),
)

replies = sa.Table(
    "replies",
    metadata,
    _id(),
    _ref("query_id", "queries.id"),
    _ref("message_id", "messages.id"),
    sa.Column("tests", sa.Integer, nullable=False),
    _time("sent_at"),
    sa.Index("ix_replies_query_id", "query_id"),
)

audit = sa.Table(
    "audit",
    metadata,
    _id(),
    _time("at"),
    _text("actor"),
    _text("action"),
    _text("entity"),
    _text("entity_id"),
    _text("detail"),
    sa.Index("ix_audit_entity_entity_id", "entity", "entity_id"),
    sa.Index("ix_audit_at", "at"),
)
