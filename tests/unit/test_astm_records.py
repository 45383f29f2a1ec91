"""Unit tests of the E1394 record codec: delimiters, escapes, records, message assembly.

Record texts here are written for the tests; where one imitates an instrument, it is named.
The real captures are exercised in test_astm_records_corpus.py.
"""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.astm.escapes import (
    DEFAULT_DELIMITERS,
    Delimiters,
    Field,
    escape_text,
    parse_field,
    unescape_text,
)
from lisgw.astm.message import AstmMessage, MessageAssembler, encode_message
from lisgw.astm.records import Record, decode_record, encode_record
from lisgw.errors import CodecError

GENEXPERT = Delimiters(field="|", repeat="@", component="^", escape="\\")
ERBA = Delimiters(field="|", repeat="`", component="^", escape="&")


# Delimiters.


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("H|\\^&|||c311^1|||||host|RSUPL^REAL|P|1", Delimiters("|", "\\", "^", "&")),
        ("H|`^&||||||||||P|E 1394-97|20181120154015", ERBA),
        ("H|@^\\|URM-8lT4abZA-06||.806149 Happy Hospital^GeneXpert^4.8", GENEXPERT),
        ("H|\\^&|||", DEFAULT_DELIMITERS),
        ("H|\\^&", DEFAULT_DELIMITERS),
        ("  H|\\^&|||", DEFAULT_DELIMITERS),
        ("1H|\\^&|||", DEFAULT_DELIMITERS),
        ("H!~^#!x", Delimiters("!", "~", "^", "#")),
    ],
)
def test_delimiters_are_read_from_the_header(header: str, expected: Delimiters) -> None:
    assert Delimiters.from_header(header) == expected


@pytest.mark.parametrize(
    ("header", "where", "words"),
    [
        ("H|\\^", "H.2", "four delimiter characters"),
        ("H|", "H.2", "four delimiter characters"),
        ("H|\\^^|", "H.2", "not distinct"),
        ("H||^&|", "H.2", "not distinct"),
        ("H|a^&|", "H.2", "letter, digit, space"),
        ("H|\\^ |", "H.2", "letter, digit, space"),
        ("H|\\^&x|", "H.2", "followed by 'x'"),
        ("P|1|", "H.1", "not a header"),
        ("", "H.1", "not a header"),
    ],
)
def test_malformed_headers_raise_naming_the_problem(header: str, where: str, words: str) -> None:
    with pytest.raises(CodecError) as caught:
        Delimiters.from_header(header)
    assert caught.value.where == where
    assert words in str(caught.value)


def test_delimiter_definition_and_header_prefix() -> None:
    assert DEFAULT_DELIMITERS.definition == "\\^&"
    assert GENEXPERT.header_prefix == "H|@^\\"
    assert ERBA.header_prefix == "H|`^&"


# Escape sequences.


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("a&F&b", "a|b"),
        ("a&S&b", "a^b"),
        ("a&R&b", "a\\b"),
        ("a&E&b", "a&b"),
        ("&E&&E&", "&&"),
        ("PNG&R&20240628&R&x.PNG", "PNG\\20240628\\x.PNG"),
        ("line&X0D0A&next", "line\r\nnext"),
        ("&X02&x&X03&", "\x02x\x03"),
    ],
)
def test_escape_sequences_both_ways(escaped: str, text: str) -> None:
    assert unescape_text(escaped) == text
    assert unescape_text(escaped, strict=True) == text
    assert escape_text(text) == escaped


def test_hex_escapes_decode_any_case_and_bytes_that_need_no_escape() -> None:
    assert unescape_text("&X0d0a&") == "\r\n"
    assert unescape_text("&X41&B") == "AB"
    assert unescape_text("&XE9&") == "é"
    assert unescape_text("&XC3A9&", encoding="utf-8") == "é"


def test_escape_sequences_use_the_message_escape_character() -> None:
    # GeneXpert: escape '\', repeat '@'.
    assert unescape_text("a\\F\\b\\R\\c\\S\\d\\E\\e", GENEXPERT) == "a|b@c^d\\e"
    assert escape_text("a|b@c^d\\e", GENEXPERT) == "a\\F\\b\\R\\c\\S\\d\\E\\e"
    # '&' is plain data when it is not the escape character.
    assert escape_text("Tom & Jerry", GENEXPERT) == "Tom & Jerry"
    assert unescape_text("Tom &F& Jerry", GENEXPERT) == "Tom &F& Jerry"
    # Erba: backtick repeat.
    assert escape_text("a`b", ERBA) == "a&R&b"


