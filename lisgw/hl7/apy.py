"""Thin hl7apy wrapper: strict parsing and validation, tolerant parsing for comparisons.

Layer: protocol (sans-IO); the only lisgw module that imports hl7apy. Too slow for the result
hot path (lisgw.hl7.message is the fast parser), it is the reference for correctness: orders
coming from a HIS are parsed strictly here, and the tests validate every message
lisgw.hl7.build produces with ``validate`` and compare the fast parser with ``parse_tolerant``.

Strict means hl7apy's ``VALIDATION_LEVEL.STRICT`` parse followed by its ``Validator``: known
message structure, segment order and cardinality, required fields, data types. (hl7apy reports
over-long values and values outside HL7 tables as warnings, which are not errors here.)

Two message structures lisgw handles are not in hl7apy's tables, so they are described here as
message profiles built from hl7apy's own segment definitions (HL7 v2.5.1 §5.3: a query's
conformance statement defines its segment pattern):

* ``QBP_Z03`` — the GeneXpert host query: MSH, QPD, RCP.
* ``RSP_K11`` — lisgw's reply to it (lisgw.hl7.build.build_query_response): MSH, MSA, [ERR],
  QAK, QPD, [PID], {ORC, OBR, [TQ1], [SPM]}.

hl7apy's QPD stops at QPD-3 ("user parameters in successive fields"); these profiles let the
successive fields QPD-4 to QPD-10 exist, as the standard means them to (GeneXpert: QPD-4 is the
specimen ID).

Every hl7apy failure (its own exceptions and the ValueError/KeyError/IndexError it raises on
malformed input) comes out as ``CodecError`` carrying hl7apy's reason.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from hl7apy import load_library
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import get_message_info
from hl7apy.parser import parse_message as apy_parse_message
from hl7apy.validation import Validator

from lisgw.errors import CodecError

__all__ = [
    "LISGW_STRUCTURES",
    "ApyMessage",
    "lisgw_profile",
    "parse_strict",
    "parse_tolerant",
    "to_er7",
    "validate",
]

ApyMessage = Any  # hl7apy.core.Message: hl7apy ships no type information
LISGW_STRUCTURES = ("QBP_Z03", "RSP_K11")
_HL7APY_ERRORS = (HL7apyException, ValueError, LookupError, TypeError, AttributeError)
_MAX_QPD_FIELD = 10


def to_er7(data: bytes | bytearray | str, encoding: str = "utf-8") -> str:
    """The message as hl7apy wants it: text, CR between segments, no leading whitespace."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode(encoding)
        except UnicodeDecodeError as exc:
            raise CodecError(f"cannot decode as {encoding}", where=f"byte {exc.start}") from exc
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return "\r".join(line for line in text.strip().split("\r") if line.strip())


@lru_cache(maxsize=8)
def lisgw_profile(version: str) -> dict[str, Any]:
    """hl7apy message profiles for lisgw's own structures (module docstring), per version."""
    segments = load_library(version).ELEMENTS["Segment"]

    def seg(name: str, low: int = 1, high: int = 1) -> tuple[Any, ...]:
        return (name, segments[name], (low, high), "SEG")

    parameter = ("leaf", None, "varies", "USER_PARAMETERS_IN_SUCCESSIVE_FIELDS", None, -1)
    successive = tuple((f"QPD_{n}", parameter, (0, 1), "FIE") for n in range(4, _MAX_QPD_FIELD + 1))
    qpd = ("QPD", ("sequence", segments["QPD"][1] + successive), (1, 1), "SEG")
    order = ("sequence", (seg("ORC"), seg("OBR"), seg("TQ1", 0), seg("SPM", 0)))
    return {
        "QBP_Z03": ("sequence", (seg("MSH"), qpd, seg("RCP"))),
        "RSP_K11": (
            "sequence",
            (
                seg("MSH"),
                seg("MSA"),
                seg("ERR", 0),
                seg("QAK"),
                qpd,
                seg("PID", 0),
                ("RSP_K11_ORDER", order, (0, -1), "GRP"),
            ),
        ),
    }


def _profile_for(er7: str) -> tuple[dict[str, Any] | None, str | None]:
    """The lisgw profile dict and structure name when the message is one of ours."""
    _, structure, version = get_message_info(er7)
    if structure in LISGW_STRUCTURES and version:
        return lisgw_profile(version), structure
    return None, structure


def parse_strict(data: bytes | bytearray | str, encoding: str = "utf-8") -> ApyMessage:
    """Parse with STRICT validation and run hl7apy's Validator; CodecError on any failure."""
    er7 = to_er7(data, encoding)
    try:
        profile, structure = _profile_for(er7)
        message = apy_parse_message(
            er7, validation_level=VALIDATION_LEVEL.STRICT, message_profile=profile
        )
        reference = profile[structure] if profile is not None and structure else None
        Validator.validate(message, reference)
        unchecked = message.is_z_element() or not message.children
    except _HL7APY_ERRORS as exc:
        raise CodecError(f"hl7apy: {exc}", where="hl7apy strict validation") from exc
    if unchecked:
        # hl7apy accepts a custom (Z) message structure without looking at its segments.
        raise CodecError(f"hl7apy cannot check structure {structure!r}", where="MSH-9")
    return message


def validate(data: bytes | bytearray | str, encoding: str = "utf-8") -> None:
    """Raise CodecError with hl7apy's reason unless the message passes strict validation."""
    parse_strict(data, encoding)


def parse_tolerant(
    data: bytes | bytearray | str, encoding: str = "utf-8", *, find_groups: bool = False
) -> ApyMessage:
    """Parse with TOLERANT validation (for messages that do not validate, e.g. the corpus)."""
    er7 = to_er7(data, encoding)
    try:
        profile, _ = _profile_for(er7)
        return apy_parse_message(
            er7,
            validation_level=VALIDATION_LEVEL.TOLERANT,
            find_groups=find_groups,
            message_profile=profile,
        )
    except _HL7APY_ERRORS as exc:
        raise CodecError(f"hl7apy: {exc}", where="hl7apy tolerant parse") from exc
