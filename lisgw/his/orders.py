"""Inbound HIS orders: ORM^O01 and OML^O21 (new, cancel, change) read through a HIS profile.

Layer: protocol/domain (pure). Imports lisgw.hl7.message (the fast parser), lisgw.his and
lisgw.errors; no I/O, no clock, no logging. The HIS order listener commits the raw message,
calls ``parse_orders`` (or ``read_orders`` on a message it already parsed), stores the
orders, and only then acknowledges AA.

hl7apy is not used here: its tables make every member of ORM_O01's choice group
<OBR|RQD|RQ1|RXO|ODS|ODT> required, so its validator rejects every real ORM (see
tests/unit/test_hl7_orders.py).

Message structures read (HL7 v2.5.1 §4.4.1 ORM^O01, §4.4.6 OML^O21; same order in 2.3.1):
``MSH [PID [PV1]] {ORC [TQ1] [OBR [SPM]]}`` — other segments (NTE, OBX, DG1, SAC, TQ2 …)
are passed over. Each ORC opens an order group; the PID before it is its patient; an SPM
belongs to the OBR before it. Groups with the same order control, placer number, sample ID
and patient become one ``HisOrder`` whose tests are their OBR-4 codes (HISs send one
ORC/OBR pair per test, as in tests/unit/test_hl7_orders.py); several orders and specimens
per message give several ``HisOrder``.

Order control (ORC-1, HL7 table 0119): NW → "new"; CA (cancel request), DC (discontinue
request) → "cancel"; XO (change request), RP (replace request) → "change". A cancel may come
without OBR (the whole order); a new or changed order needs a sample ID and at least one test.

Errors: a message that is not an order message raises ``UnsupportedMessageError`` (the
listener answers AR: the message type is not supported here); any other problem — a
malformed message, an unknown order control, a missing placer number, sample ID or test
code — raises ``CodecError`` naming the place (the listener answers AE with that reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from lisgw.drivers.references import RefSpec
from lisgw.errors import CodecError
from lisgw.his.profile import HisProfile
from lisgw.his.types import HisOrder, OrderedTest
from lisgw.hl7.message import Hl7Message, Segment, parse_hl7_timestamp, parse_message

__all__ = [
    "ORDER_CONTROLS",
    "ORDER_MESSAGES",
    "UnsupportedMessageError",
    "parse_orders",
    "read_orders",
]

ORDER_MESSAGES = (("ORM", "O01"), ("OML", "O21"))
ORDER_CONTROLS = {"NW": "new", "CA": "cancel", "DC": "cancel", "XO": "change", "RP": "change"}


class UnsupportedMessageError(CodecError):
    """The message is valid HL7 but not an order message this listener takes (ACK AR)."""


@dataclass(slots=True)
class _Request:
    obr: Segment | None
    spm: Segment | None = None


@dataclass(slots=True)
class _Group:
    """One ORC and what belongs to it."""

    number: int
    orc: Segment
    patient: Segment | None
    visit: Segment | None
    timing: Segment | None = None
    requests: list[_Request] = field(default_factory=list)


def parse_orders(data: bytes, profile: HisProfile) -> list[HisOrder]:
    """The orders of one ORM^O01 or OML^O21 (one MLLP payload), in message order."""
    return read_orders(parse_message(data, encoding=profile.encoding), profile)


def read_orders(message: Hl7Message, profile: HisProfile) -> list[HisOrder]:
    """The orders of an already-parsed message (see the module docstring for errors)."""
    if (message.message_code, message.trigger_event) not in ORDER_MESSAGES:
        raise UnsupportedMessageError(
            f"{message.message_type or 'no message type'} is not an order message "
            "(ORM^O01, OML^O21)",
            where="MSH-9",
        )
    groups = _groups(message)
    if not groups:
        raise CodecError("no order (ORC) in the message", where="ORC")
    orders: list[HisOrder] = []
    for group in groups:
        for request in group.requests or [_Request(None)]:
            orders.append(_order(group, request, profile))
    return _merged(orders)


def _groups(message: Hl7Message) -> list[_Group]:
    groups: list[_Group] = []
    patient: Segment | None = None
    visit: Segment | None = None
    for segment in message.all_segments[1:]:
        name = segment.name
        if name == "PID":
            patient, visit = segment, None
        elif name == "PV1":
            visit = segment
        elif name == "ORC":
            groups.append(_Group(len(groups) + 1, segment, patient, visit))
        elif name == "OBR":
            if not groups:
                raise CodecError("OBR before any ORC", where="OBR")
            groups[-1].requests.append(_Request(segment))
        elif name == "TQ1" and groups and not groups[-1].requests:
            groups[-1].timing = groups[-1].timing or segment
        elif name == "SPM" and groups and groups[-1].requests:
            request = groups[-1].requests[-1]
            request.spm = request.spm or segment
    return groups


class _Context:
    """The segments an order group's references may name."""

    def __init__(self, group: _Group, request: _Request, id_type: str) -> None:
        self.segments: dict[str, Segment | None] = {
            "PID": group.patient,
            "PV1": group.visit,
            "ORC": group.orc,
            "TQ1": group.timing,
            "OBR": request.obr,
            "SPM": request.spm,
        }
        self.id_type = id_type

    def first(self, refs: Sequence[RefSpec]) -> str:
        """The first non-empty value the references give ('' when none does)."""
        for ref in refs:
            value = self.value(ref)
            if value:
                return value
        return ""

    def value(self, ref: RefSpec) -> str:
        segment = self.segments.get(ref.source)
        if segment is None:
            return ""
        repeat = 1
        if self.id_type and ref.source == "PID" and ref.field == 3:
            repeat = _repetition_of_type(segment, self.id_type)
            if repeat == 0:
                return ""
        component = ref.component or 1
        last = len(segment.components(ref.field, repeat)) if ref.first_from else component
        for position in range(component, max(component, last) + 1):
            value = segment.get(ref.field, position, repeat, ref.subcomponent or 1).strip()
            if value:
                return value
        return ""

    def name(self, refs: Sequence[RefSpec]) -> str:
        """XPN components family^given^middle…, escapes decoded, trailing empty ones dropped."""
        for ref in refs:
            segment = self.segments.get(ref.source)
            if segment is None:
                continue
            count = len(segment.components(ref.field))
            parts = [segment.get(ref.field, c).strip() for c in range(1, count + 1)]
            name = "^".join(parts).rstrip("^")
            if name:
                return name
        return ""


