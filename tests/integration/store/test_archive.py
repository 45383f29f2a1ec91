"""The raw archive: connections, sessions, frames (group commit), messages, audit."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from lisgw.errors import StoreError
from lisgw.model import Instrument
from lisgw.store import archive, work
from lisgw.store.records import Direction, FrameIn, FramesAppended, MessageState
from lisgw.store.runner import Store

from .factories import CONNECTION, NOW, result, results_message, store_message


def _frames(session_id: int, count: int, start: int = 0) -> list[FrameIn]:
    return [
        FrameIn(
            session_id,
            seq,
            Direction.IN if seq % 2 else Direction.OUT,
            b"\x02%d\r\x03" % seq,
            NOW + seq,
        )
        for seq in range(start, start + count)
    ]


def _open(store: Store) -> int:
    return store.run_sync(
        work.open_session, CONNECTION, protocol="astm", peer="tcp:10.0.0.5:4711", now=NOW
    ).id


def test_connection_registered_and_instrument_noted(store: Store) -> None:
    first = store.run_sync(
        work.register_connection,
        CONNECTION,
        driver="sysmex-xn",
        protocol="astm",
        transport="tcp-server:5000",
        now=NOW,
    )
    assert (first.driver, first.protocol, first.transport) == (
        "sysmex-xn",
        "astm",
        "tcp-server:5000",
    )
    noted = store.run_sync(
        work.note_instrument, CONNECTION, Instrument("XN-550", "12345", "00-21"), now=NOW + 5
    )
    assert (noted.instrument_name, noted.instrument_serial, noted.instrument_software) == (
        "XN-550",
        "12345",
        "00-21",
    )
    assert (noted.first_seen_at, noted.last_seen_at) == (NOW, NOW + 5)
    assert noted.driver == "sysmex-xn"
    with pytest.raises(StoreError, match="no connection"):
        store.run_sync(work.get_connection, "nope")


def test_an_unchanged_instrument_is_written_only_when_stale(store: Store) -> None:
    """Every transfer notes its instrument: the row is rewritten only on a change or after
    SEEN_REFRESH seconds, so a busy line does not update (and lock) it per transfer."""
    xn = Instrument("XN-550", "12345", "00-21")
    first = store.run_sync(work.note_instrument, CONNECTION, xn, now=NOW)
    assert first.instrument_serial == "12345"

    def touch(instrument: Instrument, now: float) -> tuple[bool, float]:
        def unit(conn: sa.Connection) -> tuple[bool, float]:
            written = work.touch_instrument(conn, CONNECTION, instrument, now=now)
            return written, work.get_connection(conn, CONNECTION).last_seen_at

        return store.run_sync(unit)

    assert touch(xn, NOW + 30) == (False, NOW)
    stale = NOW + archive.SEEN_REFRESH + 1
    assert touch(xn, stale) == (True, stale)
    assert touch(xn, stale + 1) == (False, stale)
    swapped = Instrument("XN-550", "67890", "00-22")
    assert touch(swapped, stale + 2) == (True, stale + 2)
    row = store.run_sync(work.get_connection, CONNECTION)
    assert (row.instrument_serial, row.instrument_software) == ("67890", "00-22")
    # An odd byte is stored cleaned (CleanText): the same announcement again is unchanged.
    odd = Instrument("XN-550", "678\x0090", "00-22")
    assert touch(odd, stale + 3)[0] is True
    assert touch(odd, stale + 4) == (False, stale + 3)


def test_an_unchanged_instrument_does_not_wait_for_a_transaction_holding_the_row(
    store: Store,
) -> None:
    """PostgreSQL: the conditional UPDATE matches no row for an unchanged instrument, so it
    takes no row lock and never waits behind another transfer holding the row."""
    engine = store.engine
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: a second write transaction cannot start at all")
    xn = Instrument("XN-550", "1", "a")
    store.run_sync(work.note_instrument, CONNECTION, xn, now=NOW)
    with engine.connect() as other:
        holding = other.begin()
        other.exec_driver_sql(
            "UPDATE connections SET driver = driver WHERE name = %(name)s", {"name": CONNECTION}
        )

        def unit(conn: sa.Connection) -> bool:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            return work.touch_instrument(conn, CONNECTION, xn, now=NOW + 1)

        assert store.run_sync(unit) is False
        holding.commit()


def test_sessions_and_messages_do_not_wait_for_a_transaction_updating_the_line(
    store: Store,
) -> None:
    """PostgreSQL: INSERT … ON CONFLICT DO NOTHING on a row another open transaction updated
    waits for it; the frame journal's sessions and stored messages must not (issue 6)."""
    engine = store.engine
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: a second write transaction cannot start at all")
    store.run_sync(work.note_instrument, CONNECTION, Instrument("XN-550", "1", "a"), now=NOW)
    with engine.connect() as transfer:
        holding = transfer.begin()
        work.note_instrument(transfer, CONNECTION, Instrument("XN-550", "2", "b"), now=NOW + 1)

        def unit(conn: sa.Connection) -> int:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            session = work.open_session(conn, CONNECTION, protocol="astm", peer="p", now=NOW)
            store_message(conn, results_message("S1", result("WBC", "7.1")))
            return session.id

        assert store.run_sync(unit) > 0
        holding.commit()


