"""Capture decoding: the bytes of a capture → normalized messages, through the gateway's code.

Layer: domain (pure): bytes in, ``NormalizedMessage`` out, no I/O. ``lisgw decode`` reads
files and calls ``decode_capture``; the gateway's links use the same link, codec, driver
catalogue and engine, byte for byte.

The driver is the one the options pin (``name`` or ``name@version``) or, as on a connection
that pins none, the one the catalogue detects from the first message (``Catalogue.detect``).
Its link settings (E1381 leniency, frame size, frame numbers), record leniency and character
set are used to read the capture: when detection picks a driver whose settings differ from the
generic driver's, with which the first message was read, the capture is read again with them.
Framing is read from the bytes, whatever the driver's ``link.unframed`` says. Unlike a live
line, a capture may be several captures end to end, so without a pinned driver each later
message is matched too; one that matches nothing but the generic driver keeps the driver of
the message before it.

A capture is not a live line, so two rules differ from the link's: time never passes (no
timer fires), and a capture that holds frames but no ENQ at all (files cut at the first STX)
is read as one transmission whose end is the end of the file, with a warning. A transmission
that began with ENQ and has no EOT stays incomplete: its records are reported as
``incomplete``, never as results. Bytes that are neither ASTM nor HL7 (a whole capture, noise
between frames or between MLLP blocks) are offered to the catalogue's not-mine drivers: a
payload one recognises becomes a message of its own, kept raw, never results.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from lisgw.assemble import AstmSettings, assemble_records, normalize_message, read_hl7
from lisgw.astm import events as ev
from lisgw.astm.events import NEED_DATA
from lisgw.astm.frames import ENQ, STX
from lisgw.astm.link import AstmLink
from lisgw.astm.message import AstmMessage
from lisgw.astm.unframed import UnframedReader
from lisgw.drivers import Catalogue, CompiledProfile, default_catalogue
from lisgw.drivers.engine import not_mine_message
from lisgw.drivers.timestamps import check_zone
from lisgw.errors import CodecError
from lisgw.hl7.message import Hl7Message
from lisgw.hl7.mllp import NEED_DATA as MLLP_NEED_DATA
from lisgw.hl7.mllp import MllpFramer, MllpMessage, MllpNoise, MllpOversize
from lisgw.model import Kind, NormalizedMessage, Protocol

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


_PROTOCOL_OF = {
    CaptureKind.ASTM_FRAMES: "astm",
    CaptureKind.ASTM_RECORDS: "astm",
    CaptureKind.HL7: "hl7",
    CaptureKind.UNKNOWN: "other",
}


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """How to read a capture.

    ``driver`` pins a driver (``name`` or ``name@version``); None detects it. ``tz`` is the
    IANA zone of the analyzer's clock (result times get its offset). The encodings and
    ``max_frame_size``, when None, come from the driver (ASTM latin-1 and HL7 UTF-8 by
    default); HL7 falls back to ISO-8859-1 with a warning.
    """

    astm_encoding: str | None = None
    hl7_encoding: str | None = None
    max_frame_size: int | None = None
    max_hl7_message: int = 1024 * 1024
    driver: str | None = None
    tz: str | None = None


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


def decode_capture(
    data: bytes, options: DecodeOptions | None = None, catalogue: Catalogue | None = None
) -> list[NormalizedMessage]:
    """Decode a whole capture with the catalogue (default: the repository's).

    Never raises for bad input (problems become warnings); raises ``ConfigError`` for an
    unknown pinned driver or time zone.
    """
    options = options or DecodeOptions()
    catalogue = catalogue or default_catalogue()
    pinned = catalogue.get(options.driver) if options.driver else None
    if options.tz is not None:
        check_zone(options.tz)
    kind = sniff(data)
    leftover: list[str] = []
    if pinned is not None and pinned.protocol != _PROTOCOL_OF[kind]:
        leftover.append(
            f"driver {pinned.key} reads {pinned.protocol}, but the capture is "
            f"{_PROTOCOL_OF[kind]}: the driver was detected instead"
        )
        pinned = None
    reader = _Reader(options, catalogue, pinned)
    if kind in (CaptureKind.ASTM_FRAMES, CaptureKind.ASTM_RECORDS):
        messages = reader.astm(data, kind, leftover)
    elif kind is CaptureKind.HL7:
        messages = reader.hl7(data, leftover)
    else:
        messages = reader.other(data, leftover)
    if messages:
        if leftover:  # noise after the last message belongs to the last line
            last = messages[-1]
            messages[-1] = replace(last, warnings=(*last.warnings, *leftover))
        return messages
    protocol = {"astm": Protocol.ASTM, "hl7": Protocol.HL7}.get(_PROTOCOL_OF[kind])
    # Every capture gives at least one line, so nothing is passed over in silence.
    return [
        NormalizedMessage(
            protocol=protocol or Protocol.UNKNOWN,
            kind=Kind.UNKNOWN,
            warnings=(*leftover, "no message found in the capture"),
        )
    ]


def _settings(profile: CompiledProfile, options: DecodeOptions) -> AstmSettings:
    """What the driver changes in the way ASTM bytes are read, with the options' overrides."""
    return AstmSettings.of(
        profile, encoding=options.astm_encoding, max_frame_size=options.max_frame_size
    )


@dataclass(slots=True)
class _Unit:
    """One decoded ASTM message, not yet normalized."""

    message: AstmMessage
    offset: int
    incomplete: bool
    warnings: list[str] = field(default_factory=list)


_Item = _Unit | NormalizedMessage  # a NormalizedMessage here is a not-mine payload


class _Reader:
    def __init__(
        self, options: DecodeOptions, catalogue: Catalogue, pinned: CompiledProfile | None
    ) -> None:
        self.options = options
        self.catalogue = catalogue
        self.pinned = pinned

    def not_mine(self, data: bytes, offset: int) -> NormalizedMessage | None:
        profile = self.catalogue.detect_payload(data)
        return not_mine_message(data, profile, offset=offset) if profile is not None else None

    # Bytes that are neither ASTM nor HL7.

    def other(self, data: bytes, leftover: list[str]) -> list[NormalizedMessage]:
        if self.pinned is not None:
            return [not_mine_message(data, self.pinned)]
        found = self.not_mine(data, 0) if data else None
        if found is not None:
            return [found]
        leftover.append(f"not ASTM or HL7: {len(data)} bytes starting {data[:16]!r}")
        return []

    # ASTM.

    def astm(self, data: bytes, kind: CaptureKind, leftover: list[str]) -> list[NormalizedMessage]:
        profile = self.pinned or self.catalogue.fallback("astm")
        settings = _settings(profile, self.options)
        items, tail = self._astm_items(data, kind, settings)
        if self.pinned is None:
            first = next((i.message for i in items if isinstance(i, _Unit)), None)
            if first is not None:
                profile = self.catalogue.detect(first)
                detected = _settings(profile, self.options)
                if detected != settings:
                    items, tail = self._astm_items(data, kind, detected)
        leftover.extend(tail)
        out: list[NormalizedMessage] = []
        for item in items:
            if isinstance(item, NormalizedMessage):
                out.append(item)
            else:
                profile = self._driver_for(item.message, profile)
                out.append(self._normalize_unit(item, profile))
        return out

    def _driver_for(
        self, message: AstmMessage | Hl7Message, previous: CompiledProfile
    ) -> CompiledProfile:
        """The pinned driver, else the one this message matches, else the previous one.

        A capture may be several captures end to end (coalesced sessions of different
        analyzers), so each message is matched; a message that matches only the generic
        driver (an orphan record group, a bare header) keeps the driver of the one before.
        """
        if self.pinned is not None:
            return self.pinned
        detected = self.catalogue.detect(message)
        return previous if detected.generic else detected

    def _normalize_unit(self, item: _Unit, profile: CompiledProfile) -> NormalizedMessage:
        return normalize_message(
            item.message,
            profile,
            offset=item.offset,
            tz=self.options.tz,
            incomplete=item.incomplete,
            warnings=item.warnings,
        )

    def _astm_items(
        self, data: bytes, kind: CaptureKind, settings: AstmSettings
    ) -> tuple[list[_Item], list[str]]:
        session = _AstmSession(settings)
        if kind is CaptureKind.ASTM_FRAMES:
            items = list(self._frames(data, settings, session))
        else:
            items = list(_records(data, session))
        return items, session.warnings

    def _frames(
        self, data: bytes, settings: AstmSettings, session: _AstmSession
    ) -> Iterator[_Item]:
        link = AstmLink(settings.link)
        # Files that start at the first STX carry no ENQ/EOT at all (see the corpus README).
        frames_only = ENQ not in data
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
            elif isinstance(event, ev.FrameRejected | ev.Noise):
                yield from self._rejected(event, session)
            elif isinstance(event, ev.ProtocolWarning):
                session.warnings.append(f"offset {event.offset}: {event.text}")

    def _rejected(
        self, event: ev.FrameRejected | ev.Noise, session: _AstmSession
    ) -> Iterator[_Item]:
        data = event.raw if isinstance(event, ev.FrameRejected) else event.data
        found = self.not_mine(data, event.offset)
        if found is not None:
            yield found
        elif isinstance(event, ev.FrameRejected):
            session.warnings.append(f"frame at offset {event.offset} rejected: {event.reason}")
        else:
            session.warnings.append(
                f"{len(event.data)} byte(s) of noise at offset {event.offset}: {event.reason}"
            )

    # HL7.

    def hl7(self, data: bytes, leftover: list[str]) -> list[NormalizedMessage]:
        encoding = self.options.hl7_encoding
        if encoding is None and self.pinned is not None:
            encoding = self.pinned.transport.encoding
        framer = MllpFramer(max_message_size=self.options.max_hl7_message, lenient=True)
        framer.receive_data(data)
        framer.close()
        pending: list[str] = []
        items: list[tuple[Hl7Message, int, list[str]] | NormalizedMessage] = []
        while True:
            event = framer.next_event()
            if event is MLLP_NEED_DATA:
                break
            if isinstance(event, MllpNoise):
                found = self.not_mine(event.data, event.offset)
                if found is not None:
                    items.append(found)
                else:
                    pending.append(f"{len(event.data)} byte(s) of noise at offset {event.offset}")
            elif isinstance(event, MllpOversize):
                pending.append(f"message at offset {event.offset} over the size limit: dropped")
            elif isinstance(event, MllpMessage):
                items.append(_parse_hl7(event, encoding or "utf-8", [*pending, *event.warnings]))
                pending = []
        leftover.extend(pending)
        profile = self.pinned or self.catalogue.fallback("hl7")
        out: list[NormalizedMessage] = []
        for item in items:
            if isinstance(item, NormalizedMessage):
                out.append(item)
                continue
            message, offset, warnings = item
            profile = self._driver_for(message, profile)
            out.append(
                normalize_message(
                    message, profile, offset=offset, tz=self.options.tz, warnings=warnings
                )
            )
        return out


def _parse_hl7(
    event: MllpMessage, encoding: str, warnings: list[str]
) -> tuple[Hl7Message, int, list[str]] | NormalizedMessage:
    try:
        message, fallback = read_hl7(event.payload, encoding)
    except CodecError as error:
        return NormalizedMessage(
            protocol=Protocol.HL7,
            kind=Kind.UNKNOWN,
            warnings=(*warnings, f"offset {event.offset}: {error}"),
            offset=event.offset,
        )
    warnings.extend(fallback)
    return message, event.offset, warnings


class _AstmSession:
    """Records of one transmission and the warnings seen since the last message."""

    def __init__(self, settings: AstmSettings) -> None:
        self.settings = settings
        self.records: list[bytes] = []
        self.offset = 0
        self.warnings: list[str] = []

    def start(self, offset: int) -> None:
        self.records = []
        self.offset = offset

    def messages(self, *, incomplete: bool = False) -> Iterator[_Unit]:
        decoded, skipped = assemble_records(
            self.records, encoding=self.settings.encoding, lenient=self.settings.records_lenient
        )
        self.warnings.extend(skipped)
        self.records = []
        for item in decoded:
            warnings, self.warnings = self.warnings, []
            yield _Unit(item.message, self.offset, incomplete, warnings)


def _incomplete(
    session: _AstmSession, event: ev.TransferIncomplete, frames_only: bool
) -> Iterator[_Unit]:
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


def _records(data: bytes, session: _AstmSession) -> Iterator[_Unit]:
    reader = UnframedReader()
    reader.receive_data(data)
    reader.close()
    session.warnings.append("unframed records (no STX/ETX/checksums)")
    while True:
        event = reader.next_event()
        if not isinstance(event, ev.RecordReceived):
            break
        session.records.append(event.text)
    yield from session.messages()
