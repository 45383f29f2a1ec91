"""Fast HL7 parser: numbering, delimiters, escapes, separators, charsets, errors, timestamps.

Samples are written here by hand (synthetic); corpus messages are in test_hl7_corpus.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.errors import CodecError
from lisgw.hl7.message import (
    EncodingChars,
    Hl7Message,
    charset_for_msh18,
    parse_hl7_timestamp,
    parse_message,
    unescape,
)

ORU = (
    "MSH|^~\\&|ANALYZER^GX^L|LAB|LIS|HOSP|20240924181947||ORU^R01^ORU_R01|MSG-7|P|2.5.1"
    "|||AL|NE||UNICODE UTF-8\r"
    "PID|1||P-000071^^^HOSP^MR~ALT-9^^^OTHER||DOE^JANE\r"
    "OBR|1|ORD1|S1|CBC^Blood count^L\r"
    "OBX|1|NM|6690-2^WBC^LN||5.43|10*3/uL|4.00-10.00|L~N|||F\r"
    "OBX|2|ST|CTNG&CT&Assay&1|CT1&Ct|NOT DETECTED^||||||F\r"
)


@pytest.fixture(name="oru")
def fixture_oru() -> Hl7Message:
    return parse_message(ORU.encode())


def test_msh_numbering_counts_the_field_separator_as_msh_1(oru: Hl7Message) -> None:
    msh = oru.msh
    assert msh.get(1) == "|"
    assert msh.get(2) == "^~\\&"
    assert msh.get(3) == "ANALYZER"
    assert msh.get(3, 2) == "GX"
    assert msh.get(9) == "ORU"
    assert msh.get(9, 3) == "ORU_R01"
    assert msh.get(18) == "UNICODE UTF-8"
    assert len(msh) == 18


def test_header_properties(oru: Hl7Message) -> None:
    assert oru.message_type == "ORU^R01"
    assert (oru.message_code, oru.trigger_event, oru.message_structure) == ("ORU", "R01", "ORU_R01")
    assert oru.control_id == "MSG-7"
    assert oru.version == "2.5.1"
    assert oru.timestamp == "20240924181947"
    assert (oru.sending_application, oru.sending_facility) == ("ANALYZER", "LAB")
    assert (oru.receiving_application, oru.receiving_facility) == ("LIS", "HOSP")
    assert oru.processing_id == "P"
    assert (oru.accept_ack_type, oru.application_ack_type) == ("AL", "NE")
    assert oru.character_set == "UNICODE UTF-8"


def test_segments_are_indexed_by_name_in_order(oru: Hl7Message) -> None:
    assert [s.name for s in oru] == ["MSH", "PID", "OBR", "OBX", "OBX"]
    assert len(oru) == 5
    assert [s.get(1) for s in oru.segments("OBX")] == ["1", "2"]
    assert oru.segment("ZZZ") is None
    assert oru.segments("ZZZ") == []
    first = oru.segment("OBX")
    assert first is not None and first.raw.startswith("OBX|1|NM|")


def test_fields_components_repeats_and_subcomponents(oru: Hl7Message) -> None:
    pid, obx1, obx2 = oru.segment("PID"), *oru.segments("OBX")
    assert pid is not None
    assert pid.get(3) == "P-000071"
    assert pid.get(3, 4) == "HOSP"
    assert pid.get(3, 1, repeat=2) == "ALT-9"
    assert pid.get(3, 4, repeat=2) == "OTHER"
    assert pid.repeats(3) == ["P-000071^^^HOSP^MR", "ALT-9^^^OTHER"]
    assert pid.get(5, 2) == "JANE"
    assert obx1.get(8, repeat=2) == "N"
    assert obx2.get(3, 1, 1, 2) == "CT"
    assert obx2.get(4, 1, 1, 2) == "Ct"
    assert obx2.get(5) == "NOT DETECTED"
    assert obx2.components(5) == ["NOT DETECTED", ""]
    assert obx1.field(3) == "6690-2^WBC^LN"


@pytest.mark.parametrize(
    ("field", "component", "repeat", "subcomponent"),
    [(0, 1, 1, 1), (99, 1, 1, 1), (4, 1, 1, 1), (3, 9, 1, 1), (3, 1, 3, 1), (3, 1, 1, 2)],
)
def test_absent_positions_are_empty(
    oru: Hl7Message, field: int, component: int, repeat: int, subcomponent: int
) -> None:
    pid = oru.segment("PID")
    assert pid is not None
    assert pid.get(field, component, repeat, subcomponent) == ""


def test_encoding_characters_are_read_from_msh() -> None:
    text = "MSH#!@$%#APP######ORU!R01#1#P#2.5\rOBX#1#ST#X!Name##a$T$b!c@d%e#\r"
    msg = parse_message(text)
    assert msg.encoding_chars == EncodingChars("#", "!", "@", "$", "%", "")
    obx = msg.segments("OBX")[0]
    assert msg.message_type == "ORU^R01"
    assert obx.get(3, 2) == "Name"
    assert obx.get(5) == "a%b"
    assert obx.get(5, 2) == "c"
    assert obx.get(5, 1, 2) == "d"
    assert obx.get(5, 1, 2, 2) == "e"


def test_truncation_character_of_v27_is_accepted() -> None:
    msg = parse_message("MSH|^~\\&#|A||||||ORU^R01|1|P|2.7\rNTE|1||x\\P\\y#\r")
    assert msg.encoding_chars.truncation == "#"
    nte = msg.segment("NTE")
    assert nte is not None and nte.get(3) == "x#y#"


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b\\T\\c\\R\\d\\E\\e", "a^b&c~d\\e"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("\\X0D0A\\", "\r\n"),
        ("caf\\XC3A9\\", "café"),
        ("\\H\\bold\\N\\ text", "bold text"),
        ("keep \\Zcustom\\ and \\.sp\\", "keep \\Zcustom\\ and \\.sp\\"),
        ("C:\\temp", "C:\\temp"),
        ("odd \\X0\\ hex", "odd \\X0\\ hex"),
        ("\\\\", "\\\\"),
        ("no escapes", "no escapes"),
    ],
)
def test_escape_sequences_are_decoded(escaped: str, plain: str) -> None:
    assert unescape(escaped) == plain
    msg = parse_message(f"MSH|^~\\&|A||||||ORU^R01|1|P|2.5\rNTE|1||{escaped}\r")
    nte = msg.segment("NTE")
    assert nte is not None
    assert nte.get(3) == plain
    assert nte.get(3, raw=True) == escaped


def test_hex_escape_uses_the_message_charset() -> None:
    msg = parse_message(b"MSH|^~\\&|A||||||ORU^R01|1|P|2.5\rNTE|1||caf\\XE9\\\r", "iso-8859-1")
    nte = msg.segment("NTE")
    assert nte is not None and nte.get(3) == "café"


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n", "\r\r\n"])
def test_segment_separators_cr_lf_crlf_and_blank_lines(separator: str) -> None:
    msg = parse_message(ORU.replace("\r", separator))
    assert [s.name for s in msg] == ["MSH", "PID", "OBR", "OBX", "OBX"]
    assert msg.segments("OBX")[1].get(5) == "NOT DETECTED"


def test_last_segment_without_terminator_and_leading_whitespace() -> None:
    msg = parse_message("\r\n" + ORU.rstrip("\r"))
    assert msg.segments("OBX")[1].get(11) == "F"


def test_iso_8859_1_bytes_decode_with_the_connection_encoding() -> None:
    data = "MSH|^~\\&|A||||||ORU^R01|1|P|2.3.1\rPID|1||X||MÜLLER^José\r".encode("iso-8859-1")
    msg = parse_message(data, "iso-8859-1")
    pid = msg.segment("PID")
    assert pid is not None and pid.get(5, 2) == "José"
    assert msg.charset == "iso-8859-1"


def test_decode_error_names_the_offset() -> None:
    data = b"MSH|^~\\&|A||||||ORU^R01|1|P|2.5\rPID|1||X||M\xdcLLER\r"
    with pytest.raises(CodecError) as error:
        parse_message(data)
    offset = data.index(b"\xdc")
    assert error.value.where == f"byte {offset}"
    assert "0xDC" in str(error.value)


def test_lenient_decode_replaces_bad_bytes() -> None:
    data = b"MSH|^~\\&|A||||||ORU^R01|1|P|2.5\rPID|1||X||M\xdcLLER\r"
    pid = parse_message(data, lenient=True).segment("PID")
    assert pid is not None and pid.get(5) == "M\ufffdLLER"


def test_msh_18_is_a_fallback_hint_when_the_encoding_fails() -> None:
    text = "MSH|^~\\&|A||||||ORU^R01|1|P|2.5||||||8859/1\rPID|1||X||MÜLLER\r"
    msg = parse_message(text.encode("iso-8859-1"))
    assert msg.charset == "iso-8859-1"
    pid = msg.segment("PID")
    assert pid is not None and pid.get(5) == "MÜLLER"


def test_msh_18_values_map_to_codecs() -> None:
    assert charset_for_msh18("UNICODE UTF-8") == "utf-8"
    assert charset_for_msh18(" 8859/1 ") == "iso-8859-1"
    assert charset_for_msh18("UNICODE") is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "PID|1",
        "MSH",
        "MSH|",
        "MSH|^^\\&|A",
        "MSH|^~a&|A",
        "MSH| ~\\&|A",
        "MSH|^~\\&|A\rpid|1",
        "MSH|^~\\&|A\rOBX1|2",
        "MSH|^~\\&|A\r\x0bMSH|x",
    ],
)
def test_malformed_messages_raise_codec_error(text: str) -> None:
    with pytest.raises(CodecError):
        parse_message(text)


def test_unknown_encoding_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        parse_message(b"MSH|^~\\&|A\r", "no-such-codec")


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("20240924181947", "2024-09-24T18:19:47"),
        ("202409241819", "2024-09-24T18:19"),
        ("2024092418", "2024-09-24T18"),
        ("20240924", "2024-09-24"),
        ("202409", "2024-09"),
        ("2024", "2024"),
        ("20240924181947.1234", "2024-09-24T18:19:47.1234"),
        ("20240924181947+0530", "2024-09-24T18:19:47+05:30"),
        ("202409241819-0400", "2024-09-24T18:19-04:00"),
        (" 20240924 ", "2024-09-24"),
        ("20240229", "2024-02-29"),
        ("20230229", "20230229"),
        ("00000000000000", "00000000000000"),
        ("20241332", "20241332"),
        ("20240924250000", "20240924250000"),
        ("2024-09-24", "2024-09-24"),
        ("24/09/2024 18:19", "24/09/2024 18:19"),
        ("2024092418194", "2024092418194"),
        ("", ""),
        ("20240924+9999", "20240924+9999"),
    ],
)
def test_parse_hl7_timestamp(text: str, iso: str) -> None:
    assert parse_hl7_timestamp(text) == iso


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_any_bytes_give_a_message_or_codec_error(data: bytes) -> None:
    for candidate in (data, b"MSH|^~\\&|" + data):
        try:
            msg = parse_message(candidate)
        except CodecError:
            continue
        assert msg.msh.name == "MSH"
        for segment in msg:
            segment.get(3, 2, 2, 2)
            segment.repeats(5)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_gives_a_message_or_codec_error(text: str) -> None:
    try:
        msg = parse_message("MSH|^~\\&|A||||||ORU^R01|1|P|2.5\rOBX|1|ST|" + text)
    except CodecError:
        return
    for segment in msg:
        assert isinstance(segment.get(3), str)
        assert isinstance(segment.get(4, 2, 2, 2), str)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.lists(
            st.lists(st.text(alphabet="abcXYZ019 .-", max_size=5), min_size=1, max_size=3),
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_positions_match_the_structure_that_was_joined(values: list[list[list[str]]]) -> None:
    field = "~".join("^".join("&".join(subs) for subs in comps) for comps in values)
    obx = parse_message(f"MSH|^~\\&|A||||||ORU^R01|1|P|2.5\rOBX|1|ST|{field}\r").segment("OBX")
    assert obx is not None
    for r, comps in enumerate(values, 1):
        for c, subs in enumerate(comps, 1):
            for s, value in enumerate(subs, 1):
                assert obx.get(3, c, r, s) == value