def test_session_lifecycle_creates_the_connection(store: Store) -> None:
    session = store.run_sync(
        work.open_session, "new-link", protocol="hl7", peer="tcp:10.0.0.9:2575", now=NOW
    )
    assert (session.connection, session.closed_at, session.frames) == ("new-link", None, 0)
    assert store.run_sync(work.get_connection, "new-link").first_seen_at == NOW
    store.run_sync(work.append_frames, _frames(session.id, 3))
    closed = store.run_sync(work.close_session, session.id, reason="EOT, peer closed", now=NOW + 9)
    assert (closed.closed_at, closed.close_reason, closed.frames) == (
        NOW + 9,
        "EOT, peer closed",
        3,
    )
    again = store.run_sync(work.close_session, session.id, reason="later", now=NOW + 20)
    assert (again.closed_at, again.close_reason) == (NOW + 9, "EOT, peer closed")


def test_append_frames_commits_many_frames_in_one_transaction(store: Store) -> None:
    session_id = _open(store)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    appended = store.run_sync(work.append_frames, _frames(session_id, 50))
    assert appended.inserted == 50 and appended.duplicates == 0
    assert len(commits) == 1
    stored = store.run_sync(work.session_frames, session_id)
    assert [f.seq for f in stored] == list(range(50))


def test_append_frames_from_several_sessions_in_one_batch(store: Store) -> None:
    """The group commit: frames of several links share one transaction."""
    a, b = _open(store), _open(store)
    batch = [f for pair in zip(_frames(a, 10), _frames(b, 10), strict=True) for f in pair]
    assert store.run_sync(work.append_frames, batch).inserted == 20
    assert (
        len(store.run_sync(work.session_frames, a))
        == len(store.run_sync(work.session_frames, b))
        == 10
    )


def test_append_frames_is_all_or_nothing(store: Store) -> None:
    session_id = _open(store)
    batch = [*_frames(session_id, 5), FrameIn(999_999, 0, Direction.IN, b"x", NOW)]
    with pytest.raises(StoreError):
        store.run_sync(work.append_frames, batch)
    assert store.run_sync(work.session_frames, session_id) == []


def test_duplicate_frames_are_skipped(store: Store) -> None:
    """A batch retried after a commit of unknown outcome stores nothing twice."""
    session_id = _open(store)
    store.run_sync(work.append_frames, _frames(session_id, 10))
    again = store.run_sync(work.append_frames, _frames(session_id, 15, start=5))
    assert (again.inserted, again.duplicates) == (10, 5)
    assert [f.seq for f in store.run_sync(work.session_frames, session_id)] == list(range(20))
    assert store.run_sync(work.append_frames, []) == FramesAppended(0, 0)


