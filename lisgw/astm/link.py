"""The E1381 (CLSI LIS01-A2) data link state machine for one line, sans-IO, h11 style.

Layer: ASTM link layer. Takes bytes and ``now: float``; returns events and bytes to write.
No I/O, no clock, no logging: the transport adapter feeds ``receive_data``, writes
``data_to_send()`` after every call, and schedules ``handle_timeout`` at ``deadline()``.

Implements ASTM E1381-02 / CLSI LIS01-A2 §6, both roles on one line:
  §6.2    establishment (ENQ -> ACK, NAK = busy), §6.2.1 contention;
  §6.3    transfer: frames (``lisgw.astm.frames``), frame numbers, checksums,
          acknowledgements, §6.3.5 receiver interrupt (EOT in reply to a frame);
  §6.4    termination (EOT); §6.5.1 defective frames, retransmission (6 tries);
  §6.5.2  timeouts: sender 15 s for a reply, receiver 30 s for a frame or EOT.

Receiving, each frame is verified before the caller sees it; the caller commits it and
then calls ``acknowledge(now)`` (ACK) or ``reject(now)`` (NAK): nothing is ACKed before
it is stored. The bytes themselves (frame ends, checksum characters, trailers, oversized
frames, filler) are read by ``lisgw.astm.scanner``; this module decides what they mean.
Tolerated deviations seen in the corpus become ProtocolWarning or Noise events, never
silent loss: doubled ENQ, stray ACK/NAK/EOT, frames with no ENQ, reused frame numbers.
Memory stays bounded: a frame over ``max_frame_size`` or one that would make a record
longer than ``max_record_size`` is NAKed; the sender gives up after its retries (§6.5.1).
Records come out one RecordReceived each or, with ``LinkOptions(batch_records=True)``, one
RecordsReceived per acknowledged frame (same records, same offsets, far fewer events).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from lisgw.astm import frames as fr
from lisgw.astm.events import (
    NEED_DATA,
    PAUSED,
    ContentionDetected,
    Event,
    FrameDuplicate,
    FrameReceived,
    FrameRejected,
    MessageAborted,
    MessageDelivered,
    Noise,
    ProtocolWarning,
    RecordReceived,
    RecordsReceived,
    Sentinel,
    TransferEnded,
    TransferIncomplete,
    TransferStarted,
)
from lisgw.astm.scanner import FrameScanner, Rejection
from lisgw.astm.unframed import DEFAULT_MAX_RECORD_SIZE, RecordSplitter
from lisgw.errors import ConfigError, LocalProtocolError


@dataclass(frozen=True, slots=True)
class LinkTimers:
    """E1381 timers, in seconds."""

    reply_timeout: float = 15.0  # §6.5.2: sender awaits the reply to ENQ or to a frame
    frame_timeout: float = 30.0  # §6.5.2: receiver awaits a frame or EOT
    host_contention_backoff: float = 20.0  # §6.2.1: the computer system yields
    instrument_contention_backoff: float = 1.0  # §6.2.1: the instrument re-sends ENQ
    busy_backoff: float = 10.0  # §6.2: NAK to ENQ, wait before the next ENQ
    interrupt_backoff: float = 15.0  # §6.3.5: after honouring a receiver interrupt


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """How one line behaves. ``lenient`` implies checksum_optional and lf_separators."""

    we_are_instrument: bool = False
    lenient: bool = False
    checksum_optional: bool = False  # accept frames with no checksum (with a warning)
    lf_separators: bool = False  # LF and CR LF also end records inside frame text
    strict_frame_numbers: bool = False  # NAK frames out of sequence or reusing a number
    max_frame_size: int = 64 * 1024  # real devices send 4.3 KB frames; beyond: NAK
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE  # M records carry kilobytes; beyond: NAK
    max_retries: int = 6  # §6.5.1: the sixth NAK (or busy NAK) aborts the message
    max_text: int = fr.MAX_TEXT
    timers: LinkTimers = field(default_factory=LinkTimers)
    # One RecordsReceived per acknowledged frame instead of a RecordReceived per record:
    # the same records and offsets, far fewer events for callers that take them in bulk.
    batch_records: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.max_frame_size < 16:
            problems.append(f"max_frame_size: {self.max_frame_size} is below 16 bytes")
        if self.max_record_size < 1:
            problems.append(f"max_record_size: {self.max_record_size} is below 1 byte")
        if self.max_retries < 1:
            problems.append(f"max_retries: {self.max_retries} is below 1")
        if not 1 <= self.max_text <= fr.MAX_TEXT:
            problems.append(f"max_text: {self.max_text} is not 1..{fr.MAX_TEXT}")
        if problems:
            raise ConfigError(problems)


DEFAULT_OPTIONS: Final = LinkOptions()


class LinkState(Enum):
    IDLE = "idle"  # §6.1 neutral: nobody transfers
    RECEIVING = "receiving"  # the peer established; awaiting a frame or EOT
    FRAME_PENDING = "frame-pending"  # a verified frame awaits acknowledge()/reject()
    SENDING_ENQ = "sending-enq"  # we sent ENQ; awaiting ACK, NAK or a contending ENQ
    SENDING_FRAME = "sending-frame"  # we sent a frame; awaiting ACK, NAK or EOT
    CLOSED = "closed"

    # Members are singletons that compare by identity, so the identity hash is a valid one;
    # Enum's own __hash__ is a Python call, paid on every dispatch in next_event().
    __hash__ = object.__hash__


# Module-level names for the states: looking a member up on the Enum class costs about as
# much as a Python call, and next_event() tests the state once or twice per event.
_IDLE: Final = LinkState.IDLE
_RECEIVING: Final = LinkState.RECEIVING
_FRAME_PENDING: Final = LinkState.FRAME_PENDING
_SENDING_ENQ: Final = LinkState.SENDING_ENQ
_SENDING_FRAME: Final = LinkState.SENDING_FRAME
_CLOSED: Final = LinkState.CLOSED


class _Input(Enum):
    """What the next received byte means to the state machine."""

    ENQ = fr.ENQ
    STX = fr.STX
    EOT = fr.EOT
    ACK = fr.ACK
    NAK = fr.NAK
    OTHER = -1  # anything else: a run of filler (noise, CR LF) or a bad reply


@dataclass(slots=True)
class _Outgoing:
    message_id: int
    frames: list[bytes]
    next_frame: int = 0
    retries: int = 0  # §6.5.1 retransmissions of the current frame
    refusals: int = 0  # §6.2 busy NAKs to our ENQ


_SENDING: Final = (_SENDING_ENQ, _SENDING_FRAME)


class AstmLink:
    """One E1381 line, receiving and sending. See the module docstring and _TRANSITIONS."""

    def __init__(self, options: LinkOptions = DEFAULT_OPTIONS) -> None:
        self.options = options
        lf_separators = options.lf_separators or options.lenient
        self._max_record = options.max_record_size
        self._batch_records = options.batch_records
        self._timers = options.timers
        self._state = _IDLE
        self._events: deque[Event] = deque()
        self._out = bytearray()
        self._now = 0.0
        self._deadline: float | None = None
        self._eof = False
        self._scanner = FrameScanner(
            self._events,
            max_frame_size=options.max_frame_size,
            checksum_optional=options.checksum_optional or options.lenient,
            lf_separators=lf_separators,
        )
        # receive session
        self._splitter = RecordSplitter(lf_separators=lf_separators)
        self._pending: FrameReceived | None = None
        self._last_number: int | None = None
        self._last_raw = b""
        self._expected_number = 1  # §6.3.2: the first frame of a transfer is number 1
        self._frames_in_session = 0
        self._mid_message = False
        self._last_reply_nak = False
        # send side
        self._queue: deque[_Outgoing] = deque()
        self._next_id = 1
        self._hold_until = float("-inf")
        self._hold_ends_with_peer_session = False
        self._interrupt_requested = False

    # -- public API ------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def buffered_size(self) -> int:
        """Bytes received and not parsed yet: after NEED_DATA, at most about max_frame_size."""
        return self._scanner.buffered_size

    @property
    def pending_record_size(self) -> int:
        """Bytes held for a record still unfinished: at most max_record_size."""
        return self._splitter.pending_size

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the line. Events come out of next_event()."""
        if self._eof:
            raise LocalProtocolError("receive_data() after close()")
        self._now = now
        self._scanner.buf += data
        if data and self._state is _RECEIVING:
            # A long frame on a slow serial line is still a frame arriving (§6.5.2).
            self._deadline = now + self._timers.frame_timeout

    def next_event(self) -> Event | Sentinel:
        """The next event; NEED_DATA when the bytes are used up, PAUSED while a
        FrameReceived awaits acknowledge() or reject()."""
        events = self._events
        if events:
            return events.popleft()
        scanner = self._scanner
        while not events:
            state = self._state
            if state is _FRAME_PENDING:
                return PAUSED
            if state is _CLOSED:
                return NEED_DATA
            pos = scanner.pos
            if scanner.unfinished is not None or pos >= len(scanner.buf):
                progressed = self._step()
            else:  # the common case, inlined: dispatch the next byte (_TRANSITIONS)
                progressed = _BYTE_HANDLERS[state][scanner.buf[pos]](self, pos)
            if not progressed:
                if self._eof:
                    self._finish()
                    continue
                scanner.compact()
                return NEED_DATA
        return events.popleft()

    def acknowledge(self, now: float) -> None:
        """The caller committed the pending frame: ACK it and release its records."""
        pending = self._take_pending("acknowledge")
        self._out.append(fr.ACK)
        self._last_reply_nak = False
        self._state = _RECEIVING
        self._deadline = now + self._timers.frame_timeout
        number, final = pending.number, pending.final
        self._last_number, self._last_raw = number, pending.raw
        self._expected_number = (number + 1) % 8
        self._mid_message = not final
        # E1381 §6.3.1: the final (ETX) frame of a message also ends its last record.
        records, offsets = self._splitter.split(pending.text, pending.offset + 2, final=final)
        if not records:
            return
        if self._batch_records:
            self._events.append(RecordsReceived(records, offsets))
        else:
            self._events.extend(map(RecordReceived, records, offsets))

    def reject(self, now: float) -> None:
        """The caller could not commit the pending frame: NAK it (the sender retransmits)."""
        self._take_pending("reject")
        self._reply(fr.NAK, now)

    def data_to_send(self) -> bytes:
        """Bytes to write to the line; call after every other method."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def send_message(self, records: Sequence[bytes], now: float) -> int:
        """Queue one message (records without their CR); returns its message id.

        It goes out in its own ENQ…EOT session when the line is free; MessageDelivered or
        MessageAborted reports the outcome.
        """
        if self._eof:
            raise LocalProtocolError("send_message() after close()")
        if not records:
            raise LocalProtocolError("a message has at least one record")
        for index, record in enumerate(records):
            if fr.RESTRICTED_IN_RECORD.search(record):
                raise LocalProtocolError(f"record {index} contains a restricted character")
        text = b"".join(record + b"\r" for record in records)
        message = _Outgoing(self._next_id, fr.build_frames(text, 1, self.options.max_text))
        self._next_id += 1
        self._queue.append(message)
        self._now = now
        if self._state is _IDLE:
            self._start_next_message(now)
        return message.message_id

    def deadline(self) -> float | None:
        """When handle_timeout() must be called, or None."""
        if self._eof:
            return None
        if self._state is _IDLE:
            return self._hold_until if self._queue else None
        if self._state in (_RECEIVING, *_SENDING):
            return self._deadline
        return None

    def handle_timeout(self, now: float) -> None:
        """Call at deadline() (drain next_event() first); early calls do nothing."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return
        self._now = now
        if self._state is _IDLE:
            self._start_next_message(now)
        elif self._state is _RECEIVING:
            # §6.5.2: the receiver discards the incomplete message and returns to neutral.
            self._flush_partial_input()
            if self._state is _RECEIVING:
                reason = "no frame or EOT within the frame timeout"
                offset = self._offset(self._scanner.pos)
                self._end_session(TransferIncomplete(reason, offset), now)
        elif self._state is _SENDING_ENQ:
            self._terminate(now, "no reply to ENQ within the reply timeout")
        else:
            number = self._queue[0].next_frame + 1
            self._terminate(now, f"no reply to frame {number} within the reply timeout")

    def close(self, now: float) -> None:
        """The connection is gone. Buffered bytes are still parsed; then the session ends
        (TransferIncomplete, MessageAborted for every queued message) and state is CLOSED."""
        self._now = now
        self._eof = True
        self._scanner.final = True

    # -- the parser loop -------------------------------------------------------------------

    def _step(self) -> bool:
        """Consume the next element of the input; False when more bytes are needed."""
        scanner = self._scanner
        if scanner.unfinished is not None:
            found = scanner.resume()
            return found if isinstance(found, bool) else self._frame_rejected(found)
        pos = scanner.pos
        if pos >= len(scanner.buf):
            return False
        return _BYTE_HANDLERS[self._state][scanner.buf[pos]](self, pos)

    def _flush_partial_input(self) -> None:
        """Report, then drop, what is left of an unfinished frame, filler or trailer."""
        self._scanner.final = True
        while self._state is _RECEIVING and self._step():
            pass
        self._scanner.final = self._eof

    def _finish(self) -> None:
        now = self._now
        if self._state is _RECEIVING:
            offset = self._offset(self._scanner.pos)
            self._end_session(TransferIncomplete("connection closed before EOT", offset), now)
        for message in self._queue:
            self._events.append(MessageAborted(message.message_id, "connection closed"))
        self._queue.clear()
        self._state = _CLOSED

    # -- receiving: establishment and termination ------------------------------------------

    def _accept_enq(self, pos: int) -> bool:
        self._scanner.pos = pos + 1
        self._begin_session(pos)
        self._reply(fr.ACK, self._now)
        return True

    def _implicit_transfer(self, pos: int) -> bool:
        # Captures that start at the first STX, devices that skip establishment: receive
        # the frames anyway (each verified and acknowledged as usual).
        self._warn("frame without ENQ: implicit transfer", pos)
        self._begin_session(pos)
        self._deadline = self._now + self._timers.frame_timeout
        return True

    def _begin_session(self, pos: int) -> None:
        self._state = _RECEIVING
        self._events.append(TransferStarted(self._offset(pos)))

    def _enq_while_receiving(self, pos: int) -> bool:
        if not self._frames_in_session:
            # Beckman Access 2, cobas c111/c311 captures: ENQ ENQ STX. A second ACK would be
            # read as the reply to frame 1, so the doubled ENQ gets no answer.
            self._scanner.pos = pos + 1
            self._events.append(Noise(b"\x05", self._offset(pos), "doubled ENQ ignored"))
            return True
        reason = "ENQ before EOT: the sender started again"
        self._end_session(TransferIncomplete(reason, self._offset(pos)), self._now, resume=False)
        return self._accept_enq(pos)

    def _eot_while_receiving(self, pos: int) -> bool:
        self._scanner.pos = pos + 1
        offset = self._offset(pos)
        if self._mid_message:
            # §6.4/§6.5: EOT after an ETB frame means the sender gave the message up.
            event: Event = TransferIncomplete("EOT after an intermediate (ETB) frame", offset)
        elif self._last_reply_nak:
            # §6.5.1: a sender whose frame was NAKed and that sends EOT instead of a
            # retransmission has aborted the message; what came before it is not all of it.
            event = TransferIncomplete("EOT after a NAKed frame (the sender gave up)", offset)
        else:
            event = TransferEnded(offset)
        self._end_session(event, self._now)
        return True

    def _end_session(self, event: Event, now: float, *, resume: bool = True) -> None:
        """Back to neutral; ``resume``: start a queued message now if its time has come."""
        self._events.append(event)
        self._splitter.discard()
        self._last_number, self._last_raw = None, b""
        self._expected_number = 1
        self._frames_in_session = 0
        self._mid_message = False
        if self._hold_ends_with_peer_session:
            self._hold_until = float("-inf")
        if resume:
            self._enter_idle(now)
        else:
            self._state, self._deadline = _IDLE, None

    # -- receiving: frames -----------------------------------------------------------------

    def _receive_frame(self, pos: int) -> bool:
        scanned = self._scanner.read_frame(pos)
        if scanned is None:
            return False
        if isinstance(scanned, Rejection):
            return self._frame_rejected(scanned)
        self._frames_in_session += 1
        frame, warnings = scanned
        # E1381 §6.5.1 order: structure and checksum (the scanner), then the frame number.
        if frame.number != self._expected_number:
            sequence_problem = self._sequence_problem(frame.number, frame.raw)
            if sequence_problem == "duplicate":
                # §6.5.1: our ACK was lost, the sender repeated the frame: ACK, not deliver.
                self._events.append(FrameDuplicate(frame.number, frame.offset))
                self._reply(fr.ACK, self._now)
                return True
            if self.options.strict_frame_numbers:
                return self._nak_frame(sequence_problem, frame)
            warnings = (*warnings, sequence_problem + ": accepted")
        if self._splitter.pending_size + len(frame.text) > self._max_record:
            record_size = self._splitter.longest_record_with(frame.text)
            if record_size > self._max_record:
                # Bounded memory: what was ACKed stays delivered; this frame is NAKed until
                # the sender gives the message up (§6.5.1) and the session ends incomplete.
                reason = f"record of {record_size} bytes exceeds max_record_size {self._max_record}"
                return self._nak_frame(reason, frame)
        if warnings:
            self._events.extend(ProtocolWarning(warning, frame.offset) for warning in warnings)
        self._pending = frame
        self._events.append(frame)
        self._state = _FRAME_PENDING
        self._deadline = None
        return True

    def _sequence_problem(self, number: int, raw: bytes) -> str:
        """ "" when ``number`` follows the last accepted frame (§6.3.2), else what is wrong."""
        last, expected = self._last_number, self._expected_number
        if number == expected:
            return ""
        if number == last:
            if raw == self._last_raw:
                return "duplicate"
            # Sysmex XN-550: FN 2 reused for a different R record; losing it is worse.
            return f"frame number {number} repeated with different content"
        return f"frame number {number}, expected {expected}"

    def _nak_frame(self, reason: str, frame: FrameReceived) -> bool:
        self._events.append(FrameRejected(reason, frame.raw, frame.offset))
        self._reply(fr.NAK, self._now)
        return True

    def _frame_rejected(self, rejection: Rejection) -> bool:
        self._frames_in_session += 1
        self._events.append(rejection.event)
        if rejection.nak:
            self._reply(fr.NAK, self._now)
        return True

    # -- bytes outside frames --------------------------------------------------------------

    def _filler(self, pos: int) -> bool:
        # Awaiting a reply to our ENQ, report filler as it comes: the peer may send no more.
        return self._scanner.skip_filler(pos, whole_runs=self._state not in _SENDING)

    def _stray(self, pos: int) -> bool:
        self._scanner.skip_stray(pos, self._state.value)
        return True

    # -- sending ---------------------------------------------------------------------------

    def _start_next_message(self, now: float) -> None:
        if self._queue and now >= self._hold_until and not self._eof:
            self._hold_ends_with_peer_session = False
            self._send(bytes((fr.ENQ,)), now)
            self._state = _SENDING_ENQ

    def _enq_accepted(self, pos: int) -> bool:
        self._scanner.pos = pos + 1
        message = self._queue[0]
        message.refusals = 0
        self._send(message.frames[0], self._now)
        self._state = _SENDING_FRAME
        return True

    def _enq_refused(self, pos: int) -> bool:
        # §6.2: NAK = receiver busy; wait 10 s and try again, up to max_retries times.
        self._scanner.pos = pos + 1
        message = self._queue[0]
        message.refusals += 1
        if message.refusals >= self.options.max_retries:
            self._queue.popleft()
            reason = f"receiver busy: NAK to {message.refusals} ENQs"
            self._events.append(MessageAborted(message.message_id, reason))
        else:
            self._hold_until = self._now + self._timers.busy_backoff
        self._enter_idle(self._now)
        return True

    def _contention(self, pos: int) -> bool:
        # §6.2.1: both sent ENQ; the instrument wins. The computer system stays silent and
        # answers the instrument's next ENQ; the instrument sends ENQ again after 1 s.
        self._events.append(ContentionDetected(self._offset(pos)))
        if self.options.we_are_instrument:
            self._hold_until = self._now + self._timers.instrument_contention_backoff
        else:
            self._hold_until = self._now + self._timers.host_contention_backoff
        self._hold_ends_with_peer_session = False
        self._state = _IDLE
        if self._scanner.buf[pos] == fr.ENQ:
            self._scanner.pos = pos + 1
        return True  # an STX instead of ENQ: the peer just sends; IDLE receives it

    def _frame_acked(self, pos: int) -> bool:
        self._scanner.pos = pos + 1
        if self._scanner.buf[pos] == fr.EOT:
            # §6.3.5: EOT in reply to a frame is a receiver interrupt and counts as ACK. We
            # finish this message, then leave the line to the receiver for a while.
            self._interrupt_requested = True
        message = self._queue[0]
        message.next_frame += 1
        message.retries = 0
        if message.next_frame < len(message.frames):
            self._send(message.frames[message.next_frame], self._now)
            return True
        self._queue.popleft()
        self._out.append(fr.EOT)
        self._events.append(MessageDelivered(message.message_id))
        if self._interrupt_requested:
            self._interrupt_requested = False
            self._hold_until = self._now + self._timers.interrupt_backoff
            self._hold_ends_with_peer_session = True
        self._enter_idle(self._now)
        return True

    def _frame_refused(self, pos: int) -> bool:
        self._scanner.pos = pos + 1
        return self._retransmit("NAK")

    def _bad_reply(self, pos: int) -> bool:
        # §6.5.1: any reply but ACK or EOT counts as NAK.
        self._scanner.skip_bad_reply(pos)
        return self._retransmit("unexpected reply")

    def _retransmit(self, why: str) -> bool:
        message = self._queue[0]
        message.retries += 1
        if message.retries >= self.options.max_retries:
            number = message.next_frame + 1
            self._terminate(self._now, f"frame {number}: {why} {message.retries} times")
        else:
            self._send(message.frames[message.next_frame], self._now)
        return True

    def _terminate(self, now: float, reason: str) -> None:
        """§6.4/§6.5: give the message up, return the line to neutral with EOT."""
        message = self._queue.popleft()
        self._out.append(fr.EOT)
        self._interrupt_requested = False
        self._events.append(MessageAborted(message.message_id, reason))
        self._enter_idle(now)

    # -- helpers ---------------------------------------------------------------------------

    def _enter_idle(self, now: float) -> None:
        self._state = _IDLE
        self._deadline = None
        self._start_next_message(now)

    def _send(self, data: bytes, now: float) -> None:
        self._out += data
        self._deadline = now + self._timers.reply_timeout

    def _reply(self, byte: int, now: float) -> None:
        self._out.append(byte)
        self._last_reply_nak = byte == fr.NAK
        self._state = _RECEIVING
        self._deadline = now + self._timers.frame_timeout

    def _take_pending(self, action: str) -> FrameReceived:
        pending = self._pending
        if self._state is not _FRAME_PENDING or pending is None:
            raise LocalProtocolError(f"{action}() with no FrameReceived pending")
        self._pending = None
        return pending

    def _offset(self, pos: int) -> int:
        return self._scanner.base + pos

    def _warn(self, text: str, pos: int) -> None:
        self._events.append(ProtocolWarning(text, self._offset(pos)))