def test_control_characters_are_hex_escaped_one_sequence_per_run() -> None:
    assert escape_text("a\r\nb\tc") == "a&X0D0A&b&X09&c"
    assert escape_text("\x7f") == "&X7F&"


@pytest.mark.parametrize(
    "text",
    ["Tom & Jerry", "a&Q&b", "trailing&", "&F", "&&", "&X&", "&XG1&", "&X123&", "&Zlocal&"],
)
def test_undecodable_escapes_are_kept_literally_when_lenient(text: str) -> None:
    assert unescape_text(text) == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Tom & Jerry", "unterminated"),
        ("a&Q&b", "unknown escape sequence &Q&"),
        ("trailing&", "unterminated"),
        ("&XG1&", "unknown"),
    ],
)
def test_undecodable_escapes_raise_when_strict(text: str, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        unescape_text(text, strict=True)


def test_local_escape_sequences_stay_literal_even_when_strict() -> None:
    # E1394 leaves &Z…& to the vendor: it is valid, but there is nothing to decode it into.
    assert unescape_text("a&Zxy&b", strict=True) == "a&Zxy&b"
    assert unescape_text("a&Zxy&&F&", strict=True) == "a&Zxy&|"


def test_lenient_unescape_recovers_the_sequences_after_a_stray_escape_character() -> None:
    assert unescape_text("Tom & Jerry &F& Co") == "Tom & Jerry | Co"
    assert unescape_text("&&F&") == "&|"


def test_unencodable_control_character_raises() -> None:
    with pytest.raises(CodecError):
        escape_text("\x00", encoding="no-such-codec")


# Records: decoding.


def test_result_record_fields_and_components() -> None:
    record = decode_record(b"R|1|^^^GLU|115.5|mg/dl|^DEFAULT|H|N|F||||20181120150433", ERBA)
    assert record.type == "R"
    assert len(record) == 13
    assert record.component(1) == "R"
    assert record.component(3, 4) == "GLU"
    assert record.component(4) == "115.5"
    assert record.component(6, 2) == "DEFAULT"
    assert record.component(6, 3) == ""
    assert record.component(13) == "20181120150433"
    assert record.component(14) == ""
    assert record.component(4, 1, 2) == ""
    assert record.fields[2] == (("", "", "", "GLU"),)
    assert record.raw == "R|1|^^^GLU|115.5|mg/dl|^DEFAULT|H|N|F||||20181120150433"
    assert record.delimiters == ERBA


def test_empty_and_trailing_empty_fields_are_kept() -> None:
    record = decode_record("P|1||")
    assert record.fields == ((("P",),), (("1",),), (("",),), (("",),))
    assert record.repeats(3) == (("",),)
    assert record.repeats(5) == ()
    assert record.field_text(4) == ""
    assert decode_record("P|1") != record


def test_repeats_and_components_nest() -> None:
    # cobas c311: one repeat per test, the test ID in component 4.
    record = decode_record("O|1|11625||^^^685/\\^^^687/\\^^^712/|R")
    assert record.repeats(5) == (("", "", "", "685/"), ("", "", "", "687/"), ("", "", "", "712/"))
    assert record.component(5, 4, 2) == "687/"
    assert record.component(5, 4, 4) == ""
    assert record.field_text(5) == "^^^685/\\^^^687/\\^^^712/"


def test_escaped_delimiters_do_not_split() -> None:
    record = decode_record("C|1|I|a&F&b^c&S&d\\e&R&f^&E&|G")
    assert record.repeats(4) == (("a|b", "c^d"), ("e\\f", "&"))
    assert record.field_text(4) == "a|b^c^d\\e\\f^&"
    assert record.component(5) == "G"


def test_header_field_2_is_kept_verbatim_and_the_header_defines_its_own_delimiters() -> None:
    record = decode_record("H|@^\\|ID||name^GeneXpert^4.8|a\\F\\b", DEFAULT_DELIMITERS)
    assert record.fields[1] == (("@^\\",),)
    assert record.component(2) == "@^\\"
    assert record.field_text(2) == "@^\\"
    assert record.component(5, 2) == "GeneXpert"
    assert record.component(6) == "a|b"
    assert record.delimiters == GENEXPERT


def test_minimal_header() -> None:
    record = decode_record("H|\\^&|||")
    assert record.fields == ((("H",),), (("\\^&",),), (("",),), (("",),), (("",),))


@pytest.mark.parametrize(
    ("text", "type_", "third"),
    [
        ("   P|1|ID", "P", "ID"),
        ("\tP|1|ID", "P", "ID"),
        ("2P|1|ID", "P", "ID"),
        ("3O|1|ID", "O", "ID"),
        ("L|1|N ", "L", "N"),
        ("L|1|N\n", "L", "N"),
        ("L|1|N\r\n", "L", "N"),
        ("\nL|1|N", "L", "N"),
        ("\x02L|1|N", "L", "N"),
    ],
)
def test_lenient_decoding_repairs_the_record_envelope(text: str, type_: str, third: str) -> None:
    record = decode_record(text)
    assert record.type == type_
    assert record.component(3) == third
    assert record.fields[0] == ((type_,),)
    assert record.raw == text


def test_lenient_decoding_keeps_spaces_inside_the_record() -> None:
    # Sysmex XP-100 pads values with spaces; only the record's own end is trimmed.
    record = decode_record("R|1|^^^^WBC^1|  5.5|10*3/uL||N||||               ||20240723")
    assert record.component(4) == "  5.5"
    assert record.component(11) == "               "


def test_lenient_decoding_accepts_anything() -> None:
    assert decode_record("").type == ""
    assert decode_record("").fields == ((("",),),)
    assert decode_record("   \r\n").type == ""
    assert decode_record("|a|b").type == ""
    assert decode_record("nonsense").type == "nonsense"
    assert decode_record(b"P|\xff\xfe|x", encoding="utf-8").component(2) == "\ufffd\ufffd"


def test_a_malformed_header_falls_back_to_the_given_delimiters_when_lenient() -> None:
    record = decode_record("H|\\^", GENEXPERT)
    assert record.type == "H"
    assert record.delimiters == GENEXPERT
    assert record.component(2) == "\\^"


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("R|1|^^^GLU|1&Q&2", "R.4.1", "unknown escape sequence"),
        ("R|1|^^^GLU|1^2&Q&", "R.4.2", "unknown escape sequence"),
        ("R|1|^^^GLU|x\\1^2&", "R.4.2", "unterminated escape sequence & (repeat 2)"),
        ("2P|1", "2P.1", "not a single letter"),
        (" P|1", " P.1", "not a single letter"),
        ("PP|1", "PP.1", "not a single letter"),
        ("", "?.1", "not a single letter"),
        ("P|1\n", "P", "CR or LF"),
        ("P|a\rb", "P", "CR or LF"),
        ("H|\\^", "H.2", "four delimiter characters"),
        ("H|\\^^|", "H.2", "not distinct"),
    ],
)
def test_strict_decoding_raises_naming_record_and_field(text: str, where: str, words: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_record(text, lenient=False)
    assert caught.value.where == where
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"{where}: ")


