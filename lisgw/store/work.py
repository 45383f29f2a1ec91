"""The store's units of work, all in one place: import them from here.

Layer: store. Each unit of work is one function ``name(conn: sqlalchemy.Connection, …)``
that runs inside the one transaction the caller opened (lisgw.store.runner.Store.run on a
thread pool from Twisted, Store.run_sync inline in tests and the CLI) and returns frozen
dataclasses (lisgw.store.records), never rows or sessions. Units compose: a function that
calls several of them with the same connection is itself one unit of work, committed or
rolled back as a whole.

* archive (lisgw.store.archive): register_connection, note_instrument, touch_instrument,
  get_connection,
  open_session, append_frames (the group commit), close_session, end_session,
  session_frames, save_message, keep_message, set_message_state, get_message,
  messages_in_state, add_audit, audit_trail;
* orders (lisgw.store.orders, lisgw.store.order_lookups): save_his_orders,
  open_orders_for, orders_by_placer, queued_tests_for, mark_queue_sent;
* results (lisgw.store.results): known_identities, save_routed_results, review_queue,
  set_review_state;
* outbox (lisgw.store.outbox): claim_outbox, outbox_delivered, outbox_retry, outbox_dead,
  outbox_requeue, outbox_rows, outbox_counts;
* host queries (lisgw.store.queries): save_query, save_reply.
"""

from __future__ import annotations

from lisgw.store.archive import (
    add_audit,
    append_frames,
    audit_trail,
    close_session,
    end_session,
    get_connection,
    get_message,
    keep_message,
    messages_in_state,
    note_instrument,
    open_session,
    register_connection,
    save_message,
    session_frames,
    set_message_state,
    touch_instrument,
)
from lisgw.store.order_lookups import (
    mark_queue_sent,
    open_orders_for,
    orders_by_placer,
    queued_tests_for,
)
from lisgw.store.orders import save_his_orders
from lisgw.store.outbox import (
    claim_outbox,
    outbox_counts,
    outbox_dead,
    outbox_delivered,
    outbox_requeue,
    outbox_retry,
    outbox_rows,
)
from lisgw.store.queries import save_query, save_reply
from lisgw.store.results import (
    known_identities,
    review_queue,
    save_routed_results,
    set_review_state,
)

__all__ = [
    "add_audit",
    "append_frames",
    "audit_trail",
    "claim_outbox",
    "close_session",
    "end_session",
    "get_connection",
    "get_message",
    "keep_message",
    "known_identities",
    "mark_queue_sent",
    "messages_in_state",
    "note_instrument",
    "open_orders_for",
    "open_session",
    "orders_by_placer",
    "outbox_counts",
    "outbox_dead",
    "outbox_delivered",
    "outbox_requeue",
    "outbox_retry",
    "outbox_rows",
    "queued_tests_for",
    "register_connection",
    "review_queue",
    "save_his_orders",
    "save_message",
    "save_query",
    "save_reply",
    "save_routed_results",
    "session_frames",
    "set_message_state",
    "set_review_state",
    "touch_instrument",
]
