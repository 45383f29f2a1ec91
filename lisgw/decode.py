"""Capture decoding: the bytes of a capture → normalized messages, through the gateway's code.

Layer: domain (pure): bytes in, ``NormalizedMessage`` out, no I/O. ``lisgw decode`` reads
files and calls ``decode_capture``; the gateway's links use the same link, codec and
normalizer, byte for byte.

A capture is not a live line, so two rules differ from the link's: time never passes (no
timer fires), and a capture that holds frames but no ENQ at all (files cut at the first STX)
is read as one transmission whose end is the end of the file, with a warning. A transmission
that began with ENQ and has no EOT stays incomplete: its records are reported as
``incomplete``, never as results.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from lisgw.astm import events as ev
from lisgw.astm.events import NEED_DATA
from lisgw.astm.frames import ENQ, STX
from lisgw.astm.link import AstmLink, LinkOptions
from lisgw.astm.records import AstmMessage, MessageAssembler
from lisgw.astm.unframed import UnframedReader
from lisgw.errors import CodecError
from lisgw.hl7.message import parse_message
from lisgw.hl7.mllp import NEED_DATA as MLLP_NEED_DATA
from lisgw.hl7.mllp import MllpFramer, MllpMessage, MllpNoise, MllpOversize
from lisgw.model import Kind, NormalizedMessage, Protocol
from lisgw.normalize import normalize_astm, normalize_hl7

_VT = 0x0B
# Link-level noise a capture may start with before the first real byte (E1381 control bytes,
# NUL padding, line breaks written by capture programs).
_LEADING_NOISE = b"\x00\x04\x05\x06\x15\r\n\t "
# An E1394 H record: optional indentation or digit prefix, `H`, then the field delimiter
# and at least three more delimiter characters.
_ASTM_HEADER = re.compile(rb"^[ \t]*\d?H([^A-Za-z0-9\r\n])[^\r\n]{3}")


class CaptureKind(enum.Enum):
    ASTM_FRAMES = "astm-frames"
    ASTM_RECORDS = "astm-records"
    HL7 = "hl7"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """How to read a capture. ``hl7_encoding`` falls back to ISO-8859-1 with a warning."""

    astm_encoding: str = "latin-1"
    hl7_encoding: str = "utf-8"
    max_frame_size: int = 64 * 1024
    max_hl7_message: int = 1024 * 1024


def sniff(data: bytes) -> CaptureKind:
    """Say which protocol a capture speaks, from its first significant bytes."""
    body = data.lstrip(_LEADING_NOISE)
    if not body:
        return CaptureKind.UNKNOWN
    first = body[0]
    if first == STX and len(body) > 1:
        if body[1] == _VT:
            return CaptureKind.HL7
        return CaptureKind.ASTM_FRAMES if chr(body[1]).isdigit() else CaptureKind.UNKNOWN
    if first == _VT or body.startswith(b"MSH"):
        return CaptureKind.HL7
    if _ASTM_HEADER.match(body):
        return CaptureKind.ASTM_RECORDS
    return CaptureKind.UNKNOWN


def decode_capture(data: bytes, options: DecodeOptions | None = None) -> list[NormalizedMessage]:
    """Decode a whole capture; never raises for bad input (problems become warnings)."""
    options = options or DecodeOptions()
    kind = sniff(data)
    leftover: list[str] = []
    if kind is CaptureKind.ASTM_FRAMES:
        messages = list(_decode_astm_frames(data, options, leftover))
    elif kind is CaptureKind.ASTM_RECORDS:
        messages = list(_decode_astm_records(data, options, leftover))
    elif kind is CaptureKind.HL7:
        messages = list(_decode_hl7(data, options, leftover))
    else:
        leftover.append(f"not ASTM or HL7: {len(data)} bytes starting {data[:16]!r}")
        messages = []
    if messages:
        if leftover:  # noise after the last message belongs to the last line
            last = messages[-1]
            messages[-1] = replace(last, warnings=(*last.warnings, *leftover))
        return messages
    protocol = {
        CaptureKind.ASTM_FRAMES: Protocol.ASTM,
        CaptureKind.ASTM_RECORDS: Protocol.ASTM,
        CaptureKind.HL7: Protocol.HL7,
    }.get(kind, Protocol.UNKNOWN)
    # Every capture gives at least one line, so nothing is passed over in silence.
    return [
        NormalizedMessage(
            protocol=protocol,
            kind=Kind.UNKNOWN,
            warnings=(*leftover, "no message found in the capture"),
        )
    ]


class _AstmSession:
    """Records of one transmission and the warnings seen since the last message."""

    def __init__(self, options: DecodeOptions) -> None:
        self.options = options
        self.records: list[bytes] = []
        self.offset = 0
        self.warnings: list[str] = []

    def start(self, offset: int) -> None:
        self.records = []
        self.offset = offset

    def messages(self, *, incomplete: bool = False) -> Iterator[NormalizedMessage]:
        assembler = MessageAssembler(encoding=self.options.astm_encoding)
        decoded: list[AstmMessage] = []
        for record in self.records:
            decoded.extend(assembler.feed(record))
        decoded.extend(assembler.flush())
        self.records = []
        for message in decoded:
            normalized = normalize_astm(message, offset=self.offset)
            yield self._finish(normalized, incomplete)

    def _finish(self, message: NormalizedMessage, incomplete: bool) -> NormalizedMessage:
        warnings = (*self.warnings, *message.warnings)
        self.warnings = []
        if incomplete:
            return replace(message, incomplete=True, kind=Kind.UNKNOWN, warnings=warnings)
        return replace(message, warnings=warnings)


def _decode_astm_frames(
    data: bytes, options: DecodeOptions, leftover: list[str]
) -> Iterator[NormalizedMessage]:
    link = AstmLink(
        LinkOptions(lenient=True, lf_separators=True, max_frame_size=options.max_frame_size)
    )
    # Files that start at the first STX carry no ENQ/EOT at all (see the corpus README).
    frames_only = ENQ not in data
    session = _AstmSession(options)
    link.receive_data(data, 0.0)
    closed = False
    while True:
        event = link.next_event()
        if event is NEED_DATA:
            if closed:
                break
            link.close(0.0)
            closed = True
            continue
        if isinstance(event, ev.FrameReceived):
            link.acknowledge(0.0)
        elif isinstance(event, ev.RecordReceived):
            session.records.append(event.text)
        elif isinstance(event, ev.TransferStarted):
            session.start(event.offset)
        elif isinstance(event, ev.TransferEnded):
            yield from session.messages()
        elif isinstance(event, ev.TransferIncomplete):
            yield from _incomplete(session, event, frames_only)
        elif isinstance(event, ev.FrameRejected):
            session.warnings.append(f"frame at offset {event.offset} rejected: {event.reason}")
        elif isinstance(event, ev.Noise):
            session.warnings.append(
                f"{len(event.data)} byte(s) of noise at offset {event.offset}: {event.reason}"
            )
        elif isinstance(event, ev.ProtocolWarning):
            session.warnings.append(f"offset {event.offset}: {event.text}")
    leftover.extend(session.warnings)


def _incomplete(
    session: _AstmSession, event: ev.TransferIncomplete, frames_only: bool
) -> Iterator[NormalizedMessage]:
    if frames_only:
        session.warnings.append("capture has no ENQ/EOT: its frames are read as one transmission")
        yield from session.messages()
        return
    session.warnings.append(
        f"incomplete transmission at offset {event.offset} ({event.reason}): "
        "its records are not results"
    )
    if session.records:
        yield from session.messages(incomplete=True)


def _decode_astm_records(
    data: bytes, options: DecodeOptions, leftover: list[str]
) -> Iterator[NormalizedMessage]:
    reader = UnframedReader()
    reader.receive_data(data)
    reader.close()
    session = _AstmSession(options)
    session.warnings.append("unframed records (no STX/ETX/checksums)")
    while True:
        event = reader.next_event()
        if not isinstance(event, ev.RecordReceived):
            break
        session.records.append(event.text)
    yield from session.messages()
    leftover.extend(session.warnings)


def _decode_hl7(
    data: bytes, options: DecodeOptions, leftover: list[str]
) -> Iterator[NormalizedMessage]:
    framer = MllpFramer(max_message_size=options.max_hl7_message, lenient=True)
    framer.receive_data(data)
    framer.close()
    pending: list[str] = []
    while True:
        event = framer.next_event()
        if event is MLLP_NEED_DATA:
            break
        if isinstance(event, MllpNoise):
            pending.append(f"{len(event.data)} byte(s) of noise at offset {event.offset}")
        elif isinstance(event, MllpOversize):
            pending.append(f"message at offset {event.offset} over the size limit: dropped")
        elif isinstance(event, MllpMessage):
            yield _hl7_message(event, options, [*pending, *event.warnings])
            pending = []
    leftover.extend(pending)


def _hl7_message(
    event: MllpMessage, options: DecodeOptions, warnings: list[str]
) -> NormalizedMessage:
    try:
        message = parse_message(event.payload, encoding=options.hl7_encoding)
    except CodecError:
        try:
            message = parse_message(event.payload, encoding="iso-8859-1")
        except CodecError as error:
            return NormalizedMessage(
                protocol=Protocol.HL7,
                kind=Kind.UNKNOWN,
                warnings=(*warnings, f"offset {event.offset}: {error}"),
                offset=event.offset,
            )
        warnings.append(f"not {options.hl7_encoding}: read as ISO-8859-1")
    normalized = normalize_hl7(message, offset=event.offset)
    return replace(normalized, warnings=(*warnings, *normalized.warnings))