def test_frames_keep_every_byte_exactly(store: Store) -> None:
    session_id = _open(store)
    data = bytes(range(256)) * 4
    store.run_sync(work.append_frames, [FrameIn(session_id, 0, Direction.IN, data, NOW)])
    (frame,) = store.run_sync(work.session_frames, session_id)
    assert (frame.data, frame.direction, frame.at) == (data, Direction.IN, NOW)


def test_message_saved_raw_and_normalized(store: Store) -> None:
    message = results_message("S1", result("WBC", "7,41"))
    saved = store.run_sync(store_message, message)
    assert saved.state == MessageState.RECEIVED
    assert saved.raw == b"\x02raw frame bytes\x03"
    assert saved.normalized is not None
    assert saved.normalized["specimens"][0]["results"][0]["value"] == "7,41"
    assert store.run_sync(work.get_message, saved.id) == saved


def test_message_states_and_recovery_listing(store: Store) -> None:
    ids = [store.run_sync(store_message, results_message(f"S{n}")).id for n in range(3)]
    store.run_sync(
        work.set_message_state, ids[1], MessageState.REJECTED, reason="AE: bad MSH", now=NOW + 1
    )
    waiting = store.run_sync(work.messages_in_state, MessageState.RECEIVED)
    assert [m.id for m in waiting] == [ids[0], ids[2]]
    rejected = store.run_sync(work.messages_in_state, MessageState.REJECTED, connection=CONNECTION)
    assert [(m.id, m.reason) for m in rejected] == [(ids[1], "AE: bad MSH")]
    with pytest.raises(StoreError, match="no message"):
        store.run_sync(work.set_message_state, 424242, MessageState.ROUTED, now=NOW)


def test_odd_text_never_fails_a_commit(store: Store) -> None:
    """NUL and undecodable bytes (surrogate-escaped) are stored; PostgreSQL TEXT has no NUL."""
    message = results_message("S\x00 1", result("WBC", "5\x00.0\udcff"))
    saved = store.run_sync(
        work.save_message,
        b"\x00\xff",
        direction=Direction.IN,
        protocol="astm",
        kind="results",
        now=NOW,
        driver="drv\x00",
        normalized=message,
    )
    assert saved.driver == "drv\u2400"
    assert saved.raw == b"\x00\xff"


def test_audit_rows(store: Store) -> None:
    first = store.run_sync(
        work.add_audit,
        actor="tech:alice",
        action="connection.disable",
        entity="connection",
        entity_id=CONNECTION,
        now=NOW,
        detail="maintenance",
    )
    store.run_sync(
        work.add_audit, actor="gateway", action="start", entity="gateway", entity_id=1, now=NOW + 1
    )
    trail = store.run_sync(work.audit_trail, entity="connection", entity_id=CONNECTION)
    assert trail == [first]
    assert (first.actor, first.action, first.detail, first.at) == (
        "tech:alice",
        "connection.disable",
        "maintenance",
        NOW,
    )
    assert [a.entity_id for a in store.run_sync(work.audit_trail)] == [CONNECTION, "1"]


def test_frames_in_one_statement_are_bounded(store: Store) -> None:
    """``one_statement`` (the journal's autocommit flush) refuses a batch too large for one
    statement instead of splitting it, which would no longer be atomic."""
    session = _open(store)
    fine = store.run_sync(work.append_frames, _frames(session, 3), one_statement=True)
    assert fine == FramesAppended(inserted=3, duplicates=0)
    again = store.run_sync(work.append_frames, _frames(session, 4), one_statement=True)
    assert again == FramesAppended(inserted=1, duplicates=3)
    with pytest.raises(StoreError, match="too many for one statement"):
        store.run_sync(work.append_frames, _frames(session, 6001, start=10), one_statement=True)
