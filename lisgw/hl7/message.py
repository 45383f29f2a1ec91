"""Fast HL7 v2 message parser: segments, fields, components, escapes, timestamps.

Layer: protocol (sans-IO). Imports nothing but the standard library and lisgw.errors.

The hot path of the gateway: every result message an analyzer sends is parsed here. hl7apy
builds a full object tree (about 20x slower, see bench/hl7_codec.py) and is kept for strict
validation only (lisgw.hl7.apy). This module splits a message into segments and each segment
into fields once; components, repetitions, subcomponents and escape sequences are resolved on
demand by ``Segment.get``.

Implements, from HL7 v2.5.1 chapter 2 (same rules in 2.3.1 to 2.8):
  §2.5   message construction rules: segments end with CR; LF and CR LF are tolerated here
         because real analyzers send them (mindray BC-5130 capture: CR LF after a message).
  §2.5.4 encoding characters read from MSH-1 and MSH-2, never assumed; the 2.7 truncation
         character is accepted as a fifth encoding character.
  §2.7   escape sequences in text data: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ (and \\P\\ for truncation),
         \\Xhh..\\ hexadecimal data, \\H\\ \\N\\ highlighting (dropped: they carry no data),
         \\.br\\ (a line break, "\\n"). Other sequences (\\Z..\\, \\C..\\, \\M..\\, formatting
         commands other than .br) are kept verbatim, escape characters included.
  §2.A.85 TS/DTM: ``parse_hl7_timestamp`` turns YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ] into
         ISO 8601 without inventing a time zone.

The charset question (python-hl7 answers it in its docstring, so do we): bytes are decoded with
the connection's configured encoding (utf-8 by default, iso-8859-1 for many older analyzers).
MSH-18 is only a hint: it is used when the configured encoding fails to decode the bytes,
because devices write misleading values there (mindray BC-5130 sends "UNICODE" in UTF-8 data).
A decode error is a ``CodecError`` naming the byte offset, unless ``lenient=True``, which
replaces undecodable bytes with U+FFFD.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from lisgw.errors import CodecError

__all__ = [
    "DEFAULT_ENCODING_CHARS",
    "EncodingChars",
    "Hl7Message",
    "Segment",
    "charset_for_msh18",
    "parse_hl7_timestamp",
    "parse_message",
    "unescape",
]


@dataclass(frozen=True, slots=True)
class EncodingChars:
    """The delimiters of one message (HL7 §2.5.4); ``truncation`` is '' before v2.7."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def msh2(self) -> str:
        """The MSH-2 text for these characters."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_ENCODING_CHARS = EncodingChars()

# HL7 table 0211 (alternate character sets) → Python codec names. Only the sets analyzers are
# seen to use; anything else is ignored as a hint.
_MSH18_CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "iso-8859-1",
    "ISO IR100": "iso-8859-1",
    "8859/2": "iso-8859-2",
    "8859/5": "iso-8859-5",
    "8859/7": "iso-8859-7",
    "8859/9": "iso-8859-9",
    "8859/15": "iso-8859-15",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc_kr",
}

_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_MAX_HEX_ESCAPE = 2048


def charset_for_msh18(value: str) -> str | None:
    """The Python codec named by an MSH-18 value (HL7 table 0211), or None if unknown."""
    return _MSH18_CHARSETS.get(value.strip().upper())


def unescape(
    value: str, enc: EncodingChars = DEFAULT_ENCODING_CHARS, charset: str = "utf-8"
) -> str:
    """Decode the HL7 §2.7 escape sequences in one leaf value (see the module docstring)."""
    esc = enc.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    pos = 0
    while True:
        start = value.find(esc, pos)
        end = value.find(esc, start + 1) if start >= 0 else -1
        if end < 0:
            out.append(value[pos:])
            return "".join(out)
        out.append(value[pos:start])
        decoded = _decode_escape(value[start + 1 : end], enc, charset)
        out.append(value[start : end + 1] if decoded is None else decoded)
        pos = end + 1


@lru_cache(maxsize=64)
def _simple_escapes(enc: EncodingChars) -> dict[str, str]:
    """Escape bodies with a fixed meaning (HL7 §2.7.1, §2.7.3 highlighting, §2.7.6 .br)."""
    table = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
        "H": "",
        "N": "",
        ".br": "\n",
    }
    if enc.truncation:
        table["P"] = enc.truncation
    return table


def _decode_escape(seq: str, enc: EncodingChars, charset: str) -> str | None:
    """The text for one escape sequence body, or None to keep the sequence verbatim."""
    simple = _simple_escapes(enc).get(seq)
    if simple is not None:
        return simple
    if seq[:1] == "X" and 2 < len(seq) <= _MAX_HEX_ESCAPE and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode(charset, errors="replace")
        except (ValueError, LookupError):
            return None
    return None


class Segment:
    """One segment, split into fields once; values are looked up with HL7 numbering.

    ``get(n)`` follows HL7 numbering: for MSH, field 1 is the field separator itself and field 2
    the encoding characters; for other segments field 1 is the first field after the name.
    """

    __slots__ = ("_charset", "_enc", "_fields", "name", "raw")

    def __init__(self, raw: str, enc: EncodingChars, charset: str = "utf-8") -> None:
        self.raw = raw
        self._enc = enc
        self._charset = charset
        fields = raw.split(enc.field)
        self.name = fields[0]
        if self.name == "MSH":
            # HL7 §2.5.4: MSH-1 is the separator itself, so MSH-n sits at index n after this.
            fields.insert(1, enc.field)
        self._fields = fields

    def __repr__(self) -> str:
        return f"Segment({self.raw!r})"

    def __len__(self) -> int:
        """The number of fields present (the highest field number)."""
        return len(self._fields) - 1

    @property
    def encoding_chars(self) -> EncodingChars:
        return self._enc

    @property
    def charset(self) -> str:
        """The text encoding the message was decoded with (used by \\X..\\ escapes)."""
        return self._charset

    def field(self, field: int) -> str:
        """The raw text of a field, delimiters and escapes untouched; '' when absent."""
        if 0 < field < len(self._fields):
            return self._fields[field]
        return ""

    def repeats(self, field: int) -> list[str]:
        """The raw repetitions of a field ([] when empty); use ``get(repeat=i)`` to decode."""
        value = self.field(field)
        if not value:
            return []
        if (self.name == "MSH" and field <= 2) or not self._enc.repetition:
            return [value]
        return value.split(self._enc.repetition)

    def get(
        self,
        field: int,
        component: int = 1,
        repeat: int = 1,
        subcomponent: int = 1,
        *,
        raw: bool = False,
    ) -> str:
        """One leaf value, escapes decoded unless ``raw``; '' when absent.

        Positions are 1-based as in HL7 ("OBX-3.2" is ``get(3, 2)``). A field without
        component separators is its own first component, and so on down.
        """
        fields = self._fields
        if field < 1 or field >= len(fields):
            return ""
        value = fields[field]
        if not value:
            return ""
        if field <= 2 and self.name == "MSH":
            return value if component == repeat == subcomponent == 1 else ""
        enc = self._enc
        value = _pick(value, enc.repetition, repeat)
        value = _pick(value, enc.component, component)
        value = _pick(value, enc.subcomponent, subcomponent)
        if raw or enc.escape not in value:
            return value
        return unescape(value, enc, self._charset)

    def components(self, field: int, repeat: int = 1) -> list[str]:
        """The decoded components of one repetition of a field ([] when empty)."""
        value = _pick(self.field(field), self._enc.repetition, repeat)
        if not value:
            return []
        enc = self._enc
        return [unescape(part, enc, self._charset) for part in value.split(enc.component)]


def _pick(value: str, sep: str, position: int) -> str:
    """The ``position``-th (1-based) part of ``value`` split on ``sep``."""
    if not value:
        return ""
    if not sep or sep not in value:
        return value if position == 1 else ""
    parts = value.split(sep)
    return parts[position - 1] if 0 < position <= len(parts) else ""


class Hl7Message:
    """A parsed message: its segments in order, indexed by name, and the MSH header values.

    ``raw`` is the decoded text with CR as the only segment separator; ``charset`` the codec
    the bytes were decoded with.
    """

    __slots__ = ("_by_name", "_segments", "charset", "encoding_chars", "raw")

    def __init__(self, raw: str, segments: list[Segment], enc: EncodingChars, charset: str) -> None:
        self.raw = raw
        self.encoding_chars = enc
        self.charset = charset
        self._segments = segments
        by_name: dict[str, list[Segment]] = {}
        for seg in segments:
            by_name.setdefault(seg.name, []).append(seg)
        self._by_name = by_name

    def __repr__(self) -> str:
        return f"<Hl7Message {self.message_type} {self.control_id!r} {len(self)} segments>"

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segments)

    @property
    def all_segments(self) -> tuple[Segment, ...]:
        """Every segment, in message order."""
        return tuple(self._segments)

    def segments(self, name: str) -> list[Segment]:
        """Every segment with this name, in message order."""
        return list(self._by_name.get(name, ()))

    def segment(self, name: str) -> Segment | None:
        """The first segment with this name, or None."""
        found = self._by_name.get(name)
        return found[0] if found else None

    @property
    def msh(self) -> Segment:
        return self._segments[0]

    @property
    def message_code(self) -> str:
        """MSH-9.1, e.g. "ORU"."""
        return self.msh.get(9, 1)

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, e.g. "R01"."""
        return self.msh.get(9, 2)

    @property
    def message_structure(self) -> str:
        """MSH-9.3, e.g. "ORU_R30" ('' when the sender leaves it out, as 2.3.1 devices do)."""
        return self.msh.get(9, 3)

    @property
    def message_type(self) -> str:
        """MSH-9.1^MSH-9.2, e.g. "ORU^R01" (just the code when there is no trigger event)."""
        code, event = self.message_code, self.trigger_event
        return f"{code}^{event}" if event else code

    @property
    def control_id(self) -> str:
        """MSH-10, the message control ID an ACK must echo in MSA-2."""
        return self.msh.get(10)

    @property
    def version(self) -> str:
        """MSH-12.1, e.g. "2.5.1"."""
        return self.msh.get(12)

    @property
    def timestamp(self) -> str:
        """MSH-7.1 as sent (see ``parse_hl7_timestamp``)."""
        return self.msh.get(7)

    @property
    def sending_application(self) -> str:
        """MSH-3.1 (HD namespace ID)."""
        return self.msh.get(3)

    @property
    def sending_facility(self) -> str:
        """MSH-4.1."""
        return self.msh.get(4)

    @property
    def receiving_application(self) -> str:
        """MSH-5.1."""
        return self.msh.get(5)

    @property
    def receiving_facility(self) -> str:
        """MSH-6.1."""
        return self.msh.get(6)

    @property
    def processing_id(self) -> str:
        """MSH-11.1 (P production, D debugging, T training)."""
        return self.msh.get(11)

    @property
    def accept_ack_type(self) -> str:
        """MSH-15 (AL, NE, ER, SU; '' means original acknowledgment mode)."""
        return self.msh.get(15)

    @property
    def application_ack_type(self) -> str:
        """MSH-16."""
        return self.msh.get(16)

    @property
    def character_set(self) -> str:
        """MSH-18 as sent (first repetition)."""
        return self.msh.get(18)


