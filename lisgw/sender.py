"""The sender name of a connection's first message, read from its first bytes (sans-IO).

Layer: protocol (sans-IO): bytes in, bytes to answer and an outcome out; no I/O, no clock, no
logging. lisgw.transports.attribute uses it to tell apart analyzers that share one TCP
listener and one address and differ by sender name (configuration ``senders``,
lisgw.config_schema.Listener.attribute).

* ASTM (``AstmSenderProbe``): the sender is H.5.1 (E1394 §7.1.5, Sender Name or ID, first
  component) of the header record that opens frame 1 of the first transfer (E1381 §6.3.1).
  The analyzer sends frame 1 only once its ENQ is answered, so the probe answers exactly as
  lisgw.astm.link.AstmLink does before any frame (§6.2: ENQ → ACK; a doubled ENQ gets no
  answer, as in the link; EOT ends an establishment; stray ACK/NAK and filler are ignored)
  and never anything else: a frame is only ever acknowledged by the connection's own link,
  after the frame is committed. That link is then given every byte from the first one and
  answers the establishment again; lisgw.transports.attribute drops that repeated answer.
  The sender is read as soon as H.5.1 is complete, before the frame's end: the link checks
  the frame itself (a corrupt one is NAKed and sent again; a name corrupted in transit names
  no configured analyzer and the connection is refused, the analyzer connects again).
* HL7 (``Hl7SenderProbe``): MSH-3.1 (Sending Application, namespace ID, HL7 v2.5.1 §2.14.9.3)
  of the first message, with or without MLLP framing (lisgw.hl7.mllp tolerates both).
  Nothing is answered before the connection is attributed.

Both are bounded: past ``max_bytes`` without a sender, the outcome is ``SenderUnknown``, as
it is for a first record that is not a header or a first message without MSH. Names are
decoded as Latin-1 and trimmed (``Attribution.admits_sender`` compares trimmed names);
escape sequences are not decoded (sender names carry no delimiters in practice).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from lisgw.astm import frames as fr

__all__ = [
    "MAX_PROBE_BYTES",
    "AstmSenderProbe",
    "Hl7SenderProbe",
    "SenderFound",
    "SenderOutcome",
    "SenderProbe",
    "SenderUnknown",
]

# The header record's first fields and an MSH segment's first three fit in far less; a
# device that sends this much before naming itself is not one we can attribute.
MAX_PROBE_BYTES: Final = 4096

_ASTM_RECORD_END: Final = re.compile(rb"[\r\n\x03\x17]")  # CR (LF: lenient senders), ETX, ETB
_ASTM_CUT: Final = re.compile(rb"[\x02\x04\x05]")  # §6.6: STX, EOT, ENQ cut a frame short
_MSH: Final = re.compile(rb"(?:\A|[\x00-\x1f])MSH")  # a segment start, as lisgw.hl7.mllp
_HL7_SEGMENT_END: Final = re.compile(rb"[\r\n\x0b\x1c]")  # CR, LF, VT, FS
_ACK: Final = bytes((fr.ACK,))


@dataclass(frozen=True, slots=True)
class SenderFound:
    """The first message names its sender (trimmed; empty when the field is empty)."""

    sender: str


@dataclass(frozen=True, slots=True)
class SenderUnknown:
    """The first bytes cannot name a sender: ``reason`` says why."""

    reason: str


SenderOutcome: TypeAlias = SenderFound | SenderUnknown


class SenderProbe(Protocol):
    """What lisgw.transports.attribute needs of a probe."""

    def receive_data(self, data: bytes) -> SenderOutcome | None:
        """Feed bytes; the outcome once known (then the same outcome for every later call),
        None while more bytes are needed."""
        ...

    def data_to_send(self) -> bytes:
        """The answers the peer is owed so far (taken once)."""
        ...


class AstmSenderProbe:
    """E1381 establishment, then H.5.1 of frame 1 (module docstring)."""

    def __init__(self, max_bytes: int = MAX_PROBE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._pos = 0  # the next byte the establishment scan looks at
        self._receiving = False  # ENQ answered, no frame yet (AstmLink's RECEIVING)
        self._text_at: int | None = None  # where frame 1 starts, after its STX
        self._out = bytearray()
        self._outcome: SenderOutcome | None = None

    def receive_data(self, data: bytes) -> SenderOutcome | None:
        if self._outcome is not None:
            return self._outcome
        self._buf += data
        outcome = self._establish()
        if outcome is None and len(self._buf) > self.max_bytes:
            outcome = SenderUnknown(f"no sender name in the first {self.max_bytes} bytes")
        self._outcome = outcome
        return outcome

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _establish(self) -> SenderOutcome | None:
        buf = self._buf
        while self._text_at is None:
            if self._pos >= len(buf):
                return None
            byte = buf[self._pos]
            self._pos += 1
            if byte == fr.ENQ:
                if not self._receiving:  # a doubled ENQ gets no answer (AstmLink)
                    self._out += _ACK
                    self._receiving = True
            elif byte == fr.EOT:
                self._receiving = False
            elif byte == fr.STX:
                self._text_at = self._pos
        return astm_header_sender(bytes(buf[self._text_at :]))


def astm_header_sender(text: bytes) -> SenderOutcome | None:
    """H.5.1 from the start of frame 1 (the bytes after its STX, frame number first);
    None while the bytes so far do not hold it whole."""
    if text[:1].isdigit():
        text = text[1:]  # FN (§6.3.2); some devices omit it
    cut = _ASTM_CUT.search(text)
    if cut is not None:
        text = text[: cut.start()]
    end = _ASTM_RECORD_END.search(text)
    head = (text[: end.start()] if end is not None else text).lstrip(b" ")
    if end is None and cut is not None:
        return SenderUnknown("frame 1 was cut short before the sender name")
    ended = end is not None
    if not head:
        return SenderUnknown("frame 1 holds no header record") if ended else None
    if head[:1] != b"H":
        return SenderUnknown("the first record is not a header (H) record")
    if len(head) < 5:  # H and its four delimiters
        return SenderUnknown("the header record has no delimiters") if ended else None
    field, component = head[1:2], head[3:4]
    fields = head.split(field, 5)  # H, delimiters, H.3, H.4, H.5, the rest
    record_ended = ended and end is not None and text[end.start()] != fr.ETB
    if len(fields) < 5:
        if record_ended:
            return SenderFound("")  # no H.5 at all: the sender has no name
        return SenderUnknown("the header is split before its sender name") if ended else None
    name = fields[4]
    if len(fields) > 5 or component in name or record_ended:
        return SenderFound(name.split(component, 1)[0].decode("latin-1").strip())
    if ended:
        return SenderUnknown("the sender name (H.5) is split across frames")
    return None


class Hl7SenderProbe:
    """MSH-3.1 of the first message (module docstring); answers nothing."""

    def __init__(self, max_bytes: int = MAX_PROBE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._outcome: SenderOutcome | None = None

    def receive_data(self, data: bytes) -> SenderOutcome | None:
        if self._outcome is not None:
            return self._outcome
        self._buf += data
        outcome = hl7_sender(bytes(self._buf))
        if outcome is None and len(self._buf) > self.max_bytes:
            outcome = SenderUnknown(f"no MSH-3 in the first {self.max_bytes} bytes")
        self._outcome = outcome
        return outcome

    def data_to_send(self) -> bytes:
        return b""


def hl7_sender(data: bytes) -> SenderOutcome | None:
    """MSH-3.1 of the first message in ``data``; None while it is not there whole."""
    found = _MSH.search(data)
    if found is None:
        if bytes((0x1C,)) in data:  # FS: a whole block went by without MSH
            return SenderUnknown("the first message has no MSH segment")
        return None
    segment = data[found.end() - 3 :]
    if len(segment) < 5:  # MSH, MSH-1 and the component separator
        return None
    field, component = segment[3:4], segment[4:5]
    end = _HL7_SEGMENT_END.search(segment)
    head = segment[: end.start()] if end is not None else segment
    fields = head.split(field, 3)  # MSH, MSH-2, MSH-3, the rest
    if len(fields) < 3:
        return SenderFound("") if end is not None else None
    application = fields[2]
    if len(fields) > 3 or component in application or end is not None:
        return SenderFound(application.split(component, 1)[0].decode("latin-1").strip())
    return None
