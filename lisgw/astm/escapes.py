"""E1394 delimiters, escape sequences and field syntax: the level below whole records.

Layer: protocol (sans-IO), below ``lisgw.astm.records``; imports nothing but ``lisgw.errors``.

Implements, from E1394 (CLSI LIS02-A2):

- the delimiter definition carried by the message header: the field delimiter is the character
  right after the record type ``H``, followed by the repeat, component and escape delimiters
  (header record field 2, "Delimiter Definition"); each message may define its own set;
- the escape sequences that carry those characters inside data: ``&F&`` field, ``&S&``
  component, ``&R&`` repeat, ``&E&`` escape, ``&Xhh…&`` hexadecimal bytes (written here with
  ``&`` but always formed with the message's own escape delimiter, e.g. ``\\F\\`` for a
  GeneXpert). Local sequences (``&Z…&``) have a vendor-defined meaning and are kept literally;
- the field syntax: a field is a list of repeats separated by the repeat delimiter, a repeat a
  list of components separated by the component delimiter; escapes are decoded per component,
  after splitting, so that an escaped delimiter never splits anything.

Decoding is lenient by default: an unknown or unterminated escape sequence, or an escape
character standing alone in data (``Tom & Jerry`` sent unescaped), is kept as literal text and
never raises. With ``strict=True`` the same inputs raise ``CodecError``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

from lisgw.errors import CodecError

__all__ = [
    "DEFAULT_DELIMITERS",
    "Delimiters",
    "Field",
    "Repeat",
    "encode_fields",
    "escape_text",
    "parse_field",
    "parse_fields",
    "unescape_text",
]

Repeat = tuple[str, ...]
Field = tuple[Repeat, ...]

# Leading bytes tolerated before the ``H`` of a header, and the digits an LIS put in front of
# record types (VITROS 3600 order reply: ``2P|1…``, ``3O|1…`` inside one frame).
_LEADING_JUNK = "".join(chr(code) for code in range(33))
_DIGITS = "0123456789"
# E1381 reserves the C0 controls for framing (CR ends a record): data carries them as &Xhh&.
_CONTROLS = "\\x00-\\x1f\\x7f"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The four delimiters of one message (E1394 header field 2, "Delimiter Definition")."""

    field: str = "|"
    repeat: str = "\\"
    component: str = "^"
    escape: str = "&"
    # Compiled once per delimiter set: what escape_text must replace. The first is one
    # character class, much faster to search than the alternation used to substitute.
    escape_search: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)
    escape_sub: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chars = (self.field, self.repeat, self.component, self.escape)
        for name, char in zip(("field", "repeat", "component", "escape"), chars, strict=True):
            if len(char) != 1:
                raise CodecError(
                    f"{name} delimiter must be one character, got {char!r}", where="H.2"
                )
            if char.isalnum() or char.isspace() or ord(char) < 32 or char == "\x7f":
                raise CodecError(
                    f"{name} delimiter {char!r} is a letter, digit, space or control character",
                    where="H.2",
                )
        if len(set(chars)) != 4:
            raise CodecError(f"delimiters are not distinct: {''.join(chars)!r}", where="H.2")
        specials = re.escape(self.field + self.repeat + self.component)
        escape = re.escape(self.escape)
        object.__setattr__(self, "escape_search", re.compile(f"[{specials}{escape}{_CONTROLS}]"))
        object.__setattr__(self, "escape_sub", re.compile(f"{escape}|[{specials}]|[{_CONTROLS}]+"))

    @property
    def definition(self) -> str:
        """Header field 2 as sent: repeat, component and escape delimiters (``\\^&``)."""
        return self.repeat + self.component + self.escape

    @property
    def header_prefix(self) -> str:
        """How a header record with these delimiters begins: ``H|\\^&``."""
        return "H" + self.field + self.definition

    @classmethod
    def from_header(cls, text: str) -> Delimiters:
        """Read the delimiters from a header record (``H|\\^&…``, ``H|`^&…``, ``H|@^\\…``).

        Leading whitespace and a frame-number digit before the ``H`` are tolerated. Raises
        ``CodecError`` (where ``H.1`` or ``H.2``) when the record is not a header, when fewer
        than four delimiter characters follow the ``H``, when they are not distinct, or when
        the definition is not followed by the field delimiter or the end of the record.
        """
        start = len(text) - len(text.lstrip(_LEADING_JUNK))
        while start < len(text) and text[start] in _DIGITS:
            start += 1
        if text[start : start + 1] != "H":
            raise CodecError(f"not a header record: {text[:10]!r}", where="H.1")
        definition = text[start + 1 : start + 5]
        if len(definition) < 4 or "\r" in definition or "\n" in definition:
            raise CodecError(
                "the header needs four delimiter characters (field, repeat, component, escape)"
                f" after 'H', got {definition!r}",
                where="H.2",
            )
        delimiters = cls(*definition)
        after = text[start + 5 : start + 6]
        if after not in ("", delimiters.field, "\r", "\n"):
            raise CodecError(
                f"delimiter definition {definition[1:]!r} is followed by {after!r}, not by the"
                f" field delimiter {delimiters.field!r}",
                where="H.2",
            )
        return delimiters


