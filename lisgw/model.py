"""Normalized domain model: what every analyzer message becomes, whatever its protocol.

Layer: domain (pure). Imports nothing but the standard library. The drivers turn decoded
ASTM records and HL7 segments into these frozen dataclasses; the routing core, the store and
the HIS bridge only ever see these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Protocol(enum.StrEnum):
    ASTM = "astm"
    HL7 = "hl7"
    UNKNOWN = "unknown"


class Kind(enum.StrEnum):
    """What a message is for, from the gateway's point of view."""

    RESULTS = "results"
    QUERY = "query"
    QUERY_CANCEL = "query_cancel"
    ORDERS = "orders"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Result:
    """One analyzer result. ``value`` is the value as sent, trimmed; nothing is converted.

    ``numeric`` is the value read as a number where it is one (``7,41`` → 7.41 for analyzers
    that write a decimal comma, ``>8`` → 8.0 with ``censor`` ``>``), else None. ``flags`` and
    ``status`` are as sent; ``flag_meanings`` and ``status_meaning`` are the driver's reading of
    them in the gateway's words (``low``, ``critical_high``, ``final`` …), empty where the
    driver does not know a code. ``completed_at`` is ISO 8601, with the connection's zone
    offset when one is configured.
    """

    test: str
    value: str
    test_name: str = ""
    units: str = ""
    reference_range: str = ""
    flags: str = ""
    status: str = ""
    completed_at: str = ""
    numeric: float | None = None
    censor: str = ""
    flag_meanings: tuple[str, ...] = ()
    status_meaning: str = ""
    comments: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "test_name": self.test_name,
            "value": self.value,
            "units": self.units,
            "reference_range": self.reference_range,
            "flags": self.flags,
            "status": self.status,
            "completed_at": self.completed_at,
            "numeric": self.numeric,
            "censor": self.censor,
            "flag_meanings": list(self.flag_meanings),
            "status_meaning": self.status_meaning,
            "comments": list(self.comments),
        }


@dataclass(frozen=True, slots=True)
class Specimen:
    """A sample on the analyzer: its ID, whether it is QC, its results or ordered tests."""

    sample_id: str
    qc: bool = False
    results: tuple[Result, ...] = ()
    tests: tuple[str, ...] = ()
    comments: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sample_id": self.sample_id,
            "qc": self.qc,
            "results": [r.to_json() for r in self.results],
        }
        if self.tests:
            out["tests"] = list(self.tests)
        if self.comments:
            out["comments"] = list(self.comments)
        return out


@dataclass(frozen=True, slots=True)
class Instrument:
    """Who sent a message, as the analyzer says it: ASTM H.5 components, HL7 MSH-3."""

    name: str = ""
    serial: str = ""
    software: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "serial": self.serial, "software": self.software}


@dataclass(frozen=True, slots=True)
class Query:
    """A host query (the analyzer asks for orders) or its cancellation."""

    sample_ids: tuple[str, ...] = ()
    query_tag: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sample_ids": list(self.sample_ids)}
        if self.query_tag:
            out["query_tag"] = self.query_tag
        return out


@dataclass(frozen=True, slots=True)
class NormalizedMessage:
    """One message from a line or a capture, normalized.

    ``incomplete`` marks a transmission that ended without EOT: its content is kept for the
    technician but never reported as results. ``offset`` is where the message started in the
    stream, for error reports. ``driver`` names the profile that read the message
    (``name@version``). ``raw`` holds the bytes of a payload a driver recognised as "not mine"
    (a device on the same line that speaks neither ASTM nor HL7): they are kept as they came,
    never turned into results.
    """

    protocol: Protocol
    kind: Kind
    sender: str = ""
    specimens: tuple[Specimen, ...] = ()
    query: Query | None = None
    warnings: tuple[str, ...] = ()
    incomplete: bool = False
    offset: int = 0
    extra: tuple[tuple[str, str], ...] = ()
    driver: str = ""
    instrument: Instrument | None = None
    raw: bytes = b""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "protocol": str(self.protocol),
            "kind": str(self.kind),
            "sender": self.sender,
            "driver": self.driver,
            "specimens": [s.to_json() for s in self.specimens],
        }
        if self.instrument is not None:
            out["instrument"] = self.instrument.to_json()
        if self.query is not None:
            out["query"] = self.query.to_json()
        if self.incomplete:
            out["incomplete"] = True
        out["offset"] = self.offset
        if self.raw:
            # Latin-1 maps every byte to one character, so the text is the bytes, losslessly.
            out["raw"] = self.raw.decode("latin-1")
        out.update(dict(self.extra))
        out["warnings"] = list(self.warnings)
        return out