def test_strict_decoding_rejects_invalid_bytes() -> None:
    with pytest.raises(CodecError) as caught:
        decode_record(b"P|\xff", encoding="utf-8", lenient=False)
    assert caught.value.where == "record"


def test_strict_and_lenient_agree_on_regular_records() -> None:
    text = "R|2|^^^687/|15.0|U/l||N||F|||||P1&E&x\\y"
    strict = decode_record(text, lenient=False)
    lenient = decode_record(text)
    assert strict == lenient
    assert strict.fields == lenient.fields
    assert strict.raw == text


def test_strict_keeps_trailing_spaces_as_data() -> None:
    assert decode_record("L|1|N ", lenient=False).component(3) == "N "


# Records: value semantics and building.


def test_decoded_and_built_records_are_equal_and_hash_alike() -> None:
    decoded = decode_record("O|1|S1^03^1||^^^GLU\\^^^CRE|R")
    built = Record.of(
        "O", "1", ("S1", "03", "1"), "", [("", "", "", "GLU"), ("", "", "", "CRE")], "R"
    )
    assert decoded == built
    assert built == decoded
    assert hash(decoded) == hash(built)
    assert decode_record("O|1|S1^03^1||^^^GLU\\^^^CRE|R") == decoded
    assert decoded != Record.of("O", "1")
    assert decoded != decode_record("P|1|S1^03^1||^^^GLU\\^^^CRE|R")
    assert decoded != "O|1"
    assert len({decoded, built}) == 1


