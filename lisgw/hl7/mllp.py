"""MLLP framer: bytes from a connection in, HL7 message payloads out (sans-IO).

Layer: protocol (sans-IO). No I/O, no clock, no logging: ``receive_data(bytes)`` feeds it,
``next_event()`` returns ``MllpMessage``, ``MllpNoise``, ``MllpOversize`` or ``NEED_DATA``
(h11 style), ``close()`` says the connection ended. ``frame(payload)`` wraps an outgoing
message.

Implements the Minimal Lower Layer Protocol of HL7 v2.5.1 Appendix C (C.4.3 block format:
``VT payload FS CR``), plus the tolerance real links need (see ../shared/corpus/README.md):

* several messages in one read, one message over many reads: events never depend on chunking;
* bytes outside a block (a stray STX before VT — mindray BC-5130 capture, CR LF between
  blocks) are reported as ``MllpNoise`` and the framer resynchronises on the next VT;
* FS not followed by CR is accepted (the CR is swallowed when present);
* lenient mode (the default) also accepts
  - a block with VT but no FS: it ends at the next VT, at the next segment-start ``MSH``
    (snibe MAGLUMI capture: nine VT-started messages, no FS at all), or at ``close()``,
    where it is flushed with ``complete=False``;
  - bare HL7 (no MLLP at all, or captures that lost their VT): text outside a block that
    starts with ``MSH`` at a segment start (after CR, LF, any control byte, or the start of
    the stream) is a message, split at each segment-start ``MSH`` and ended by VT or FS too
    (cepheid GeneXpert files, the 1st and 3rd mindray BC-5130 messages); each carries the
    warning "no MLLP framing".
  Messages not closed by FS have trailing line breaks and control bytes trimmed: the payload
  keeps one segment terminator, other control bytes after it become ``MllpNoise``.
  Strict mode reports all of these as noise instead.
* A message longer than ``max_message_size`` is not buffered: its bytes are counted and
  dropped until its end (FS, the next VT, or in lenient mode the next segment-start MSH),
  then one ``MllpOversize`` reports its offset and full size. Noise between blocks is reported
  in pieces of at most 4 KiB, so the buffer stays bounded by ``max_message_size`` (or 4 KiB)
  plus one read.

Offsets are stream offsets (bytes since the connection opened) of the payload's first byte
(``MllpMessage``, ``MllpOversize``) or of the noise itself (``MllpNoise``).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

from lisgw.errors import LocalProtocolError

__all__ = [
    "END_BLOCK",
    "NEED_DATA",
    "START_BLOCK",
    "MllpEvent",
    "MllpFramer",
    "MllpMessage",
    "MllpNoise",
    "MllpOversize",
    "NeedData",
    "frame",
]

START_BLOCK: Final = b"\x0b"  # VT, HL7 v2.5.1 C.4.3
END_BLOCK: Final = b"\x1c\r"  # FS CR
_VT: Final = 0x0B
_FS: Final = 0x1C
_CR: Final = 0x0D
_LF: Final = 0x0A
_NOISE_CHUNK: Final = 4096
_MIN_MESSAGE_SIZE: Final = 64

_CONTROL_BYTES: Final = bytes(range(0x20))
_BLOCK_BYTE = re.compile(rb"[\x0b\x1c]")
_LINE_START_MSH = re.compile(rb"[\x00-\x1f]MSH")

NO_FRAMING: Final = "no MLLP framing"
NO_END_BLOCK: Final = "no FS end block"
ENDED_BY_VT: Final = "ended by the next VT"
ENDED_BY_MSH: Final = "ended by the next MSH segment"
ENDED_BY_FS: Final = "ended by FS"
ENDED_BY_CLOSE: Final = "ended by connection close"


class NeedData(Enum):
    """Sentinel type of ``NEED_DATA``: no event until more bytes (or ``close()``) arrive."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class MllpMessage:
    """One HL7 message payload (without VT/FS/CR framing bytes).

    ``complete`` is False when the connection closed before the message was ended, so it may be
    truncated. ``warnings`` names every tolerance that was needed to find it.
    """

    payload: bytes
    offset: int
    complete: bool = True
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MllpNoise:
    """Bytes that belong to no message, with the reason they were set aside."""

    data: bytes
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class MllpOversize:
    """A message over ``max_message_size`` was dropped; ``size`` counts its payload bytes."""

    offset: int
    size: int


MllpEvent = MllpMessage | MllpNoise | MllpOversize


class _State(Enum):
    OUTSIDE = "outside"  # between messages: buffer starts at a VT, an MSH, or noise
    IN_BLOCK = "in block"  # buffer starts at the VT of an open block
    IN_BARE = "in bare message"  # buffer starts at the "MSH" of an unframed message
    DISCARDING = "discarding"  # dropping an oversize message until its end


