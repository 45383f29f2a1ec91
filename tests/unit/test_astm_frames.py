"""E1381 frame functions: checksum, building, parsing (lisgw.astm.frames)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.astm import frames as fr
from lisgw.errors import LocalProtocolError, RemoteProtocolError

# Record text only: no E1381 §6.6 restricted characters, CR between records.
record_text = st.binary(min_size=1, max_size=600).map(
    lambda data: fr.RESTRICTED_IN_RECORD.sub(b"", data) or b"x"
)


def test_checksum_is_sum_mod_256_in_upper_case_hex() -> None:
    body = b"1H|\\^&\r\x03"
    assert fr.checksum(body) == b"%02X" % (sum(body) % 256)
    assert fr.checksum(b"\x03") == b"03"
    assert fr.checksum(b"\xff\x01") == b"00"


@given(st.binary(max_size=3000))
@settings(max_examples=200, deadline=None)
def test_checksum_fast_path_matches_plain_sum(body: bytes) -> None:
    assert fr.checksum_value(body) == sum(body) % 256
    assert fr.checksum(body) == b"%02X" % (sum(body) % 256)


def test_verify_checksum_verdicts() -> None:
    body = b"1H\x03"  # 0x31 + 0x48 + 0x03 = 0x7C
    assert fr.checksum(body) == b"7C"
    assert fr.verify_checksum(body, b"7C") is fr.ChecksumVerdict.OK
    assert fr.verify_checksum(body, b"7c") is fr.ChecksumVerdict.LOWER_CASE
    assert fr.verify_checksum(body, b"7D") is fr.ChecksumVerdict.MISMATCH
    assert fr.verify_checksum(body, b"G1") is fr.ChecksumVerdict.MALFORMED
    assert fr.verify_checksum(body, b"7") is fr.ChecksumVerdict.MALFORMED


def test_build_frame_layout() -> None:
    frame = fr.build_frame(1, b"L|1|N\r", final=True)
    assert frame == b"\x021L|1|N\r\x03" + fr.checksum(b"1L|1|N\r\x03") + b"\r\n"
    assert fr.build_frame(9, b"x", final=False)[1:2] == b"1"  # numbers are modulo 8
    assert fr.build_frame(2, b"x", final=False)[-5] == fr.ETB


def test_build_frames_splits_at_240_with_etb_then_etx() -> None:
    text = b"R|1|" + b"9" * 600 + b"\r"
    frames = fr.build_frames(text)
    assert len(frames) == 3
    assert [f[-5] for f in frames] == [fr.ETB, fr.ETB, fr.ETX]
    assert [f[1:2] for f in frames] == [b"1", b"2", b"3"]
    assert all(len(f) <= fr.MAX_FRAME for f in frames)
    assert len(frames[0]) == fr.MAX_FRAME
    assert b"".join(fr.parse_frame(f).text for f in frames) == text


def test_build_frames_numbers_wrap_after_7() -> None:
    frames = fr.build_frames(b"x" * 10, first_number=6, max_text=1)
    assert [f[1] - 0x30 for f in frames] == [6, 7, 0, 1, 2, 3, 4, 5, 6, 7]


def test_build_frames_refuses_bad_input() -> None:
    with pytest.raises(LocalProtocolError):
        fr.build_frames(b"")
    with pytest.raises(LocalProtocolError):
        fr.build_frames(b"H|\x02\r")
    with pytest.raises(LocalProtocolError):
        fr.build_frames(b"H\r", max_text=241)


def test_parse_frame_reports_number_text_and_finality() -> None:
    parsed = fr.parse_frame(fr.build_frame(3, b"P|1\r", final=False))
    assert parsed == fr.ParsedFrame(3, b"P|1\r", False, ())


def test_parse_frame_tolerates_lower_case_and_missing_trailer() -> None:
    parsed = fr.parse_frame(b"\x021H\x037c")
    assert parsed.warnings == ("frame has no CR LF trailer", "lower-case checksum 7c")
    assert (parsed.number, parsed.text, parsed.final) == (1, b"H", True)


def test_parse_frame_checksum_optional() -> None:
    with pytest.raises(RemoteProtocolError):
        fr.parse_frame(b"\x021L|1\r\x03\r\n")
    parsed = fr.parse_frame(b"\x021L|1\r\x03\r\n", checksum_optional=True)
    assert parsed.warnings == ("frame has no checksum",)


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b"", 0),
        (b"1L\x03", 0),  # no STX
        (b"\x029L\x03AA\r\n", 1),  # frame number 9
        (b"\x021L|1\r\r\n", 6),  # no ETX/ETB
        (b"\x021L|1\r\x0300\r\n", 7),  # wrong checksum
    ],
)
def test_parse_frame_errors_name_the_offset(raw: bytes, offset: int) -> None:
    with pytest.raises(RemoteProtocolError) as error:
        fr.parse_frame(raw)
    assert error.value.offset == offset


@given(record_text, st.integers(min_value=1, max_value=240), st.integers(0, 7))
@settings(max_examples=200, deadline=None)
def test_build_then_parse_round_trips(text: bytes, max_text: int, first: int) -> None:
    frames = fr.build_frames(text, first_number=first, max_text=max_text)
    parsed = [fr.parse_frame(frame) for frame in frames]
    assert b"".join(p.text for p in parsed) == text
    assert [p.number for p in parsed] == [(first + i) % 8 for i in range(len(frames))]
    assert [p.final for p in parsed] == [False] * (len(frames) - 1) + [True]
    assert all(p.warnings == () for p in parsed)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_parse_frame_on_any_bytes_returns_or_raises_protocol_error(raw: bytes) -> None:
    try:
        parsed = fr.parse_frame(raw)
    except RemoteProtocolError as error:
        assert error.offset is not None
    else:
        assert 0 <= parsed.number <= 7
        assert parsed.text in raw


# -- the receive path's fast primitives ------------------------------------------------------

frame_end_haystack = st.lists(
    st.sampled_from([b"\x02", b"\x03", b"\x04", b"\x05", b"\x17", b"\r\n", b"ab", b"x" * 700])
    | st.binary(max_size=20),
    max_size=12,
).map(b"".join)


@given(frame_end_haystack, st.integers(0, 4000), st.integers(0, 4000))
@settings(max_examples=300, deadline=None)
def test_find_frame_end_is_the_frame_end_regex(data: bytes, start: int, stop: int) -> None:
    found = fr.FRAME_END.search(data, start, stop)
    expected = -1 if found is None else found.start()
    assert fr.find_frame_end(data, start, stop) == expected
    assert fr.find_frame_end(bytearray(data), start, stop) == expected


def test_find_frame_end_looks_past_its_search_window() -> None:
    data = b"\x02" + b"x" * 3000 + b"\x17" + b"y" * 10 + b"\x03"
    assert fr.find_frame_end(data, 1, len(data)) == 3001
    assert fr.find_frame_end(data, 1, 3001) == -1
    assert fr.find_frame_end(data, 3002, len(data)) == len(data) - 1


@given(record_text, st.integers(0, 7), st.booleans())
@settings(max_examples=200, deadline=None)
def test_checksum_matches_only_the_upper_case_checksum(
    text: bytes, number: int, final: bool
) -> None:
    frame = fr.build_frame(number, text, final)[:-2]  # STX ... C1 C2, up to 604 bytes
    assert fr.checksum_matches(frame)
    lower = frame[:-2] + frame[-2:].lower()
    assert fr.checksum_matches(lower) is (lower == frame)
    value = int(frame[-2:], 16)
    for wrong in ((value + 1) % 256, (value + 255) % 256, (value + 128) % 256):
        assert not fr.checksum_matches(frame[:-2] + b"%02X" % wrong)
    assert not fr.checksum_matches(frame[:-2] + b"\r\n")