def parse_message(
    data: bytes | bytearray | memoryview | str, encoding: str = "utf-8", *, lenient: bool = False
) -> Hl7Message:
    """Parse one HL7 v2 message (one MLLP payload) into an ``Hl7Message``.

    Raises ``CodecError`` (never another exception) when the data is not an HL7 message: no
    MSH, invalid encoding characters, an invalid segment name, undecodable bytes (unless
    ``lenient``).
    """
    if isinstance(data, str):
        text, charset = data, encoding
    else:
        text, charset = _decode(bytes(data), encoding, lenient)
    text = text.lstrip("\ufeff \t\r\n")
    enc = _read_encoding_chars(text)
    if "\n" in text:
        # HL7 §2.5 wants CR; LF and CR LF come from real devices and capture tools.
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    segments: list[Segment] = []
    field_sep = enc.field
    for line in text.split("\r"):
        if not line or line.isspace():
            continue
        name = line[:3]
        if not _SEGMENT_NAME.match(name) or (len(line) > 3 and line[3] != field_sep):
            raise CodecError(f"invalid segment {line[:20]!r}", where=f"segment {len(segments) + 1}")
        segments.append(Segment(line, enc, charset))
    return Hl7Message(text, segments, enc, charset)


def _decode(data: bytes, encoding: str, lenient: bool) -> tuple[str, str]:
    """Decode with the connection's encoding, MSH-18 as a fallback hint (module docstring)."""
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as exc:
        error = exc
    except LookupError as exc:
        raise CodecError(f"unknown encoding {encoding!r}", where="encoding") from exc
    hint = _msh18_hint(data)
    if hint and hint != encoding:
        try:
            return data.decode(hint), hint
        except UnicodeDecodeError:
            pass
    if lenient:
        return data.decode(encoding, errors="replace"), encoding
    raise CodecError(
        f"cannot decode byte 0x{data[error.start]:02X} at offset {error.start} as {encoding}",
        where=f"byte {error.start}",
    ) from error


