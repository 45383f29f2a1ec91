"""HL7 replies to an analyzer's host query (QBP): the orders of the asked sample, or none.

Layer: domain (pure, sans-IO). Builds on ``lisgw.hl7.build.build_query_response`` (RSP^K11
segment pattern response, HL7 v2.5.1 §5.5; validated by hl7apy against
``lisgw.hl7.apy``'s ``RSP_K11`` profile): MSH, MSA AA, QAK (``OK`` / ``NF`` "no data
found"), the QPD echoed, then per test ORC ``NW``, OBR (OBR-4 the analyzer's code), TQ1
(priority) and SPM (the specimen ID).

Reply forms (``query.reply``):

* ``hl7-rsp-k11`` — the standard reply; a PID when the order names a patient.
* ``hl7-qbp-z03-rsp`` — the GeneXpert reply to its ``QBP^Z03``: the same segments, with a
  PID always heading the orders (the GeneXpert's response groups orders under a patient;
  an order without patient ID gets the sample ID there).

Patient names go through the driver's charset rules (``outgoing_text``). A QRY (``hl7-qry``
form, QRD-based) has no QPD to answer with: ``build_hl7_reply`` raises CodecError for it, and
``lisgw.orders_out.hl7_qry`` answers it (DSR^Q03 / QCK^Q02).
"""

from __future__ import annotations

from lisgw.drivers.compiled import CompiledProfile
from lisgw.errors import ConfigError
from lisgw.hl7.build import OruPatient, QueryOrder, build_query_response
from lisgw.hl7.message import Hl7Message
from lisgw.orders_out.model import SampleOrders, astm_priority

__all__ = ["HL7_REPLIES", "build_hl7_reply"]

HL7_REPLIES = frozenset({"hl7-rsp-k11", "hl7-qbp-z03-rsp"})


def build_hl7_reply(
    profile: CompiledProfile,
    query: Hl7Message,
    sample: SampleOrders,
    *,
    control_id: str,
    now_timestamp: str,
    encoding: str = "utf-8",
) -> bytes:
    """The reply to ``query`` with ``sample``'s tests (QAK ``NF`` when it has none)."""
    reply = profile.query.reply or "hl7-rsp-k11"
    if reply not in HL7_REPLIES:
        raise ConfigError([f"driver {profile.key}: query.reply {reply!r} is not an HL7 reply"])
    orders = [
        QueryOrder(
            test_code=test.code,
            placer_order_number=sample.placer,
            priority=astm_priority(sample.priority),
            ordered_at=sample.ordered_at if sample.ordered_at.isdigit() else "",
        )
        for test in sample.tests
    ]
    return build_query_response(
        query,
        orders,
        control_id=control_id,
        now_timestamp=now_timestamp,
        patient=_patient(profile, sample, always=reply == "hl7-qbp-z03-rsp"),
        specimen_id=sample.sample_id,
        encoding=encoding,
    )


def _patient(profile: CompiledProfile, sample: SampleOrders, *, always: bool) -> OruPatient | None:
    if not sample.tests or (not sample.patient_id and not always):
        return None
    family, _, given = sample.patient_name.partition("^")
    return OruPatient(
        patient_id=profile.outgoing_text(sample.patient_id or sample.sample_id),
        family_name=profile.outgoing_text(family) or "UNKNOWN",
        given_name=profile.outgoing_text(given.split("^")[0]),
    )
