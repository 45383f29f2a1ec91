"""Outbound results: routed results → one ORU^R01 per specimen (or per order) for the HIS.

Layer: domain/protocol (pure). Imports lisgw.hl7.build (the fast builder), lisgw.his,
lisgw.drivers.translit and the standard library; no clock (the caller passes
``now_timestamp``), no I/O, no logging. The store builds the payload when it queues a
delivery; the outbox sends it and matches the ACK's MSA-2 with ``control_id_for``.

What goes where (HL7 v2.5.1 chapter 7, ORU^R01; lisgw.hl7.build writes the segments):

* MSH-3/4 and 5/6 from the profile; MSH-10 ``control_id_for`` the results' identities: the
  same results always give the same control ID, so a HIS can drop a redelivery (the outbox
  may resend after a lost ACK); a correction has other identities, hence another ID.
  MSH-18 the profile's character set.
* PID from the HIS order: PID-3 patient ID (PID-3.5 the profile's ``patient_id_type``),
  PID-5 family^given. Left out when there is no order or no name (PID-5 is required in 2.5);
  ORC-2/OBR-2 still carry the placer number the HIS links results with.
* ORC-2/OBR-2 the placer number, ORC-3/OBR-3 the sample ID (the gateway is the filler).
  OBR-4 the order's first test (an ORU^R01 from lisgw.hl7.build has one OBR), else the
  first result's code. OBR-7 the earliest result time. OBR-25 C when a result is a
  correction, else F.
* One OBX per result: OBX-3 the HIS code with the profile's coding system, or the analyzer's
  code with ``analyzer_coding_system`` when the code is unmapped; OBX-5 the value as the
  analyzer sent it (NM when it is a plain number, else ST); OBX-6 units; OBX-7 range;
  OBX-8 the driver's flag meanings as table 0078 codes (the raw flags when the driver gives
  no meaning); OBX-11 C for a correction, else the driver's status meaning as table 0085
  (F when unknown: the analyzer released it); OBX-14 the result time; OBX-18 the analyzer
  (v2.5+: 2.3.1 has no OBX-18).

Text the profile's encoding cannot carry: names (the patient's, the tests') are
transliterated when the profile says ``unencodable: transliterate`` ("Nguyễn Thị" → "Nguyen
Thi" in ISO-8859-1, lisgw.drivers.translit); values, units, ranges and flags never are — a
changed clinical value is worse than an undelivered one — so they raise ``CodecError``, as
everything does with ``unencodable: error``; the outbox then moves the row to dead letter
with that reason, for a technician to see.
"""

from __future__ import annotations

import base64
import codecs
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

from lisgw.drivers.translit import Target, transliterate
from lisgw.errors import CodecError, LocalProtocolError
from lisgw.his.profile import RESULT_MODES, HisProfile
from lisgw.his.types import HisOrder, RoutedResult
from lisgw.hl7.build import Hl7Header, OruObservation, OruOrder, OruPatient, build_oru_r01

__all__ = [
    "CONTROL_ID_LENGTH",
    "build_result_message",
    "control_id_for",
    "delivery_groups",
    "group_placer",
    "hl7_now",
    "hl7_timestamp",
    "payload_identity",
]

CONTROL_ID_LENGTH: Final = 20  # MSH-10 is ST, 20 characters, in v2.3.1 and v2.5.1
_FLAGS_0078: Final = {
    "low": "L",
    "high": "H",
    "critical_low": "LL",
    "critical_high": "HH",
    "below_range": "<",
    "above_range": ">",
    "normal": "N",
    "abnormal": "A",
    "critical_abnormal": "AA",
    "up": "U",
    "down": "D",
    "better": "B",
    "worse": "W",
    "susceptible": "S",
    "resistant": "R",
    "intermediate": "I",
}
_STATUS_0085: Final = {
    "final": "F",
    "correction": "C",
    "preliminary": "P",
    "cannot_be_done": "X",
    "unverified": "R",
    "pending": "I",
    "partial": "S",
    "deleted": "D",
    "wrong": "W",
}
_RAW_FLAG_SEPARATORS: Final = re.compile(r"[~\\^&,\s]+")
_ISO: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?\Z"
)


def control_id_for(identities: Iterable[str]) -> str:
    """MSH-10 for a message carrying results with these identities (order does not matter).

    20 characters of base32 (A-Z, 2-7) of a sha256 over the sorted identities: 100 bits, so
    two different result sets never share an ID in practice, and it fits ST(20).
    """
    joined = ",".join(sorted(set(identities)))
    digest = hashlib.sha256(joined.encode("utf-8")).digest()
    return base64.b32encode(digest).decode("ascii")[:CONTROL_ID_LENGTH]


def delivery_groups(
    results: Sequence[RoutedResult], per: str = "specimen"
) -> list[tuple[RoutedResult, ...]]:
    """The results split into messages: per specimen, or per (specimen, order placer).

    Groups come in the order of their first result; results keep their order inside.
    """
    if per not in RESULT_MODES:
        raise LocalProtocolError(f"results per {per!r}: expected one of {RESULT_MODES}")
    groups: dict[tuple[str, str], list[RoutedResult]] = {}
    for routed in results:
        placer = routed.order_placer if per == "order" else ""
        groups.setdefault((routed.sample_id, placer), []).append(routed)
    return [tuple(group) for group in groups.values()]


def group_placer(results: Sequence[RoutedResult]) -> str:
    """The HIS order a group of results belongs to: the first placer number among them."""
    return next((r.order_placer for r in results if r.order_placer), "")


