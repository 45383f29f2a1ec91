"""Fast HL7 v2 message builders: ACK, ORU^R01 results, host-query replies.

Layer: protocol (sans-IO). Imports nothing but the standard library, lisgw.errors and
lisgw.hl7.message. The caller supplies every clock-derived value (``now_timestamp``) and every
control ID: the builders are pure functions from values to bytes.

Messages are built as strings with the standard delimiters ``|^~\\&`` and encoded with the
connection's encoding. Every value is escaped (HL7 v2.5.1 §2.7): ``| ^ ~ \\ &`` become
``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``, and control characters (CR, LF, and above all VT and FS,
which would break MLLP framing) become ``\\Xhh\\``. A character the encoding cannot represent
raises ``CodecError``. Every message these builders produce validates with hl7apy's strict
validation (tests/unit/test_hl7_build.py); the host-query reply validates against the segment
pattern in ``lisgw.hl7.apy.HOST_QUERY_REPLY_PROFILE``.

* ``build_ack`` — original-mode acknowledgment (§2.9.2): MSH, MSA, optional ERR. Sender and
  receiver are the original's, swapped; version and processing ID are the original's.
  MSH-9 is ``ACK^<trigger>^ACK`` (hl7apy needs the structure component even in 2.3.1).
* ``build_oru_r01`` — one specimen per message (chapter 7, ORU^R01): MSH, PID, ORC, OBR, one
  OBX per result, and SPM in v2.5+ when a specimen type is known. v2.5.1 by default, 2.3.1
  (and 2.5) selectable; OBX-18 carries the analyzer (equipment instance identifier)
  in v2.5+: v2.3.1 has no OBX-18, so the analyzer is not sent there, and its OBX-4
  (sub-ID), required in 2.3.1, defaults to "1".
* ``build_query_response`` — reply to a host query such as the GeneXpert ``QBP^Z03`` (QPD-1
  ``Z03^HOST QUERY``, QPD-2 query tag, QPD-3 patient ID, QPD-4 specimen ID). It is a segment
  pattern response (§5.5, ``RSP^K11^RSP_K11``): MSH, MSA AA, QAK (tag, ``OK`` or ``NF`` for
  "no orders"), the query's QPD echoed, then, when there are orders, an optional PID and per
  order ORC (``NW``), OBR, TQ1 (priority) and SPM (specimen ID and type).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lisgw.errors import CodecError, LocalProtocolError
from lisgw.hl7.message import Hl7Message, Segment, unescape

__all__ = [
    "ACK_CODES",
    "ORU_VERSIONS",
    "AckError",
    "Hl7Header",
    "OruObservation",
    "OruOrder",
    "OruPatient",
    "QueryOrder",
    "build_ack",
    "build_oru_r01",
    "build_query_response",
    "escape",
]

ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})  # HL7 table 0008
ORU_VERSIONS = ("2.3.1", "2.5", "2.5.1")  # v2.4 OBX-8 does not repeat
_MSH_2 = "^~\\&"

_ESCAPES = {ord(c): f"\\{code}\\" for c, code in (("|", "F"), ("^", "S"), ("~", "R"), ("&", "T"))}
_ESCAPES[ord("\\")] = "\\E\\"
_ESCAPES.update({c: f"\\X{c:02X}\\" for c in range(0x20) if c != 0x09})
_ESCAPES[0x7F] = "\\X7F\\"
_NEEDS_ESCAPE = re.compile(r"[|^~\\&\x00-\x08\x0a-\x1f\x7f]")
_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)\Z")


def escape(value: str) -> str:
    """Escape one leaf value for the standard delimiters (HL7 §2.7)."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_ESCAPES)


def _join(*parts: str) -> str:
    """Join already-escaped components, dropping trailing empty ones."""
    return "^".join(parts).rstrip("^")


def _segment(name: str, fields: Sequence[str]) -> str:
    """One segment from already-escaped fields, without trailing empty fields."""
    return "|".join((name, *fields)).rstrip("|")


@dataclass(frozen=True, slots=True)
class AckError:
    """The ERR segment of a negative ACK: HL7 table 0357 code and where the error is."""

    code: str = "207"  # 207 application internal error; 100-207 in table 0357
    text: str = "Application internal error"
    segment: str = ""  # e.g. "OBX"; '' when the error is not located
    sequence: int = 1  # occurrence of that segment in the message, 1-based
    field: int | None = None
    severity: str = "E"  # table 0516 (v2.5+): E error, W warning, I information
    diagnostic: str = ""  # ERR-7 (v2.5+), free text for the sender's support staff