def test_equal_content_from_different_text_is_equal() -> None:
    assert decode_record("C|1|a&X41&") == decode_record("C|1|aA")
    assert decode_record("C|1|a@b", GENEXPERT) == decode_record("C|1|a\\b")


def test_records_are_immutable() -> None:
    record = decode_record("P|1")
    with pytest.raises(AttributeError):
        record.type = "O"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        record.fields = ()  # type: ignore[misc]


def test_records_survive_pickle_and_copy() -> None:
    record = decode_record("R|1|^^^GLU|5&F&5")
    restored = pickle.loads(pickle.dumps(record))
    assert restored == record
    assert restored.component(4) == "5|5"
    assert copy.deepcopy(record) == record
    assert "Record(type='R'" in repr(record)


@pytest.mark.parametrize(
    "fields",
    [
        (),
        ((("O",),),),
        ((("P",),), ()),
        ((("P",),), ((),)),
        ((("P",),), (("1", 2),)),
    ],
)
def test_record_constructor_checks_the_shape(fields: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises((ValueError, TypeError)):
        Record("P", fields)


def test_accessor_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        decode_record("P|1").component(0)
    with pytest.raises(ValueError):
        Record.of("P", "1").repeats(0)


def test_built_record_accessors() -> None:
    record = Record.of("R", "1", ("", "", "", "GLU"), "5.5", ["a", ("b", "c")])
    assert record.raw is None
    assert record.delimiters is None
    assert record.component(3, 4) == "GLU"
    assert record.component(5, 2, 2) == "c"
    assert record.repeats(5) == (("a",), ("b", "c"))
    assert record.field_text(5) == "a\\b^c"
    assert len(record) == 5


# Records: encoding.


def test_encode_escapes_data_with_the_given_delimiters() -> None:
    record = Record.of("C", "1", "I", ("Tom & Jerry", "a|b"), ["x\\y", "z^"], "line\r\nnext")
    assert encode_record(record) == b"C|1|I|Tom &E& Jerry^a&F&b|x&R&y\\z&S&|line&X0D0A&next"
    assert (
        encode_record(record, GENEXPERT)
        == b"C|1|I|Tom & Jerry^a\\F\\b|x\\E\\y@z\\S\\|line\\X0D0A\\next"
    )


def test_encode_header_writes_the_definition() -> None:
    header = Record.of("H", GENEXPERT.definition, "ID", "", ("Happy", "GeneXpert"))
    assert encode_record(header, GENEXPERT) == b"H|@^\\|ID||Happy^GeneXpert"
    with pytest.raises(CodecError) as caught:
        encode_record(header, DEFAULT_DELIMITERS)
    assert caught.value.where == "H.2"
    with pytest.raises(CodecError) as caught:
        encode_record(Record.of("H"))
    assert caught.value.where == "H.2"


@pytest.mark.parametrize("type_", ["", "P|", "P^", "P\r", " P"])
def test_encode_refuses_unwritable_record_types(type_: str) -> None:
    with pytest.raises(CodecError):
        encode_record(Record(type_, (((type_,),),)))


def test_encode_reports_unencodable_characters_with_their_place() -> None:
    with pytest.raises(CodecError) as caught:
        encode_record(Record.of("P", "1", ("ok", "€")))
    assert caught.value.where == "P.3.2"
    assert encode_record(Record.of("P", "1", ("ok", "€")), encoding="utf-8") == (
        "P|1|ok^€".encode()
    )


def test_manufacturer_record_with_kilobytes_of_payload_passes_through_intact() -> None:
    payload = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo+/=" * 250
    text = f"M|1|CURVE^BM^c111^1|{payload}|0.018514"
    record = decode_record(text.encode("latin-1"))
    assert record.component(4) == payload
    assert record.repeats(4) == ((payload,),)
    assert encode_record(record) == text.encode("latin-1")


def test_parse_field_alone() -> None:
    assert parse_field("a^b\\c", DEFAULT_DELIMITERS) == (("a", "b"), ("c",))
    assert parse_field("", DEFAULT_DELIMITERS) == (("",),)


# Round trips (hypothesis).

_DELIMITER_SETS = [DEFAULT_DELIMITERS, GENEXPERT, ERBA, Delimiters("!", "~", "$", "\\")]
_LATIN1 = st.characters(min_codepoint=0, max_codepoint=255)
_SPECIALS = st.sampled_from(list("|\\^&@`~!$\r\n\x02 "))
_COMPONENT = st.text(st.one_of(_LATIN1, _SPECIALS), max_size=8)
_FIELD = st.lists(st.lists(_COMPONENT, min_size=1, max_size=3).map(tuple), min_size=1, max_size=3)


@st.composite
def _records(draw: st.DrawFn) -> tuple[Record, Delimiters]:
    delimiters = draw(st.sampled_from(_DELIMITER_SETS))
    record_type = draw(st.sampled_from(list("HPORCQMSLZ")))
    fields: list[Field] = [((record_type,),)]
    if record_type == "H":
        fields.append(((delimiters.definition,),))
    fields += [tuple(field) for field in draw(st.lists(_FIELD, max_size=8))]
    return Record(record_type, tuple(fields)), delimiters


@settings(max_examples=300, deadline=None)
@given(_records())
def test_round_trip_any_record(case: tuple[Record, Delimiters]) -> None:
    record, delimiters = case
    data = encode_record(record, delimiters)
    assert b"\r" not in data and b"\n" not in data
    assert decode_record(data, delimiters, lenient=False) == record
    if not data.endswith(b" "):
        # Lenient decoding trims the record's trailing spaces, nothing else.
        assert decode_record(data, delimiters) == record
        assert decode_record(data, delimiters).fields == record.fields


_RECORD_ALPHABET = st.sampled_from(list("HPRLZX0123456789AFSE|\\^&@`~!$ \r\n\x02"))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=60), st.text(_RECORD_ALPHABET, max_size=60)),
    st.sampled_from(_DELIMITER_SETS),
)
def test_any_text_decodes_leniently_and_re_encodes_stably(text: str, delims: Delimiters) -> None:
    record = decode_record(text, delims)
    # Reading every part of a lazily decoded record never raises either.
    assert len(record.fields) == len(record)
    hash(record)
    for number in range(1, len(record) + 2):
        record.component(number, 2, 2)
        record.field_text(number)
    try:
        data = encode_record(record, record.delimiters or delims, encoding="utf-8")
    except CodecError:
        return
    assert decode_record(data, delims, encoding="utf-8") == record


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)), st.sampled_from(_DELIMITER_SETS))
def test_any_input_decodes_strictly_or_raises_codec_error(
    data: str | bytes, delimiters: Delimiters
) -> None:
    try:
        record = decode_record(data, delimiters, encoding="utf-8", lenient=False)
    except CodecError as exc:
        assert exc.where
        return
    assert record.fields[0] == ((record.type,),)


