"""The driver engine and detection (lisgw.drivers.engine, lisgw.drivers.catalogue), on small
hand-written messages, on the corpus, and with only the generic drivers loaded.

Hand-written messages here are made up (no patient data); corpus captures are read from
../shared/corpus and compared with tests/data/expected (see that folder's README).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisgw.astm.message import AstmMessage, MessageAssembler
from lisgw.decode import DecodeOptions, decode_capture
from lisgw.drivers import BUILTIN_DIRS, Catalogue, CompiledProfile, default_catalogue, normalize
from lisgw.drivers.catalogue import yaml_files
from lisgw.errors import ConfigError
from lisgw.hl7.message import Hl7Message, parse_message
from lisgw.model import Kind, Protocol
from tests.conftest import CORPUS_DIR
from tests.unit.test_decode_corpus import CORPUS_FILES, expected_for

BUILTIN = yaml_files(BUILTIN_DIRS)
CATALOGUE = default_catalogue()
ASTM = CATALOGUE.get("astm-generic")
HL7 = CATALOGUE.get("hl7-generic")
VIDAS = "other/biomerieux_mini_vidas/biomerieux_mini_vidas_proprietary_result.bin"


def astm(*records: str) -> AstmMessage:
    assembler = MessageAssembler()
    messages = [m for record in records for m in assembler.feed(record)]
    messages.extend(assembler.flush())
    (message,) = messages
    return message


def hl7(*segments: str) -> Hl7Message:
    return parse_message("\r".join(segments))


def catalogue_with(tmp_path: Path, **files: str) -> Catalogue:
    paths = []
    for name, text in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        paths.append(path)
    return Catalogue.from_files([*BUILTIN, *paths])


def profile(tmp_path: Path, text: str) -> CompiledProfile:
    return catalogue_with(tmp_path, custom=text).get("custom")


# ASTM.


def test_astm_results_by_the_generic_driver() -> None:
    message = astm(
        r"H|\^&|||ACME^2.1^SN42|||||||P|1",
        "P|1",
        "O|1|S-1||^^^GLU",
        "R|1|^^^GLU^Glucose|5.5|mmol/L|3.9 to 6.1|H||F||||20240627135407",
        "C|1|I|rerun^dilution 1:2|G",
        "R|2|^^^K|>8|mmol/L||HH\\A||C",
        "L|1|N",
    )
    out = normalize(message, ASTM, offset=7)
    assert out.protocol is Protocol.ASTM and out.kind is Kind.RESULTS
    assert out.driver == "astm-generic@1" and out.offset == 7
    assert out.sender == "ACME"
    assert out.instrument is not None
    assert (out.instrument.name, out.instrument.software, out.instrument.serial) == (
        "ACME",
        "2.1",
        "SN42",
    )
    (specimen,) = out.specimens
    assert specimen.sample_id == "S-1" and not specimen.qc
    glu, k = specimen.results
    assert (glu.test, glu.value, glu.units, glu.reference_range) == (
        "GLU",
        "5.5",
        "mmol/L",
        "3.9 to 6.1",
    )
    assert (glu.numeric, glu.censor, glu.flags, glu.flag_meanings) == (5.5, "", "H", ("high",))
    assert (glu.status, glu.status_meaning) == ("F", "final")
    assert glu.completed_at == "2024-06-27T13:54:07"
    assert glu.comments == ("rerun dilution 1:2",)
    assert (k.value, k.numeric, k.censor) == (">8", 8.0, ">")
    assert k.flags == "HH\\A" and k.flag_meanings == ("critical_high", "abnormal")
    assert k.status_meaning == "correction" and k.comments == ()


def test_completed_at_gets_the_connection_zone() -> None:
    message = astm("H|\\^&", "O|1|S1", "R|1|^^^GLU|1|||||F||||20240627135407", "L|1")
    (result,) = normalize(message, ASTM, tz="Asia/Ho_Chi_Minh").specimens[0].results
    assert result.completed_at == "2024-06-27T13:54:07+07:00"


def test_comments_attach_to_the_record_before_them() -> None:
    message = astm(
        "H|\\^&",
        "C|1|I|from the header|G",
        "P|1",
        "C|1|I|patient note|G",
        "O|1|A",
        "C|1|I|specimen note|G",
        "R|1|^^^X|1",
        "C|1|I|result note|G",
        "C|2|I|   |G",
        "M|1|manufacturer data",
        "C|3|I|still the result|G",
        "P|2",
        "O|1|B",
        "R|1|^^^X|2",
        "L|1",
    )
    a, b = normalize(message, ASTM).specimens
    assert a.comments == ("patient note", "specimen note")
    assert a.results[0].comments == ("result note", "still the result")
    assert b.comments == () and b.results[0].comments == ()


def test_sample_id_fields_read_other_records_strip_and_pattern(tmp_path: Path) -> None:
    message = astm(
        "H|\\^&", "P|1||0ID00123  ", "O|1|||^^^A", "R|1|^^^A|1", "P|2||xyz", "O|1", "L|1"
    )
    driver = profile(
        tmp_path,
        """\
        driver: custom
        version: 1
        inherits: astm-generic
        sample_id: {fields: ["O.3.1", "P.4"], strip: " 0"}
        """,
    )
    # O.3 is empty: P.4 of the patient before each O; spaces and zeros stripped at both ends.
    assert [s.sample_id for s in normalize(message, driver).specimens] == ["ID00123", "xyz"]
    driver = profile(
        tmp_path,
        """\
        driver: custom
        version: 1
        inherits: astm-generic
        sample_id: {fields: ["P.4"], pattern: '^0?ID0*(\\d+)$'}
        """,
    )
    out = normalize(message, driver)
    assert [s.sample_id for s in out.specimens] == ["123", "xyz"]
    assert "sample ID 'xyz' does not match the driver's pattern" in out.warnings


def test_qc_by_action_code_sample_id_or_comment(tmp_path: Path) -> None:
    driver = profile(
        tmp_path,
        """\
        driver: custom
        version: 1
        inherits: astm-generic
        qc: {comment_patterns: ['control lot']}
        """,
    )
    message = astm(
        "H|\\^&",
        "|".join(["O", "1", "A", *[""] * 8, "Q"]),  # O.12 action code Q
        "O|2|QC-7",
        "O|3|ctrl_1",
        "O|4|B",
        "C|1|I|Control lot 42|G",
        "O|5|C",
        "R|1|^^^X|1",
        "L|1",
    )
    qc = [s.qc for s in normalize(message, driver).specimens]
    assert qc == [True, True, True, True, False]
    assert [s.qc for s in normalize(message, ASTM).specimens] == [True, True, True, False, False]


def test_decimal_comma_and_the_tests_table(tmp_path: Path) -> None:
    driver = profile(
        tmp_path,
        """\
        driver: custom
        version: 1
        inherits: astm-generic
        value: {decimal_comma: true}
        tests: {RATIO: IgA ratio, 685: ALT}
        """,
    )
    message = astm("H|\\^&", "O|1|S", "R|1|^^^RATIO|7,41", "R|2|^^^685|<0,5", "L|1")
    ratio, alt = normalize(message, driver).specimens[0].results
    assert (ratio.value, ratio.numeric, ratio.test_name) == ("7,41", 7.41, "IgA ratio")
    assert (alt.numeric, alt.censor, alt.test_name) == (0.5, "<", "ALT")
    assert normalize(message, ASTM).specimens[0].results[0].numeric is None


def test_query_orders_and_orphan_results() -> None:
    query = astm("H|\\^&", "Q|1|^S1\\^^S2\\^ALL||ALL", "Q|2|^^S3^5^1", "L|1")
    out = normalize(query, ASTM)
    assert out.kind is Kind.QUERY and out.query is not None
    assert out.query.sample_ids == ("S1", "S2", "S3")
    orders = astm("H|\\^&", "P|1", "O|1|S9||^^^GLU\\^^^^K\\^^^NA", "L|1")
    out = normalize(orders, ASTM)
    assert out.kind is Kind.ORDERS
    assert [(s.sample_id, s.tests) for s in out.specimens] == [("S9", ("GLU", "K", "NA"))]
    orphan = astm("H|\\^&", "P|1", "R|1|^^^X|1")
    out = normalize(orphan, ASTM)
    assert out.kind is Kind.RESULTS and out.specimens[0].sample_id == ""
    assert "R record before any O record: sample ID unknown" in out.warnings
    assert "message has no L (terminator) record" in out.warnings


def test_a_driver_reads_only_its_protocol() -> None:
    with pytest.raises(ConfigError, match="is for hl7: it cannot read astm"):
        normalize(astm("H|\\^&", "L|1"), HL7)


# HL7.

MSH = "MSH|^~\\&|ACME^Lab^v3||LIS||20240924181947||{type}|1|{pid}|2.5"


def test_hl7_results_grouped_by_obr_with_comments() -> None:
    message = hl7(
        MSH.format(type="ORU^R01", pid="P"),
        "PID|1||PAT1",
        "OBR|1||S1|CBC",
        "NTE|1|L|specimen remark",
        "OBX|1|NM|6690-2^WBC^LN||5.43|10*3/uL|4.00-10.00|H~A|||F|||20240920135955",
        "NTE|1|L|result remark",
        "OBR|2||S1|CBC",
        "OBX|2|NM|777-3^PLT^LN||<20|10*3/uL||LL|||P",
        "OBR|3||S2|CBC",
        "OBX|1|ST|COL||Yellow",
    )
    out = normalize(message, HL7, tz="Europe/Paris")
    assert out.kind is Kind.RESULTS and out.sender == "ACME"
    assert out.instrument is not None and out.instrument.name == "ACME"
    s1, s2 = out.specimens
    assert s1.sample_id == "S1" and s2.sample_id == "S2"
    assert s1.comments == ("specimen remark",)
    wbc, plt = s1.results
    assert (wbc.test, wbc.test_name, wbc.value, wbc.numeric) == ("6690-2", "WBC", "5.43", 5.43)
    assert (wbc.reference_range, wbc.flags, wbc.flag_meanings) == (
        "4.00-10.00",
        "H~A",
        ("high", "abnormal"),
    )
    assert wbc.completed_at == "2024-09-20T13:59:55+02:00"
    assert wbc.comments == ("result remark",)
    assert (plt.censor, plt.numeric, plt.flag_meanings, plt.status_meaning) == (
        "<",
        20.0,
        ("critical_low",),
        "preliminary",
    )
    assert s2.results[0].value == "Yellow"


def test_hl7_specimen_segments() -> None:
    batch = hl7(
        MSH.format(type="OUL^R22", pid="P"),
        "SPM|1|A1^||SER",
        "OBR|1|||TSH",
        "OBX|1||TSH||1.08^|uIU/mL",
        "SPM|2|A2&LAB^||SER",
        "OBR|1|||T4",
        "OBX|1||T4||6.87^|ug/dL",
    )
    assert [(s.sample_id, len(s.results)) for s in normalize(batch, HL7).specimens] == [
        ("A1", 1),
        ("A2", 1),
    ]
    # GeneXpert ORU^R30: one SPM, after the OBX; its ID is the specimen's.
    late = hl7(
        MSH.format(type="ORU^R32^ORU_R30", pid="P"),
        "OBR|1|||CTNG",
        "OBX|1|ST|CTNG&CT|CT|NOT DETECTED^",
        "OBX|2|ST|CTNG&CT|CT1&Ct|^0.0",
        "SPM|1|sid^",
    )
    (specimen,) = normalize(late, HL7).specimens
    assert specimen.sample_id == "sid"
    assert [(r.test, r.value) for r in specimen.results] == [
        ("CTNG&CT", "NOT DETECTED"),
        ("CTNG&CT", "0.0"),
    ]


def test_hl7_qc_queries_cancels_orders_and_unknown_types() -> None:
    qc = hl7(MSH.format(type="ORU^R01", pid="Q"), "OBR|1||S1", "OBX|1||X||1")
    assert normalize(qc, HL7).specimens[0].qc
    query = hl7(MSH.format(type="QBP^Z03^QBP_Z03", pid="P"), "QPD|Z03^HOST QUERY|tag-1|PAT|SPEC-9")
    out = normalize(query, HL7)
    assert out.kind is Kind.QUERY and out.query is not None
    assert (out.query.sample_ids, out.query.query_tag) == (("SPEC-9",), "tag-1")
    cancel = normalize(hl7(MSH.format(type="QCN^J01", pid="P"), "QID|tag-1|N/D"), HL7)
    assert cancel.kind is Kind.QUERY_CANCEL and cancel.query is not None
    assert cancel.query.query_tag == "tag-1"
    orders = hl7(
        MSH.format(type="ORM^O01", pid="P"), "ORC|NW", "OBR|1|P1|F1|GLU^Glucose", "OBR|2|P2||K"
    )
    out = normalize(orders, HL7)
    assert out.kind is Kind.ORDERS
    assert [(s.sample_id, s.tests) for s in out.specimens] == [("F1", ("GLU",)), ("P2", ("K",))]
    other = normalize(hl7(MSH.format(type="ADT^A01", pid="P")), HL7)
    assert other.kind is Kind.UNKNOWN
    assert other.warnings == ("message type ADT^A01 is not handled",)


def test_hl7_sample_id_from_another_segment(tmp_path: Path) -> None:
    driver = profile(
        tmp_path,
        """\
        driver: custom
        version: 1
        inherits: hl7-generic
        sample_id: {fields: ["PID-3.1"]}
        """,
    )
    message = hl7(MSH.format(type="ORU^R01", pid="P"), "PID|1||LAB-7", "OBR|1||143", "OBX|1||G||N")
    assert normalize(message, driver).specimens[0].sample_id == "LAB-7"
    assert normalize(message, HL7).specimens[0].sample_id == "143"


# Detection.


def test_detection_scores_priority_and_name(tmp_path: Path) -> None:
    base = "version: 1\ninherits: astm-generic\n"
    catalogue = catalogue_with(
        tmp_path,
        a=f"driver: zz-sender\n{base}identify: {{sender: ['^ACME']}}\n",
        b=f"driver: aa-sender\n{base}identify: {{sender: ['^AC']}}\n",
        c=f"driver: both\n{base}identify: {{sender: ['^ACME'], content: ['^R\\|']}}\n",
        d=f"driver: loud\n{base}identify: {{header: ['NOISE'], priority: 5}}\n",
    )
    results = astm("H|\\^&|||ACME", "O|1|S", "R|1|^^^X|1", "L|1")
    query = astm("H|\\^&|||ACME", "Q|1|^S", "L|1")
    assert catalogue.detect(results).name == "both"  # two keys matched beat one
    assert catalogue.detect(query).name == "aa-sender"  # tie: first name
    noisy = astm("H|\\^&|||ACME|NOISE", "Q|1|^S", "L|1")
    assert catalogue.detect(noisy).name == "loud"  # tie on score: priority
    unknown = astm("H|\\^&|||OTHER", "L|1")
    assert catalogue.detect(unknown).key == "astm-generic@1"
    assert catalogue.detect(hl7(MSH.format(type="ORU^R01", pid="P"))).key == "hl7-generic@1"


def test_only_the_latest_version_is_detected(tmp_path: Path) -> None:
    text = "driver: acme\nversion: {v}\ninherits: astm-generic\nidentify: {{sender: ['^ACME$']}}\n"
    catalogue = catalogue_with(tmp_path, one=text.format(v=1), two=text.format(v=2))
    assert catalogue.detect(astm("H|\\^&|||ACME", "L|1")).key == "acme@2"


def test_corpus_captures_are_detected_as_their_vendor() -> None:
    for corpus_path in CORPUS_FILES:
        messages = decode_capture((CORPUS_DIR / corpus_path).read_bytes())
        drivers = {m.driver for m in messages}
        assert len(drivers) == 1, corpus_path
        assert not drivers.pop().split("@")[0].endswith("-generic"), corpus_path


def test_not_mine_payloads_are_kept_raw() -> None:
    data = (CORPUS_DIR / VIDAS).read_bytes()
    assert CATALOGUE.detect_payload(data) is not None
    assert CATALOGUE.detect_payload(b"\x02hello\x03") is None
    (message,) = decode_capture(data)
    assert message.driver == "biomerieux-vidas@1" and message.raw == data
    assert message.kind is Kind.UNKNOWN and message.specimens == ()
    assert message.to_json()["raw"].encode("latin-1") == data


def test_a_not_mine_payload_between_astm_sessions_is_its_own_message() -> None:
    vidas = (CORPUS_DIR / VIDAS).read_bytes()
    erba = (
        CORPUS_DIR / "astm/erba_xl1000/erba_xl1000_result_backtick_repeat_delim.bin"
    ).read_bytes()
    messages = decode_capture(erba + vidas + erba)
    assert [m.driver for m in messages] == ["erba-em@1", "biomerieux-vidas@1", "erba-em@1"]
    assert [m.offset for m in messages] == [0, len(erba), len(erba) + len(vidas)]
    assert messages[1].raw == vidas
    assert [str(m.kind) for m in messages] == ["results", "unknown", "results"]
    assert not any("rejected" in w for m in messages for w in m.warnings)


# Decode options.


def test_a_pinned_driver_is_used_for_the_whole_capture() -> None:
    c311 = (
        CORPUS_DIR / "astm/roche_cobas_c311/roche_cobas_c311_chemistry_results.bin"
    ).read_bytes()
    (detected,) = decode_capture(c311)
    (pinned,) = decode_capture(c311, DecodeOptions(driver="astm-generic@1"))
    assert detected.specimens[0].sample_id == "CL-PL-24-0370"
    assert pinned.driver == "astm-generic@1" and pinned.specimens[0].sample_id == "11625"
    (wrong,) = decode_capture(c311, DecodeOptions(driver="hl7-generic"))
    assert wrong.driver == "roche-cobas-c311@1"
    assert (
        "driver hl7-generic@1 reads hl7, but the capture is astm: the driver was detected instead"
        in wrong.warnings
    )
    with pytest.raises(ConfigError, match="unknown driver"):
        decode_capture(c311, DecodeOptions(driver="nope"))
    with pytest.raises(ConfigError, match="unknown time zone"):
        decode_capture(c311, DecodeOptions(tz="Mars/Olympus"))


def test_the_detected_drivers_link_settings_are_used(tmp_path: Path) -> None:
    # A frame without a checksum: the generic driver (lenient) takes it with a warning; a
    # driver that says `lenient: false` makes the capture be read again, and refused.
    data = b"\x05\x021H|\\^&|||ZZTOP\rO|1|S1\rR|1|^^^GLU|5.5\rL|1|N\r\x03\r\n\x04"
    (generic,) = decode_capture(data)
    assert generic.driver == "astm-generic@1" and generic.specimens[0].sample_id == "S1"
    assert "offset 1: frame has no checksum" in generic.warnings
    strict = catalogue_with(
        tmp_path,
        zz=(
            "driver: zz\nversion: 1\ninherits: astm-generic\n"
            "identify: {sender: ['^ZZTOP$']}\nlink: {lenient: false}\n"
        ),
    )
    (refused,) = decode_capture(data, catalogue=strict)
    assert refused.kind is Kind.UNKNOWN and refused.specimens == ()
    assert any("rejected" in w for w in refused.warnings)


# Robustness of the engine with every driver.

RECORD = st.sampled_from(
    [
        "H|\\^&|||X",
        "H|`^&",
        "P|1||P",
        "O|1|S^T|^^A",
        "O|1|||^^^A\\^^^B||||||||Q",
        "R|1|^^^A|1",
        "R|1||^|",
        "R|1|^^^^^^^|<5|u|1-2|H\\L^N||F||||2024",
        "C|1|I|x^y|G",
        "C|1",
        "M|1|x",
        "Q|1|^A\\^B||ALL",
        "Q|1",
        "L|1|N",
        "X|1",
        "R",
        "O",
        "C",
        "Q|1|\\\\\\",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORD, min_size=1, max_size=12))
def test_any_astm_message_normalizes_with_every_driver(records: list[str]) -> None:
    assembler = MessageAssembler()
    messages = [m for r in records for m in assembler.feed(r)] + assembler.flush()
    for message in messages:
        for driver in CATALOGUE.drivers:
            if driver.protocol == "astm":
                out = normalize(message, driver)
                assert out.driver == driver.key
                assert all(isinstance(s.sample_id, str) for s in out.specimens)


SEGMENT = st.sampled_from(
    [
        "PID|1||P1",
        "SPM|1|S1^",
        "SPM|2|S2&X^",
        "OBR|1||F1|T",
        "OBR|2|P2",
        "OBX|1|NM|A^B||1|u|1-2|H~L|||F",
        "OBX|2||C||^",
        "OBX",
        "NTE|1|L|n",
        "NTE",
        "QPD|Z03|t|p|s",
        "QID|t",
        "ORC|NW",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["ORU^R01", "OUL^R22", "QBP^Z03", "QCN^J01", "ORM^O01", "ACK", ""]),
    st.lists(SEGMENT, max_size=10),
)
def test_any_hl7_message_normalizes_with_every_driver(kind: str, segments: list[str]) -> None:
    message = hl7(MSH.format(type=kind, pid="P"), *segments)
    for driver in CATALOGUE.drivers:
        if driver.protocol == "hl7":
            assert normalize(message, driver).driver == driver.key


# Only the generic drivers: how far do the generic rules get on the corpus?

# The captures the generic rules get wrong, and why (the vendor profiles get them right).
GENERIC_FAILURES = {
    "astm/roche_cobas_c311/roche_cobas_c311_chemistry_results.bin": (
        "O.3.1 is a counter (11625); the barcode is O.3.2"
    ),
    "astm/sysmex_xn550/sysmex_xn550_qc_results_framed.bin": (
        "O.4 is rack^tube^sample no.^attribute: O.4.1 is the rack (1), the ID is O.4.3; the "
        "generic rule cannot take O.4.3 because cobas c111 sends `ID^^6` there"
    ),
    "astm/euroimmun_analyzer_i/euroimmun_analyzer_i_sarscov2_iga_multi_patient_results.bin": (
        "O.3 and O.4 are empty: the ID is P.4, a patient field the generic rule does not "
        "trust as a sample ID"
    ),
    "hl7/siemens_clinitek_status/siemens_clinitek_status_hl7_oru_r01.bin": (
        "OBR-3 is the analyzer's running number (143); the lab's sample number is PID-3"
    ),
}


def _mismatches(messages: list[Any], expected: dict[str, Any]) -> list[str]:
    found: list[str] = []
    wanted = expected["messages"]
    if len(messages) != len(wanted):
        return [f"{len(messages)} messages, expected {len(wanted)}"]
    for index, (got, want) in enumerate(zip(messages, wanted, strict=True)):
        if str(got.kind) != want["kind"]:
            found.append(f"message {index}: kind {got.kind}")
        query = want.get("query", {})
        if "sample_ids" in query and (
            got.query is None or list(got.query.sample_ids) != query["sample_ids"]
        ):
            found.append(f"message {index}: query")
        specimens = want.get("specimens", [])
        if len(got.specimens) != len(specimens):
            found.append(f"message {index}: {len(got.specimens)} specimens")
            continue
        for specimen, want_specimen in zip(got.specimens, specimens, strict=True):
            if specimen.sample_id != want_specimen["sample_id"]:
                found.append(f"message {index}: sample ID {specimen.sample_id!r}")
            if specimen.qc != want_specimen.get("qc", False):
                found.append(f"message {index}: qc")
            results = [(r.test, r.value, r.units) for r in specimen.results]
            if results != [
                (r["test"], r["value"], r.get("units", ""))
                for r in want_specimen.get("results", [])
            ]:
                found.append(f"message {index}: results")
    return found


def test_the_generic_drivers_alone_get_most_of_the_corpus_right() -> None:
    generic_only = Catalogue.from_files(
        [p for p in BUILTIN if p.parent.name == "protocols" or p.stem.endswith("-generic")]
    )
    assert {d.name for d in generic_only.drivers} == {"astm-generic", "hl7-generic"}
    failures: dict[str, list[str]] = {}
    checked = 0
    for corpus_path in CORPUS_FILES:
        expected = expected_for(corpus_path)
        if expected["protocol"] not in ("astm", "hl7"):
            continue
        checked += 1
        messages = decode_capture((CORPUS_DIR / corpus_path).read_bytes(), catalogue=generic_only)
        assert {m.driver for m in messages} <= {"astm-generic@1", "hl7-generic@1"}
        problems = _mismatches(messages, expected)
        if problems:
            failures[corpus_path] = problems
    # 27 of the 31 ASTM and HL7 captures: sample IDs, kinds, QC flags and results all right.
    assert checked == 31 and checked - len(failures) == 27
    assert set(failures) == set(GENERIC_FAILURES)
    # Each failure is the sample ID alone: the results are right everywhere.
    assert all("sample ID" in p for problems in failures.values() for p in problems)