DEFAULT_DELIMITERS = Delimiters()


def unescape_text(
    text: str,
    delimiters: Delimiters = DEFAULT_DELIMITERS,
    encoding: str = "latin-1",
    strict: bool = False,
) -> str:
    """Decode the escape sequences of one component's text.

    Lenient (default): sequences that cannot be decoded stay in the text as they were. Strict:
    they raise ``CodecError`` without ``where``; the record decoder adds the position.
    """
    esc = delimiters.escape
    if esc not in text:
        return text
    parts = text.split(esc)
    out = [parts[0]]
    index, count = 1, len(parts)
    while index < count:
        sequence = parts[index]
        if index + 1 < count:
            value = _decode_sequence(sequence, delimiters, encoding)
            if value is None and sequence[:1] == "Z":
                # A local (vendor-defined) sequence: valid, but nothing to decode it into.
                value = f"{esc}{sequence}{esc}"
            if value is not None:
                out.append(value)
                out.append(parts[index + 1])
                index += 2
                continue
            if strict:
                raise CodecError(f"unknown escape sequence {esc}{sequence}{esc}")
        elif strict:
            raise CodecError(f"unterminated escape sequence {esc}{sequence}")
        # Lenient: the escape character is data; the one that would have closed this
        # sequence may open the next (``Tom & Jerry &F& Co``).
        out.append(esc)
        out.append(sequence)
        index += 1
    return "".join(out)


_HEX_SEQUENCE = re.compile(r"X(?:[0-9A-Fa-f]{2})+")


def _decode_sequence(sequence: str, delimiters: Delimiters, encoding: str) -> str | None:
    if len(sequence) == 1:
        if sequence == "F":
            return delimiters.field
        if sequence == "S":
            return delimiters.component
        if sequence == "R":
            return delimiters.repeat
        if sequence == "E":
            return delimiters.escape
        return None
    if _HEX_SEQUENCE.fullmatch(sequence) is None:
        return None
    try:
        return bytes.fromhex(sequence[1:]).decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def parse_field(
    text: str, delimiters: Delimiters, encoding: str = "latin-1", strict: bool = False
) -> Field:
    """Split one field's text into repeats and components and decode their escapes."""
    repeat, component, escape = delimiters.repeat, delimiters.component, delimiters.escape
    if escape in text:
        return tuple(
            tuple(
                unescape_text(value, delimiters, encoding, strict)
                for value in part.split(component)
            )
            for part in text.split(repeat)
        )
    if repeat in text:
        return tuple(tuple(part.split(component)) for part in text.split(repeat))
    if component in text:
        return (tuple(text.split(component)),)
    return ((text,),)