def _repetition_of_type(segment: Segment, id_type: str) -> int:
    """The 1-based PID-3 repetition whose identifier type (CX.5) is ``id_type``; 0 if none."""
    for repeat in range(1, len(segment.repeats(3)) + 1):
        if segment.get(3, 5, repeat).strip() == id_type:
            return repeat
    return 0


def _order(group: _Group, request: _Request, profile: HisProfile) -> HisOrder:
    fields = profile.orders
    context = _Context(group, request, fields.patient_id_type)
    where = f"order {group.number}"
    code = group.orc.get(1).strip().upper()
    control = ORDER_CONTROLS.get(code)
    if control is None:
        supported = ", ".join(ORDER_CONTROLS)
        raise CodecError(
            f"order control {code!r} not supported ({supported})", where=f"{where}: ORC-1"
        )
    placer = context.first(fields.placer)
    if not placer:
        raise CodecError(f"no placer order number at {_texts(fields.placer)}", where=where)
    tests: tuple[OrderedTest, ...] = ()
    if request.obr is not None:
        his_code = context.first(fields.test_code)
        if not his_code:
            raise CodecError(f"no test code at {_texts(fields.test_code)}", where=f"{where}: OBR")
        tests = (OrderedTest(his_code, context.first(fields.test_name)),)
    sample_id = context.first(fields.sample_id)
    if control != "cancel" and not sample_id:
        raise CodecError(f"no sample ID at {_texts(fields.sample_id)}", where=where)
    if control != "cancel" and not tests:
        raise CodecError(f"order {placer!r} has no test (no OBR)", where=where)
    return HisOrder(
        control=control,
        placer=placer,
        filler=context.first(fields.filler),
        sample_id=sample_id,
        patient_id=context.first(fields.patient_id),
        patient_name=context.name(fields.patient_name),
        tests=tests,
        priority=context.first(fields.priority),
        ordered_at=parse_hl7_timestamp(context.first(fields.ordered_at)),
    )


def _texts(refs: Sequence[RefSpec]) -> str:
    return ", ".join(ref.text for ref in refs)


def _merged(orders: list[HisOrder]) -> list[HisOrder]:
    """One order per (control, placer, sample ID, patient): its groups' tests, in order."""
    merged: dict[tuple[str, str, str, str], HisOrder] = {}
    for order in orders:
        key = (order.control, order.placer, order.sample_id, order.patient_id)
        first = merged.get(key)
        if first is None:
            merged[key] = order
            continue
        codes = {test.his_code for test in first.tests}
        tests = first.tests + tuple(t for t in order.tests if t.his_code not in codes)
        merged[key] = replace(
            first,
            tests=tests,
            filler=first.filler or order.filler,
            patient_name=first.patient_name or order.patient_name,
            priority=first.priority or order.priority,
            ordered_at=first.ordered_at or order.ordered_at,
        )
    return list(merged.values())
