"""Events the E1381 link (and the unframed record reader) hand to their caller.

Layer: ASTM link layer, sans-IO. Small frozen dataclasses, as in h11: the link turns bytes
into these events and the caller reacts to them (commits a frame, then acknowledges it).

Every ``offset`` is the byte offset, in the whole stream received so far, of the first byte
the event is about (the STX of a frame, the ENQ or EOT, the first byte of a record), so an
error message can name the place in a capture.

Implements the receiver's and sender's view of ASTM E1381-02 / CLSI LIS01-A2 §6
(establishment, transfer, termination, error recovery).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeAlias


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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class RecordReceived:
    """One E1394 record, its CR separator stripped, reassembled across frames."""

    text: bytes
    offset: int


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


Event: TypeAlias = (
    TransferStarted
    | FrameReceived
    | FrameDuplicate
    | FrameRejected
    | RecordReceived
    | TransferEnded
    | TransferIncomplete
    | Noise
    | ProtocolWarning
    | MessageDelivered
    | MessageAborted
    | ContentionDetected
)
