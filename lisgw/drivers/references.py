"""Field references in driver profiles: their syntax and how a text becomes a ``RefSpec``.

Layer: drivers (configuration), pure: no I/O, no YAML. ``lisgw.drivers.schema`` checks every
reference a profile holds with ``parse_reference``; ``lisgw.drivers.accessors`` turns each
``RefSpec`` into an accessor on a decoded record or segment.

Implements the reference syntax of drivers/README.md (issue 4): ASTM ``RECORD.FIELD[.COMPONENT]``
with E1394 numbering (``R.4``, ``O.3.2``) and ``+`` for the first non-empty component from
there on (``R.3.4+``); HL7 ``SEGMENT-FIELD[.COMPONENT[.SUBCOMPONENT]]`` (``OBX-5``,
``OBX-3.1``, ``SPM-2.1.1``, ``OBX-3.4+``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RefSpec", "parse_reference"]

_ASTM_REF = re.compile(r"([A-Z])\.([1-9][0-9]*)(?:\.([1-9][0-9]*)(\+)?)?\Z")
_HL7_REF = re.compile(
    r"([A-Z][A-Z0-9]{2})-([1-9][0-9]*)(?:\.([1-9][0-9]*)(?:(\+)|\.([1-9][0-9]*))?)?\Z"
)


@dataclass(frozen=True, slots=True)
class RefSpec:
    """One parsed field reference. ``component`` 0 means the whole field."""

    text: str
    protocol: str
    source: str  # ASTM record type or HL7 segment name
    field: int
    component: int = 0
    subcomponent: int = 0
    first_from: bool = False  # `R.3.4+`: the first non-empty component from ``component`` on


def parse_reference(text: str, protocol: str) -> RefSpec:
    """Parse ``R.3.4+`` (ASTM) or ``OBX-3.1`` (HL7); ``ValueError`` says what is wrong."""
    if protocol == "astm":
        match = _ASTM_REF.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a field reference (RECORD.FIELD[.COMPONENT][+], e.g. R.4, "
                "O.3.2, R.3.4+)"
            )
        record, field, component, plus = match.groups()
        return RefSpec(text, protocol, record, int(field), int(component or 0), 0, bool(plus))
    match = _HL7_REF.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a field reference (SEGMENT-FIELD[.COMPONENT[.SUBCOMPONENT]], "
            "e.g. OBX-5, OBX-3.1, SPM-2.1.1, OBX-3.4+)"
        )
    segment, field, component, plus, sub = match.groups()
    return RefSpec(
        text, protocol, segment, int(field), int(component or 0), int(sub or 0), bool(plus)
    )