# Messages.


def _feed_all(records: list[str], assembler: MessageAssembler | None = None) -> list[AstmMessage]:
    assembler = assembler or MessageAssembler()
    messages: list[AstmMessage] = []
    for record in records:
        messages += assembler.feed(record.encode("latin-1"))
    return messages + assembler.flush()


def test_one_message() -> None:
    (message,) = _feed_all(["H|\\^&", "P|1", "O|1|S1", "R|1|^^^GLU|5", "R|2|^^^CRE|1", "L|1|N"])
    assert message.complete and message.terminated
    assert message.warnings == ()
    assert message.header is not None and message.header.type == "H"
    assert message.terminator is not None and message.terminator.component(3) == "N"
    assert [record.component(4) for record in message.of_type("R")] == ["5", "1"]
    assert len(message) == 6
    assert [record.type for record in message] == ["H", "P", "O", "R", "R", "L"]


def test_feed_returns_each_message_when_its_l_arrives() -> None:
    assembler = MessageAssembler()
    assert assembler.feed(b"H|\\^&") == []
    assert assembler.feed(b"P|1") == []
    (message,) = assembler.feed(b"L|1|N")
    assert len(message) == 3
    assert assembler.flush() == []


def test_each_header_sets_the_delimiters_of_its_message() -> None:
    first, second = _feed_all(["H|\\^&", "R|1|a\\b^c", "L|1", "H|@^\\", "R|1|a@b^c\\F\\d", "L|1"])
    assert first.delimiters == DEFAULT_DELIMITERS
    assert first.records[1].repeats(3) == (("a",), ("b", "c"))
    assert second.delimiters == GENEXPERT
    assert second.records[1].repeats(3) == (("a",), ("b", "c|d"))


