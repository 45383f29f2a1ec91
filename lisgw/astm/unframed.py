"""Bare E1394 records without E1381 framing: an incremental record splitter and reader.

Layer: ASTM link layer, sans-IO. ``RecordSplitter`` cuts text into records at their
separators, whatever pieces the text arrives in (``split`` hands them back as a tuple of
records and one of offsets, ``feed`` as events); ``AstmLink`` feeds it frame texts and
``UnframedReader`` feeds it raw reads from devices (or de-framed captures) that send
records with no STX/ETX/checksum at all.

Implements ASTM E1394-97 / CLSI LIS02-A2 §5 (a record ends with CR) with the separators
real devices use instead: LF or CR LF (go-astm and EUROIMMUN exports, LF-converted logs).
A CR at the end of one read followed by LF at the start of the next makes no empty record:
empty records carry nothing in E1394 and are never emitted.
"""

from __future__ import annotations

from collections import deque
from itertools import compress, islice
from typing import Final, TypeAlias

from lisgw.astm.events import NEED_DATA, RecordReceived, Sentinel
from lisgw.errors import LocalProtocolError, RemoteProtocolError

DEFAULT_MAX_RECORD_SIZE = 1 << 20

# Records (separators stripped) and the stream offset of each one's first byte.
RecordBatch: TypeAlias = tuple[tuple[bytes, ...], tuple[int, ...]]
NO_RECORDS: Final[RecordBatch] = ((), ())


class RecordSplitter:
    """Splits text fed in pieces into records; keeps the unfinished tail between feeds.

    ``offset`` arguments give the stream offset of the text's first byte, so each record
    carries the offset of its own first byte even when frames intervene.
    """

    def __init__(self, *, lf_separators: bool) -> None:
        self._lf_separators = lf_separators
        self._parts: list[bytes] = []
        self._start = 0
        self._pending_size = 0

    @property
    def pending_size(self) -> int:
        """Bytes held for a record whose separator has not arrived yet."""
        return self._pending_size

    @property
    def pending_offset(self) -> int:
        """Stream offset of the held record's first byte (meaningless when none is held)."""
        return self._start

    def feed(self, text: bytes, offset: int) -> list[RecordReceived]:
        """Records completed by ``text`` (separators stripped, empty records skipped)."""
        records, offsets = self.split(text, offset)
        return list(map(RecordReceived, records, offsets))

    def split(self, text: bytes, offset: int, *, final: bool = False) -> RecordBatch:
        """As feed(), the records and their offsets as two tuples, without an event per
        record. ``final``: the end of ``text`` also ends a record, as the final frame of a
        message does (E1381 §6.3.1): what feed() and then flush() would give."""
        if self._lf_separators:
            # Same length, so offsets hold; CR LF becomes CR CR: an empty record, skipped.
            text = text.replace(b"\n", b"\r")
        pieces = text.split(b"\r")
        if final:
            tail = b""
        elif len(pieces) == 1:
            self._hold(text, offset)
            return NO_RECORDS
        else:
            tail = pieces.pop()
        offsets, position = [], offset
        for piece in pieces:  # a plain loop beats itertools.accumulate on a few records
            offsets.append(position)
            position += len(piece) + 1
        if self._parts:
            self._parts.append(pieces[0])
            pieces[0], offsets[0] = b"".join(self._parts), self._start
        # What was held is used up; the tail, if any, starts the next record.
        self._parts = [tail] if tail else []
        self._start, self._pending_size = position, len(tail)
        if all(pieces):
            return tuple(pieces), tuple(offsets)
        return tuple(compress(pieces, pieces)), tuple(compress(offsets, pieces))

    def longest_record_with(self, text: bytes) -> int:
        """The size of the longest record, finished or still held, that feed(text) would
        make: lets a caller refuse text before it is fed (memory bound)."""
        if self._lf_separators:
            text = text.replace(b"\n", b"\r")
        pieces = text.split(b"\r")
        longest_other = max(map(len, islice(pieces, 1, None)), default=0)
        return max(self._pending_size + len(pieces[0]), longest_other)

    def flush(self) -> list[RecordReceived]:
        """The unfinished tail as a record (E1381: the final frame ends the last record)."""
        if not self._parts:
            return []
        record = RecordReceived(b"".join(self._parts), self._start)
        self.discard()
        return [record]

    def discard(self) -> None:
        """Forget the unfinished tail (the transfer it belonged to is incomplete)."""
        self._parts = []
        self._pending_size = 0

    def _hold(self, text: bytes, offset: int) -> None:
        if not text:
            return
        if not self._parts:
            self._start = offset
        self._parts.append(text)
        self._pending_size += len(text)


class UnframedReader:
    """Sans-IO reader of bare E1394 records separated by CR, LF or CR LF.

    ``receive_data(bytes)``, then ``next_event()`` until NEED_DATA; ``close()`` at the end
    of the stream flushes a last record that has no terminator. A record longer than
    ``max_record_size`` raises RemoteProtocolError (memory stays bounded).
    """

    def __init__(self, *, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        self._splitter = RecordSplitter(lf_separators=True)
        self._max_record_size = max_record_size
        self._chunks: deque[bytes] = deque()
        self._events: deque[RecordReceived] = deque()
        self._received = 0
        self._closed = False
        self._flushed = False
        self._error: RemoteProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        """Queue bytes read from the device."""
        if self._closed:
            raise LocalProtocolError("receive_data() after close()")
        if data:
            self._chunks.append(bytes(data))

    def close(self) -> None:
        """The stream ended: a last record without terminator becomes a record."""
        self._closed = True

    def next_event(self) -> RecordReceived | Sentinel:
        """The next record, or NEED_DATA. Records before an oversized one come out first."""
        while not self._events:
            if self._error is not None:
                raise self._error
            if self._chunks:
                self._split(self._chunks.popleft())
            elif self._closed and not self._flushed:
                self._flushed = True
                self._events.extend(self._splitter.flush())
            else:
                return NEED_DATA
        return self._events.popleft()

    def _split(self, chunk: bytes) -> None:
        offset = self._received
        self._received += len(chunk)
        for record in self._splitter.feed(chunk, offset):
            if len(record.text) > self._max_record_size:
                self._fail(record.offset)
                return
            self._events.append(record)
        if self._splitter.pending_size > self._max_record_size:
            self._fail(self._splitter.pending_offset)

    def _fail(self, offset: int) -> None:
        self._splitter.discard()
        self._chunks.clear()
        self._error = RemoteProtocolError(
            f"record longer than {self._max_record_size} bytes", offset=offset
        )
