"""Following the store's traffic as the gateway writes it: what ``lisgw tail`` polls.

Layer: interface. Runs the read units of lisgw.store.live through a ``run`` callable
(``Store.run_sync``) and turns the rows into lines with lisgw.cli.traffic; takes ``now``
from its caller (no clock here).

Three streams, each after its own cursor, merged in time order at every poll:

* frames (the raw archive) and messages (decoded, with kind and state), by id. PostgreSQL
  hands out ids before commit, so a row with a smaller id may become visible after a larger
  one: an id skipped between two rows is watched (fetched by id at the next polls) for
  ``gap_wait`` seconds before it is given up (an id whose transaction rolled back never
  appears). SQLite commits in id order; the watch is then empty.
* outbox deliveries (ORU^R01 to the HIS): a row is shown when it reaches its end, delivered
  or dead. New rows are read by id; rows still pending or inflight are watched by id until
  they end (at most ``watch_cap``; rows past the cap are counted in ``unwatched`` and not
  shown when they end).

A poll reads at most ``batch`` rows per stream; ``Poll.more`` says there are more, so the
caller polls again at once rather than sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from lisgw.cli.traffic import TrafficDecoder, TrafficLine
from lisgw.store import live
from lisgw.store.schema import frames, messages, outbox

__all__ = ["Poll", "TrafficFollower"]

T = TypeVar("T")
Run = Callable[..., Any]
_ENDED: Final = ("delivered", "dead")
DEFAULT_BATCH: Final = 500
DEFAULT_GAP_WAIT: Final = 30.0
DEFAULT_WATCH_CAP: Final = 5000
# A gap wider than this is not transactions in flight (archive pruned, ids jumped): skipped.
_MAX_GAP: Final = 1000


@dataclass(frozen=True, slots=True)
class Poll:
    """What one poll found: the lines, in time order, and whether a stream had more."""

    lines: tuple[TrafficLine, ...]
    more: bool


@dataclass(slots=True)
class _Stream:
    """An id cursor with the ids skipped below it and until when to wait for each."""

    after: int = 0
    gaps: dict[int, float] = field(default_factory=dict)

    def advance(self, seen: Sequence[int], now: float, wait: float) -> None:
        for row_id in seen:
            self.gaps.pop(row_id, None)
        fresh = sorted(i for i in seen if i > self.after)
        expected = self.after + 1
        for row_id in fresh:
            if 0 < row_id - expected <= _MAX_GAP:
                self.gaps.update(dict.fromkeys(range(expected, row_id), now + wait))
            expected = row_id + 1
        if fresh:
            self.after = fresh[-1]
        for row_id in [i for i, until in self.gaps.items() if until < now]:
            del self.gaps[row_id]


class TrafficFollower:
    """Polls frames, messages and outbox deliveries (module docstring)."""

    def __init__(
        self,
        run: Run,
        decoder: TrafficDecoder,
        *,
        connections: Sequence[str] | None = None,
        batch: int = DEFAULT_BATCH,
        gap_wait: float = DEFAULT_GAP_WAIT,
        watch_cap: int = DEFAULT_WATCH_CAP,
    ) -> None:
        self._run = run
        self.decoder = decoder
        self.connections = list(connections) if connections is not None else None
        self.batch = batch
        self.gap_wait = gap_wait
        self.watch_cap = watch_cap
        self._frames = _Stream()
        self._messages = _Stream()
        self._outbox_after = 0
        self._watch: set[int] = set()
        self.unwatched = 0

    def start(self, *, since: float | None = None, last: int = 0) -> None:
        """Place the cursors: at the first rows stored at or after ``since``, else before
        the last ``last`` frames and messages (0: only what comes next). Deliveries are
        shown from ``since`` on, else from now; rows pending now are watched."""
        run, names = self._run, self.connections
        if since is not None:
            self._frames.after = run(live.first_id_at, frames, frames.c.at, since) - 1
            received = messages.c.received_at
            self._messages.after = run(live.first_id_at, messages, received, since) - 1
            self._outbox_after = run(live.first_id_at, outbox, outbox.c.created_at, since) - 1
        else:
            self._frames.after = run(live.nth_last_id, frames, last, connections=names)
            self._messages.after = run(live.nth_last_id, messages, last, connections=names)
            self._outbox_after = run(live.last_id, outbox)
        pending = run(live.open_outbox_ids, up_to=self._outbox_after, limit=self.watch_cap)
        self._watch.update(pending)

    def poll(self, now: float) -> Poll:
        """Everything new since the last poll, as lines in time order."""
        lines: list[TrafficLine] = []
        more = False
        for stream, read, render in (
            (self._frames, live.new_frames, self.decoder.frame),
            (self._messages, live.new_messages, self.decoder.message),
        ):
            rows = self._run(read, stream.after, connections=self.connections, limit=self.batch)
            more = more or len(rows) >= self.batch
            if stream.gaps:
                late = self._run(read, 0, connections=self.connections, ids=sorted(stream.gaps))
                rows = [*late, *rows]
            stream.advance([row.id for row in rows], now, self.gap_wait)
            for row in rows:
                lines.extend(render(row))
        outbox_lines, outbox_more = self._deliveries()
        lines.extend(outbox_lines)
        lines.sort(key=lambda line: line.at)
        return Poll(tuple(lines), more or outbox_more)

    def _deliveries(self) -> tuple[list[TrafficLine], bool]:
        lines: list[TrafficLine] = []
        watched = sorted(self._watch)
        for start in range(0, len(watched), self.batch):
            for row in self._run(live.outbox_by_ids, watched[start : start + self.batch]):
                if row.state in _ENDED:
                    self._watch.discard(row.id)
                    lines.extend(self._delivery(row))
        rows = self._run(live.new_outbox_rows, self._outbox_after, limit=self.batch)
        for row in rows:
            self._outbox_after = max(self._outbox_after, row.id)
            if row.state in _ENDED:
                lines.extend(self._delivery(row))
            elif len(self._watch) < self.watch_cap:
                self._watch.add(row.id)
            else:
                self.unwatched += 1
        return lines, len(rows) >= self.batch

    def _delivery(self, row: live.Delivery) -> list[TrafficLine]:
        if self.connections is not None and row.connection not in self.connections:
            return []
        return self.decoder.delivery(row)