@dataclass(frozen=True, slots=True)
class Hl7Header:
    """MSH values of a message lisgw originates. Timestamps are HL7 TS text (YYYYMMDDHHMMSS)."""

    control_id: str
    timestamp: str
    sending_application: str = "LISGW"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"
    version: str = "2.5.1"
    accept_ack_type: str = ""  # MSH-15; '' is original acknowledgment mode
    application_ack_type: str = ""  # MSH-16
    character_set: str = ""  # MSH-18, e.g. "UNICODE UTF-8" or "8859/1"


@dataclass(frozen=True, slots=True)
class OruPatient:
    """PID values. HL7 v2.5 requires PID-5: leave the patient out when no name is known."""

    patient_id: str  # PID-3.1
    family_name: str = ""  # PID-5.1
    given_name: str = ""  # PID-5.2
    birth_date: str = ""  # PID-7, HL7 date YYYYMMDD
    sex: str = ""  # PID-8, table 0001: F M O U A N
    id_authority: str = ""  # PID-3.4
    id_type: str = ""  # PID-3.5, table 0203, e.g. MR


@dataclass(frozen=True, slots=True)
class OruOrder:
    """ORC/OBR/SPM values for the one specimen an ORU^R01 carries."""

    specimen_id: str  # ORC-3 / OBR-3 filler order number, SPM-2 (v2.5+)
    test_code: str  # OBR-4.1 universal service identifier
    test_name: str = ""  # OBR-4.2
    coding_system: str = "L"  # OBR-4.3, "L" = local code
    placer_order_number: str = ""  # ORC-2 / OBR-2, the HIS order number
    observation_time: str = ""  # OBR-7
    result_status: str = "F"  # OBR-25, table 0123
    specimen_type: str = ""  # SPM-4 (v2.5+) or OBR-15 (older), table 0487 / 0070


@dataclass(frozen=True, slots=True)
class OruObservation:
    """One OBX: a result value with its code, units, range, flags, status and analyzer."""

    code: str  # OBX-3.1
    value: str  # OBX-5
    name: str = ""  # OBX-3.2
    coding_system: str = "L"  # OBX-3.3
    value_type: str = ""  # OBX-2: NM or ST; '' = NM when the value is a plain number
    units: str = ""  # OBX-6.1
    reference_range: str = ""  # OBX-7
    abnormal_flags: tuple[str, ...] = ()  # OBX-8, repeated
    result_status: str = "F"  # OBX-11, table 0085
    observation_time: str = ""  # OBX-14
    equipment_id: str = ""  # OBX-18.1, the analyzer instance (serial number)
    equipment_namespace: str = ""  # OBX-18.2, e.g. the analyzer model
    sub_id: str = ""  # OBX-4


@dataclass(frozen=True, slots=True)
class QueryOrder:
    """One order returned to an analyzer's host query."""

    test_code: str  # OBR-4.1
    test_name: str = ""  # OBR-4.2
    coding_system: str = "L"  # OBR-4.3
    placer_order_number: str = ""  # ORC-2 / OBR-2
    priority: str = "R"  # TQ1-9, table 0485: R routine, S stat
    specimen_type: str = "ORH"  # SPM-4, table 0487; ORH "other" when unknown
    ordered_at: str = ""  # ORC-9


def _msh(
    sending: str,
    receiving: str,
    timestamp: str,
    message_type: str,
    control_id: str,
    processing_id: str,
    version: str,
    tail: Sequence[str] = (),
) -> str:
    """MSH from already-encoded MSH-3|4 and MSH-5|6 pairs (``sending``, ``receiving``)."""
    return _segment(
        "MSH",
        (
            _MSH_2,
            sending,
            receiving,
            escape(timestamp),
            "",
            message_type,
            escape(control_id),
            escape(processing_id),
            escape(version),
            *tail,
        ),
    )


def _encode(segments: Iterable[str], encoding: str) -> bytes:
    text = "\r".join(segments) + "\r"
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise CodecError(
            f"{text[exc.start]!r} cannot be encoded as {encoding}", where=f"character {exc.start}"
        ) from exc
    except LookupError as exc:
        raise CodecError(f"unknown encoding {encoding!r}", where="encoding") from exc


