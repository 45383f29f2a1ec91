"""Host queries and their replies."""

from __future__ import annotations

import pytest

from lisgw.errors import StoreError
from lisgw.model import Kind, NormalizedMessage, Protocol, Query
from lisgw.store import work
from lisgw.store.records import Direction, MessageState, QueryState
from lisgw.store.runner import Store

from .factories import CONNECTION, NOW


def test_query_and_reply(store: Store) -> None:
    query = Query(sample_ids=("S1", "S2"), query_tag="Q-17")
    asked = store.run_sync(
        work.save_message,
        b"\x05\x021H|\\^&\r...Q|1|^S1\r\x03",
        direction=Direction.IN,
        protocol="astm",
        kind="query",
        now=NOW,
        connection=CONNECTION,
        normalized=NormalizedMessage(Protocol.ASTM, Kind.QUERY, query=query),
    )
    saved = store.run_sync(work.save_query, asked.id, query, now=NOW)
    assert (saved.connection, saved.sample_ids, saved.query_tag) == (
        CONNECTION,
        ("S1", "S2"),
        "Q-17",
    )
    assert saved.state == QueryState.OPEN and saved.answered_at is None
    reply = store.run_sync(
        work.save_reply, saved.id, b"H|\\^&\rO|1|S1\rL|1\r", tests=2, now=NOW + 1
    )
    assert (reply.query_id, reply.tests, reply.sent_at) == (saved.id, 2, NOW + 1)
    sent = store.run_sync(work.get_message, reply.message_id)
    assert (sent.direction, sent.state, sent.protocol, sent.kind) == (
        Direction.OUT,
        MessageState.SENT,
        "astm",
        "query_reply",
    )
    assert sent.raw == b"H|\\^&\rO|1|S1\rL|1\r"


def test_reply_to_an_unknown_query_fails(store: Store) -> None:
    with pytest.raises(StoreError, match="no query"):
        store.run_sync(work.save_reply, 424242, b"x", tests=0, now=NOW)
    with pytest.raises(StoreError, match="no message"):
        store.run_sync(work.save_query, 424242, Query(), now=NOW)
