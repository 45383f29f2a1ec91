"""MllpFramer: framing rules, tolerance, oversize handling, chunking invariance, fuzzing.

Samples are synthetic; the real captures are exercised in test_hl7_corpus.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.errors import LocalProtocolError
from lisgw.hl7.mllp import (
    ENDED_BY_CLOSE,
    ENDED_BY_FS,
    ENDED_BY_MSH,
    ENDED_BY_VT,
    NEED_DATA,
    NO_END_BLOCK,
    NO_FRAMING,
    MllpEvent,
    MllpFramer,
    MllpMessage,
    MllpNoise,
    MllpOversize,
    frame,
)

VT, FS, CR = b"\x0b", b"\x1c", b"\r"
MSG_A = b"MSH|^~\\&|A||||20240101||ORU^R01|1|P|2.5.1\rPID|1||X\rOBX|1|NM|GLU||5.4|mmol/L\r"
MSG_B = b"MSH|^~\\&|B||||20240101||ORU^R01|2|P|2.5.1\rOBX|1|ST|NIT||Negative\r"


def events_of(
    chunks: list[bytes],
    *,
    close: bool = True,
    lenient: bool = True,
    max_message_size: int = 1 << 20,
) -> list[MllpEvent]:
    framer = MllpFramer(max_message_size=max_message_size, lenient=lenient)
    events: list[MllpEvent] = []
    for chunk in chunks:
        framer.receive_data(chunk)
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
    if close:
        framer.close()
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
    return events


def whole_and_bytewise(
    data: bytes, *, lenient: bool = True, max_message_size: int = 1 << 20
) -> list[MllpEvent]:
    """The events of ``data`` read at once, checked equal to those of a byte-by-byte read."""
    whole = events_of([data], lenient=lenient, max_message_size=max_message_size)
    bytewise = [data[i : i + 1] for i in range(len(data))]
    assert events_of(bytewise, lenient=lenient, max_message_size=max_message_size) == whole
    return whole


def payloads(events: list[MllpEvent]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, MllpMessage)]


def test_frame_wraps_payload_in_vt_fs_cr() -> None:
    assert frame(MSG_A) == VT + MSG_A + FS + CR


@pytest.mark.parametrize("bad", [b"a\x0bb", b"a\x1cb"])
def test_frame_refuses_framing_bytes_in_payload(bad: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        frame(bad)


def test_one_block_gives_one_complete_message_with_payload_offset() -> None:
    events = whole_and_bytewise(frame(MSG_A))
    assert events == [MllpMessage(MSG_A, 1, True, ())]


def test_message_is_emitted_as_soon_as_fs_arrives() -> None:
    framer = MllpFramer()
    framer.receive_data(VT + MSG_A + FS)
    assert framer.next_event() == MllpMessage(MSG_A, 1)
    assert framer.next_event() is NEED_DATA


def test_several_messages_in_one_read_keep_their_offsets() -> None:
    data = frame(MSG_A) + frame(MSG_B) + frame(MSG_A)
    events = whole_and_bytewise(data)
    assert payloads(events) == [MSG_A, MSG_B, MSG_A]
    assert [e.offset for e in events] == [1, len(MSG_A) + 4, len(MSG_A) + len(MSG_B) + 7]
    assert all(isinstance(e, MllpMessage) and e.complete and not e.warnings for e in events)


def test_fs_without_cr_is_tolerated() -> None:
    events = whole_and_bytewise(VT + MSG_A + FS + VT + MSG_B + FS)
    assert payloads(events) == [MSG_A, MSG_B]
    assert all(isinstance(e, MllpMessage) for e in events)


def test_stray_stx_before_vt_is_noise_and_framer_resynchronises() -> None:
    data = frame(MSG_A) + b"\x02" + frame(MSG_B)
    events = whole_and_bytewise(data)
    assert events[1] == MllpNoise(b"\x02", len(MSG_A) + 3, "bytes outside an MLLP block")
    assert payloads(events) == [MSG_A, MSG_B]


def test_lf_after_block_is_reported_as_noise() -> None:
    events = whole_and_bytewise(frame(MSG_A) + b"\n")
    assert events[1] == MllpNoise(b"\n", len(MSG_A) + 3, "bytes outside an MLLP block")


def test_block_without_fs_ends_at_next_vt_in_lenient_mode() -> None:
    events = whole_and_bytewise(VT + MSG_A + b"\r\n" + frame(MSG_B))
    assert events[0] == MllpMessage(MSG_A, 1, True, (NO_END_BLOCK, ENDED_BY_VT))
    assert events[1] == MllpMessage(MSG_B, len(MSG_A) + 4)


def test_block_without_fs_is_noise_in_strict_mode() -> None:
    data = VT + MSG_A + frame(MSG_B)
    events = whole_and_bytewise(data, lenient=False)
    assert events[0] == MllpNoise(VT + MSG_A, 0, "MLLP block interrupted by VT before FS")
    assert payloads(events) == [MSG_B]


def test_block_without_fs_ends_at_next_segment_start_msh() -> None:
    events = whole_and_bytewise(VT + MSG_A + MSG_B)
    assert events == [
        MllpMessage(MSG_A, 1, True, (NO_END_BLOCK, ENDED_BY_MSH)),
        MllpMessage(MSG_B, len(MSG_A) + 1, False, (NO_FRAMING, ENDED_BY_CLOSE)),
    ]


def test_open_block_is_flushed_incomplete_at_close() -> None:
    events = whole_and_bytewise(VT + MSG_A)
    assert events == [MllpMessage(MSG_A, 1, False, (NO_END_BLOCK, ENDED_BY_CLOSE))]
    assert events_of([VT + MSG_A], close=False) == []


def test_open_block_at_close_is_noise_in_strict_mode() -> None:
    events = whole_and_bytewise(VT + MSG_A, lenient=False)
    assert events == [MllpNoise(VT + MSG_A, 0, "connection closed inside an MLLP block")]


def test_unterminated_block_trims_line_breaks_and_reports_control_bytes() -> None:
    events = whole_and_bytewise(VT + MSG_A + b"\r\n\x02" + frame(MSG_B))
    assert events[0] == MllpMessage(MSG_A, 1, True, (NO_END_BLOCK, ENDED_BY_VT))
    assert events[1] == MllpNoise(b"\x02", len(MSG_A) + 3, "control bytes after a message")


def test_bare_hl7_is_split_at_each_msh_with_a_warning() -> None:
    events = whole_and_bytewise(MSG_A + MSG_B + MSG_A.rstrip(b"\r"))
    assert events == [
        MllpMessage(MSG_A, 0, True, (NO_FRAMING, ENDED_BY_MSH)),
        MllpMessage(MSG_B, len(MSG_A), True, (NO_FRAMING, ENDED_BY_MSH)),
        MllpMessage(
            MSG_A.rstrip(b"\r"), len(MSG_A) + len(MSG_B), False, (NO_FRAMING, ENDED_BY_CLOSE)
        ),
    ]


def test_bare_hl7_with_lf_separators_is_split_after_lf() -> None:
    a, b = MSG_A.replace(b"\r", b"\n"), MSG_B.replace(b"\r", b"\n")
    assert payloads(whole_and_bytewise(a + b)) == [a, b]


def test_bare_message_ends_at_fs_and_at_vt() -> None:
    events = whole_and_bytewise(MSG_A + FS + CR + MSG_B + b"\r\n" + frame(MSG_A))
    assert events == [
        MllpMessage(MSG_A, 0, True, (NO_FRAMING, ENDED_BY_FS)),
        MllpMessage(MSG_B, len(MSG_A) + 2, True, (NO_FRAMING, ENDED_BY_VT)),
        MllpMessage(MSG_A, len(MSG_A) + len(MSG_B) + 5),
    ]


def test_msh_inside_a_line_does_not_start_a_message() -> None:
    text = MSG_A + b"NTE|1||see MSH|x\r"
    events = whole_and_bytewise(frame(text))
    assert payloads(events) == [text]


def test_bare_hl7_is_noise_in_strict_mode() -> None:
    events = whole_and_bytewise(MSG_A + frame(MSG_B), lenient=False)
    assert events[0] == MllpNoise(MSG_A, 0, "bytes outside an MLLP block")
    assert payloads(events) == [MSG_B]


def test_text_not_starting_with_msh_is_noise() -> None:
    events = whole_and_bytewise(b"hello\r\n" + frame(MSG_A))
    assert events[0] == MllpNoise(b"hello\r\n", 0, "bytes outside an MLLP block")


def test_batch_block_is_not_split_at_its_msh_segments() -> None:
    batch = b"FHS|^~\\&\rBHS|^~\\&\r" + MSG_A + MSG_B + b"BTS|2\rFTS|1\r"
    assert payloads(whole_and_bytewise(frame(batch))) == [batch]


def test_line_breaks_between_vt_and_msh_stay_in_the_block() -> None:
    events = whole_and_bytewise(VT + b"\r\n" + MSG_A + FS + CR)
    assert events == [MllpMessage(b"\r\n" + MSG_A, 1)]


def test_empty_block_is_noise() -> None:
    events = whole_and_bytewise(VT + FS + CR + frame(MSG_A))
    assert events[0] == MllpNoise(VT + FS, 0, "empty MLLP block")
    assert payloads(events) == [MSG_A]


def test_long_noise_comes_in_bounded_pieces() -> None:
    noise = b"x" * 10_000
    events = whole_and_bytewise(noise + frame(MSG_A))
    pieces = [e for e in events if isinstance(e, MllpNoise)]
    assert [len(p.data) for p in pieces] == [4096, 4096, 1808]
    assert b"".join(p.data for p in pieces) == noise
    assert payloads(events) == [MSG_A]


def test_oversize_block_is_reported_with_its_size_and_skipped() -> None:
    big = b"MSH|^~\\&|" + b"x" * 500 + b"\r"
    data = frame(big) + frame(MSG_A)
    events = whole_and_bytewise(data, max_message_size=100)
    assert events == [MllpOversize(1, len(big)), MllpMessage(MSG_A, len(big) + 4)]


def test_oversize_block_without_fs_ends_at_next_vt() -> None:
    big = b"MSH|^~\\&|" + b"x" * 500
    events = whole_and_bytewise(VT + big + frame(MSG_A), max_message_size=100)
    assert events == [MllpOversize(1, len(big)), MllpMessage(MSG_A, len(big) + 2)]


def test_oversize_bare_message_ends_at_next_msh() -> None:
    big = b"MSH|^~\\&|" + b"x" * 500 + b"\r"
    events = whole_and_bytewise(big + MSG_A, max_message_size=100)
    assert events == [
        MllpOversize(0, len(big)),
        MllpMessage(MSG_A, len(big), False, (NO_FRAMING, ENDED_BY_CLOSE)),
    ]


def test_endless_block_keeps_memory_bounded() -> None:
    framer = MllpFramer(max_message_size=1000)
    head = b"MSH|^~\\&|"
    framer.receive_data(VT + head)
    for _ in range(2000):
        framer.receive_data(b"y" * 997 + b"\rX")
        assert framer.next_event() is NEED_DATA
        assert framer.buffered <= 1000 + 1000
    framer.receive_data(FS + CR)
    event = framer.next_event()
    assert isinstance(event, MllpOversize)
    assert event == MllpOversize(1, len(head) + 2000 * 999)


def test_receive_after_close_is_a_local_error() -> None:
    framer = MllpFramer()
    framer.close()
    with pytest.raises(LocalProtocolError):
        framer.receive_data(b"x")


def test_max_message_size_has_a_floor() -> None:
    with pytest.raises(ValueError):
        MllpFramer(max_message_size=10)


# -- properties

_PIECES = st.sampled_from(
    [
        frame(MSG_A),
        frame(MSG_B),
        VT + MSG_A,
        MSG_B,
        b"\x02",
        b"\r\n",
        FS,
        CR,
        VT,
        b"MSH",
        b"junk",
        b"\x00\xff",
    ]
)


def _check_events_match_stream(data: bytes, events: list[MllpEvent]) -> None:
    """Every payload and noise is the stream's bytes at its offset; offsets only grow."""
    last = -1
    for event in events:
        assert event.offset > last
        last = event.offset
        if isinstance(event, MllpMessage):
            assert data[event.offset : event.offset + len(event.payload)] == event.payload
            assert event.payload
        elif isinstance(event, MllpNoise):
            assert data[event.offset : event.offset + len(event.data)] == event.data
            assert 0 < len(event.data) <= 4096


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(_PIECES, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    lenient=st.booleans(),
)
def test_any_chunking_gives_the_same_events(
    pieces: list[bytes], cuts: list[int], lenient: bool
) -> None:
    data = b"".join(pieces)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = events_of([data], lenient=lenient, max_message_size=128)
    assert events_of(chunks, lenient=lenient, max_message_size=128) == whole
    _check_events_match_stream(data, whole)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), chunk=st.integers(min_value=1, max_value=700))
def test_any_bytes_give_events_and_bounded_memory(data: bytes, chunk: int) -> None:
    framer = MllpFramer(max_message_size=256)
    events: list[MllpEvent] = []
    for start in range(0, len(data), chunk):
        framer.receive_data(data[start : start + chunk])
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
        assert framer.buffered <= 4096 + 3 + chunk
    framer.close()
    while (event := framer.next_event()) is not NEED_DATA:
        events.append(event)
    assert framer.buffered == 0
    _check_events_match_stream(data, events)
