"""FrameJournal: the group commit of accepted frames, on a real store (SQLite and PostgreSQL).

Each test gets a fresh, migrated store: a SQLite file in a temporary directory, or a fresh
PostgreSQL schema (the approach of tests/integration/store/conftest.py; unreachable
PostgreSQL FAILS the test, it is never skipped). The store runs on its real thread pool; the
journal's flushes are scheduled on a ``Clock`` (``callLater(0)``), so a test decides exactly
which frames are queued together. Frame bytes are synthetic.

``make_store`` is shared with tests/integration/test_ingest.py and test_recovery.py.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.trial import unittest

from lisgw.errors import LocalProtocolError, StoreError
from lisgw.services.journal import FrameJournal, JournalStats
from lisgw.store import migrate, work
from lisgw.store.database import make_engine
from lisgw.store.ingest_work import open_sessions
from lisgw.store.records import Direction
from lisgw.store.runner import Store
from tests.integration.store.test_runner import InlinePool, InlineReactor
from tests.pgschema import fresh_pg_schema

NOW = 1_767_268_800.0  # 2026-01-01T12:00:00Z


def make_store(case: unittest.TestCase, backend: str) -> Store:
    """A migrated store on ``backend`` ("sqlite" or "postgresql"), removed after the test."""
    if backend == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="lisgw-test-"))
        case.addCleanup(shutil.rmtree, directory, True)
        engine = make_engine(f"sqlite:///{directory / 'lisgw.sqlite'}")
    else:
        engine = _pg_engine(case)
    migrate.upgrade(engine)
    store = Store(engine, reactor=global_reactor)  # type: ignore[arg-type]
    case.addCleanup(store.close)
    return store


def _pg_engine(case: unittest.TestCase) -> sa.Engine:
    return make_engine(fresh_pg_schema(case, "lisgw_ingest"))


def rename_table(store: Store, old: str, new: str) -> None:
    """Make the store fail for real (and heal it again) by moving a table away."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")


def frame(n: int) -> bytes:
    return b"\x02" + str(n % 8).encode() + b"R|" + str(n).encode() + b"\r\x03"