def parse_fields(
    record_type: str,
    text: str,
    texts: list[str],
    delimiters: Delimiters,
    encoding: str = "latin-1",
    strict: bool = False,
) -> tuple[Field, ...]:
    """Parse every field of a record: ``texts`` is ``text`` split on the field delimiter.

    Field 1 is the record type and a header's field 2 the delimiter definition, both verbatim.
    Strict: an undecodable escape raises ``CodecError`` naming the field and component.
    """
    component = delimiters.component
    fields: list[Field]
    if record_type != "H" and delimiters.escape not in text and delimiters.repeat not in text:
        # Most records: one scan of the whole record rules out escapes and repeats.
        fields = [
            ((part,),) if component not in part else (tuple(part.split(component)),)
            for part in texts
        ]
    else:
        fields = [
            _parse_located(part, delimiters, encoding, strict, record_type, number)
            if number > 2 or (number == 2 and record_type != "H")
            else ((part,),)
            for number, part in enumerate(texts, 1)
        ]
    fields[0] = ((record_type,),)
    return tuple(fields)


def _parse_located(
    text: str, delimiters: Delimiters, encoding: str, strict: bool, record_type: str, number: int
) -> Field:
    try:
        return parse_field(text, delimiters, encoding, strict)
    except CodecError as exc:
        where = f"{record_type}.{number}"
        for repeat_number, part in enumerate(text.split(delimiters.repeat), 1):
            for component_number, value in enumerate(part.split(delimiters.component), 1):
                try:
                    unescape_text(value, delimiters, encoding, strict=True)
                except CodecError as located:
                    detail = f" (repeat {repeat_number})" if repeat_number > 1 else ""
                    raise CodecError(
                        f"{located}{detail}", where=f"{where}.{component_number}"
                    ) from exc
        raise CodecError(str(exc), where=where) from exc


def encode_fields(
    fields: tuple[Field, ...],
    delimiters: Delimiters,
    encoding: str = "latin-1",
    record_type: str = "?",
    first_number: int = 2,
) -> list[str]:
    """Encode fields into their texts (to be joined with the field delimiter).

    ``record_type`` and ``first_number`` (the number of ``fields[0]``) name the place in errors.
    """
    flat = "".join(["".join(components) for field in fields for components in field])
    if delimiters.escape_search.search(flat) is None:
        # Nothing to escape anywhere in the record (one scan): join as it is.
        join_components, join_repeats = delimiters.component.join, delimiters.repeat.join
        return [
            join_components(field[0])
            if len(field) == 1
            else join_repeats(map(join_components, field))
            for field in fields
        ]
    return [
        _encode_field(field, delimiters, encoding, f"{record_type}.{number}")
        for number, field in enumerate(fields, first_number)
    ]


def _encode_field(field: Field, delimiters: Delimiters, encoding: str, where: str) -> str:
    try:
        return delimiters.repeat.join(
            delimiters.component.join(
                escape_text(component, delimiters, encoding) for component in repeat
            )
            for repeat in field
        )
    except CodecError as exc:
        raise CodecError(str(exc), where=where) from exc


def escape_text(
    text: str, delimiters: Delimiters = DEFAULT_DELIMITERS, encoding: str = "latin-1"
) -> str:
    """Escape one component's text so that it can be written between delimiters.

    The four delimiters become ``&F&``, ``&S&``, ``&R&``, ``&E&``; control characters (CR would
    end the record, and E1381 reserves STX, ETX, ETB, LF… for framing) become ``&Xhh&``, one
    sequence per run. Raises ``CodecError`` when a control character cannot be encoded.
    """
    if delimiters.escape_search.search(text) is None:
        return text
    return delimiters.escape_sub.sub(functools.partial(_escape_match, delimiters, encoding), text)


def _escape_match(delimiters: Delimiters, encoding: str, match: re.Match[str]) -> str:
    found = match.group()
    esc = delimiters.escape
    if found == esc:
        return f"{esc}E{esc}"
    if found == delimiters.field:
        return f"{esc}F{esc}"
    if found == delimiters.repeat:
        return f"{esc}R{esc}"
    if found == delimiters.component:
        return f"{esc}S{esc}"
    try:
        data = found.encode(encoding)
    except (UnicodeEncodeError, LookupError) as exc:
        raise CodecError(f"cannot encode {found!r} in {encoding}") from exc
    return f"{esc}X{data.hex().upper()}{esc}"