def frame(payload: bytes) -> bytes:
    """Wrap one message for sending: VT payload FS CR (HL7 v2.5.1 C.4.3)."""
    if b"\x0b" in payload or b"\x1c" in payload:
        raise LocalProtocolError("an MLLP payload cannot contain VT or FS bytes")
    return START_BLOCK + payload + END_BLOCK


class MllpFramer:
    """Splits a byte stream into HL7 messages; see the module docstring for the rules."""

    def __init__(self, max_message_size: int = 1 << 20, lenient: bool = True) -> None:
        if max_message_size < _MIN_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be at least {_MIN_MESSAGE_SIZE} bytes")
        self.max_message_size = max_message_size
        self.lenient = lenient
        self._buf = bytearray()
        self._base = 0  # stream offset of self._buf[0]
        self._scan = 0  # self._buf[:_scan] was searched for terminators without a hit
        self._prev_ctrl = True  # the byte before self._buf[0] is a control byte (or none)
        self._after_fs = False  # swallow one CR after FS
        self._closed = False
        self._state = _State.OUTSIDE
        self._events: deque[MllpEvent] = deque()
        self._discard_offset = 0
        self._discard_size = 0
        self._discard_at_msh = False

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the end of a message (bounded: see the module docstring)."""
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the connection."""
        if self._closed:
            raise LocalProtocolError("receive_data() after close()")
        self._buf += data

    def close(self) -> None:
        """The connection ended: pending bytes are flushed as events by ``next_event``."""
        self._closed = True

    def next_event(self) -> MllpEvent | Literal[NeedData.NEED_DATA]:
        """The next event, or ``NEED_DATA`` when none can be produced from the bytes so far."""
        while not self._events:
            if not self._step():
                return NEED_DATA
        return self._events.popleft()

    # -- one step of the state machine: produce events or consume bytes, or report no progress

    def _step(self) -> bool:
        if self._state is _State.DISCARDING:
            return self._step_discard()
        if not self._buf:
            return False
        if self._after_fs:
            # C.4.3: FS is followed by CR; some senders omit it, so the CR is optional.
            self._after_fs = False
            if self._buf[0] == _CR:
                self._consume(1)
            return True
        if self._state is _State.IN_BLOCK:
            return self._step_block()
        if self._state is _State.IN_BARE:
            return self._step_bare()
        return self._step_outside()

    def _step_outside(self) -> bool:
        buf = self._buf
        if buf[0] == _VT:
            self._enter(_State.IN_BLOCK)
            return True
        if self.lenient and self._find_msh(0) == 0:
            self._enter(_State.IN_BARE)
            return True
        lo = max(1, self._scan)
        vt = buf.find(START_BLOCK, lo)
        msh = self._find_msh(max(1, lo - 3)) if self.lenient else -1
        end = _first(vt, msh)
        if end < 0 and not self._closed:
            if len(buf) < _NOISE_CHUNK + 3:  # a segment-start MSH may still straddle the end
                self._scan = len(buf)
                return False
            end = _NOISE_CHUNK
        if end < 0:
            end = len(buf)
        self._noise(0, min(end, _NOISE_CHUNK), "bytes outside an MLLP block")
        self._consume(min(end, _NOISE_CHUNK))
        return True

    def _step_block(self) -> bool:
        buf = self._buf
        lo = max(1, self._scan)
        match = _BLOCK_BYTE.search(buf, lo)
        term = match.start() if match else -1
        # Batches (FHS/BHS) hold several MSH in one block, so only FS or VT can end them.
        split_at_msh = self.lenient and bytes(buf[1:4]) not in (b"FHS", b"BHS")
        end = _first(term, self._find_block_msh(max(2, lo - 3)) if split_at_msh else -1)
        if end >= 0:
            if end == term and buf[end] == _FS:
                self._end_block_with_fs(end)
            elif end - 1 > self.max_message_size:
                self._events.append(MllpOversize(self._base + 1, end - 1))
                self._finish(end)
            elif not self.lenient:
                self._noise(0, end, "MLLP block interrupted by VT before FS")
                self._finish(end)
            else:
                ended_by = ENDED_BY_VT if end == term else ENDED_BY_MSH
                self._emit(1, end, True, (NO_END_BLOCK, ended_by))
                self._finish(end)
            return True
        # Oversize only once no terminator can still appear within the size limit.
        if len(buf) - 1 > self.max_message_size + (2 if split_at_msh else 0):
            self._start_discard(self._base + 1, -1, at_msh=split_at_msh)
        elif self._closed:
            if self.lenient:
                self._emit(1, len(buf), False, (NO_END_BLOCK, ENDED_BY_CLOSE))
            else:
                self._noise(0, len(buf), "connection closed inside an MLLP block")
            self._finish(len(buf))
        else:
            self._scan = len(buf)
            return False
        return True

    def _find_block_msh(self, lo: int) -> int:
        """A segment-start MSH inside the open block that is not the block's own first one."""
        msh = self._find_msh(lo)
        while msh > 0 and not self._buf[1:msh].strip(_CONTROL_BYTES):
            msh = self._find_msh(msh + 1)  # VT CR LF MSH: line breaks before the first MSH
        return msh

    def _end_block_with_fs(self, fs_index: int) -> None:
        size = fs_index - 1
        if size > self.max_message_size:
            self._events.append(MllpOversize(self._base + 1, size))
        elif size == 0:
            self._noise(0, fs_index + 1, "empty MLLP block")
        else:
            self._events.append(MllpMessage(bytes(self._buf[1:fs_index]), self._base + 1))
        self._finish(fs_index + 1)
        self._after_fs = True

    def _step_bare(self) -> bool:
        buf = self._buf
        lo = max(3, self._scan)
        match = _BLOCK_BYTE.search(buf, lo)
        term = match.start() if match else -1
        end = _first(term, self._find_msh(max(3, lo - 3)))
        if end >= 0:
            at_fs = end == term and buf[end] == _FS
            ended_by = ENDED_BY_FS if at_fs else ENDED_BY_VT if end == term else ENDED_BY_MSH
            self._emit(0, end, True, (NO_FRAMING, ended_by))
            self._finish(end + 1 if at_fs else end)
            self._after_fs = at_fs
        elif len(buf) > self.max_message_size + 2:  # an MSH at the limit needs 3 bytes
            self._start_discard(self._base, 0, at_msh=True)
        elif self._closed:
            self._emit(0, len(buf), False, (NO_FRAMING, ENDED_BY_CLOSE))
            self._finish(len(buf))
        else:
            self._scan = len(buf)
            return False
        return True

    def _start_discard(self, offset: int, size: int, *, at_msh: bool) -> None:
        """Drop an oversize message; ``size`` starts negative to leave its VT uncounted."""
        self._state = _State.DISCARDING
        self._discard_offset = offset
        self._discard_size = size
        self._discard_at_msh = at_msh
        keep = 3 if at_msh else 0  # the tail may begin the next segment-start MSH
        drop = len(self._buf) - keep
        self._discard_size += drop
        self._consume(drop)

    def _step_discard(self) -> bool:
        buf = self._buf
        match = _BLOCK_BYTE.search(buf)
        term = match.start() if match else -1
        end = _first(term, self._find_msh(0) if self._discard_at_msh else -1)
        if end < 0 and not self._closed:
            drop = len(buf) - (3 if self._discard_at_msh else 0)
            if drop <= 0:
                return False
            self._discard_size += drop
            self._consume(drop)
            return True
        if end < 0:
            end = len(buf)
        self._discard_size += end
        self._events.append(MllpOversize(self._discard_offset, self._discard_size))
        at_fs = end == term and buf[end] == _FS
        self._finish(end + 1 if at_fs else end)
        self._after_fs = at_fs
        return True

    # -- helpers

    def _find_msh(self, lo: int) -> int:
        """Index of the first segment-start b"MSH" at or after ``lo``, or -1."""
        buf = self._buf
        if lo == 0 and self._prev_ctrl and buf[:3] == b"MSH":
            return 0
        match = _LINE_START_MSH.search(buf, max(lo - 1, 0))
        return match.start() + 1 if match else -1

    def _emit(self, start: int, end: int, complete: bool, warnings: tuple[str, ...]) -> None:
        """Queue buf[start:end] as a message not ended by FS, trimming its control-byte tail."""
        buf = self._buf
        size = end - start
        if size > self.max_message_size:
            self._events.append(MllpOversize(self._base + start, size))
            return
        last = end - 1
        while last >= start and buf[last] < 0x20:
            last -= 1
        if last < start:
            self._noise(0, end, "MLLP block without content")
            return
        stop = last + 1
        if stop < end and buf[stop] in (_CR, _LF):
            stop += 1  # keep one segment terminator
        self._events.append(
            MllpMessage(bytes(buf[start:stop]), self._base + start, complete, warnings)
        )
        junk = stop
        while junk < end and buf[junk] in (_CR, _LF):
            junk += 1
        if junk < end:
            self._noise(junk, end, "control bytes after a message")

    def _noise(self, start: int, end: int, reason: str) -> None:
        self._events.append(MllpNoise(bytes(self._buf[start:end]), self._base + start, reason))

    def _consume(self, count: int) -> None:
        if count <= 0:
            return
        self._prev_ctrl = self._buf[count - 1] < 0x20
        del self._buf[:count]
        self._base += count
        self._scan = 0

    def _enter(self, state: _State) -> None:
        self._state = state
        self._scan = 0

    def _finish(self, count: int) -> None:
        """Consume a finished message (or noise) and go back to looking for the next one."""
        self._consume(count)
        self._enter(_State.OUTSIDE)


def _first(a: int, b: int) -> int:
    """The smaller of two find() results, ignoring -1."""
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)