def _reencode_field(segment: Segment, field: int) -> str:
    """A field of a parsed message rewritten with the standard delimiters and escapes."""
    enc, charset = segment.encoding_chars, segment.charset

    def split(value: str, sep: str) -> list[str]:
        return value.split(sep) if sep else [value]

    return "~".join(
        "^".join(
            "&".join(escape(unescape(sub, enc, charset)) for sub in split(comp, enc.subcomponent))
            for comp in split(rep, enc.component)
        )
        for rep in split(segment.field(field), enc.repetition)
    )


def build_ack(
    original: Hl7Message,
    code: str,
    text: str = "",
    *,
    control_id: str,
    now_timestamp: str,
    sending_application: str | None = None,
    sending_facility: str | None = None,
    error: AckError | None = None,
    encoding: str = "utf-8",
) -> bytes:
    """Acknowledge ``original`` with AA, AE or AR (or CA/CE/CR in enhanced mode).

    MSH-3/4 default to the original's MSH-5/6 (we answer as the addressee); MSH-5/6 are the
    original's MSH-3/4. MSA-2 echoes the original's control ID.
    """
    if code not in ACK_CODES:
        raise LocalProtocolError(f"unknown acknowledgment code {code!r}")
    msh = original.msh
    version = original.version or "2.5.1"
    ours = (
        _reencode_field(msh, 5) if sending_application is None else escape(sending_application),
        _reencode_field(msh, 6) if sending_facility is None else escape(sending_facility),
    )
    theirs = (_reencode_field(msh, 3), _reencode_field(msh, 4))
    message_type = _join("ACK", escape(original.trigger_event), "ACK")
    segments = [
        _msh(
            "|".join(ours),
            "|".join(theirs),
            now_timestamp,
            message_type,
            control_id,
            original.processing_id or "P",
            version,
        ),
        _segment("MSA", (code, escape(original.control_id), escape(text))),
    ]
    if error is not None:
        segments.append(_err(error, version))
    return _encode(segments, encoding)


def _err(error: AckError, version: str) -> str:
    """ERR in the v2.5+ layout (ERL, CWE, severity) or the older ELD layout."""
    field = "" if error.field is None else str(error.field)
    sequence = str(error.sequence) if error.segment else ""
    location = _join(escape(error.segment), sequence, field)
    if _version_tuple(version) >= (2, 5):
        error_code = _join(escape(error.code), escape(error.text), "HL70357")
        return _segment(
            "ERR",
            ("", location, error_code, escape(error.severity), "", "", escape(error.diagnostic)),
        )
    # HL7 v2.3.1 §2.16.5: ERR-1 ELD = segment^sequence^field^code&text&table
    code = "&".join((escape(error.code), escape(error.text), "HL70357"))
    return _segment("ERR", ("^".join((escape(error.segment), sequence, field, code)),))


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)
    return tuple(int(p) for p in parts) or (0,)


def _pid(patient: OruPatient) -> str:
    patient_id = _join(
        escape(patient.patient_id), "", "", escape(patient.id_authority), escape(patient.id_type)
    )
    name = _join(escape(patient.family_name), escape(patient.given_name))
    return _segment(
        "PID",
        ("1", "", patient_id, "", name, "", escape(patient.birth_date), escape(patient.sex)),
    )


def build_oru_r01(
    header: Hl7Header,
    patient: OruPatient | None,
    order: OruOrder,
    observations: Sequence[OruObservation],
    *,
    encoding: str = "utf-8",
) -> bytes:
    """One ORU^R01 with the results of one specimen (see the module docstring)."""
    if header.version not in ORU_VERSIONS:
        raise LocalProtocolError(f"ORU^R01 version {header.version!r} not in {ORU_VERSIONS}")
    modern = _version_tuple(header.version) >= (2, 5)
    segments = [_header_msh(header, "ORU^R01^ORU_R01")]
    if patient is not None:
        segments.append(_pid(patient))
    placer, filler = escape(order.placer_order_number), escape(order.specimen_id)
    segments.append(_segment("ORC", ("RE", placer, filler)))
    service = _join(escape(order.test_code), escape(order.test_name), escape(order.coding_system))
    obr = ["1", placer, filler, service, "", "", escape(order.observation_time)]
    obr += [""] * 7 + ["" if modern else escape(order.specimen_type)]  # OBR-15 before v2.5
    obr += [""] * 9 + [escape(order.result_status)]  # OBR-25
    segments.append(_segment("OBR", obr))
    legacy = header.version == "2.3.1"
    segments.extend(_obx(index, obs, legacy) for index, obs in enumerate(observations, 1))
    if modern and order.specimen_type:
        segments.append(_segment("SPM", ("1", filler, "", escape(order.specimen_type))))
    return _encode(segments, encoding)


