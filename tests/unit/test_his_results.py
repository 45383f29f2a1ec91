"""Outbound results (ORU^R01 per specimen or per order) and the HIS's ACK.

Every ORU^R01 built here is checked with hl7apy's strict validation (lisgw.hl7.apy.validate)
for v2.5.1 and v2.3.1, and read back with the fast parser or ``lisgw decode``. The results and
names are synthetic (invented Vietnamese, French and German names), no patient data.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.decode import decode_capture
from lisgw.drivers.mapping import TestCodeMap
from lisgw.errors import CodecError, LocalProtocolError
from lisgw.his.ack import AckOutcome, read_ack
from lisgw.his.profile import HisProfile
from lisgw.his.results import (
    CONTROL_ID_LENGTH,
    build_result_message,
    control_id_for,
    delivery_groups,
    group_placer,
    hl7_timestamp,
)
from lisgw.his.types import HisOrder, OrderedTest, RoutedResult
from lisgw.hl7 import apy
from lisgw.hl7.build import AckError, build_ack
from lisgw.hl7.message import Hl7Message, Segment, parse_message
from lisgw.hl7.mllp import frame
from lisgw.model import Kind, NormalizedMessage, Protocol, Result, Specimen
from lisgw.routing import OpenOrder, RoutingConfig, route

CONFIG = Path(__file__).resolve().parents[2] / "config" / "his"
V251 = HisProfile.load(CONFIG / "hl7-v251.yaml")
V231 = HisProfile.load(CONFIG / "hl7-v231.yaml")
NOW = "20260102120000"
CODES = TestCodeMap.from_dict(
    {"demo": {"GLU": {"his": "CHEM-GLU", "loinc": "2345-7"}, "NA": "CHEM-NA"}}
)
GLU = Result(
    "GLU",
    "5.4",
    test_name="Glucose",
    units="mmol/L",
    reference_range="3.9-5.8",
    flags="N",
    status="F",
    completed_at="2026-01-02T10:05:00+07:00",
    flag_meanings=("normal",),
    status_meaning="final",
)
NA = Result(
    "NA",
    "151",
    units="mmol/L",
    reference_range="135-145",
    flags="H",
    status="F",
    completed_at="2026-01-02T10:00:00+07:00",
    flag_meanings=("high",),
    status_meaning="final",
)
ODD = Result("ODD", "positive", units="", flags="W\\X", status="R", completed_at="00000000000000")
ORDERS = {
    "BC-1": [
        OpenOrder("ORD-1", "BC-1", "CHEM-GLU", "GLU", "an-1"),
        OpenOrder("ORD-2", "BC-1", "CHEM-NA", "NA", "an-1"),
    ]
}
# name as the HIS sent it, PID-5.1/5.2 when it fits, PID-5.1/5.2 in ISO-8859-1
NAMES = {
    "vietnamese": (
        "Nguyễn^Thị Kim Tiến",
        ("Nguyễn", "Thị Kim Tiến"),
        ("Nguyen", "Thi Kim Tien"),
    ),
    "french": (
        "Lefèvre^Françoise^Élodie",
        ("Lefèvre", "Françoise Élodie"),
        ("Lefèvre", "Françoise Élodie"),
    ),
    "german": ("Müller^Jürgen", ("Müller", "Jürgen"), ("Müller", "Jürgen")),
}


def routed(*results: Result, sample: str = "BC-1", qc: bool = False) -> tuple[RoutedResult, ...]:
    message = NormalizedMessage(
        Protocol.ASTM, Kind.RESULTS, specimens=(Specimen(sample, qc, results),), driver="demo@1"
    )
    outcome = route(
        message,
        connection="an-1",
        orders=ORDERS,
        codes=CODES,
        known=set(),
        config=RoutingConfig(send_unsolicited=True),
    )
    return outcome.results


def his_order(name: str = "Nguyễn^Thị Kim Tiến", placer: str = "ORD-1") -> HisOrder:
    tests = (OrderedTest("CHEM-GLU", "Glucose"), OrderedTest("CHEM-NA", "Sodium"))
    return HisOrder("new", placer, "", "BC-1", "PAT-1", name, tests)


def build(
    results: tuple[RoutedResult, ...],
    order: HisOrder | None,
    profile: HisProfile = V251,
    now: str = NOW,
) -> bytes:
    return build_result_message(results, order, profile, analyzer="an-1", now_timestamp=now)


def read(data: bytes, profile: HisProfile = V251) -> Hl7Message:
    return parse_message(data, encoding=profile.encoding)


def seg(message: Hl7Message, name: str) -> Segment:
    found = message.segment(name)
    assert found is not None, name
    return found


# Validation with hl7apy, both versions, names in UTF-8 and ISO-8859-1.


@pytest.mark.parametrize("version", ["2.5.1", "2.3.1"])
@pytest.mark.parametrize("encoding", ["utf-8", "iso-8859-1"])
@pytest.mark.parametrize("who", sorted(NAMES))
def test_oru_validates_with_unicode_names(version: str, encoding: str, who: str) -> None:
    name, fits, latin_1 = NAMES[who]
    profile = HisProfile.from_dict({"version": version, "encoding": encoding})
    data = build(routed(GLU, NA), his_order(name), profile)
    apy.validate(data, encoding)
    pid = seg(read(data, profile), "PID")
    if encoding == "utf-8":
        # Everything fits: the name goes as the HIS sent it (XPN.3 joins the given names).
        assert (pid.get(5, 1), pid.get(5, 2)) == fits
        assert fits[0].encode(encoding) in data
    else:
        # French and German fit ISO-8859-1 and go as they are; Vietnamese does not and is
        # transliterated (unencodable: transliterate; "error" raises, see below).
        assert (pid.get(5, 1), pid.get(5, 2)) == latin_1
        assert latin_1[0].encode(encoding) in data
    msh = seg(read(data, profile), "MSH")
    assert msh.get(18) == {"utf-8": "UNICODE UTF-8", "iso-8859-1": "8859/1"}[encoding]


def test_names_that_do_not_fit_raise_when_the_profile_says_error() -> None:
    strict = HisProfile.from_dict(
        {"version": "2.3.1", "encoding": "iso-8859-1", "unencodable": "error"}
    )
    with pytest.raises(CodecError, match="cannot be encoded as iso8859-1"):
        build(routed(GLU), his_order("Nguyễn^Thị Kim Tiến"), strict)
    apy.validate(build(routed(GLU), his_order("Müller^Jürgen"), strict), "iso-8859-1")


def test_values_that_do_not_fit_are_never_transliterated() -> None:
    ascii_profile = HisProfile.from_dict({"version": "2.5.1", "encoding": "ascii"})
    micro = replace(GLU, units="µmol/L")
    with pytest.raises(CodecError, match="cannot be encoded as ascii"):
        build(routed(micro), his_order("Müller^Jürgen"), ascii_profile)
    at_least = replace(GLU, value="≥ 5")
    with pytest.raises(CodecError):
        build(routed(at_least), None, V231)
    data = build(routed(micro), his_order("Nguyễn^Thị Kim Tiến"), V231)  # µ is Latin-1
    assert seg(read(data, V231), "OBX").get(6) == "µmol/L"
    assert seg(read(data, V231), "PID").get(5) == "Nguyen"


# What goes where.


def test_segments_carry_order_patient_and_results_v251() -> None:
    data = build(routed(GLU, NA, ODD), his_order())
    apy.validate(data)
    message = read(data)
    msh, pid, orc, obr = (seg(message, n) for n in ("MSH", "PID", "ORC", "OBR"))
    assert (msh.get(3), msh.get(4), msh.get(5), msh.get(6)) == ("LISGW", "LAB", "HIS", "HOSPITAL")
    assert (msh.get(7), message.message_type, msh.get(12)) == (NOW, "ORU^R01", "2.5.1")
    assert (pid.get(3), pid.get(5, 1), pid.get(5, 2)) == ("PAT-1", "Nguyễn", "Thị Kim Tiến")
    assert (orc.get(1), orc.get(2), orc.get(3)) == ("RE", "ORD-1", "BC-1")
    assert (obr.get(2), obr.get(3), obr.get(4, 1), obr.get(4, 3)) == (
        "ORD-1",
        "BC-1",
        "CHEM-GLU",
        "L",
    )
    assert (obr.get(7), obr.get(25)) == ("20260102100000+0700", "F")
    glu, na, odd = message.segments("OBX")
    assert [glu.get(n) for n in (2, 5, 6, 7, 8, 11, 14, 18)] == [
        "NM",
        "5.4",
        "mmol/L",
        "3.9-5.8",
        "N",
        "F",
        "20260102100500+0700",
        "an-1",
    ]
    assert (glu.get(3, 1), glu.get(3, 2), glu.get(3, 3)) == ("CHEM-GLU", "Glucose", "L")
    assert (na.get(3, 1), na.get(8), na.get(14)) == ("CHEM-NA", "H", "20260102100000+0700")
    # Unmapped: the analyzer's code, the local coding system; raw flags; no false time.
    assert (odd.get(2), odd.get(3, 1), odd.get(3, 3), odd.get(5)) == (
        "ST",
        "ODD",
        "99LIS",
        "positive",
    )
    assert (odd.repeats(8), odd.get(11), odd.get(14)) == (["W", "X"], "F", "")


def test_v231_has_no_obx18_and_a_sub_id() -> None:
    data = build(routed(GLU, NA), his_order("Müller^Jürgen"), V231)
    apy.validate(data, "iso-8859-1")
    obx = read(data, V231).segments("OBX")
    assert [(o.get(4), o.get(18)) for o in obx] == [("1", ""), ("1", "")]
    assert "Müller".encode("iso-8859-1") in data


def test_without_an_order_there_is_no_pid_and_the_placer_comes_from_the_results() -> None:
    results = routed(GLU)
    for profile in (V251, V231):
        data = build(results, None, profile)
        apy.validate(data, profile.encoding)
        message = read(data, profile)
        assert message.segment("PID") is None
        assert seg(message, "ORC").get(2) == "ORD-1"
        assert seg(message, "OBR").get(4, 1) == "CHEM-GLU"
    unsolicited = routed(replace(GLU, test="XYZ"), sample="BC-9")
    message = read(build(unsolicited, None))
    assert (seg(message, "ORC").get(2), seg(message, "OBR").get(4, 1)) == ("", "XYZ")
    nameless = replace(his_order(), patient_name="")
    assert read(build(results, nameless)).segment("PID") is None


def test_status_mapping_and_corrections() -> None:
    corrected = replace(GLU, value="5.9", status="C", status_meaning="correction")
    preliminary = replace(NA, status="P", status_meaning="preliminary")
    data = build(routed(corrected, preliminary), his_order())
    apy.validate(data)
    message = read(data)
    assert [o.get(11) for o in message.segments("OBX")] == ["C", "P"]
    assert seg(message, "OBR").get(25) == "C"


def test_the_result_message_reads_back_through_decode() -> None:
    results = routed(GLU, NA)
    (back,) = decode_capture(frame(build(results, his_order())))
    assert back.kind is Kind.RESULTS
    (specimen,) = back.specimens
    assert specimen.sample_id == "BC-1"
    assert [(r.test, r.value, r.units, r.reference_range) for r in specimen.results] == [
        ("CHEM-GLU", "5.4", "mmol/L", "3.9-5.8"),
        ("CHEM-NA", "151", "mmol/L", "135-145"),
    ]


# MSH-10 from the content identities.


def test_control_id_is_stable_for_the_same_content() -> None:
    results = routed(GLU, NA)
    first = seg(read(build(results, his_order())), "MSH").get(10)
    later = seg(read(build(results[::-1], his_order(), now="20260103000000")), "MSH").get(10)
    assert first == later == control_id_for(r.identity for r in results)
    assert re.fullmatch(r"[A-Z2-7]{20}", first)
    assert len(first) == CONTROL_ID_LENGTH  # MSH-10 is ST(20) in v2.3.1 and v2.5.1
    v231 = seg(read(build(results, his_order(), V231), V231), "MSH").get(10)
    assert v231 == first


def test_control_id_changes_for_a_correction_or_other_results() -> None:
    original = control_id_for(r.identity for r in routed(GLU, NA))
    corrected = replace(GLU, status="C", status_meaning="correction")
    assert control_id_for(r.identity for r in routed(corrected, NA)) != original
    assert control_id_for(r.identity for r in routed(GLU)) != original
    assert control_id_for(["a", "b"]) == control_id_for(["b", "a", "a"])


# Per specimen and per order.


def test_delivery_groups_per_specimen_and_per_order() -> None:
    first = routed(GLU, NA)
    other = routed(replace(GLU, value="6.0"), sample="BC-2")
    results = (*first, *other)
    specimens = delivery_groups(results, "specimen")
    assert [[r.sample_id for r in g] for g in specimens] == [["BC-1", "BC-1"], ["BC-2"]]
    per_order = delivery_groups(results, V251.results_per)
    assert per_order == specimens  # the shipped profiles send per specimen
    orders = delivery_groups(results, "order")
    assert [[(r.sample_id, r.order_placer) for r in g] for g in orders] == [
        [("BC-1", "ORD-1")],
        [("BC-1", "ORD-2")],
        [("BC-2", "")],
    ]
    assert [group_placer(g) for g in orders] == ["ORD-1", "ORD-2", ""]
    for group in orders:
        order = his_order(placer=group_placer(group)) if group_placer(group) else None
        apy.validate(build(group, order))
    with pytest.raises(LocalProtocolError, match="results per 'patient'"):
        delivery_groups(results, "patient")


def test_one_message_is_one_specimen() -> None:
    with pytest.raises(LocalProtocolError, match="at least one result"):
        build((), None)
    mixed = (*routed(GLU), *routed(NA, sample="BC-2"))
    with pytest.raises(LocalProtocolError, match="2 specimens"):
        build(mixed, None)


@pytest.mark.parametrize(
    ("iso", "hl7"),
    [
        ("2024-06-27T13:54:07", "20240627135407"),
        ("2024-06-27T13:54:07+02:00", "20240627135407+0200"),
        ("2024-06-27T13:54:07.123456Z", "20240627135407.1234+0000"),
        ("2024-06-27T13:54", "202406271354"),
        ("2024-06-27", "20240627"),
        ("00000000000000", ""),
        ("", ""),
        ("yesterday", ""),
    ],
)
def test_hl7_timestamp(iso: str, hl7: str) -> None:
    assert hl7_timestamp(iso) == hl7


_value_text = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    value=_value_text,
    units=_value_text,
    name=_value_text,
    version=st.sampled_from(["2.5.1", "2.3.1"]),
)
def test_any_text_builds_a_valid_oru_that_reads_back(
    value: str, units: str, name: str, version: str
) -> None:
    profile = HisProfile.plain(version)
    result = replace(GLU, value=value, units=units, test_name=name)
    data = build(routed(result), his_order(f"{name}^{name}"), profile)
    apy.validate(data)
    obx = seg(read(data, profile), "OBX")
    # The parser keeps what HL7 keeps: a value is trimmed only of what the analyzer's
    # driver would already have trimmed; line breaks travel as \X0D\ / \X0A\ escapes.
    assert (obx.get(5), obx.get(6)) == (value, units)


# The HIS's ACK.


def _ack(code: str, text: str = "", error: AckError | None = None, version: str = "2.5.1") -> bytes:
    profile = HisProfile.plain(version)
    original = read(build(routed(GLU), his_order("Müller^Jürgen"), profile), profile)
    return build_ack(original, code, text, control_id="ACK-1", now_timestamp=NOW, error=error)


def test_read_ack_echoes_the_control_id_and_the_reason() -> None:
    sent = control_id_for(r.identity for r in routed(GLU))
    assert read_ack(_ack("AA")) == AckOutcome("AA", sent, "")
    assert read_ack(_ack("AA")).accepted
    rejected = read_ack(_ack("AE", "unknown patient"))
    assert (rejected.code, rejected.text, rejected.accepted) == ("AE", "unknown patient", False)
    assert read_ack(_ack("CA")).accepted


@pytest.mark.parametrize("version", ["2.5.1", "2.3.1"])
def test_read_ack_takes_the_reason_from_err_when_msa3_is_empty(version: str) -> None:
    error = AckError(code="204", text="Unknown key identifier", segment="PID", field=3)
    outcome = read_ack(_ack("AR", error=error, version=version))
    assert (outcome.code, outcome.text) == ("AR", "Unknown key identifier")


def test_read_ack_refuses_what_is_not_an_ack() -> None:
    with pytest.raises(CodecError, match="ORU\\^R01 is not an acknowledgment"):
        read_ack(build(routed(GLU), None))
    with pytest.raises(CodecError, match="'ZZ' not in HL7 table 0008"):
        read_ack(b"MSH|^~\\&|HIS||LISGW||20260102||ACK|1|P|2.5.1\rMSA|ZZ|C-1\r")
    for junk in (b"", b"garbage", b"\xff\xfe"):
        with pytest.raises(CodecError):
            read_ack(junk)


def test_read_ack_tolerates_undecodable_reason_text() -> None:
    data = b"MSH|^~\\&|HIS||LISGW||20260102||ACK^R01^ACK|1|P|2.5.1\rMSA|AE|C-1|d\xe9j\xe0 vu\r"
    outcome = read_ack(data)
    assert (outcome.code, outcome.control_id) == ("AE", "C-1")
    assert outcome.text.startswith("d") and outcome.text.endswith(" vu")


def test_a_profile_built_by_hand_with_an_unknown_encoding_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="unknown encoding 'klingon'"):
        build(routed(GLU), his_order(), replace(V251, encoding="klingon"))


def test_hl7_now_is_utc_with_its_offset() -> None:
    from lisgw.his.results import hl7_now

    assert hl7_now(0.0) == "19700101000000+0000"
    assert hl7_now(1_700_000_000.9) == "20231114221320+0000"  # seconds truncated, not rounded