def _msh18_hint(data: bytes) -> str | None:
    """The codec named in MSH-18, read from the raw bytes (the header is ASCII)."""
    if not data.startswith(b"MSH") or len(data) < 4:
        return None
    first = re.split(rb"[\r\n]", data, maxsplit=1)[0]
    fields = first.split(data[3:4])
    if len(fields) < 18:
        return None
    value = fields[17].split(b"^")[0].decode("ascii", errors="replace")
    return charset_for_msh18(value)


def _read_encoding_chars(text: str) -> EncodingChars:
    """Read MSH-1 and MSH-2 (HL7 §2.5.4) and check they are usable delimiters."""
    if not text.startswith("MSH") or len(text) < 5:
        raise CodecError("message does not start with an MSH segment", where="MSH")
    field_sep = text[3]
    end = text.find(field_sep, 4)
    line_end = len(text)
    for brk in ("\r", "\n"):
        pos = text.find(brk, 4)
        if pos >= 0:
            line_end = min(line_end, pos)
    if end < 0 or end > line_end:
        end = line_end
    chars = text[4:end]
    if not 1 <= len(chars) <= 5:
        raise CodecError(f"expected 1 to 5 encoding characters, got {chars!r}", where="MSH-2")
    delimiters = field_sep + chars
    if len(set(delimiters)) != len(delimiters) or any(
        c.isalnum() or c.isspace() or not c.isprintable() for c in delimiters
    ):
        raise CodecError(f"invalid delimiters {delimiters!r}", where="MSH-2")
    # Missing trailing encoding characters are simply not used (no escaping without MSH-2.3).
    present = [*chars, "", "", "", ""]
    return EncodingChars(field_sep, *present[:5])


