"""Query cancel (lisgw.store.queries.cancel_query): the open query with the tag is cancelled.

Runs on SQLite and PostgreSQL (the ``store`` fixture). Sample IDs and tags are invented.
"""

from __future__ import annotations

import sqlalchemy as sa

from lisgw.model import Kind, NormalizedMessage, Protocol, Query
from lisgw.store import work
from lisgw.store.queries import cancel_open_queries, cancel_query
from lisgw.store.records import Direction, QueryRecord, QueryState
from lisgw.store.runner import Store
from lisgw.store.schema import queries

from .factories import CONNECTION, NOW


def _query(store: Store, tag: str, *, connection: str = CONNECTION) -> QueryRecord:
    query = Query(sample_ids=("S1",), query_tag=tag)
    message = store.run_sync(
        work.save_message,
        b"MSH|^~\\&|X||||20260101||QBP^Z03|1|P|2.5\rQPD|Z03^HOST QUERY|" + tag.encode() + b"\r",
        direction=Direction.IN,
        protocol="hl7",
        kind="query",
        now=NOW,
        connection=connection,
        normalized=NormalizedMessage(Protocol.HL7, Kind.QUERY, query=query),
    )
    return store.run_sync(work.save_query, message.id, query, now=NOW)


def _state(store: Store, query_id: int) -> tuple[str, float | None]:
    def read(conn: sa.Connection) -> tuple[str, float | None]:
        row = conn.execute(
            sa.select(queries.c.state, queries.c.answered_at).where(queries.c.id == query_id)
        ).one()
        return row.state, row.answered_at

    return store.run_sync(read)


def test_the_open_query_with_the_tag_is_cancelled(store: Store) -> None:
    other = _query(store, "T-1")
    asked = _query(store, "T-2")
    cancelled = store.run_sync(cancel_query, CONNECTION, "T-2", now=NOW + 5)
    assert cancelled is not None
    assert (cancelled.id, cancelled.state, cancelled.answered_at) == (
        asked.id,
        QueryState.CANCELLED,
        NOW + 5,
    )
    assert _state(store, asked.id) == ("cancelled", NOW + 5)
    assert _state(store, other.id) == ("open", None)


def test_an_unknown_tag_or_another_connection_cancels_nothing(store: Store) -> None:
    mine = _query(store, "T-3")
    assert store.run_sync(cancel_query, CONNECTION, "T-404", now=NOW) is None
    assert store.run_sync(cancel_query, "another-analyzer", "T-3", now=NOW) is None
    assert store.run_sync(cancel_query, CONNECTION, "", now=NOW) is None
    assert _state(store, mine.id) == ("open", None)


def test_an_answered_query_stays_answered(store: Store) -> None:
    answered = _query(store, "T-4")
    store.run_sync(work.save_reply, answered.id, b"MSH|reply\r", tests=1, now=NOW + 1)
    assert store.run_sync(cancel_query, CONNECTION, "T-4", now=NOW + 2) is None
    assert _state(store, answered.id) == ("answered", NOW + 1)


def test_the_latest_open_query_of_a_reused_tag_is_cancelled(store: Store) -> None:
    first = _query(store, "T-5")
    second = _query(store, "T-5")
    cancelled = store.run_sync(cancel_query, CONNECTION, "T-5", now=NOW + 3)
    assert cancelled is not None and cancelled.id == second.id
    assert _state(store, first.id) == ("open", None)


def test_an_abort_cancels_the_open_queries_up_to_its_own(store: Store) -> None:
    answered = _query(store, "")
    store.run_sync(work.save_reply, answered.id, b"H|reply\r", tests=1, now=NOW + 1)
    earlier = _query(store, "")
    abort = _query(store, "")
    later = _query(store, "", connection="another-analyzer")
    count = store.run_sync(
        cancel_open_queries, CONNECTION, up_to_message_id=abort.message_id, now=NOW + 9
    )
    assert count == 2
    assert _state(store, earlier.id) == ("cancelled", NOW + 9)
    assert _state(store, abort.id) == ("cancelled", NOW + 9)
    assert _state(store, answered.id) == ("answered", NOW + 1)
    assert _state(store, later.id) == ("open", None)
