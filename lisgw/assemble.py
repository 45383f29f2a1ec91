"""Records and payloads → normalized messages: the steps capture decoding and live ingest share.

Layer: domain (pure): bytes and records in, ``AstmMessage``/``Hl7Message``/
``NormalizedMessage`` out; no I/O, no clock, no logging. ``lisgw.decode`` (a capture file)
and ``lisgw.services.ingest`` (a live line, and crash recovery from the archived frames) both
read analyzer traffic through these functions, so a capture decoded by ``lisgw decode`` and
the same bytes received on a line give the same messages.

* ``AstmSettings.of``: what a driver changes in the way ASTM bytes are read (its E1381 link
  options, character set and record leniency).
* ``assemble_records``: E1394 records (CR stripped, as the link delivers them) grouped into
  H … L messages with ``lisgw.astm.message.MessageAssembler``, each with the bytes of its
  own records (E1394 §5: a record ends with CR) and whether it was still open when the
  records ran out.
* ``normalize_message``: one decoded message read with a driver; an incomplete one keeps its
  content but is never results (kind unknown, ``incomplete`` set).
* ``records_of_frames``: the records of archived E1381 frames, split exactly as the link
  split them when it acknowledged each frame (crash recovery reads the archive back).
* ``read_hl7``: an HL7 payload parsed in the connection's character set, falling back to
  ISO-8859-1 with a warning (analyzers that send Latin-1 and announce nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from lisgw.astm.frames import parse_frame
from lisgw.astm.link import LinkOptions
from lisgw.astm.message import AstmMessage, MessageAssembler
from lisgw.astm.unframed import RecordSplitter
from lisgw.drivers import CompiledProfile, normalize
from lisgw.errors import CodecError, RemoteProtocolError
from lisgw.hl7.message import Hl7Message, parse_message
from lisgw.model import Kind, NormalizedMessage

__all__ = [
    "AssembledMessage",
    "AstmSettings",
    "assemble_records",
    "normalize_message",
    "read_hl7",
    "records_of_frames",
]

_FALLBACK_HL7_ENCODING = "iso-8859-1"


@dataclass(frozen=True, slots=True)
class AstmSettings:
    """What a driver changes in the way ASTM bytes are read."""

    link: LinkOptions
    encoding: str
    records_lenient: bool

    @classmethod
    def of(
        cls,
        profile: CompiledProfile,
        *,
        encoding: str | None = None,
        max_frame_size: int | None = None,
    ) -> AstmSettings:
        """The driver's settings; ``encoding`` and ``max_frame_size`` override its own.

        A driver without link settings reads leniently (checksums optional, LF separators):
        the generic driver's rule for devices nobody has tuned a profile for.
        """
        link = profile.link or LinkOptions(lenient=True)
        if max_frame_size is not None:
            link = replace(link, max_frame_size=max_frame_size)
        return cls(
            link, encoding or profile.transport.encoding or "latin-1", profile.records_lenient
        )


@dataclass(frozen=True, slots=True)
class AssembledMessage:
    """One E1394 message and the bytes of its records, each ended by CR as on the wire.

    ``open_at_end`` is true for the message the records ran out in: no ``L`` had closed it
    and no ``H`` had begun another one (``MessageAssembler.flush``). Whether that makes it
    incomplete is the caller's to say: it is when the transmission ended without EOT.
    """

    message: AstmMessage
    raw: bytes
    open_at_end: bool = False


def assemble_records(
    records: Iterable[bytes], *, encoding: str, lenient: bool
) -> tuple[list[AssembledMessage], list[str]]:
    """Group records into messages; also the warnings for records that did not decode.

    A record that does not decode (strict drivers only) is left out of every message, with
    a warning naming its position (1-based), but its bytes stay in the raw of the message it
    arrived in: the raw is what was received.
    """
    assembler = MessageAssembler(encoding=encoding, lenient=lenient)
    assembled: list[AssembledMessage] = []
    skipped: list[str] = []
    held: list[bytes] = []
    for number, record in enumerate(records, 1):
        try:
            completed = assembler.feed(record)
        except CodecError as error:
            skipped.append(f"record {number} skipped: {error}")
            held.append(record)
            continue
        # feed() completes one message at most: an L closes the message it ends, an H
        # closes the message before it (unterminated) and opens the next one.
        for message in completed:
            if message.terminated:
                held.append(record)
                assembled.append(AssembledMessage(message, _raw(held)))
                held = []
            else:
                assembled.append(AssembledMessage(message, _raw(held)))
                held = [record]
        if not completed:
            held.append(record)
    for message in assembler.flush():
        assembled.append(AssembledMessage(message, _raw(held), open_at_end=True))
    return assembled, skipped


def _raw(records: Sequence[bytes]) -> bytes:
    return b"".join(record + b"\r" for record in records)


def records_of_frames(
    frames: Iterable[bytes], options: LinkOptions
) -> tuple[list[bytes], list[str]]:
    """The records of frames a link accepted (``FrameReceived.raw``, in wire order), and a
    warning for each frame that cannot be read back.

    The link (lisgw.astm.link.AstmLink.acknowledge) splits each acknowledged frame's text
    with a ``RecordSplitter``; the final (ETX) frame of a message also ends its last record
    (E1381 §6.3.1). This does the same with the line's ``options`` (LF separators), so the
    records are the ones the live line delivered. A checksum is not required (the frames
    were verified when they were received, some lines accept them without one).
    """
    splitter = RecordSplitter(lf_separators=options.lf_separators or options.lenient)
    records: list[bytes] = []
    problems: list[str] = []
    for number, raw in enumerate(frames, 1):
        try:
            frame = parse_frame(raw + b"\r\n", checksum_optional=True)
        except RemoteProtocolError as error:
            problems.append(f"archived frame {number} unreadable, skipped: {error}")
            continue
        batch, _offsets = splitter.split(frame.text, 0, final=frame.final)
        records.extend(batch)
    return records, problems


def normalize_message(
    message: AstmMessage | Hl7Message,
    profile: CompiledProfile,
    *,
    offset: int = 0,
    tz: str | None = None,
    incomplete: bool = False,
    warnings: Sequence[str] = (),
) -> NormalizedMessage:
    """``message`` read with ``profile``; ``warnings`` go before the driver's own.

    ``incomplete``: the transmission ended without EOT inside this message, so what it holds
    is kept for the technician but is never results (kind unknown).
    """
    normalized = normalize(message, profile, offset=offset, tz=tz)
    joined = (*warnings, *normalized.warnings)
    if incomplete:
        return replace(normalized, incomplete=True, kind=Kind.UNKNOWN, warnings=joined)
    return replace(normalized, warnings=joined)


def read_hl7(payload: bytes, encoding: str) -> tuple[Hl7Message, tuple[str, ...]]:
    """Parse an HL7 payload in ``encoding``, else in ISO-8859-1 (with a warning).

    Raises CodecError (from the ISO-8859-1 attempt) when the payload is not HL7 at all.
    """
    try:
        return parse_message(payload, encoding=encoding), ()
    except CodecError:
        message = parse_message(payload, encoding=_FALLBACK_HL7_ENCODING)
        return message, (f"not {encoding}: read as ISO-8859-1",)
