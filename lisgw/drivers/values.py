"""Numeric reading of result values and reference ranges as analyzers send them.

Layer: domain (pure, standard library only). A ``lisgw.model.Result`` keeps the value as sent;
these functions add the number beside it, for flagging, delta checks and the HIS's numeric
OBX (a profile's ``value.decimal_comma`` key selects the decimal mark).

What analyzers send, and what it reads as:

* ``5.5``, ``  5.5`` (Sysmex XP-100 left-pads with spaces), ``-1``, ``+2``, ``.5``, ``1.2E3``
  → the number, no censor.
* ``7,41`` (EUROIMMUN Analyzer I) → 7.41 when the profile says ``decimal_comma``, else no
  number. Thousands separators are never guessed: ``1,234`` without ``decimal_comma`` and
  ``1.234`` with it are not numbers, because either reading could be a thousandfold wrong.
* ``>8``, ``<3.00`` (cobas e411), ``<=1.005`` (Clinitek Status), ``>=``, ``≤``, ``≥`` → the
  limit and its censor sign (``≤``/``≥`` are reported as ``<=``/``>=``).
* ``-----`` (Pentra XLR), ``Negative``, ``POS``, ``NaN``, ``inf``, ``1e999``, `` `` → no number
  and no censor: a number is always finite.

E1394 §10.1.6 writes a reference range as "lower limit to upper limit"; HL7 OBX-7 as
"lower-upper", ">lower" or "<upper". ``split_reference_range`` reads both.
"""

from __future__ import annotations

import math
import re
from typing import Final

# ASCII digits only: Python's int/float also accept Arabic-Indic and full-width digits,
# which no analyzer sends and no HIS expects.
_NUMBER: Final = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER_COMMA: Final = r"[+-]?(?:[0-9]+(?:,[0-9]*)?|,[0-9]+)(?:[eE][+-]?[0-9]+)?"
_CENSOR: Final = r"(?P<censor><=|>=|[<>≤≥])?"

_VALUE: Final = re.compile(rf"{_CENSOR}[ \t]*(?P<number>{_NUMBER})", re.ASCII)
_VALUE_COMMA: Final = re.compile(rf"{_CENSOR}[ \t]*(?P<number>{_NUMBER_COMMA})", re.ASCII)
_CENSORS: Final[dict[str, str]] = {"≤": "<=", "≥": ">="}

# Separators between the limits: "-" (HL7 OBX-7), "to" (E1394, MAGLUMI), en dash, "..".
_SEPARATOR: Final = r"[ \t]*(?:-|–|\.\.|[ \t][Tt][Oo][ \t])[ \t]*"
_RANGE: Final = re.compile(rf"(?P<low>{_NUMBER}){_SEPARATOR}(?P<high>{_NUMBER})", re.ASCII)
_RANGE_COMMA: Final = re.compile(
    rf"(?P<low>{_NUMBER_COMMA}){_SEPARATOR}(?P<high>{_NUMBER_COMMA})", re.ASCII
)


def parse_numeric(value: str, decimal_comma: bool = False) -> tuple[float | None, str]:
    """``(number, censor)`` for a result value as sent; ``(None, "")`` if it is not a number.

    ``censor`` is ``""``, ``"<"``, ``">"``, ``"<="`` or ``">="``. Never raises; the number
    is always finite.
    """
    pattern = _VALUE_COMMA if decimal_comma else _VALUE
    match = pattern.fullmatch(value.strip())
    if match is None:
        return None, ""
    number = _to_float(match["number"])
    if number is None:
        return None, ""
    censor = match["censor"] or ""
    return number, _CENSORS.get(censor, censor)


def split_reference_range(
    text: str, decimal_comma: bool = False
) -> tuple[float | None, float | None]:
    """``(low, high)`` of a reference range; a side that is not given is None.

    "4.00-10.00" → (4.0, 10.0); "0.3 to 4.5" → (0.3, 4.5); "-2.0--1.0" → (-2.0, -1.0);
    "<5" → (None, 5.0); ">1.2" → (1.2, None); "^DEFAULT" (Erba: a range name, no limits),
    text, a single number and a reversed range → (None, None). Only the first ``^``
    component is read: E1394 puts the range's description after it.
    """
    text = text.split("^", 1)[0].strip()
    number, censor = parse_numeric(text, decimal_comma)
    if number is not None:
        if censor.startswith("<"):
            return None, number
        if censor.startswith(">"):
            return number, None
        return None, None  # one number is no range
    pattern = _RANGE_COMMA if decimal_comma else _RANGE
    match = pattern.fullmatch(text)
    if match is None:
        return None, None
    low, high = _to_float(match["low"]), _to_float(match["high"])
    if low is None or high is None or low > high:
        return None, None
    return low, high


def _to_float(number: str) -> float | None:
    result = float(number.replace(",", "."))
    return result if math.isfinite(result) else None