@functools.lru_cache(maxsize=4096)  # a CBC's 40 results share one or two times
def hl7_timestamp(iso: str) -> str:
    """ISO 8601 (as the drivers write result times) → HL7 TS/DTM; '' when not a time.

    "2024-06-27T13:54:07+02:00" → "20240627135407+0200"; fractions keep 4 digits at most.
    Analyzer junk kept as sent (cobas "00000000000000") gives '' rather than a false time.
    """
    match = _ISO.match(iso.strip())
    if match is None:
        return ""
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    text = year + month + day + (hour or "") + (minute or "") + (second or "")
    if fraction and second:
        text += "." + fraction[:4]
    if zone and hour:
        text += "+0000" if zone == "Z" else zone.replace(":", "")
    return text


def build_result_message(
    results: Sequence[RoutedResult],
    order: HisOrder | None,
    profile: HisProfile,
    *,
    analyzer: str,
    now_timestamp: str,
) -> bytes:
    """One ORU^R01 for the results of one specimen (module docstring).

    ``order`` is the HIS order the results belong to (None for unsolicited results);
    ``analyzer`` names the analyzer in OBX-18; ``now_timestamp`` is MSH-7 (HL7 TS).
    LocalProtocolError when the results are empty or of several specimens; CodecError when
    a value cannot be written in the profile's encoding.
    """
    if not results:
        raise LocalProtocolError("an ORU^R01 needs at least one result")
    samples = {r.sample_id for r in results}
    if len(samples) != 1:
        raise LocalProtocolError(f"one ORU^R01 per specimen, got {len(samples)} specimens")
    names = _Names(profile)
    header = Hl7Header(
        control_id=control_id_for(r.identity for r in results),
        timestamp=now_timestamp,
        sending_application=profile.sending_application,
        sending_facility=profile.sending_facility,
        receiving_application=profile.receiving_application,
        receiving_facility=profile.receiving_facility,
        version=profile.version,
        character_set=profile.character_set,
    )
    observations = [_observation(r, profile, names, analyzer) for r in results]
    return build_oru_r01(
        header,
        _patient(order, profile, names),
        _order(results, order, profile, names),
        observations,
        encoding=profile.encoding,
    )


class _Names:
    """Descriptive text made to fit the profile's encoding, as the profile says."""

    def __init__(self, profile: HisProfile) -> None:
        self.encoding = profile.encoding
        self.transliterate = profile.unencodable == "transliterate"
        try:
            latin_1 = codecs.lookup(profile.encoding).name == "iso8859-1"
        except LookupError as exc:
            raise CodecError(f"unknown encoding {profile.encoding!r}", where="encoding") from exc
        self.target: Target = "latin-1" if latin_1 else "ascii"

    def __call__(self, text: str) -> str:
        if not self.transliterate:
            return text
        try:
            text.encode(self.encoding)
        except UnicodeEncodeError:
            return transliterate(text, self.target)
        return text


def _patient(order: HisOrder | None, profile: HisProfile, names: _Names) -> OruPatient | None:
    if order is None or not order.patient_name:
        return None
    family, _, rest = order.patient_name.partition("^")
    given = " ".join(part for part in rest.split("^")[:2] if part)
    if not (family.strip() or given.strip()):
        return None  # PID-5 would be empty: v2.5 requires it
    return OruPatient(
        patient_id=order.patient_id,
        family_name=names(family),
        given_name=names(given),
        id_type=profile.orders.patient_id_type,
    )


def _order(
    results: Sequence[RoutedResult], order: HisOrder | None, profile: HisProfile, names: _Names
) -> OruOrder:
    first = results[0]
    if order is not None and order.tests:
        code, name, system = order.tests[0].his_code, order.tests[0].name, profile.coding_system
    else:
        code, system = _code(first, profile)
        name = first.result.test_name
    times = sorted(t for t in (hl7_timestamp(r.result.completed_at) for r in results) if t)
    return OruOrder(
        specimen_id=first.sample_id,
        test_code=code,
        test_name=names(name),
        coding_system=system,
        placer_order_number=order.placer if order is not None else group_placer(results),
        observation_time=times[0] if times else "",
        result_status="C" if any(r.correction for r in results) else "F",
    )


def _code(routed: RoutedResult, profile: HisProfile) -> tuple[str, str]:
    if routed.his_code:
        return routed.his_code, profile.coding_system
    return routed.result.test, profile.analyzer_coding_system


def _observation(
    routed: RoutedResult, profile: HisProfile, names: _Names, analyzer: str
) -> OruObservation:
    result = routed.result
    code, system = _code(routed, profile)
    return OruObservation(
        code=code,
        value=result.value,
        name=names(result.test_name),
        coding_system=system,
        units=result.units,
        reference_range=result.reference_range,
        abnormal_flags=_flags(routed),
        result_status=_status(routed),
        observation_time=hl7_timestamp(result.completed_at),
        equipment_id=names(analyzer),
    )


def _flags(routed: RoutedResult) -> tuple[str, ...]:
    meanings = routed.result.flag_meanings
    if meanings:
        return tuple(_FLAGS_0078[m] for m in meanings if m in _FLAGS_0078)
    return tuple(f for f in _RAW_FLAG_SEPARATORS.split(routed.result.flags) if f)


def _status(routed: RoutedResult) -> str:
    if routed.correction:
        return "C"
    return _STATUS_0085.get(routed.result.status_meaning, "F")


def payload_identity(result_identities: Iterable[str]) -> str:
    """The outbox identity of a result message: sha256 hex of its results' identities (the
    same set of results always gives the same identity, so it is queued once)."""
    joined = ",".join(sorted(set(result_identities)))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def hl7_now(now: float) -> str:
    """An HL7 TS for the epoch time ``now`` (MSH-7 of what lisgw builds): UTC, with offset."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S+0000")
