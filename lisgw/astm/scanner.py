"""Receive-side byte scanning for the E1381 link: the receive buffer and what is in it.

Layer: ASTM link layer, sans-IO, no session state. ``AstmLink`` owns one ``FrameScanner``
and dispatches on the byte at ``pos``; for a frame, filler or a stray byte it asks the
scanner to read the element. The scanner finds where the element ends, consumes it and
says what it was; every decision that depends on the session (ACK or NAK, frame numbers,
records) stays with the link's state machine. Outcomes that change nothing in the session
(warnings about a frame's trailer, Noise) go straight into the link's event queue.

Implements, of ASTM E1381-02 / CLSI LIS01-A2:
  §6.3.1  frame layout ``STX FN text ETX|ETB C1 C2 CR LF``: frame end search and trailer;
  §6.3.3  the checksum characters and their check;
  §6.5.1  defective frames, checked in order: structure, then checksum (frame numbers
          are the link's, they depend on the session);
  §6.6    restricted characters: an STX, ENQ or EOT inside a frame cuts it short.
Tolerated deviations seen in the corpus: missing or doubled CR LF trailers, lower-case or
absent checksums, frames over 247 bytes, filler between frames. Frames over
``max_frame_size`` are skipped as they arrive, so the buffer never holds much more.
A clean frame (the usual case) is read by a short path of C-level searches; anything else
falls to the general path, which gives the same result for clean frames.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeAlias

from lisgw.astm import frames as fr
from lisgw.astm.events import Event, FrameReceived, FrameRejected, Noise, ProtocolWarning
from lisgw.astm.frames import CR, ENQ, EOT, ETB, ETX, LF, STX

NOISE_CHUNK: Final = 4096  # a filler run is reported in pieces of at most this size
REJECTED_RAW_KEPT: Final = 64  # bytes of an oversized frame kept in FrameRejected.raw

_SIGNIFICANT: Final = re.compile(rb"[\x02\x04\x05\x06\x15]")  # ends a filler run
_REPLY: Final = re.compile(rb"[\x04\x06\x15]")  # ends a bad reply to a frame
_NAMES: Final = fr.CONTROL_NAMES
# read_frame()'s usual path looks for ETX/ETB this far from STX: STX..CR LF is <= 247 bytes.
_USUAL_SPAN: Final = fr.MAX_FRAME - 4


@dataclass(frozen=True, slots=True)
class Rejection:
    """A frame that will not be delivered. ``nak``: the sender finished it, so it is
    answered NAK (§6.5.1); an unfinished frame has nobody waiting for an answer."""

    event: FrameRejected
    nak: bool


# A frame that passed the structure and checksum checks, with the deviations tolerated.
CheckedFrame: TypeAlias = tuple[FrameReceived, tuple[str, ...]]


class Unfinished(Enum):
    """An element the scanner has started to consume and must finish first."""

    TRAILER = "trailer"  # the CR LF after a frame's checksum
    OVERSIZED_FRAME = "oversized-frame"  # being skipped up to its ETX/ETB


class FrameScanner:
    """The receive buffer of one line: ``buf[pos:]`` is unparsed, ``base`` is the stream
    offset of ``buf[0]``; ``final`` says no more bytes will come for what is buffered."""

    __slots__ = (
        "_checksum_optional",
        "_events",
        "_lf_separators",
        "_max_frame",
        "_noise_chunk",
        "_oversize_offset",
        "_oversize_raw",
        "_resume",
        "_usual_span",
        "base",
        "buf",
        "final",
        "pos",
        "unfinished",
    )

    def __init__(
        self,
        events: deque[Event],
        *,
        max_frame_size: int,
        checksum_optional: bool,
        lf_separators: bool,
    ) -> None:
        self._events = events
        self._max_frame = max_frame_size
        # Both bounds: a usual frame is never one the general path would call oversized.
        self._usual_span = min(_USUAL_SPAN, max_frame_size - 4)
        self._noise_chunk = min(NOISE_CHUNK, max_frame_size)
        self._checksum_optional = checksum_optional
        self._lf_separators = lf_separators
        self.buf = bytearray()
        self.pos = 0
        self.base = 0
        self.final = False
        self.unfinished: Unfinished | None = None
        self._resume = 1  # where, from its STX, the search for a frame's end resumes
        self._oversize_offset = 0  # stream offset of the oversized frame being skipped
        self._oversize_raw = b""

    @property
    def buffered_size(self) -> int:
        return len(self.buf) - self.pos

    def compact(self) -> None:
        """Drop the parsed bytes (offsets stay stream offsets)."""
        if self.pos:
            del self.buf[: self.pos]
            self.base += self.pos
            self.pos = 0

    # -- frames ----------------------------------------------------------------------------

    def read_frame(self, pos: int) -> CheckedFrame | Rejection | None:
        """The frame whose STX is at ``pos``; None when more bytes are needed.

        The usual frame is read here with a few C-level searches: whole with its CR LF
        trailer, at most 247 bytes (E1381 §6.3.1), a frame number 0-7, no ETX, ETB, STX,
        ENQ or EOT in its text (§6.6; nor LF without lf_separators), the right upper-case
        checksum (§6.3.3). It needs no warning. Every other frame, and every defect, is
        left to _read_any_frame(), which reads anything (and gives the same for these).
        """
        buf = self.buf
        stop = min(len(buf), pos + self._usual_span)
        term = buf.find(ETX, pos + 2, stop)
        etb = buf.find(ETB, pos + 2, stop if term < 0 else term)
        if etb >= 0:
            term = etb
        if term < 0 or term + 5 > len(buf) or buf[term + 3] != CR or buf[term + 4] != LF:
            return self._read_any_frame(pos)
        raw = bytes(buf[pos : term + 3])
        text = raw[2:-3]
        if (
            not 0x30 <= raw[1] <= 0x37
            or STX in text
            or ENQ in text
            or EOT in text
            or (LF in text and not self._lf_separators)
            or not fr.checksum_matches(raw)
        ):
            return self._read_any_frame(pos)
        self.pos = term + 5
        self._resume = 1
        return FrameReceived(raw[1] - 0x30, text, raw[-3] == ETX, raw, self.base + pos), ()

    def _read_any_frame(self, pos: int) -> CheckedFrame | Rejection | None:
        """read_frame() for any frame: unfinished, defective, long or unusual ones too."""
        buf = self.buf
        limit = pos + self._max_frame - 4  # ETX/ETB + C1 C2 CR LF must fit the maximum
        term = fr.find_frame_end(buf, pos + self._resume, min(len(buf), limit))
        if term < 0:
            if len(buf) >= limit:
                return self._start_oversized_frame(pos, limit)
            if self.final:
                return self._cut(pos, len(buf), "the stream ended inside a frame")
            self._resume = len(buf) - pos
            return None
        if buf[term] not in (fr.ETX, fr.ETB):
            return self._cut(pos, term, f"frame interrupted by {_NAMES[buf[term]]}")
        raw = bytes(buf[pos : term + 3])
        if buf[term + 3 : term + 5] == b"\r\n" and raw[-1] > 0x20 and raw[-2] > 0x20:
            given = raw[-2:]  # C1 C2 CR LF all here
            self.pos = term + 5
        else:
            checksum_chars = self._checksum_chars(term)
            if checksum_chars is None:
                self._resume = term - pos
                return None
            given = checksum_chars
            raw = bytes(buf[pos : term + 1 + len(given)])
            self.pos = pos + len(raw)
            self.unfinished = Unfinished.TRAILER
        self._resume = 1
        return self._check(raw, term - pos, given, self.base + pos)

    def resume(self) -> Rejection | bool:
        """Go on with the unfinished element: a Rejection when an oversized frame ends,
        else whether anything was consumed (False: more bytes are needed)."""
        if self.unfinished is Unfinished.TRAILER:
            return self._check_trailer()
        rejection = self._skip_oversized_frame()
        return False if rejection is None else rejection

    def _checksum_chars(self, term: int) -> bytes | None:
        """C1 C2 after the ETX/ETB at ``term``: b"" when absent, None when not yet here."""
        buf = self.buf
        available = len(buf) - term - 1
        if available >= 1 and buf[term + 1] < 0x20:
            return b""
        if available < 2:
            return bytes(buf[term + 1 :]) if self.final else None
        if buf[term + 2] < 0x20:
            return bytes(buf[term + 1 : term + 2])
        return bytes(buf[term + 1 : term + 3])

    def _check(self, raw: bytes, term: int, given: bytes, offset: int) -> CheckedFrame | Rejection:
        """E1381 §6.5.1 checks, in order: structure, then checksum."""
        number = raw[1] - 0x30
        if not 0 <= number <= 7 or term == 1:
            reason = "frame number missing or not 0-7"
            return Rejection(FrameRejected(reason, raw, offset), nak=True)
        body = raw[1 : term + 1]
        warnings: list[str] = []
        if given != fr.checksum(body):
            warning = self._unusual_checksum(body, given)
            if warning is None:
                reason = f"checksum {given!r} wrong, computed {fr.checksum(body).decode()}"
                return Rejection(FrameRejected(reason, raw, offset), nak=True)
            warnings.append(warning)
        if len(raw) + 2 > fr.MAX_FRAME:
            warnings.append(f"frame of {len(raw) + 2} bytes exceeds the E1381 maximum of 247")
        text = raw[2:term]
        if not self._lf_separators and fr.LF in text:
            warnings.append("LF inside frame text (E1381 §6.6); see lf_separators")
        return FrameReceived(number, text, raw[term] == fr.ETX, raw, offset), tuple(warnings)

    def _unusual_checksum(self, body: bytes, given: bytes) -> str | None:
        """The warning for a tolerated checksum (lower case, absent when optional), or
        None when the frame must be rejected."""
        if not given and self._checksum_optional:
            return "frame has no checksum"
        if fr.verify_checksum(body, given) is fr.ChecksumVerdict.LOWER_CASE:
            return f"lower-case checksum {given.decode('ascii')}"
        return None

    def _cut(self, pos: int, end: int, reason: str) -> Rejection:
        # The sender never finished this frame: there is nothing to answer.
        raw = bytes(self.buf[pos : min(end, pos + self._max_frame)])
        self.pos = end
        self._resume = 1
        return Rejection(FrameRejected(reason, raw, self.base + pos), nak=False)

    def _start_oversized_frame(self, pos: int, limit: int) -> Rejection | None:
        # Bounded memory: drop the frame's bytes as they come, NAK it once it ends.
        self._oversize_offset = self.base + pos
        # limit - pos bytes are always buffered here: the kept prefix is chunking-proof.
        self._oversize_raw = bytes(self.buf[pos : min(limit, pos + REJECTED_RAW_KEPT)])
        self.pos = limit
        self._resume = 1
        self.unfinished = Unfinished.OVERSIZED_FRAME
        return self._skip_oversized_frame()

    def _skip_oversized_frame(self) -> Rejection | None:
        buf, pos = self.buf, self.pos
        start, raw = self._oversize_offset, self._oversize_raw
        end = fr.find_frame_end(buf, pos, len(buf))
        if end < 0 or buf[end] not in (fr.ETX, fr.ETB):
            self.pos = len(buf) if end < 0 else end
            if end < 0 and not self.final:
                return None
            self.unfinished = None
            reason = "oversized frame never finished"
            return Rejection(FrameRejected(reason, raw, start), nak=False)
        given = self._checksum_chars(end)
        if given is None:
            self.pos = end
            return None
        self.pos = end + 1 + len(given)
        self.unfinished = Unfinished.TRAILER
        size = self.base + self.pos + 2 - start
        reason = f"frame of {size} bytes exceeds max_frame_size {self._max_frame}"
        return Rejection(FrameRejected(reason, raw, start), nak=True)

    def _check_trailer(self) -> bool:
        """The CR LF after a frame's checksum (E1381 §6.3.1); tolerate its absence."""
        buf, pos = self.buf, self.pos
        available = len(buf) - pos
        if available >= 2 and buf[pos] == fr.CR and buf[pos + 1] == fr.LF:
            self.pos = pos + 2
        elif available == 0 or (available == 1 and buf[pos] == fr.CR):
            if not self.final:
                return False
            self.pos = len(buf)
            self._warn("frame ends without its CR LF trailer", pos)
        elif buf[pos] == fr.CR:
            self.pos = pos + 1
            self._warn("frame trailer has CR without LF", pos)
        elif buf[pos] == fr.LF:
            self.pos = pos + 1
            self._warn("frame trailer has LF without CR", pos)
        else:
            self._warn("frame not followed by CR LF", pos)
        self.unfinished = None
        return True

    # -- bytes outside frames --------------------------------------------------------------

    def skip_filler(self, pos: int, *, whole_runs: bool) -> bool:
        """A run of bytes that are no E1381 control: Noise, or a warning for CR/LF only.
        ``whole_runs``: wait for the run's end (up to NOISE_CHUNK) to report it whole."""
        buf = self.buf
        stop = min(len(buf), pos + self._noise_chunk)
        significant = _SIGNIFICANT.search(buf, pos, stop)
        if significant is not None:
            stop = significant.start()
        elif stop - pos < self._noise_chunk and whole_runs and not self.final:
            return False  # the run may go on: report it whole, whatever the reads
        run = bytes(buf[pos:stop])
        self.pos = stop
        if not run.strip(b"\r\n"):
            self._warn("extra CR/LF outside frames (doubled trailer?)", pos)
        else:
            self._events.append(Noise(run, self.base + pos, "bytes outside a frame"))
        return True

    def skip_stray(self, pos: int, context: str) -> None:
        """One control byte that means nothing ``context`` (the link's state)."""
        byte = self.buf[pos]
        self.pos = pos + 1
        reason = f"stray {_NAMES[byte]} while {context}"
        self._events.append(Noise(bytes((byte,)), self.base + pos, reason))

    def skip_bad_reply(self, pos: int) -> None:
        """What came instead of ACK, NAK or EOT after our frame, up to the next of them."""
        buf = self.buf
        reply = _REPLY.search(buf, pos)
        stop = len(buf) if reply is None else reply.start()
        self.pos = stop
        reason = "unexpected reply to a frame (counts as NAK)"
        self._events.append(Noise(bytes(buf[pos:stop]), self.base + pos, reason))

    def _warn(self, text: str, pos: int) -> None:
        self._events.append(ProtocolWarning(text, self.base + pos))