def _header_msh(header: Hl7Header, message_type: str) -> str:
    tail = ["", "", escape(header.accept_ack_type), escape(header.application_ack_type)]
    tail += ["", escape(header.character_set)]
    return _msh(
        f"{escape(header.sending_application)}|{escape(header.sending_facility)}",
        f"{escape(header.receiving_application)}|{escape(header.receiving_facility)}",
        header.timestamp,
        message_type,
        header.control_id,
        header.processing_id,
        header.version,
        tail,
    )


def _obx(index: int, obs: OruObservation, legacy: bool) -> str:
    """One OBX; ``legacy`` is v2.3.1: OBX-4 required (hl7apy's 2.3.1 tables), no OBX-18."""
    value_type = obs.value_type or ("NM" if _NUMERIC.match(obs.value) else "ST")
    if value_type == "NM" and obs.value and not _NUMERIC.match(obs.value):
        raise CodecError(f"NM value {obs.value!r} is not a number", where=f"OBX {index}-5")
    ident = _join(escape(obs.code), escape(obs.name), escape(obs.coding_system))
    equipment = "" if legacy else _join(escape(obs.equipment_id), escape(obs.equipment_namespace))
    sub_id = escape(obs.sub_id) or ("1" if legacy else "")
    return _segment(
        "OBX",
        (
            str(index),
            value_type,  # required in v2.3.1 even without a value
            ident,
            sub_id,
            escape(obs.value),
            escape(obs.units),
            escape(obs.reference_range),
            "~".join(escape(flag) for flag in obs.abnormal_flags),
            "",
            "",
            escape(obs.result_status),
            "",
            "",
            escape(obs.observation_time),
            "",
            "",
            "",
            equipment,
        ),
    )


def build_query_response(
    query: Hl7Message,
    orders: Sequence[QueryOrder],
    *,
    control_id: str,
    now_timestamp: str,
    patient: OruPatient | None = None,
    specimen_id: str | None = None,
    sending_application: str | None = None,
    sending_facility: str | None = None,
    encoding: str = "utf-8",
) -> bytes:
    """Reply to a host query with its orders, or with QAK-2 "NF" when there are none.

    ``specimen_id`` defaults to QPD-4.1, where the GeneXpert Z03 query puts it. The reply
    keeps the query's version (GeneXpert: 2.5).
    """
    qpd = query.segment("QPD")
    if qpd is None:
        raise CodecError("a host query must have a QPD segment", where="QPD")
    msh = query.msh
    ours = (
        _reencode_field(msh, 5) if sending_application is None else escape(sending_application),
        _reencode_field(msh, 6) if sending_facility is None else escape(sending_facility),
    )
    theirs = (_reencode_field(msh, 3), _reencode_field(msh, 4))
    echoed_qpd = [_reencode_field(qpd, n) for n in range(1, len(qpd) + 1)]
    segments = [
        _msh(
            "|".join(ours),
            "|".join(theirs),
            now_timestamp,
            "RSP^K11^RSP_K11",
            control_id,
            query.processing_id or "P",
            query.version or "2.5",
        ),
        _segment("MSA", ("AA", escape(query.control_id))),
        _segment("QAK", (echoed_qpd[1], "OK" if orders else "NF", echoed_qpd[0])),
        _segment("QPD", echoed_qpd),
    ]
    if orders:
        if patient is not None:
            segments.append(_pid(patient))
        specimen = escape(qpd.get(4) if specimen_id is None else specimen_id)
        for index, order in enumerate(orders, 1):
            segments.extend(_query_order(index, order, specimen))
    return _encode(segments, encoding)


def _query_order(index: int, order: QueryOrder, specimen: str) -> list[str]:
    placer = escape(order.placer_order_number)
    service = _join(escape(order.test_code), escape(order.test_name), escape(order.coding_system))
    orc = ("NW", placer, "", "", "", "", "", "", escape(order.ordered_at))
    return [
        _segment("ORC", orc),
        _segment("OBR", (str(index), placer, "", service)),
        _segment("TQ1", ("1", "", "", "", "", "", "", "", escape(order.priority))),
        _segment("SPM", (str(index), specimen, "", escape(order.specimen_type))),
    ]