def test_records_before_any_header_form_an_orphan_message() -> None:
    orphans, message = _feed_all(["R|1|^^^GLU|5", "C|1|I|x", "H|\\^&", "L|1"])
    assert orphans.header is None
    assert not orphans.terminated and not orphans.complete
    assert orphans.delimiters == DEFAULT_DELIMITERS
    assert [record.type for record in orphans] == ["R", "C"]
    assert "before any H record" in orphans.warnings[0]
    assert message.complete and message.warnings == ()


def test_records_between_l_and_the_next_h_use_the_last_delimiters() -> None:
    message, orphans = _feed_all(["H|@^\\", "L|1", "R|1|a@b", "L|1"])
    assert message.complete
    assert orphans.header is None and orphans.terminated and not orphans.complete
    assert orphans.delimiters == GENEXPERT
    assert orphans.records[0].repeats(3) == (("a",), ("b",))
    assert "after an L record" in orphans.warnings[0]


def test_a_new_header_before_l_closes_the_message_as_unterminated() -> None:
    first, second = _feed_all(["H|\\^&", "P|1", "H|\\^&", "P|1", "L|1"])
    assert not first.terminated and first.header is not None
    assert first.terminator is None
    assert "no L record" in first.warnings[0]
    assert second.complete


def test_flush_returns_the_open_message_as_unterminated() -> None:
    assembler = MessageAssembler()
    assembler.feed(b"H|\\^&")
    assembler.feed(b"R|1|^^^GLU|5")
    (message,) = assembler.flush()
    assert not message.terminated
    assert "stream ended before the L record" in message.warnings
    assert assembler.flush() == []


def test_a_stray_prefix_before_the_record_type_is_reported() -> None:
    (message,) = _feed_all(["H|\\^&", "2P|1", "  3O|1", "L|1|N "])
    assert [record.type for record in message] == ["H", "P", "O", "L"]
    assert message.warnings == (
        "record_type: record 2 (P) began with '2', which was stripped",
        "record_type: record 3 (O) began with '  3', which was stripped",
    )
    orphans, _ = _feed_all(["\x02R|1", "1H|\\^&", "L|1"])
    assert "record_type: record 1 (R) began with '\\x02'" in orphans.warnings[1]


def test_blank_records_are_skipped() -> None:
    (message,) = _feed_all(["H|\\^&", "", "\n", "P|1", "L|1"])
    assert [record.type for record in message] == ["H", "P", "L"]


def test_a_malformed_header_is_reported_and_the_message_kept() -> None:
    (message,) = _feed_all(["H|\\^", "P|1", "L|1"])
    assert message.header is not None
    assert message.complete
    assert "malformed header" in message.warnings[0]


def test_strict_assembler_raises_and_keeps_its_state() -> None:
    assembler = MessageAssembler(lenient=False)
    assembler.feed(b"H|\\^&")
    with pytest.raises(CodecError) as caught:
        assembler.feed(b"R|1|&Q&")
    assert caught.value.where == "R.3.1"
    with pytest.raises(CodecError):
        assembler.feed(b"H|\\^")
    (message,) = assembler.feed(b"L|1")
    assert [record.type for record in message] == ["H", "L"]


def test_encode_message_gives_back_the_record_bytes() -> None:
    records = ["H|@^\\|x", "P|1||a\\F\\b", "R|1|^^^X@^^^Y|1", "L|1|N"]
    (message,) = _feed_all(records)
    assert encode_message(message) == [record.encode("latin-1") for record in records]
    built = AstmMessage(records=(Record.of("H", "\\^&"), Record.of("L", "1", "N")))
    assert encode_message(built) == [b"H|\\^&", b"L|1|N"]


_STREAM_RECORD = st.sampled_from(
    ["H|\\^&", "H|@^\\|x", "H|\\^", "P|1", "O|1|S1", "R|1|^^^A|1", "C|1|I|x", "L|1", "", "  "]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_STREAM_RECORD, max_size=30))
def test_no_record_is_ever_dropped(stream: list[str]) -> None:
    messages = _feed_all(stream)
    fed = [text for text in stream if text.strip()]
    assert [record.raw for message in messages for record in message] == fed
    for message in messages:
        assert message.records
        assert message.complete or message.warnings
        assert all(record.type != "H" for record in message.records[1:])
        assert all(record.type != "L" for record in message.records[:-1])
