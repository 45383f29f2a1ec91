"""lisgw.cli.follow against a store the gateway writes while it follows, both backends."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from lisgw.cli.follow import TrafficFollower
from lisgw.cli.traffic import TrafficDecoder
from lisgw.store import live, work
from lisgw.store.records import Direction, FrameIn
from lisgw.store.runner import Store
from lisgw.store.schema import frames
from tests.integration.live import traffic_data as td


def follower(store: Store, **options: object) -> TrafficFollower:
    reader = Store(live.read_only_engine(store.engine))
    return TrafficFollower(reader.run_sync, TrafficDecoder(), **options)  # type: ignore[arg-type]


def test_new_traffic_and_deliveries_appear_at_the_next_poll(live_store: Store) -> None:
    now = time.time()
    pending = live_store.run_sync(td.add_outbox_row, "S0001", now - 50)
    follow = follower(live_store)
    follow.start(last=0)
    assert follow.poll(now).lines == ()
    live_store.run_sync(td.add_astm_transfer, now, sample_id="LIVE1")
    texts = [line.text for line in follow.poll(now).lines]
    assert "O|1|LIVE1||^^^GLU|R" in texts and "message 2 astm results: routed" in texts
    assert follow.poll(now).lines == ()
    live_store.run_sync(lambda c: work.outbox_delivered(c, pending.id, now=now + 1, worker="w"))
    (first, *segments) = follow.poll(now).lines
    assert "ORU^R01 delivered sample S0001" in first.text and len(segments) == 4
    fresh = live_store.run_sync(td.add_outbox_row, "S0002", now)
    assert [line.kind for line in follow.poll(now).lines] == ["message"]  # pending: not yet
    live_store.run_sync(work.claim_outbox, "w", now, 10, 30.0)
    live_store.run_sync(lambda c: work.outbox_dead(c, fresh.id, worker="w", reason="AR", now=now))
    (dead,) = follow.poll(now).lines
    assert dead.text.endswith("dead sample S0002 from c311 (attempt 1): AR")


def test_a_batch_limit_says_there_is_more(live_store: Store) -> None:
    for n in range(3):
        live_store.run_sync(td.add_astm_transfer, 1000.0 + n, max_text=240)
    follow = follower(live_store, batch=2)
    follow.start(since=0.0)
    polls = [follow.poll(2000.0) for _ in range(3)]
    assert [poll.more for poll in polls] == [True, False, False]
    orders = [line for poll in polls for line in poll.lines if line.type == "O"]
    assert len(orders) == 3


def test_a_frame_committed_late_is_not_lost(live_store: Store) -> None:
    engine = live_store.engine
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer and commits in id order: no late id to watch")
    session = live_store.run_sync(work.open_session, "c311", protocol="astm", peer="p", now=1.0)
    follow = follower(live_store)
    follow.start(last=0)
    early = b"\x05"
    with engine.connect() as slow:
        transaction = slow.begin()
        work.append_frames(slow, [FrameIn(session.id, 1, Direction.IN, early, 2.0)])
        live_store.run_sync(
            work.append_frames, [FrameIn(session.id, 2, Direction.IN, b"\x04", 3.0)]
        )
        assert [line.text for line in follow.poll(10.0).lines] == ["<EOT>"]
        transaction.commit()
    assert [line.text for line in follow.poll(11.0).lines] == ["<ENQ>"]


def test_the_reader_never_holds_the_write_lock(live_store: Store) -> None:
    engine = live_store.engine
    reader = live.read_only_engine(engine)
    if engine.dialect.name != "sqlite":
        assert reader is engine  # PostgreSQL readers take no lock a writer waits for
        return
    try:
        with reader.begin() as reading:
            assert live.connection_names(reading) == []
            # The gateway writes while the command's read transaction is open.
            live_store.run_sync(td.add_astm_transfer, 1.0)
            assert live.last_id(reading, frames) == 0  # its snapshot, as it began
        with reader.begin() as reading:
            assert live.last_id(reading, frames) > 0
            with pytest.raises(sa.exc.OperationalError, match="readonly"):
                reading.exec_driver_sql("DELETE FROM frames")
    finally:
        reader.dispose()