_TIMESTAMP = re.compile(
    r"(?P<y>\d{4})(?:(?P<mo>\d{2})(?:(?P<d>\d{2})(?:(?P<h>\d{2})(?:(?P<mi>\d{2})"
    r"(?:(?P<s>\d{2})(?:\.(?P<f>\d{1,4}))?)?)?)?)?)?(?P<z>[+-]\d{4})?\Z"
)


def parse_hl7_timestamp(text: str) -> str:
    """Normalise an HL7 TS/DTM to ISO 8601; return ``text`` unchanged if it is not one.

    "20240924181947" → "2024-09-24T18:19:47"; "202409241819+0200" → "2024-09-24T18:19+02:00";
    "20240924" → "2024-09-24". No zone is invented: a timestamp without one stays local time.
    Impossible dates ("00000000000000", as cobas analyzers send) come back as they were.
    """
    match = _TIMESTAMP.match(text.strip())
    if match is None:
        return text
    parts = match.groupdict()
    if not _timestamp_in_range(parts):
        return text
    iso = parts["y"]
    for key, sep in (("mo", "-"), ("d", "-"), ("h", "T"), ("mi", ":"), ("s", ":")):
        if parts[key] is None:
            break
        iso += sep + parts[key]
    if parts["f"] is not None and parts["s"] is not None:
        iso += "." + parts["f"]
    zone = parts["z"]
    if zone is not None:
        iso += f"{zone[:3]}:{zone[3:]}"
    return iso


def _timestamp_in_range(parts: dict[str, str | None]) -> bool:
    limits = {"mo": (1, 12), "h": (0, 23), "mi": (0, 59), "s": (0, 59)}
    for key, (low, high) in limits.items():
        value = parts[key]
        if value is not None and not low <= int(value) <= high:
            return False
    day = parts["d"]
    if day is not None:
        month = int(parts["mo"] or 1)
        year = int(parts["y"] or 0)
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
        if not 1 <= int(day) <= days:
            return False
    zone = parts["z"]
    return zone is None or (int(zone[1:3]) <= 14 and int(zone[3:]) <= 59)