_Handler = Callable[[AstmLink, int], bool]
_I = _Input

# The transition table: (state, input byte) -> handler. Rules (E1381 §6):
# - IDLE: ENQ is answered ACK and starts a receive session; STX starts one implicitly
#   (captures, devices skipping establishment); stray EOT/ACK/NAK and filler are Noise.
# - RECEIVING: STX is a frame: verified, then FrameReceived (caller ACKs or NAKs) or
#   FrameDuplicate (ACK) or FrameRejected (NAK); EOT ends the session; ENQ before any frame
#   is a doubled ENQ (ignored), after frames it restarts the session.
# - SENDING_ENQ: ACK starts our frames; NAK = busy, back off 10 s; ENQ = contention, the
#   instrument wins; an STX means the peer sends regardless: yield and receive.
# - SENDING_FRAME: ACK or EOT (receiver interrupt) = next frame or EOT at the end; NAK or
#   anything else = retransmit, the sixth time abort with EOT.
# - FRAME_PENDING and CLOSED read no input. Timeouts and local calls are methods above.
_TRANSITIONS: Final[dict[tuple[LinkState, _Input], _Handler]] = {
    (_IDLE, _I.ENQ): AstmLink._accept_enq,
    (_IDLE, _I.STX): AstmLink._implicit_transfer,
    (_IDLE, _I.EOT): AstmLink._stray,
    (_IDLE, _I.ACK): AstmLink._stray,
    (_IDLE, _I.NAK): AstmLink._stray,
    (_IDLE, _I.OTHER): AstmLink._filler,
    (_RECEIVING, _I.ENQ): AstmLink._enq_while_receiving,
    (_RECEIVING, _I.STX): AstmLink._receive_frame,
    (_RECEIVING, _I.EOT): AstmLink._eot_while_receiving,
    (_RECEIVING, _I.ACK): AstmLink._stray,
    (_RECEIVING, _I.NAK): AstmLink._stray,
    (_RECEIVING, _I.OTHER): AstmLink._filler,
    (_SENDING_ENQ, _I.ACK): AstmLink._enq_accepted,
    (_SENDING_ENQ, _I.NAK): AstmLink._enq_refused,
    (_SENDING_ENQ, _I.ENQ): AstmLink._contention,
    (_SENDING_ENQ, _I.STX): AstmLink._contention,
    (_SENDING_ENQ, _I.EOT): AstmLink._stray,
    (_SENDING_ENQ, _I.OTHER): AstmLink._filler,
    (_SENDING_FRAME, _I.ACK): AstmLink._frame_acked,
    (_SENDING_FRAME, _I.EOT): AstmLink._frame_acked,
    (_SENDING_FRAME, _I.NAK): AstmLink._frame_refused,
    (_SENDING_FRAME, _I.ENQ): AstmLink._bad_reply,
    (_SENDING_FRAME, _I.STX): AstmLink._bad_reply,
    (_SENDING_FRAME, _I.OTHER): AstmLink._bad_reply,
}


def _input_of(byte: int) -> _Input:
    try:
        return _Input(byte)
    except ValueError:
        return _Input.OTHER


# Per state, a 256-entry handler table indexed by the byte: one lookup per element parsed.
_BYTE_HANDLERS: Final[dict[LinkState, tuple[_Handler, ...]]] = {
    state: tuple(_TRANSITIONS[(state, _input_of(byte))] for byte in range(256))
    for state in (_IDLE, _RECEIVING, _SENDING_ENQ, _SENDING_FRAME)
}