class JournalTest(unittest.TestCase):
    backend = "sqlite"

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = make_store(self, self.backend)

    def journal(self, **limits: int) -> FrameJournal:
        return FrameJournal(self.store, self.clock, **limits)

    async def flush(self, journal: FrameJournal) -> None:
        """Run every flush the journal has queued, one reactor turn of the Clock at a time."""
        while not journal.idle:
            self.clock.advance(0)
            await journal.drain()

    def sessions(self) -> dict[str, list[bytes]]:
        """Open sessions by peer, with their inbound frames in seq order."""
        found: dict[str, list[bytes]] = {}
        for session in self.store.run_sync(open_sessions):
            frames = self.store.run_sync(work.session_frames, session.id)
            assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
            assert all(f.direction is Direction.IN for f in frames)
            found[session.peer] = [f.data for f in frames]
        return found

    async def test_frames_from_many_links_share_one_commit(self) -> None:
        journal = self.journal()
        done = [
            journal.commit(f"link-{n}", "e411", f"10.0.0.{n}:5000", frame(1), "in", NOW)
            for n in range(1, 9)
        ]
        assert not any(d.called for d in done)  # nothing is durable before the flush
        self.clock.advance(0)
        await gatherResults(done)
        assert journal.stats == JournalStats(flushes=1, frames=8, largest_batch=8)
        assert self.sessions() == {f"10.0.0.{n}:5000": [frame(1)] for n in range(1, 9)}

    async def test_frames_arriving_during_a_flush_wait_for_the_next_one(self) -> None:
        journal = self.journal()
        first = journal.commit("a", "e411", "peer-a", frame(1), "in", NOW)
        self.clock.advance(0)  # the flush of the first frame is in flight now
        later = [
            journal.commit("a", "e411", "peer-a", frame(2), "in", NOW),
            journal.commit("b", "e411", "peer-b", frame(1), "in", NOW),
        ]
        await first
        assert not any(d.called for d in later)
        await self.flush(journal)
        await gatherResults(later)
        assert journal.stats == JournalStats(flushes=2, frames=3, largest_batch=2)
        assert self.sessions() == {"peer-a": [frame(1), frame(2)], "peer-b": [frame(1)]}

    async def test_deferreds_fire_in_queue_order_and_batches_are_bounded(self) -> None:
        journal = self.journal(max_batch=2)
        fired: list[int] = []
        done = []
        for n in range(1, 6):
            committed = journal.commit("a", "e411", "peer-a", frame(n), "in", NOW)
            committed.addCallback(lambda _, n: fired.append(n), n)
            done.append(committed)
        await self.flush(journal)
        await gatherResults(done)
        assert fired == [1, 2, 3, 4, 5]
        assert journal.stats == JournalStats(flushes=3, frames=5, largest_batch=2)
        assert self.sessions() == {"peer-a": [frame(n) for n in range(1, 6)]}

    async def test_a_failed_flush_fails_its_whole_batch_and_nothing_is_kept(self) -> None:
        journal = self.journal()
        ok = journal.commit("a", "e411", "peer-a", frame(1), "in", NOW)
        await self.flush(journal)
        await ok
        rename_table(self.store, "frames", "frames_away")
        failing = [
            journal.commit("a", "e411", "peer-a", frame(2), "in", NOW),
            journal.commit("b", "e411", "peer-b", frame(1), "in", NOW),
        ]
        await self.flush(journal)
        for failed in failing:
            with pytest.raises(StoreError):
                await failed
        assert journal.stats.failed_flushes == 1
        assert journal.session_id("b") is None  # its session was rolled back with the batch
        rename_table(self.store, "frames_away", "frames")
        # The instrument retransmits the NAKed frame: it takes the place it would have had.
        retried = journal.commit("a", "e411", "peer-a", frame(2), "in", NOW)
        await self.flush(journal)
        await retried
        assert self.sessions() == {"peer-a": [frame(1), frame(2)]}

    async def test_a_flush_of_open_sessions_frames_is_one_statement(self) -> None:
        """Frames of sessions already open go in ONE statement: on PostgreSQL in autocommit,
        no BEGIN/COMMIT round trips (issue 6); on SQLite in the usual transaction."""
        journal = self.journal()
        first = [journal.commit(k, "e411", f"peer-{k}", frame(1), "in", NOW) for k in "ab"]
        await self.flush(journal)
        await gatherResults(first)
        statements: list[str] = []
        commits: list[bool] = []

        autocommit: list[bool] = []

        def count(conn: sa.Connection, cursor: object, statement: str, *args: object) -> None:
            statements.append(" ".join(statement.split())[:20])
            autocommit.append(bool(getattr(conn.connection.dbapi_connection, "autocommit", 0)))

        sa.event.listen(self.store.engine, "before_cursor_execute", count)
        sa.event.listen(self.store.engine, "commit", lambda conn: commits.append(True))
        try:
            later = [journal.commit(k, "e411", f"peer-{k}", frame(2), "in", NOW) for k in "ab"]
            await self.flush(journal)
            await gatherResults(later)
        finally:
            sa.event.remove(self.store.engine, "before_cursor_execute", count)
        begin = [] if self.backend == "postgresql" else ["BEGIN IMMEDIATE"]
        assert statements == [*begin, "INSERT INTO frames ("]
        assert commits == ([] if self.backend == "postgresql" else [True])
        if self.backend == "postgresql":  # psycopg sends no BEGIN in autocommit mode
            assert autocommit == [True]
        assert journal.stats.flushes == 2 and journal.stats.frames == 4
        assert self.sessions() == {"peer-a": [frame(1), frame(2)], "peer-b": [frame(1), frame(2)]}

    async def test_a_failed_one_statement_flush_keeps_nothing(self) -> None:
        journal = self.journal()
        ok = [journal.commit(k, "e411", f"peer-{k}", frame(1), "in", NOW) for k in "ab"]
        await self.flush(journal)
        await gatherResults(ok)
        with self.store.engine.begin() as conn:  # a frame "y" is refused by the database
            if self.backend == "postgresql":
                conn.exec_driver_sql("ALTER TABLE frames ADD CONSTRAINT no_y CHECK (data <> 'y')")
            else:
                conn.exec_driver_sql(
                    "CREATE TRIGGER no_y BEFORE INSERT ON frames WHEN NEW.data = X'79' "
                    "BEGIN SELECT RAISE(ABORT, 'no y'); END"
                )
        failing = [
            journal.commit("a", "e411", "peer-a", b"y", "in", NOW),
            journal.commit("b", "e411", "peer-b", frame(2), "in", NOW),
        ]
        await self.flush(journal)
        for failed in failing:
            with pytest.raises(StoreError):
                await failed
        assert self.sessions() == {"peer-a": [frame(1)], "peer-b": [frame(1)]}  # none kept

    async def test_a_connection_is_checked_once_not_per_session(self) -> None:
        """The first session of a connection makes sure its row exists; once one committed,
        later sessions of that connection skip the check (a statement per transfer)."""
        journal = self.journal()
        statements: list[str] = []

        def count(conn: object, cursor: object, statement: str, *args: object) -> None:
            statements.append(" ".join(statement.split())[:40])

        sa.event.listen(self.store.engine, "before_cursor_execute", count)
        try:
            for key in ("s1", "s2"):
                done = journal.commit(key, "fresh-line", f"peer-{key}", frame(1), "in", NOW)
                await self.flush(journal)
                await done
        finally:
            sa.event.remove(self.store.engine, "before_cursor_execute", count)
        checks = [s for s in statements if s.startswith("SELECT connections.name")]
        assert len(checks) == 1
        assert self.sessions() == {"peer-s1": [frame(1)], "peer-s2": [frame(1)]}
        rows = self.store.run_sync(
            lambda conn: conn.exec_driver_sql(
                "SELECT count(*) FROM connections WHERE name = 'fresh-line'"
            ).scalar()
        )
        assert rows == 1

    async def test_the_queue_is_bounded(self) -> None:
        journal = self.journal(max_queue=2)
        queued = [journal.commit("a", "e411", "p", frame(n), "in", NOW) for n in (1, 2)]
        with pytest.raises(StoreError):
            await journal.commit("a", "e411", "p", frame(3), "in", NOW)
        await self.flush(journal)
        await gatherResults(queued)
        assert journal.queued == 0
        await self.flush_one(journal, "a", frame(3))  # room again once flushed

    async def flush_one(self, journal: FrameJournal, key: str, data: bytes) -> None:
        committed = journal.commit(key, "e411", "p", data, "in", NOW)
        await self.flush(journal)
        await committed

    async def test_close_session_follows_the_sessions_frames(self) -> None:
        journal = self.journal()
        committed = journal.commit("a", "e411", "peer-a", frame(1), "in", NOW)
        closing = journal.close_session("a", "incomplete", "connection lost")
        await self.flush(journal)
        await committed
        closed = await closing
        assert closed is not None
        assert (closed.frames, closed.close_reason) == (1, "incomplete: connection lost")
        assert closed.closed_at == NOW
        assert journal.session_id("a") is None  # forgotten
        assert self.store.run_sync(open_sessions) == []
        assert await journal.close_session("never-seen", "ended") is None
        assert journal.stats.flushes == 1

    async def test_a_wrong_direction_is_refused(self) -> None:
        journal = self.journal()
        with pytest.raises(LocalProtocolError, match="direction"):
            await journal.commit("a", "e411", "p", frame(1), "sideways", NOW)
        assert journal.idle

    def test_a_store_answering_inline_does_not_recurse(self) -> None:
        # One line sending frame after frame, each as soon as the last is ACKed, against a
        # store that commits synchronously: one flush per frame, no stack growth.
        store = Store(self.store.engine, reactor=InlineReactor(), threadpool=InlinePool())  # type: ignore[arg-type]
        journal = FrameJournal(store, self.clock)
        sent: list[int] = []

        def send_next(_: object = None) -> None:
            if len(sent) < 400:
                sent.append(len(sent) + 1)
                journal.commit("a", "e411", "p", frame(len(sent)), "in", NOW).addCallback(send_next)

        send_next()
        self.clock.advance(0)
        assert journal.idle
        assert journal.stats == JournalStats(flushes=400, frames=400, largest_batch=1)


class JournalOnPostgresTest(JournalTest):
    backend = "postgresql"
