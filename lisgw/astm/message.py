"""E1394 messages: group decoded records into H … L messages, and encode messages back.

Layer: protocol (sans-IO), above ``lisgw.astm.records``. ``MessageAssembler`` takes records one
at a time as the link layer delivers them (CR terminator stripped) and returns completed
``AstmMessage`` objects; it never blocks, logs or drops anything.

Implements, from E1394 (CLSI LIS02-A2), the message envelope: a message begins with a header
record (which defines the delimiters of that message; each message may define its own) and
ends with a message terminator record (``L``). What real streams do instead is reported, not
hidden: records before any header (or between an ``L`` and the next ``H``) form an orphan
message with a warning; a new ``H`` before the ``L`` closes the previous message as
unterminated; ``flush()`` returns whatever is still open at the end of a stream; a record whose
type had to be freed from a stray prefix is named in a ``record_type`` warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from lisgw.astm.escapes import DEFAULT_DELIMITERS, Delimiters
from lisgw.astm.records import Record, decode_record, encode_record
from lisgw.errors import CodecError

__all__ = ["AstmMessage", "MessageAssembler", "encode_message"]


@dataclass(frozen=True, slots=True)
class AstmMessage:
    """One E1394 message: its records in order, the delimiters they use, and what went wrong.

    ``terminated`` is true when an ``L`` record ended the message. ``warnings`` says, in words,
    what was irregular (no header, no terminator, a malformed header). A message with no
    header is an orphan group of records that arrived outside any H … L message.
    """

    records: tuple[Record, ...]
    delimiters: Delimiters = DEFAULT_DELIMITERS
    terminated: bool = True
    warnings: tuple[str, ...] = ()

    @property
    def header(self) -> Record | None:
        """The ``H`` record that opened the message, or ``None`` for an orphan group."""
        if self.records and self.records[0].type == "H":
            return self.records[0]
        return None

    @property
    def terminator(self) -> Record | None:
        """The ``L`` record that closed the message, if any."""
        if self.terminated and self.records and self.records[-1].type == "L":
            return self.records[-1]
        return None

    @property
    def complete(self) -> bool:
        """True for a regular message: opened by ``H``, closed by ``L``."""
        return self.header is not None and self.terminator is not None

    def of_type(self, record_type: str) -> Iterator[Record]:
        """The records of one type, in order: ``for result in message.of_type("R"): …``."""
        return (record for record in self.records if record.type == record_type)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


def encode_message(message: AstmMessage, encoding: str = "latin-1") -> list[bytes]:
    """Encode every record of a message with its delimiters (CR terminators not included)."""
    return [encode_record(record, message.delimiters, encoding) for record in message.records]


class MessageAssembler:
    """Sans-IO grouping of records into messages.

    ``feed(record)`` takes one record (bytes or text, CR stripped) and returns the messages it
    completed, usually none or one. Lenient by default: records are decoded leniently and every
    irregularity becomes a message warning. With ``lenient=False`` a record that does not decode
    raises ``CodecError`` (and the assembler's state is unchanged).
    """

    def __init__(self, encoding: str = "latin-1", lenient: bool = True) -> None:
        self._encoding = encoding
        self._lenient = lenient
        self._records: list[Record] = []
        self._warnings: list[str] = []
        self._delimiters = DEFAULT_DELIMITERS
        self._open = False  # a message was opened by an H and not yet closed
        self._seen_header = False
        self._received = 0

    @property
    def delimiters(self) -> Delimiters:
        """The delimiters records are currently decoded with."""
        return self._delimiters

    def feed(self, record: bytes | str) -> list[AstmMessage]:
        """Take one record; return the messages it completed."""
        decoded = decode_record(record, self._delimiters, self._encoding, self._lenient)
        record_type = decoded.type
        if not record_type and self._lenient and len(decoded) == 1:
            # A blank line between records (CR LF separators, a trailing newline): no data.
            return []
        self._received += 1
        completed = self._start_message(decoded) if record_type == "H" else []
        if record_type != "H":
            if not self._records:
                self._start_orphans(decoded)
            self._records.append(decoded)
        raw = decoded.raw or ""
        if not raw.startswith(record_type):
            # Lenient decoding stripped something before the type (VITROS LIS reply: ``2P|1``).
            stray = raw[: raw.find(record_type)] if record_type else raw
            self._warnings.append(
                f"record_type: record {self._received} ({record_type}) began with {stray!r},"
                " which was stripped"
            )
        if record_type == "L":
            completed.append(self._close(terminated=True))
        return completed

    def flush(self) -> list[AstmMessage]:
        """Return the message still open at the end of the stream, if any (unterminated)."""
        if not self._records:
            return []
        if self._open:
            self._warnings.append("stream ended before the L record")
        return [self._close(terminated=False)]

    def _start_message(self, header: Record) -> list[AstmMessage]:
        completed: list[AstmMessage] = []
        if self._records:
            if self._open:
                self._warnings.append("no L record: a new H record began the next message")
            completed.append(self._close(terminated=False))
        delimiters = header.delimiters or DEFAULT_DELIMITERS
        try:
            Delimiters.from_header(header.raw or "")
        except CodecError as exc:
            self._warnings.append(
                f"malformed header ({exc}); records decoded with {delimiters.header_prefix!r}"
            )
        self._delimiters = delimiters
        self._open = True
        self._seen_header = True
        self._records.append(header)
        return completed

    def _start_orphans(self, first: Record) -> None:
        if self._seen_header:
            self._warnings.append(
                f"record {self._received} ({first.type}) arrived after an L record and before"
                " the next H; decoded with the last header's delimiters"
            )
        else:
            self._warnings.append(
                f"record {self._received} ({first.type}) arrived before any H record;"
                " decoded with the default delimiters"
            )

    def _close(self, terminated: bool) -> AstmMessage:
        message = AstmMessage(
            records=tuple(self._records),
            delimiters=self._delimiters,
            terminated=terminated,
            warnings=tuple(self._warnings),
        )
        self._records = []
        self._warnings = []
        self._open = False
        return message
