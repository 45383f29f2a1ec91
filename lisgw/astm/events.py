"""Events the E1381 link (and the unframed record reader) hand to their caller.

Layer: ASTM link layer, sans-IO. Small frozen dataclasses, as in h11: the link turns bytes
into these events and the caller reacts to them (commits a frame, then acknowledges it).
The events made once per frame or per record (FrameReceived, RecordReceived,
RecordsReceived) have a hand-written __init__ that stores the fields through their slots,
twice as fast as the generated one; they stay frozen, hashable, and equal by type and value.

Every ``offset`` is the byte offset, in the whole stream received so far, of the first byte
the event is about (the STX of a frame, the ENQ or EOT, the first byte of a record), so an
error message can name the place in a capture.

Implements the receiver's and sender's view of ASTM E1381-02 / CLSI LIS01-A2 §6
(establishment, transfer, termination, error recovery).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, TypeAlias


class Sentinel(Enum):
    """Values ``next_event()`` returns when it has no event (h11 style)."""

    NEED_DATA = "NEED_DATA"  # feed more bytes (or call close())
    PAUSED = "PAUSED"  # a FrameReceived awaits acknowledge() or reject()

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
PAUSED: Final = Sentinel.PAUSED


# -- receiving ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """The peer established a transfer (ENQ answered with ACK, or a frame with no ENQ)."""

    offset: int


@dataclass(frozen=True, slots=True, init=False)
class FrameReceived:
    """A frame passed every check. The caller MUST answer with ``link.acknowledge(now)``
    (the ACK goes out: commit the frame durably first) or ``link.reject(now)`` (NAK).

    ``raw`` is the frame from STX through the two checksum characters (the CR LF trailer,
    checked separately, is not part of it); ``text`` is the part between FN and ETX/ETB.
    """

    number: int
    text: bytes
    final: bool
    raw: bytes
    offset: int

    def __init__(self, number: int, text: bytes, final: bool, raw: bytes, offset: int) -> None:
        # One per frame: the fast frozen init (see _slot_setter), same fields, same order.
        _FRAME_NUMBER(self, number)
        _FRAME_TEXT(self, text)
        _FRAME_FINAL(self, final)
        _FRAME_RAW(self, raw)
        _FRAME_OFFSET(self, offset)


@dataclass(frozen=True, slots=True)
class FrameDuplicate:
    """An identical retransmission of the last accepted frame: ACKed, content not repeated."""

    number: int
    offset: int


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """A defective frame (checksum, structure, frame size, or a record it would make longer
    than max_record_size): NAKed automatically unless the sender left the frame unfinished
    (then nothing can be answered). ``raw`` holds at most the first bytes of an oversized
    frame."""

    reason: str
    raw: bytes
    offset: int


@dataclass(frozen=True, slots=True, init=False)
class RecordReceived:
    """One E1394 record, its CR separator stripped, reassembled across frames."""

    text: bytes
    offset: int

    def __init__(self, text: bytes, offset: int) -> None:
        # One per record: the fast frozen init (see _slot_setter).
        _RECORD_TEXT(self, text)
        _RECORD_OFFSET(self, offset)


@dataclass(frozen=True, slots=True)
class RecordsReceived:
    """The records one acknowledged frame completed, in order, when the link runs with
    ``LinkOptions(batch_records=True)``: the same records and offsets as that many
    RecordReceived events, in one event (never empty), for callers that take records by
    the frame. ``offsets[i]`` is the stream offset of ``records[i]``'s first byte."""

    records: tuple[bytes, ...]
    offsets: tuple[int, ...]

    def __init__(self, records: tuple[bytes, ...], offsets: tuple[int, ...]) -> None:
        # One per frame: the fast frozen init (see _slot_setter).
        _RECORDS_RECORDS(self, records)
        _RECORDS_OFFSETS(self, offsets)


@dataclass(frozen=True, slots=True)
class TransferEnded:
    """The peer ended its transfer with EOT after a complete message."""

    offset: int


@dataclass(frozen=True, slots=True)
class TransferIncomplete:
    """A receive session ended without a proper EOT: what it delivered is incomplete."""

    reason: str
    offset: int


@dataclass(frozen=True, slots=True)
class Noise:
    """Bytes discarded outside frames (stray ACK/NAK/EOT, garbage, a doubled ENQ...)."""

    data: bytes
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolWarning:
    """A deviation from E1381 that was tolerated (nothing was lost)."""

    text: str
    offset: int


# -- sending -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageDelivered:
    """Every frame of a queued message was acknowledged and EOT sent."""

    message_id: int


@dataclass(frozen=True, slots=True)
class MessageAborted:
    """A queued message was given up; the caller keeps it to send again later
    (E1381 §6.5: "the message must be remembered so it can be completed later")."""

    message_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ContentionDetected:
    """Both sides sent ENQ (E1381 §6.2.1); ``offset`` is the peer's ENQ."""

    offset: int


# -- the fast frozen init ----------------------------------------------------------------


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The store of field ``name`` of the frozen slotted dataclass ``cls``, bypassing its
    __setattr__ (which raises FrozenInstanceError) exactly as the generated __init__ does.

    The generated __init__ calls ``object.__setattr__(self, name, value)`` per field; the
    slot descriptor's own ``__set__``, looked up once here, stores the same value in half
    the time. That matters for the events made per frame or per record (megabytes a
    second); the instances are the same frozen, hashable, comparable dataclasses.
    """
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


_FRAME_NUMBER: Final = _slot_setter(FrameReceived, "number")
_FRAME_TEXT: Final = _slot_setter(FrameReceived, "text")
_FRAME_FINAL: Final = _slot_setter(FrameReceived, "final")
_FRAME_RAW: Final = _slot_setter(FrameReceived, "raw")
_FRAME_OFFSET: Final = _slot_setter(FrameReceived, "offset")
_RECORD_TEXT: Final = _slot_setter(RecordReceived, "text")
_RECORD_OFFSET: Final = _slot_setter(RecordReceived, "offset")
_RECORDS_RECORDS: Final = _slot_setter(RecordsReceived, "records")
_RECORDS_OFFSETS: Final = _slot_setter(RecordsReceived, "offsets")


Event: TypeAlias = (
    TransferStarted
    | FrameReceived
    | FrameDuplicate
    | FrameRejected
    | RecordReceived
    | RecordsReceived
    | TransferEnded
    | TransferIncomplete
    | Noise
    | ProtocolWarning
    | MessageDelivered
    | MessageAborted
    | ContentionDetected
)
