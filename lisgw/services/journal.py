"""The frame journal: every link's accepted frames made durable together, before their ACK.

Layer: service (Twisted). Uses the store's units of work (lisgw.store.work: open_session,
append_frames, close_session) through ``Store.run``; takes time from the injected clock.

Durability before acknowledgement (issue 5; E1381 §6.3.4 lets the receiver answer a frame
only once it has dealt with it): a link hands each frame it verified to ``commit`` and sends
the ACK when the Deferred fires, the NAK when it fails. Group commit: frames wait in one
queue, whatever link they came from, and one flush writes ALL of them (up to ``max_batch``)
in ONE transaction — sessions first seen in the batch are opened in that same transaction —
then fires their Deferreds in queue order. A flush starts on the reactor turn after the
first frame arrives (``callLater(0)``), so frames arriving together share it; frames arriving
while a flush is in flight (or committed by the callbacks of its Deferreds: the next frame of
a line, once the last one is ACKed) wait for the next one, which starts as soon as it
returns. With N busy links the cost of one fsync is shared by up to N frames. A flush with
nothing but frames of sessions already open (the common case) is one multi-row INSERT, which
``Store.run_statement`` runs in autocommit mode on PostgreSQL: one round trip instead of three
(BEGIN, INSERT, COMMIT), as atomic and as durable (issue 6).

A failed flush fails every Deferred of its batch (the links NAK; the instruments retransmit,
E1381 §6.5.1) and nothing of it is remembered: the session numbering is rolled back so that
the retransmitted frame takes the same (session, seq) place, which ``append_frames`` stores
once even if the failed commit did reach the disk. The queue is bounded (``max_queue``
frames): beyond it ``commit`` fails at once, which NAKs too, rather than letting memory grow
while the store is slow or down.

Sessions are named by the caller's ``session_key`` (any string unique in this process, not
reused after ``close_session``); the journal maps each to its store session, opened with its
first frame. ``close_session`` is queued like a frame, so it follows the session's frames
into the store.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.errors import LocalProtocolError, StoreError
from lisgw.store import work
from lisgw.store.records import Direction, FrameIn, SessionRecord
from lisgw.store.runner import Store

__all__ = ["FrameJournal", "JournalStats"]

_log = Logger()

DEFAULT_MAX_BATCH = 500
# Each link has at most one frame waiting (it is paused until the commit fires), so the
# queue holds about one frame per busy link; beyond this something is wrong.
DEFAULT_MAX_QUEUE = 4096


@dataclass(frozen=True, slots=True)
class JournalStats:
    """Counters since start: flushes (transactions) that committed, frames they wrote,
    flushes that failed, and the largest batch written."""

    flushes: int = 0
    frames: int = 0
    failed_flushes: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Frame:
    key: str
    connection: str
    peer: str
    protocol: str
    direction: Direction
    data: bytes
    at: float
    done: Deferred[None]


@dataclass(slots=True)
class _Close:
    key: str
    reason: str
    at: float
    done: Deferred[SessionRecord | None]


_Item = _Frame | _Close


@dataclass(frozen=True, slots=True)
class _Opening:
    key: str
    connection: str
    peer: str
    protocol: str
    at: float
    ensure: bool = True  # False: a session of this connection was committed before


@dataclass(frozen=True, slots=True)
class _Plan:
    """One flush: sessions to open, frames with their session place, sessions to close."""

    known: Mapping[str, int]
    openings: tuple[_Opening, ...]
    frames: tuple[tuple[str, int, Direction, bytes, float], ...]  # key, seq, direction …
    closings: tuple[tuple[str, str, float], ...]  # key, reason, at
    seq_before: Mapping[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Written:
    opened: Mapping[str, int]
    closed: Mapping[str, SessionRecord]


def _write_batch(conn: sa.Connection, plan: _Plan) -> _Written:
    """One unit of work: open the new sessions, append every frame, close sessions."""
    ids = dict(plan.known)
    for opening in plan.openings:
        session = work.open_session(
            conn,
            opening.connection,
            protocol=opening.protocol,
            peer=opening.peer,
            now=opening.at,
            ensure=opening.ensure,
        )
        ids[opening.key] = session.id
    work.append_frames(
        conn,
        [
            FrameIn(ids[key], seq, direction, data, at)
            for key, seq, direction, data, at in plan.frames
        ],
    )
    closed = {
        key: work.close_session(conn, ids[key], reason=reason, now=at)
        for key, reason, at in plan.closings
        if key in ids
    }
    return _Written({o.key: ids[o.key] for o in plan.openings}, closed)


def _write_frames(conn: sa.Connection, plan: _Plan) -> _Written:
    """A flush of frames of sessions already open, nothing to open or close: ONE statement,
    run by Store.run_statement (on PostgreSQL its own transaction, one round trip)."""
    ids = plan.known
    work.append_frames(
        conn,
        [
            FrameIn(ids[key], seq, direction, data, at)
            for key, seq, direction, data, at in plan.frames
        ],
        one_statement=True,
    )
    return _Written({}, {})


class FrameJournal:
    """Group commit of accepted frames (module docstring)."""

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise LocalProtocolError("max_batch and max_queue must be at least 1")
        self.store = store
        self.clock = clock
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: deque[_Item] = deque()
        self._queued_frames = 0
        self._pending: dict[str, int] = {}  # items queued or in flight, per key
        self._sessions: dict[str, int] = {}
        self._connections: set[str] = set()  # connections with a session committed
        self._seq: dict[str, int] = {}
        self._scheduled: IDelayedCall | None = None
        self._inflight = False
        self._firing = False
        self._in_flush = False
        self._again = False
        self._idle_waiters: list[Deferred[None]] = []
        self._stats = JournalStats()

    # -- the API --------------------------------------------------------------------------

    @property
    def stats(self) -> JournalStats:
        return self._stats

    @property
    def idle(self) -> bool:
        """Nothing queued, scheduled or in flight."""
        return self._idle()

    @property
    def queued(self) -> int:
        """Frames waiting for a flush (not counting the flush in flight)."""
        return self._queued_frames

    def commit(
        self,
        session_key: str,
        connection: str,
        peer: str,
        data: bytes,
        direction: str,
        at: float,
        *,
        protocol: str = "astm",
    ) -> Deferred[None]:
        """Queue one frame (bytes exact); fires once it is durable, fails if it is not.

        ``direction`` is "in" (from the peer) or "out"; ``at`` when it was received. The
        session is opened, with ``connection``, ``peer`` and ``protocol``, with its first
        frame.
        """
        try:
            way = Direction(direction)
        except ValueError:
            return fail(LocalProtocolError(f"direction {direction!r}: expected 'in' or 'out'"))
        if self._queued_frames >= self.max_queue:
            return fail(StoreError(f"frame journal full ({self.max_queue} frames waiting)"))
        done: Deferred[None] = Deferred()
        self._enqueue(_Frame(session_key, connection, peer, protocol, way, data, at, done))
        self._queued_frames += 1
        return done

    def close_session(
        self, session_key: str, state: str, reason: str = ""
    ) -> Deferred[SessionRecord | None]:
        """Close the key's session after its queued frames, with ``state`` (and ``reason``)
        as the close reason; fires with the closed session, or None when the key never had
        a frame committed. The key is then forgotten."""
        close_reason = f"{state}: {reason}" if reason else state
        if session_key not in self._sessions and not self._pending.get(session_key):
            self._seq.pop(session_key, None)
            return succeed(None)
        done: Deferred[SessionRecord | None] = Deferred()
        self._enqueue(_Close(session_key, close_reason, self.clock.seconds(), done))
        return done

    def session_id(self, session_key: str) -> int | None:
        """The store session of a key, once its first frame is durable."""
        return self._sessions.get(session_key)

    def forget(self, session_key: str) -> None:
        """Drop a key whose session the caller closed itself (in a unit of work of its own)."""
        self._sessions.pop(session_key, None)
        self._seq.pop(session_key, None)

    def drain(self) -> Deferred[None]:
        """Fires once nothing is queued or in flight (shutdown: in-flight commits finish)."""
        if self._idle():
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    # -- flushing ---------------------------------------------------------------------------

    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        self._pending[item.key] = self._pending.get(item.key, 0) + 1
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled is None and not (self._inflight or self._firing) and self._queue:
            self._scheduled = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
        if self._in_flush:
            # A store that answers synchronously (inline in tests) would otherwise recurse
            # once per flush: the running loop below starts the next one.
            self._again = True
            return
        self._in_flush = True
        try:
            self._again = True
            while self._again and not self._inflight and self._queue:
                self._again = False
                self._start_flush()
        finally:
            self._in_flush = False

    def _start_flush(self) -> None:
        batch = self._take_batch()
        plan = self._plan(batch)
        self._inflight = True
        # maybeDeferred: a store that raises at once (its pool stopped) fails the batch too,
        # instead of leaving the journal waiting forever for a flush that never started.
        if plan.openings or plan.closings:
            running: Deferred[_Written] = maybeDeferred(self.store.run, _write_batch, plan)
        else:  # the common case: one statement, no BEGIN/COMMIT round trips on PostgreSQL
            running = maybeDeferred(self.store.run_statement, _write_frames, plan)
        running.addCallbacks(
            self._flushed, self._flush_failed, callbackArgs=(batch, plan), errbackArgs=(batch, plan)
        )
        running.addErrback(self._internal_error)

    def _take_batch(self) -> list[_Item]:
        """Up to max_batch items, oldest first; a key closed in the batch ends it if the
        caller (wrongly) queued more for that key."""
        batch: list[_Item] = []
        closing: set[str] = set()
        while self._queue and len(batch) < self.max_batch:
            item = self._queue[0]
            if item.key in closing:
                break
            self._queue.popleft()
            batch.append(item)
            if isinstance(item, _Close):
                closing.add(item.key)
            else:
                self._queued_frames -= 1
        return batch

    def _plan(self, batch: Sequence[_Item]) -> _Plan:
        known: dict[str, int] = {}
        openings: dict[str, _Opening] = {}
        frames: list[tuple[str, int, Direction, bytes, float]] = []
        closings: list[tuple[str, str, float]] = []
        seq_before: dict[str, int | None] = {}
        for item in batch:
            key = item.key
            if key in self._sessions:
                known[key] = self._sessions[key]
            if isinstance(item, _Close):
                closings.append((key, item.reason, item.at))
                continue
            if key not in self._sessions and key not in openings:
                openings[key] = _Opening(
                    key,
                    item.connection,
                    item.peer,
                    item.protocol,
                    item.at,
                    ensure=item.connection not in self._connections,
                )
            if key not in seq_before:
                seq_before[key] = self._seq.get(key)
            seq = self._seq.get(key, 0) + 1
            self._seq[key] = seq
            frames.append((key, seq, item.direction, item.data, item.at))
        return _Plan(known, tuple(openings.values()), tuple(frames), tuple(closings), seq_before)

    def _flushed(self, written: _Written, batch: list[_Item], plan: _Plan) -> None:
        self._inflight = False
        self._firing = True  # frames committed by the callbacks go in the next flush
        self._sessions.update(written.opened)
        # Their connections' rows exist now (a session refers to its connection's row, and
        # rows of connections are never deleted): later sessions need not check them.
        self._connections.update(opening.connection for opening in plan.openings)
        for key, _reason, _at in plan.closings:
            self.forget(key)
        count = len(plan.frames)
        stats = self._stats
        self._stats = JournalStats(
            stats.flushes + 1,
            stats.frames + count,
            stats.failed_flushes,
            max(stats.largest_batch, count),
        )
        for item in batch:
            self._release(item.key)
            if isinstance(item, _Close):
                item.done.callback(written.closed.get(item.key))
            else:
                item.done.callback(None)
        self._after_flush()

    def _flush_failed(self, failure: Failure, batch: list[_Item], plan: _Plan) -> None:
        self._inflight = False
        self._firing = True
        for key, seq in plan.seq_before.items():
            if seq is None:
                self._seq.pop(key, None)
            else:
                self._seq[key] = seq
        stats = self._stats
        self._stats = JournalStats(
            stats.flushes, stats.frames, stats.failed_flushes + 1, stats.largest_batch
        )
        # The store's error names the database and the cause, never frame content.
        _log.error(
            "frame journal: {count} frame(s) not committed, their links NAK: {error}",
            count=len(plan.frames),
            error=failure.getErrorMessage(),
        )
        for item in batch:
            self._release(item.key)
            item.done.errback(failure)
        self._after_flush()

    def _release(self, key: str) -> None:
        left = self._pending.get(key, 0) - 1
        if left > 0:
            self._pending[key] = left
        else:
            self._pending.pop(key, None)

    def _after_flush(self) -> None:
        """Start the next flush at once with what queued up meanwhile (those frames waited a
        whole flush already), or wake the drain() waiters."""
        self._firing = False
        if self._queue:
            self._flush()
            return
        if self._idle():
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _idle(self) -> bool:
        return not self._queue and not self._inflight and self._scheduled is None

    def _internal_error(self, failure: Failure) -> None:
        _log.failure("frame journal: internal error", failure)
