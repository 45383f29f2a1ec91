"""HL7 builders: escaping, ACK, ORU^R01, host-query reply — every output strictly validated by
hl7apy (lisgw.hl7.apy.validate) and read back with the fast parser.

Inputs are synthetic; the GeneXpert QBP^Z03 used for the reply is built here in the layout of
the corpus capture hl7/cepheid_genexpert/cepheid_genexpert_hl7_qbp_z03_host_query.bin.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.errors import CodecError, LocalProtocolError
from lisgw.hl7 import apy
from lisgw.hl7.build import (
    ORU_VERSIONS,
    AckError,
    Hl7Header,
    OruObservation,
    OruOrder,
    OruPatient,
    QueryOrder,
    build_ack,
    build_oru_r01,
    build_query_response,
    escape,
)
from lisgw.hl7.message import Hl7Message, Segment, parse_message, unescape

NOW = "20240925093000"
ORU_251 = (
    "MSH|^~\\&|XN-550^SYSMEX|LAB1|LISGW|HOSP|20240924181947||ORU^R01^ORU_R01|M-1|P|2.5.1\r"
    "PID|1||P1||DOE^JANE\rOBR|1||S1|CBC\rOBX|1|NM|WBC||5.4||||||F\r"
)
ORU_231 = "MSH|^~\\&|||||20240924181947||ORU^R01|8|P|2.3.1||||||UNICODE\rPID|1||P1\r"
QBP_Z03 = (
    "MSH|^~\\&|ICU^GeneXpert^1.0||LIS||20070521100245||QBP^Z03^QBP_Z03|Q-1|P|2.5\r"
    "QPD|Z03^HOST QUERY|TAG-1|PatientID-556|SpecimenID-77\rRCP|I"
)
HEADER = Hl7Header(control_id="C-1", timestamp=NOW, receiving_application="HIS")
PATIENT = OruPatient("P-9", "DOE|X", "JANE^Q", "19800101", "F", "HOSP", "MR")
ORDER = OruOrder("S-123", "CBC", "Blood count", placer_order_number="ORD-1", observation_time=NOW)
OBSERVATIONS = (
    OruObservation(
        "6690-2",
        "5.43",
        "WBC",
        "LN",
        units="10*3/uL",
        reference_range="4.00-10.00",
        abnormal_flags=("H", "A"),
        observation_time=NOW,
        equipment_id="SN-1",
        equipment_namespace="XN-550",
    ),
    OruObservation("NIT", "neg|pos ^ 1~2 & \\ \r\n\x0b\x1c end", "Nitrite & co"),
    OruObservation("CMT", ""),
)


def parsed(data: bytes) -> Hl7Message:
    apy.validate(data)
    return parse_message(data)


def only(message: Hl7Message, name: str) -> Segment:
    segment = message.segment(name)
    assert segment is not None, name
    return segment


# -- escaping


@pytest.mark.parametrize(
    ("plain", "escaped"),
    [
        ("a|b", "a\\F\\b"),
        ("a^b&c~d\\e", "a\\S\\b\\T\\c\\R\\d\\E\\e"),
        ("x\r\ny", "x\\X0D\\\\X0A\\y"),
        ("\x0b\x1c\x7f", "\\X0B\\\\X1C\\\\X7F\\"),
        ("tab\tstays", "tab\tstays"),
        ("plain 1.5 mmol/L", "plain 1.5 mmol/L"),
    ],
)
def test_escape(plain: str, escaped: str) -> None:
    assert escape(plain) == escaped
    assert unescape(escaped) == plain


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_escape_then_unescape_is_identity(text: str) -> None:
    escaped = escape(text)
    assert not any(c in escaped for c in "|^~&\r\n\x0b\x1c")
    assert unescape(escaped) == text


# -- ACK


@pytest.mark.parametrize("code", ["AA", "AE", "AR", "CA"])
def test_ack_for_v251_validates_and_echoes_the_original(code: str) -> None:
    original = parse_message(ORU_251)
    ack = parsed(build_ack(original, code, "text", control_id="A-1", now_timestamp=NOW))
    assert ack.message_type == "ACK^R01"
    assert ack.message_structure == "ACK"
    assert ack.version == "2.5.1"
    assert ack.control_id == "A-1"
    assert ack.timestamp == NOW
    assert (ack.msh.get(3), ack.msh.get(4)) == ("LISGW", "HOSP")
    assert (ack.msh.get(5), ack.msh.get(5, 2), ack.msh.get(6)) == ("XN-550", "SYSMEX", "LAB1")
    msa = only(ack, "MSA")
    assert (msa.get(1), msa.get(2), msa.get(3)) == (code, "M-1", "text")
    assert ack.segment("ERR") is None


def test_ack_error_in_v25_layout() -> None:
    error = AckError("102", "Data type error", "OBX", 3, 5, diagnostic="not a number")
    original = parse_message(ORU_251)
    ack = parsed(build_ack(original, "AE", control_id="A-2", now_timestamp=NOW, error=error))
    err = only(ack, "ERR")
    assert [err.get(2, n) for n in (1, 2, 3)] == ["OBX", "3", "5"]
    assert [err.get(3, n) for n in (1, 2, 3)] == ["102", "Data type error", "HL70357"]
    assert err.get(4) == "E"
    assert err.get(7) == "not a number"


def test_ack_for_v231_uses_eld_error_layout_and_validates() -> None:
    original = parse_message(ORU_231)
    error = AckError("207", "Application internal error")
    ack = parsed(build_ack(original, "AR", control_id="A-3", now_timestamp=NOW, error=error))
    assert ack.version == "2.3.1"
    assert ack.msh.field(9) == "ACK^R01^ACK"
    err = only(ack, "ERR")
    assert err.get(1, 4, 1, 1) == "207"
    assert err.get(1, 4, 1, 3) == "HL70357"
    assert only(ack, "MSA").get(2) == "8"


def test_ack_reencodes_fields_of_an_original_with_other_delimiters() -> None:
    original = parse_message("MSH#!@$%#APP!X#FAC#####ORU!R01#C$F$9#P#2.5\r")
    ack = parsed(
        build_ack(original, "AA", control_id="A-4", now_timestamp=NOW, sending_application="ME")
    )
    assert ack.msh.field(3) == "ME"
    assert ack.msh.field(5) == "APP^X"
    assert only(ack, "MSA").get(2) == "C#9"


def test_ack_code_must_be_from_table_0008() -> None:
    with pytest.raises(LocalProtocolError):
        build_ack(parse_message(ORU_251), "OK", control_id="A", now_timestamp=NOW)


# -- ORU^R01


@pytest.mark.parametrize("version", ORU_VERSIONS)
@pytest.mark.parametrize("with_patient", [True, False])
def test_oru_r01_validates_and_reads_back(version: str, with_patient: bool) -> None:
    header = dataclasses.replace(HEADER, version=version)
    patient = PATIENT if with_patient else None
    msg = parsed(build_oru_r01(header, patient, ORDER, OBSERVATIONS))
    assert (msg.message_type, msg.message_structure, msg.version) == ("ORU^R01", "ORU_R01", version)
    assert msg.control_id == "C-1"
    assert [s.name for s in msg][:2] == (["MSH", "PID"] if with_patient else ["MSH", "ORC"])
    obr = only(msg, "OBR")
    assert (obr.get(2), obr.get(3), obr.get(4, 2), obr.get(7), obr.get(25)) == (
        "ORD-1",
        "S-123",
        "Blood count",
        NOW,
        "F",
    )
    wbc, nit, cmt = msg.segments("OBX")
    assert [wbc.get(n) for n in (1, 2, 3, 5, 6, 7, 11, 14)] == [
        "1",
        "NM",
        "6690-2",
        "5.43",
        "10*3/uL",
        "4.00-10.00",
        "F",
        NOW,
    ]
    assert wbc.repeats(8) == ["H", "A"]
    assert (nit.get(2), nit.get(3, 2), nit.get(5)) == ("ST", "Nitrite & co", OBSERVATIONS[1].value)
    assert (cmt.get(2), cmt.get(5)) == ("ST", "")
    if version == "2.3.1":
        assert (wbc.get(4), wbc.get(18)) == ("1", "")
    else:
        assert (wbc.get(4), wbc.get(18), wbc.get(18, 2)) == ("", "SN-1", "XN-550")


def test_oru_r01_patient_values_are_escaped_and_read_back() -> None:
    msg = parsed(build_oru_r01(HEADER, PATIENT, ORDER, OBSERVATIONS))
    pid = only(msg, "PID")
    assert [pid.get(3, n) for n in (1, 4, 5)] == ["P-9", "HOSP", "MR"]
    assert (pid.get(5), pid.get(5, 2), pid.get(7), pid.get(8)) == (
        "DOE|X",
        "JANE^Q",
        "19800101",
        "F",
    )


def test_specimen_type_goes_to_spm_in_v25_and_obr_15_in_v231() -> None:
    order = dataclasses.replace(ORDER, specimen_type="BLD")
    modern = parsed(build_oru_r01(HEADER, PATIENT, order, OBSERVATIONS))
    spm = only(modern, "SPM")
    assert (spm.get(2), spm.get(4)) == ("S-123", "BLD")
    assert [s.name for s in modern][-1] == "SPM"
    old_header = dataclasses.replace(HEADER, version="2.3.1")
    old = parsed(build_oru_r01(old_header, PATIENT, order, OBSERVATIONS))
    assert old.segment("SPM") is None
    assert only(old, "OBR").get(15) == "BLD"


def test_msh_options_are_written() -> None:
    header = dataclasses.replace(
        HEADER, accept_ack_type="AL", application_ack_type="NE", character_set="UNICODE UTF-8"
    )
    msg = parsed(build_oru_r01(header, None, ORDER, OBSERVATIONS[:1]))
    assert (msg.accept_ack_type, msg.application_ack_type) == ("AL", "NE")
    assert msg.character_set == "UNICODE UTF-8"


def test_nm_value_must_be_numeric() -> None:
    bad = OruObservation("GLU", "<0.5", value_type="NM")
    with pytest.raises(CodecError):
        build_oru_r01(HEADER, None, ORDER, [bad])
    msg = parsed(build_oru_r01(HEADER, None, ORDER, [OruObservation("GLU", "<0.5")]))
    assert msg.segments("OBX")[0].get(2) == "ST"


def test_unsupported_oru_version_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        build_oru_r01(dataclasses.replace(HEADER, version="2.4"), None, ORDER, OBSERVATIONS)


def test_output_encoding_is_the_connection_encoding() -> None:
    patient = OruPatient("P-9", "MÜLLER", "José")
    data = build_oru_r01(HEADER, patient, ORDER, OBSERVATIONS, encoding="iso-8859-1")
    assert "MÜLLER^José".encode("iso-8859-1") in data
    assert only(parse_message(data, "iso-8859-1"), "PID").get(5, 2) == "José"
    with pytest.raises(CodecError):
        build_oru_r01(HEADER, OruPatient("P", "\u20ac"), ORDER, OBSERVATIONS, encoding="ascii")


_VALUE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.tuples(_VALUE, _VALUE, _VALUE), min_size=1, max_size=3),
    version=st.sampled_from(ORU_VERSIONS),
)
def test_any_text_values_build_a_valid_oru_that_reads_back(
    values: list[tuple[str, str, str]], version: str
) -> None:
    observations = [
        OruObservation(f"C{i}", value, name, units=units, reference_range=units)
        for i, (value, name, units) in enumerate(values)
    ]
    header = dataclasses.replace(HEADER, version=version)
    msg = parsed(build_oru_r01(header, PATIENT, ORDER, observations))
    for obx, obs in zip(msg.segments("OBX"), observations, strict=True):
        assert (obx.get(3, 2), obx.get(5), obx.get(6), obx.get(7)) == (
            obs.name,
            obs.value,
            obs.units,
            obs.reference_range,
        )


def test_bench_hl7apy_build_writes_the_same_text_as_the_fast_builder() -> None:
    from bench import hl7_codec

    assert hl7_codec.apy_build() == hl7_codec.SAMPLE_ER7
    assert parsed(hl7_codec.SAMPLE).segments("OBX")[3].get(5) == "pos|neg~3 \\ see note"


# -- host-query reply


def test_query_reply_without_orders_says_nf() -> None:
    query = parse_message(QBP_Z03)
    reply = parsed(build_query_response(query, [], control_id="R-1", now_timestamp=NOW))
    assert [s.name for s in reply] == ["MSH", "MSA", "QAK", "QPD"]
    assert (reply.message_type, reply.message_structure, reply.version) == (
        "RSP^K11",
        "RSP_K11",
        "2.5",
    )
    assert (reply.msh.get(5), reply.msh.get(5, 2), reply.msh.get(3)) == ("ICU", "GeneXpert", "LIS")
    msa, qak, qpd = only(reply, "MSA"), only(reply, "QAK"), only(reply, "QPD")
    assert (msa.get(1), msa.get(2)) == ("AA", "Q-1")
    assert (qak.get(1), qak.get(2), qak.get(3), qak.get(3, 2)) == (
        "TAG-1",
        "NF",
        "Z03",
        "HOST QUERY",
    )
    assert qpd.raw == "QPD|Z03^HOST QUERY|TAG-1|PatientID-556|SpecimenID-77"


def test_query_reply_with_orders_lists_them_for_the_specimen() -> None:
    query = parse_message(QBP_Z03)
    orders = [
        QueryOrder("CTNG", "CT/NG", placer_order_number="O-1", ordered_at=NOW),
        QueryOrder("MTB", "MTB RIF", priority="S", specimen_type="SPT"),
    ]
    patient = OruPatient("PatientID-556", "DOE", "JANE")
    data = build_query_response(query, orders, control_id="R-2", now_timestamp=NOW, patient=patient)
    reply = parsed(data)
    assert [s.name for s in reply] == ["MSH", "MSA", "QAK", "QPD", "PID"] + 2 * [
        "ORC",
        "OBR",
        "TQ1",
        "SPM",
    ]
    assert only(reply, "QAK").get(2) == "OK"
    assert only(reply, "PID").get(3) == "PatientID-556"
    orc, obr, tq1, spm = (reply.segments(n) for n in ("ORC", "OBR", "TQ1", "SPM"))
    assert [(o.get(1), o.get(2), o.get(9)) for o in orc] == [("NW", "O-1", NOW), ("NW", "", "")]
    assert [(o.get(1), o.get(4), o.get(4, 2)) for o in obr] == [
        ("1", "CTNG", "CT/NG"),
        ("2", "MTB", "MTB RIF"),
    ]
    assert [t.get(9) for t in tq1] == ["R", "S"]
    assert [(s.get(2), s.get(4)) for s in spm] == [
        ("SpecimenID-77", "ORH"),
        ("SpecimenID-77", "SPT"),
    ]


def test_query_reply_specimen_and_sender_can_be_given() -> None:
    query = parse_message(QBP_Z03)
    data = build_query_response(
        query,
        [QueryOrder("CTNG")],
        control_id="R-3",
        now_timestamp=NOW,
        specimen_id="S|9",
        sending_application="LISGW",
        sending_facility="LAB",
    )
    reply = parsed(data)
    assert (reply.msh.get(3), reply.msh.get(4)) == ("LISGW", "LAB")
    assert only(reply, "SPM").get(2) == "S|9"
    assert reply.segment("PID") is None


def test_query_without_qpd_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        build_query_response(parse_message(ORU_251), [], control_id="R", now_timestamp=NOW)


def test_strict_validation_rejects_what_hl7apy_rejects() -> None:
    with pytest.raises(CodecError, match="PID_5"):
        apy.validate(ORU_251.replace("DOE^JANE", ""))
    with pytest.raises(CodecError):
        apy.validate(b"MSH|^~\\&|A||||||ZZZ^Z99|1|P|2.5.1\r")
    with pytest.raises(CodecError):
        apy.validate(b"\xff\xfe")
