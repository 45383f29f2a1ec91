"""Generic normalization: decoded ASTM messages and HL7 messages → ``lisgw.model``.

Layer: domain (pure). These are the rules that work on analyzers nobody wrote a profile for;
the driver catalogue (issue 4) refines them per analyzer family. Each rule names the field it
reads, in the numbering of the standard (E1394 "O.3" = third field of the O record; HL7
"OBX-5").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from lisgw.astm.records import AstmMessage, Record
from lisgw.hl7.message import Hl7Message, Segment, parse_hl7_timestamp
from lisgw.model import Kind, NormalizedMessage, Protocol, Query, Result, Specimen

# QC samples are often recognised by their ID alone (Sysmex `QC-82151403`).
_QC_ID = re.compile(r"^(QC|CTRL|CONTROL)[-_ ]?", re.IGNORECASE)
_TIMESTAMP = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(?:(\d{2}))?)?$")


def astm_timestamp(text: str) -> str:
    """E1394 §6.6.2 YYYYMMDDHHMMSS → ISO 8601 without a zone (analyzers send none).

    Anything else (zero timestamps, junk) is returned trimmed, as sent.
    """
    text = text.strip()
    match = _TIMESTAMP.match(text)
    if not match or text.strip("0") == "":
        return text
    year, month, day, hour, minute, second = match.groups()
    date = f"{year}-{month}-{day}"
    if hour is None:
        return date
    return f"{date}T{hour}:{minute}:{second or '00'}"


def _first_nonempty(values: Iterable[str]) -> str:
    for value in values:
        value = value.strip()
        if value:
            return value
    return ""


def composite_value(components: Sequence[str], separator: str = "^") -> str:
    """A value as sent, trimmed, by one presentation rule for composite values.

    Trailing empty components are dropped; a value with one non-empty component is that
    component alone (GeneXpert `^0.0` → `0.0`, MAGLUMI `1.08^` → `1.08`); otherwise the
    components are re-joined (`-1^0.282`, Bio-Rad `A^NEG^NEG^ccee^K-^NEG`).
    """
    parts = [c.strip() for c in components]
    while parts and not parts[-1]:
        parts.pop()
    nonempty = [p for p in parts if p]
    if len(nonempty) == 1:
        return nonempty[0]
    return separator.join(parts)


def astm_test_code(record: Record, field: int) -> str:
    """Analyzer test code from a universal test ID (E1394 §6.6.1: `^^^local code^…`).

    The first non-empty component from the 4th on: `^^^WBC^804-5^1` → `WBC`.
    """
    return _first_nonempty(record.repeats(field)[0][3:]) if record.repeats(field) else ""


def astm_test_codes(record: Record, field: int) -> tuple[str, ...]:
    codes = (_first_nonempty(rep[3:]) for rep in record.repeats(field))
    return tuple(code for code in codes if code)


def astm_sample_id(order: Record) -> str:
    """Specimen ID from an O record: O.3 (specimen ID), else O.4 (instrument specimen ID).

    O.4 often carries rack/position components around the ID; Sysmex sends four,
    `rack^tube^     sample no.^attribute`, so there the third component wins.
    """
    o3 = order.repeats(3)
    if o3:
        found = _first_nonempty(o3[0])
        if found:
            return found
    o4 = order.repeats(4)
    if not o4:
        return ""
    components = o4[0]
    if len(components) == 4 and components[2].strip():
        return components[2].strip()
    return _first_nonempty(components)


def astm_query_ids(query: Record) -> tuple[str, ...]:
    """Sample IDs asked for in a Q record's starting range (Q.3), one per repeat.

    E1394 §12.1.3: patient ID ^ specimen ID; Roche TSREQ puts the sample ID third
    (`^^0000000387^587^0^2^^S1^SC`, rack and position after it).
    """
    ids: list[str] = []
    for components in query.repeats(3):
        padded = [c.strip() for c in components] + ["", "", ""]
        found = padded[1] or padded[2] or _first_nonempty(components)
        if found and found.upper() != "ALL":
            ids.append(found)
    return tuple(ids)


def _astm_result(record: Record) -> Result:
    return Result(
        test=astm_test_code(record, 3),
        value=composite_value(record.repeats(4)[0]) if record.repeats(4) else "",
        units=record.field_text(5).strip(),
        reference_range=record.field_text(6).strip(),
        flags=record.field_text(7).strip(),
        status=record.component(9).strip(),
        completed_at=astm_timestamp(record.component(13)),
    )


class _SpecimenBuilder:
    def __init__(self, order: Record | None) -> None:
        self.sample_id = astm_sample_id(order) if order is not None else ""
        self.qc = order is not None and order.component(12).strip().upper() == "Q"
        self.qc = self.qc or bool(_QC_ID.match(self.sample_id))
        self.tests = astm_test_codes(order, 5) if order is not None else ()
        self.results: list[Result] = []

    def build(self, with_tests: bool) -> Specimen:
        return Specimen(
            sample_id=self.sample_id,
            qc=self.qc,
            results=tuple(self.results),
            tests=self.tests if with_tests else (),
        )


def normalize_astm(message: AstmMessage, *, offset: int = 0) -> NormalizedMessage:
    """One E1394 message (H … L) → a NormalizedMessage, by the generic rules."""
    warnings = list(message.warnings)
    header = message.records[0] if message.records and message.records[0].type == "H" else None
    sender = header.component(5).strip() if header is not None else ""
    specimens: list[_SpecimenBuilder] = []
    query_ids: list[str] = []
    has_query = has_results = False
    for record in message.records:
        if record.type == "O":
            specimens.append(_SpecimenBuilder(record))
        elif record.type == "R":
            has_results = True
            if not specimens:
                warnings.append("R record before any O record: sample ID unknown")
                specimens.append(_SpecimenBuilder(None))
            specimens[-1].results.append(_astm_result(record))
        elif record.type == "Q":
            has_query = True
            query_ids.extend(astm_query_ids(record))
    if not message.terminated:
        warnings.append("message has no L (terminator) record")
    kind = _astm_kind(has_results, has_query, bool(specimens))
    return NormalizedMessage(
        protocol=Protocol.ASTM,
        kind=kind,
        sender=sender,
        specimens=tuple(s.build(kind is Kind.ORDERS) for s in specimens),
        query=Query(sample_ids=tuple(query_ids)) if has_query else None,
        warnings=tuple(warnings),
        offset=offset,
    )


def _astm_kind(has_results: bool, has_query: bool, has_orders: bool) -> Kind:
    if has_results:
        return Kind.RESULTS
    if has_query:
        return Kind.QUERY
    if has_orders:
        return Kind.ORDERS
    return Kind.UNKNOWN


_HL7_RESULT_TYPES = {"ORU", "OUL"}
_HL7_ORDER_TYPES = {"ORM", "OML"}


def _hl7_result(obx: Segment) -> Result:
    # OBX-3.1 whole: GeneXpert codes it in subcomponents only (`CTNG&CT`).
    code = [*obx.components(3), "", ""]
    return Result(
        test=code[0].strip(),
        test_name=code[1].strip(),
        value=composite_value(obx.components(5)),
        units=obx.get(6).strip(),
        reference_range=obx.get(7).strip(),
        flags="~".join(r.strip() for r in obx.repeats(8) if r.strip()),
        status=obx.get(11).strip(),
        completed_at=parse_hl7_timestamp(obx.get(14) or obx.get(19)),
    )


def _hl7_sample_number(segment: Segment) -> str:
    """SPM-2 for a specimen segment; OBR-3 (filler number), else OBR-2 (placer) for an OBR."""
    if segment.name == "SPM":
        return segment.get(2).strip()
    return segment.get(3).strip() or segment.get(2).strip()


def _hl7_specimens(message: Hl7Message) -> list[Specimen]:
    """Group OBX under their specimen.

    Several SPM (OUL^R22 batches): each SPM opens a specimen. One SPM (GeneXpert ORU^R30 puts
    it after the OBX; MAGLUMI before several OBR/OBX pairs): every OBX is that specimen's.
    No SPM (ORU^R01): an OBR naming a new sample number opens a specimen.
    """
    spm = message.segments("SPM")
    opener = "SPM" if len(spm) > 1 else ("" if spm else "OBR")
    default_id = _hl7_sample_number(spm[0]) if len(spm) == 1 else ""
    groups: list[tuple[str, list[Result]]] = []
    for segment in message.all_segments:
        if segment.name == opener:
            sample_id = _hl7_sample_number(segment)
            if not groups or segment.name == "SPM" or (sample_id and sample_id != groups[-1][0]):
                groups.append((sample_id, []))
        elif segment.name == "OBX":
            if not groups:
                groups.append((default_id, []))
            groups[-1][1].append(_hl7_result(segment))
    return [
        Specimen(sample_id=sid, qc=bool(_QC_ID.match(sid)), results=tuple(results))
        for sid, results in groups
    ]


def normalize_hl7(message: Hl7Message, *, offset: int = 0) -> NormalizedMessage:
    """One HL7 v2 message → a NormalizedMessage, by the generic rules."""
    msh = message.segment("MSH")
    sender = msh.get(3).strip() if msh is not None else ""
    event_type = message.message_type.split("^")[0]
    warnings: list[str] = []
    qc = message.processing_id.upper().startswith("Q") if msh is not None else False
    if event_type in _HL7_RESULT_TYPES:
        specimens = _hl7_specimens(message)
        if qc:
            specimens = [Specimen(s.sample_id, True, s.results, s.tests) for s in specimens]
        return NormalizedMessage(
            protocol=Protocol.HL7,
            kind=Kind.RESULTS,
            sender=sender,
            specimens=tuple(specimens),
            warnings=tuple(warnings),
            offset=offset,
        )
    if event_type in {"QBP", "QRY"}:
        qpd = message.segment("QPD")
        ids = tuple(i for i in [qpd.get(4).strip()] if i) if qpd is not None else ()
        tag = qpd.get(2).strip() if qpd is not None else ""
        return NormalizedMessage(
            protocol=Protocol.HL7,
            kind=Kind.QUERY,
            sender=sender,
            query=Query(sample_ids=ids, query_tag=tag),
            offset=offset,
        )
    if event_type == "QCN":
        qid = message.segment("QID")
        tag = qid.get(1).strip() if qid is not None else ""
        return NormalizedMessage(
            protocol=Protocol.HL7,
            kind=Kind.QUERY_CANCEL,
            sender=sender,
            query=Query(query_tag=tag),
            offset=offset,
        )
    if event_type in _HL7_ORDER_TYPES:
        return NormalizedMessage(
            protocol=Protocol.HL7,
            kind=Kind.ORDERS,
            sender=sender,
            specimens=tuple(_hl7_order_specimens(message)),
            offset=offset,
        )
    return NormalizedMessage(
        protocol=Protocol.HL7,
        kind=Kind.UNKNOWN,
        sender=sender,
        warnings=(f"message type {message.message_type or '(none)'} is not handled",),
        offset=offset,
    )


def _hl7_order_specimens(message: Hl7Message) -> list[Specimen]:
    specimens: list[Specimen] = []
    for obr in message.segments("OBR"):
        sample_id = obr.get(3).strip() or obr.get(2).strip()
        test = obr.get(4, 1).strip()
        specimens.append(Specimen(sample_id=sample_id, tests=(test,) if test else ()))
    return specimens
