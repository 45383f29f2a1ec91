"""Archived traffic as readable lines for ``lisgw tail``: records, segments, control bytes.

Layer: interface (pure: no store, no I/O, no clock). Takes the rows lisgw.store.live reads
(frames, messages, outbox deliveries) and returns ``TrafficLine`` values, one per E1394
record, HL7 segment, control byte run or message summary; lisgw.cli.tail prints them.

* ASTM frames (E1381 §6.3.1) are checked and cut with ``lisgw.astm.frames.parse_frame``; the
  text of consecutive frames of one session is joined (a record may span ETB frames) and cut
  into records at CR (E1394 §5; LF too, as some devices send), the delimiters read from the
  session's H record (``lisgw.astm.escapes.Delimiters``). A frame that does not parse is
  reported with the parser's reason. Bytes that are not a frame (ENQ, ACK, EOT…) are shown
  by name.
* HL7 payloads are parsed with ``lisgw.hl7.message.parse_message`` (UTF-8, else ISO-8859-1),
  one line per segment.
* ``raw``: one line per frame or payload, bytes exact, control characters by name
  (``<STX>1H|…<CR><ETX>A5``), bytes above 0x7E as ``<xNN>``.

Patient names are masked unless ``show_patient``: the P record's name (E1394 §8.1.6, P.6)
and PID-5, each component cut to its first letter (``D***^J***``); in raw mode every
character of the name becomes ``*`` so that the line keeps the bytes' length and layout.
Nothing else is masked (issue 7). A frame or payload that cannot be read is never shown raw
unless ``show_patient``: where its name field is cannot be known.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from lisgw.astm.escapes import Delimiters
from lisgw.astm.frames import parse_frame
from lisgw.errors import CodecError, LisgwError
from lisgw.hl7.message import parse_message
from lisgw.store.live import Delivery, FrameRow, MessageRow

__all__ = ["TrafficDecoder", "TrafficLine", "visible"]

_C0_NAMES: Final = [
    "NUL",
    "SOH",
    "STX",
    "ETX",
    "EOT",
    "ENQ",
    "ACK",
    "BEL",
    "BS",
    "HT",
    "LF",
    "VT",
    "FF",
    "CR",
    "SO",
    "SI",
    "DLE",
    "DC1",
    "DC2",
    "DC3",
    "DC4",
    "NAK",
    "SYN",
    "ETB",
    "CAN",
    "EM",
    "SUB",
    "ESC",
    "FS",
    "GS",
    "RS",
    "US",
]
_VISIBLE: Final = {i: f"<{name}>" for i, name in enumerate(_C0_NAMES)} | {0x7F: "<DEL>"}
_RECORD_END: Final = re.compile(r"[\r\n]")
_ASTM_NAME_FIELD: Final = 5  # P.6 (E1394 §8.1.6) after splitting at the field delimiter
_HL7_NAME_FIELD: Final = 5  # PID-5
_MAX_SESSIONS: Final = 256
HIS: Final = "HIS"


def visible(data: bytes) -> str:
    """Bytes as text with control characters named and bytes above 0x7E in hex."""
    out = []
    for byte in data:
        if byte in _VISIBLE:
            out.append(_VISIBLE[byte])
        elif byte > 0x7E:
            out.append(f"<x{byte:02X}>")
        else:
            out.append(chr(byte))
    return "".join(out)


def _visible_text(text: str) -> str:
    return "".join(_VISIBLE.get(ord(char), char) for char in text)


@dataclass(frozen=True, slots=True)
class TrafficLine:
    """One line of tail output: where it comes from and its (masked) text.

    ``source`` is frame, message or outbox (``source_id`` its id); ``kind`` record,
    segment, frame, control, unreadable, message or delivery; ``type`` the record type or
    segment name when there is one."""

    at: float
    connection: str
    direction: str
    protocol: str
    source: str
    source_id: int
    kind: str
    text: str
    type: str = ""
    details: Mapping[str, str | int | float | None] = field(default_factory=dict)


@dataclass(slots=True)
class _AstmSession:
    """What one ASTM session's earlier frames leave for the next: the unfinished record's
    text and the delimiters of the last H record."""

    pending: str = ""
    delimiters: Delimiters = field(default_factory=Delimiters)


class TrafficDecoder:
    """Turns archived rows into lines (module docstring); keeps each ASTM session's state
    between frames (the last ``_MAX_SESSIONS`` sessions)."""

    def __init__(self, *, show_patient: bool = False, raw: bool = False) -> None:
        self.show_patient = show_patient
        self.raw = raw
        self._sessions: OrderedDict[int, _AstmSession] = OrderedDict()

    # -- rows -----------------------------------------------------------------------------

    def frame(self, row: FrameRow) -> list[TrafficLine]:
        """The lines of one archived frame (an ASTM frame or control bytes, or one HL7
        payload); none for a frame of a connection filtered out."""
        if row.data is None:
            return []
        base = _Base(row.at, row.connection, row.direction, row.protocol, "frame", row.id)
        if row.protocol == "hl7" or not row.data.startswith(b"\x02"):
            if row.protocol == "hl7" or b"MSH" in row.data[:8]:
                return list(self._hl7(base, row.data))
            return [base.line("control", visible(row.data))]
        return list(self._astm_frame(base, row.session_id, row.data))

    def message(self, row: MessageRow) -> list[TrafficLine]:
        """A summary line for a decoded message, then, for an outbound one (whose bytes
        the frames do not hold), its records or segments."""
        if not row.wanted:
            return []
        base = _Base(
            row.received_at, row.connection, row.direction, row.protocol, "message", row.id
        )
        summary = f"message {row.id} {row.protocol} {row.kind}: {row.state}"
        if row.reason:
            summary += f" ({row.reason})"
        details: dict[str, str | int | float | None] = {
            "message_kind": row.kind,
            "state": row.state,
            "reason": row.reason,
        }
        lines = [base.line("message", summary, details=details)]
        if row.raw is not None:
            if row.protocol == "hl7":
                lines.extend(self._hl7(base, row.raw))
            else:
                lines.extend(self._astm_records(base, _AstmSession(), row.raw, final=True))
        return lines

    def delivery(self, row: Delivery) -> list[TrafficLine]:
        """The ORU^R01 of an outbox row that reached its end: delivered (with its
        segments) or dead (with the reason)."""
        at = row.delivered_at or row.first_failed_at or row.created_at
        base = _Base(at, HIS, "out", "hl7", "outbox", row.id)
        details: dict[str, str | int | float | None] = {
            "state": row.state,
            "sample_id": row.sample_id,
            "control_id": row.control_id,
            "attempts": row.attempts,
            "result_connection": row.connection,
        }
        text = (
            f"outbox {row.id} ORU^R01 {row.state} sample {row.sample_id or '-'} "
            f"from {row.connection or '-'} (attempt {row.attempts})"
        )
        if row.state == "dead":
            return [base.line("delivery", f"{text}: {row.last_error}", details=details)]
        return [base.line("delivery", text, details=details), *self._hl7(base, row.payload)]

    # -- ASTM ---------------------------------------------------------------------------

    def _session(self, session_id: int) -> _AstmSession:
        session = self._sessions.pop(session_id, None) or _AstmSession()
        self._sessions[session_id] = session
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def _astm_frame(self, base: _Base, session_id: int, data: bytes) -> Iterator[TrafficLine]:
        try:
            frame = parse_frame(data + b"\r\n", checksum_optional=True)
        except LisgwError as error:
            shown = visible(data) if self.show_patient else f"{len(data)} bytes"
            yield base.line("unreadable", f"unreadable frame ({error}): {shown}")
            return
        session = self._session(session_id)
        text = frame.text.decode("latin-1")
        if not self.raw:
            yield from self._astm_records(base, session, frame.text, final=frame.final)
            return
        masked = text if self.show_patient else self._mask_raw_astm(session, text)
        self._advance(session, text, final=frame.final)
        # parse_frame's text is data[2:term]: STX and the frame number come before it.
        head = visible(data[:2])
        tail = visible(data[2 + len(frame.text) :])
        yield base.line("frame", head + _raw_visible(masked) + tail, type=str(frame.number))

    def _astm_records(
        self, base: _Base, session: _AstmSession, text: bytes, *, final: bool
    ) -> Iterator[TrafficLine]:
        joined = session.pending + text.decode("latin-1")
        pieces = _RECORD_END.split(joined)
        session.pending = "" if final else pieces.pop()
        for record in pieces:
            if not record:
                continue
            record_type = record[:1]
            if record_type == "H":
                session.delimiters = _delimiters(record, session.delimiters)
            shown = record if self.show_patient else _mask_astm(record, session.delimiters)
            yield base.line("record", _visible_text(shown), type=record_type)

    def _advance(self, session: _AstmSession, text: str, *, final: bool) -> None:
        """Raw mode: keep the unfinished record and the delimiters, as _astm_records does."""
        joined = session.pending + text
        pieces = _RECORD_END.split(joined)
        session.pending = "" if final else pieces.pop()
        for record in pieces:
            if record.startswith("H"):
                session.delimiters = _delimiters(record, session.delimiters)

    def _mask_raw_astm(self, session: _AstmSession, text: str) -> str:
        """The frame text with the P name's characters starred, the record it belongs to
        possibly begun in earlier frames."""
        joined = session.pending + text
        offset = len(session.pending)
        chars = list(text)
        position = 0
        for record in _RECORD_END.split(joined):
            delimiters = session.delimiters
            if record.startswith("H"):
                delimiters = _delimiters(record, delimiters)
            span = None
            if record.startswith("P"):
                span = _field_span(record, delimiters.field, _ASTM_NAME_FIELD)
            if span is not None:
                keep = {delimiters.component, delimiters.repeat}
                for index in range(position + span[0], position + span[1]):
                    local = index - offset
                    if 0 <= local < len(chars) and chars[local] not in keep:
                        chars[local] = "*"
            position += len(record) + 1
        return "".join(chars)

    # -- HL7 ----------------------------------------------------------------------------

    def _hl7(self, base: _Base, data: bytes) -> Iterator[TrafficLine]:
        if self.raw:
            text = data.decode("latin-1")
            shown = text if self.show_patient else _mask_raw_hl7(text)
            yield base.line("frame", _raw_visible(shown))
            return
        try:
            try:
                message = parse_message(data, "utf-8")
            except CodecError:
                message = parse_message(data, "iso-8859-1")
        except CodecError as error:
            shown = visible(data) if self.show_patient else f"{len(data)} bytes"
            yield base.line("unreadable", f"not an HL7 message ({error}): {shown}")
            return
        field_sep = message.msh.encoding_chars.field
        component = message.msh.encoding_chars.component
        for segment in message:
            text = segment.raw
            if segment.name == "PID" and not self.show_patient:
                text = _mask_field(text, field_sep, component, _HL7_NAME_FIELD)
            yield base.line("segment", _visible_text(text), type=segment.name)


@dataclass(frozen=True, slots=True)
class _Base:
    at: float
    connection: str
    direction: str
    protocol: str
    source: str
    source_id: int

    def line(
        self,
        kind: str,
        text: str,
        *,
        type: str = "",
        details: Mapping[str, str | int | float | None] | None = None,
    ) -> TrafficLine:
        return TrafficLine(
            self.at,
            self.connection,
            self.direction,
            self.protocol,
            self.source,
            self.source_id,
            kind,
            text,
            type,
            details or {},
        )


def _delimiters(header: str, current: Delimiters) -> Delimiters:
    try:
        return Delimiters.from_header(header)
    except CodecError:
        return current


def _field_span(record: str, separator: str, number: int) -> tuple[int, int] | None:
    """Where field ``number`` (0 = the type) lies in ``record``; None when absent."""
    start = 0
    for _ in range(number):
        found = record.find(separator, start)
        if found < 0:
            return None
        start = found + 1
    end = record.find(separator, start)
    return start, len(record) if end < 0 else end


def _mask_field(record: str, separator: str, component: str, number: int) -> str:
    span = _field_span(record, separator, number)
    if span is None or span[0] == span[1]:
        return record
    name = record[span[0] : span[1]]
    masked = component.join(f"{part[:1]}***" if part else "" for part in name.split(component))
    return record[: span[0]] + masked + record[span[1] :]


def _mask_astm(record: str, delimiters: Delimiters) -> str:
    if not record.startswith("P"):
        return record
    return _mask_field(record, delimiters.field, delimiters.component, _ASTM_NAME_FIELD)


def _mask_raw_hl7(text: str) -> str:
    """PID-5's characters starred, in place (HL7 payload decoded as ISO-8859-1)."""
    if len(text) < 8 or not text.lstrip().startswith("MSH"):
        return text
    start = text.index("MSH")
    separator, component = text[start + 3], text[start + 4]
    chars = list(text)
    position = 0
    for segment in _RECORD_END.split(text):
        if segment.startswith("PID"):
            span = _field_span(segment, separator, _HL7_NAME_FIELD)
            if span is not None:
                for index in range(position + span[0], position + span[1]):
                    if chars[index] not in (component, "~"):
                        chars[index] = "*"
        position += len(segment) + 1
    return "".join(chars)


def _raw_visible(text: str) -> str:
    return visible(text.encode("latin-1"))
