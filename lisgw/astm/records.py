"""E1394 records: decode one record's text into fields, repeats and components, and back.

Layer: protocol (sans-IO). Input is one record as the link layer delivers it (E1381 frames
already joined, the CR record terminator already stripped); output is a ``Record``. Messages
(H … L) are assembled by ``lisgw.astm.message`` (``AstmMessage``, ``MessageAssembler`` and
``encode_message`` are importable from here too); delimiters, escapes and the field syntax live
in ``lisgw.astm.escapes``.

Implements, from E1394 (CLSI LIS02-A2): the record syntax (record type as field 1, fields
separated by the field delimiter, each field a list of repeats, each repeat a list of
components, escape sequences decoded per component), the header record whose field 2 (the
delimiter definition) is kept verbatim, and trailing fields that a sender may omit.

Decoding is built for throughput. A lenient decode splits nothing at all: it keeps the record's
text and splits fields, repeats and components only when they are asked for (a plain
``component`` read splits only the field list; ``repeats`` parses the whole record once and
keeps it, since a driver reads most fields of a record); equality and hashing still compare
the structured content. Strict decoding parses everything at once, so
that every error surfaces as a ``CodecError`` whose ``where`` names the record type and field
(``R.4``) or component (``R.4.2``).

Lenient decoding (the default) repairs what real senders do to the record envelope: leading
spaces or control bytes, a digit glued to the record type (an LIS writing ``2P|1…`` for a
VITROS 3600), trailing spaces, a stray LF or CR at the end. The text as received stays
available as ``Record.raw`` for the raw archive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lisgw.astm.escapes import (
    DEFAULT_DELIMITERS,
    Delimiters,
    Field,
    Repeat,
    encode_fields,
    parse_field,
    parse_fields,
)
from lisgw.errors import CodecError

if TYPE_CHECKING:
    from lisgw.astm.message import AstmMessage, MessageAssembler, encode_message

__all__ = [
    "AstmMessage",
    "Field",
    "MessageAssembler",
    "Record",
    "Repeat",
    "Value",
    "decode_record",
    "encode_message",
    "encode_record",
    "parse_field",
    "parse_fields",
]

# The message level lives in lisgw.astm.message, which imports this module; it is re-exported
# here on first use (PEP 562) so that the whole codec can be imported from one place.
_FROM_MESSAGE = frozenset({"AstmMessage", "MessageAssembler", "encode_message"})


def __getattr__(name: str) -> Any:
    if name in _FROM_MESSAGE:
        from lisgw.astm import message

        return getattr(message, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# What ``Record.of`` accepts for one field: a value, the components of one repeat, or repeats.
Value = str | tuple[str, ...] | list[str | tuple[str, ...]]

_JUNK = "".join(chr(code) for code in range(33))
_DIGITS = "0123456789"
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class Record:
    """One E1394 record: immutable, compared and hashed by its type and fields.

    ``fields[0]`` is field 1 (the record type); ``fields[n - 1]`` is field n, each a tuple of
    repeats, each repeat a tuple of component strings with escapes decoded. The header's
    field 2 (the delimiter definition) is one component holding the definition verbatim.

    Build records with ``Record(type, fields)`` or ``Record.of(type, *values)``. Decoded records
    also carry ``raw`` (the text as received) and ``delimiters`` (those used to decode it);
    neither takes part in equality.

    This is an immutable slotted class rather than a dataclass so that a decoded record can
    stay unparsed until its fields are read (see the module docstring).
    """

    __slots__ = ("_delimiters", "_encoding", "_fields", "_raw", "_text", "_texts", "_type")

    # A decoded record keeps ``_fields`` and ``_texts`` at None until they are needed.
    _type: str
    _fields: tuple[Field, ...] | None
    _texts: list[str] | None
    _text: str
    _raw: str | None
    _delimiters: Delimiters | None
    _encoding: str

    def __init__(self, type: str, fields: tuple[Field, ...], raw: str | None = None) -> None:
        _check_fields(type, fields)
        self._type = type
        self._fields = fields
        self._texts = None
        self._text = ""
        self._raw = raw
        self._delimiters = None
        self._encoding = "latin-1"

    @classmethod
    def of(cls, type: str, *values: Value) -> Record:
        """Build a record from its field 2 onwards.

        A ``str`` is a one-component field, a ``tuple`` the components of a single repeat, a
        ``list`` the repeats (each a ``str`` or a ``tuple`` of components):
        ``Record.of("O", "1", "S123", "", [("", "", "", "GLU"), ("", "", "", "CRE")])``.
        """
        fields: list[Field] = [((type,),)]
        fields.extend(_field_of(value) for value in values)
        return cls(type, tuple(fields))

    # Attributes (read-only).

    @property
    def type(self) -> str:
        """The record type (field 1): ``H``, ``P``, ``O``, ``R``, ``C``, ``Q``, ``M``, ``L`` …"""
        return self._type

    @property
    def raw(self) -> str | None:
        """The record as received, before any lenient repair; ``None`` for a built record."""
        return self._raw

    @property
    def delimiters(self) -> Delimiters | None:
        """The delimiters the record was decoded with; ``None`` for a built record."""
        return self._delimiters

    @property
    def fields(self) -> tuple[Field, ...]:
        """Every field, parsed (and cached) on first use."""
        fields = self._fields
        if fields is None:
            fields = parse_fields(
                self._type,
                self._text,
                self._split(),
                self._delimiters or DEFAULT_DELIMITERS,
                self._encoding,
            )
            self._fields = fields
        return fields

    def __len__(self) -> int:
        """The number of fields sent, field 1 included."""
        fields = self._fields
        return len(fields) if fields is not None else len(self._split())

    # Accessors, 1-based as E1394 numbers fields and components.

    def repeats(self, field: int) -> tuple[Repeat, ...]:
        """The repeats of field ``field``; ``()`` when the record has no such field."""
        _check_position(field, 1, 1)
        fields = self.fields  # parsed once: a driver reads several fields, some twice
        return fields[field - 1] if field <= len(fields) else ()

    def component(self, field: int, component: int = 1, repeat: int = 1) -> str:
        """Component ``component`` of repeat ``repeat`` of field ``field``; ``''`` when absent."""
        _check_position(field, component, repeat)
        fields = self._fields
        if fields is None:
            texts = self._split()
            if field > len(texts):
                return ""
            text = texts[field - 1]
            delimiters = self._delimiters or DEFAULT_DELIMITERS
            if not (
                delimiters.component in text
                or delimiters.repeat in text
                or delimiters.escape in text
            ):
                # The common case: a plain value, nothing to split or unescape.
                return text if component == 1 and repeat == 1 else ""
            repeats = self._parse(field, text)
        else:
            if field > len(fields):
                return ""
            repeats = fields[field - 1]
        if repeat > len(repeats):
            return ""
        components = repeats[repeat - 1]
        return components[component - 1] if component <= len(components) else ""

    def field_text(self, field: int) -> str:
        """Field ``field`` with escapes decoded and its delimiters put back, for display."""
        delimiters = self._delimiters or DEFAULT_DELIMITERS
        return delimiters.repeat.join(
            delimiters.component.join(components) for components in self.repeats(field)
        )

    # Value semantics.

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        if self is other:
            return True
        if self._type != other._type:
            return False
        if (
            self._text
            and self._text == other._text
            and self._delimiters == other._delimiters
            and self._encoding == other._encoding
        ):
            # Same text parsed the same way: same content, without parsing either.
            return True
        return self.fields == other.fields

    def __hash__(self) -> int:
        return hash((self._type, self.fields))

    def __repr__(self) -> str:
        return f"Record(type={self._type!r}, fields={self.fields!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Record, (self._type, self.fields, self._raw))

    # Lazy parsing of decoded records.

    def _split(self) -> list[str]:
        texts = self._texts
        if texts is None:
            texts = self._text.split((self._delimiters or DEFAULT_DELIMITERS).field)
            self._texts = texts
        return texts

    def _parse(self, number: int, text: str) -> Field:
        if number == 1 or (number == 2 and self._type == "H"):
            return ((text,),)
        return parse_field(text, self._delimiters or DEFAULT_DELIMITERS, self._encoding)


def _field_of(value: Value) -> Field:
    if isinstance(value, str):
        return ((value,),)
    if isinstance(value, tuple):
        return (value,)
    return tuple((item,) if isinstance(item, str) else item for item in value)


def _check_fields(type: str, fields: tuple[Field, ...]) -> None:
    if not isinstance(type, str):
        raise TypeError(f"record type must be a str, got {type!r}")
    if not fields or fields[0] != ((type,),):
        raise ValueError(f"fields[0] must be the record type field (({type!r},),)")
    for number, field in enumerate(fields, 1):
        if not isinstance(field, tuple) or not field:
            raise ValueError(f"{type}.{number}: a field is a non-empty tuple of repeats")
        for repeat in field:
            if not isinstance(repeat, tuple) or not repeat:
                raise ValueError(f"{type}.{number}: a repeat is a non-empty tuple of str")
            if not all(isinstance(component, str) for component in repeat):
                raise ValueError(f"{type}.{number}: components must be str, got {repeat!r}")


def _check_position(field: int, component: int, repeat: int) -> None:
    if field < 1 or component < 1 or repeat < 1:
        raise ValueError("field, component and repeat numbers start at 1")


def decode_record(
    data: bytes | str,
    delimiters: Delimiters = DEFAULT_DELIMITERS,
    encoding: str = "latin-1",
    lenient: bool = True,
) -> Record:
    """Decode one record (its CR terminator already stripped).

    A header record is decoded with the delimiters it defines (``delimiters`` is then only the
    fallback for a malformed header, in lenient mode); every other record with ``delimiters``.
    Lenient (default): never raises. Strict: raises ``CodecError`` naming the record and field.
    """
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            if not lenient:
                raise CodecError(f"record is not valid {encoding}: {exc}", where="record") from exc
            text = data.decode(encoding, errors="replace")
    if not lenient:
        return _decode_strict(text, delimiters, encoding)
    head = text[:1]
    if head in _LETTERS and text[-1:] > " ":
        cleaned = text  # the common case: nothing to repair
    else:
        cleaned = _repair(text)
        head = cleaned[:1]
    if head == "H":
        delimiters = _header_delimiters(cleaned, delimiters)
    field = delimiters.field
    if cleaned[1:2] == field:
        record_type = head
    else:
        cut = cleaned.find(field)
        record_type = cleaned[:cut] if cut >= 0 else cleaned
    record = _new_record(Record)
    record._type = record_type
    record._fields = None
    record._texts = None
    record._text = cleaned
    record._raw = text
    record._delimiters = delimiters
    record._encoding = encoding
    return record


_new_record = Record.__new__


def _repair(text: str) -> str:
    # Indentation, trailing spaces, stray CR/LF and control bytes around the record.
    cleaned = text.strip(_JUNK)
    start = 0
    while start < len(cleaned) and cleaned[start] in _DIGITS:
        start += 1
    if start and cleaned[start : start + 1] in _LETTERS:
        # VITROS 3600 order reply from an LIS: ``2P|1…`` — a digit glued to the record type.
        cleaned = cleaned[start:]
    return cleaned


def _header_delimiters(text: str, fallback: Delimiters) -> Delimiters:
    try:
        return Delimiters.from_header(text)
    except CodecError:
        return fallback


def _decode_strict(text: str, delimiters: Delimiters, encoding: str) -> Record:
    type_end = text.find(delimiters.field)
    record_type = text[:type_end] if type_end >= 0 else text
    if len(record_type) != 1 or record_type not in _LETTERS:
        raise CodecError(
            f"record type {record_type!r} is not a single letter", where=f"{record_type or '?'}.1"
        )
    if "\r" in text or "\n" in text:
        raise CodecError("CR or LF inside a record", where=record_type)
    if record_type == "H":
        delimiters = Delimiters.from_header(text)
    texts = text.split(delimiters.field)
    record = _new_record(Record)
    record._type = record_type
    record._fields = parse_fields(record_type, text, texts, delimiters, encoding, strict=True)
    record._texts = texts
    record._text = text
    record._raw = text
    record._delimiters = delimiters
    record._encoding = encoding
    return record


def encode_record(
    record: Record, delimiters: Delimiters = DEFAULT_DELIMITERS, encoding: str = "latin-1"
) -> bytes:
    """Encode a record's text (without the CR terminator), escaping data as needed.

    A header's field 2 must be ``delimiters.definition``. Raises ``CodecError`` when the record
    type cannot be written or a character cannot be encoded.
    """
    record_type = record.type
    _check_type_writable(record_type, delimiters)
    fields = record.fields
    head = [record_type]
    if record_type == "H":
        if len(fields) < 2 or fields[1] != ((delimiters.definition,),):
            raise CodecError(
                f"header field 2 {fields[1:2]!r} does not define the delimiters"
                f" {delimiters.definition!r}",
                where="H.2",
            )
        head.append(delimiters.definition)
    texts = encode_fields(fields[len(head) :], delimiters, encoding, record_type, len(head) + 1)
    try:
        return delimiters.field.join(head + texts).encode(encoding)
    except UnicodeEncodeError as exc:
        raise CodecError(
            f"cannot encode {exc.object[exc.start : exc.end]!r} in {encoding}",
            where=_where_unencodable(record, encoding),
        ) from exc


def _check_type_writable(record_type: str, delimiters: Delimiters) -> None:
    forbidden = (delimiters.field, delimiters.repeat, delimiters.component, delimiters.escape)
    if (
        not record_type
        or any(char in record_type for char in forbidden)
        or any(ord(char) < 33 or char == "\x7f" for char in record_type)
    ):
        raise CodecError(f"record type {record_type!r} cannot be written", where="record")


def _where_unencodable(record: Record, encoding: str) -> str:
    for number, field in enumerate(record.fields, 1):
        for repeat in field:
            for component_number, component in enumerate(repeat, 1):
                try:
                    component.encode(encoding)
                except UnicodeEncodeError:
                    return f"{record.type}.{number}.{component_number}"
    return record.type
