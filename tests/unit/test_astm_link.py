"""The E1381 link state machine (lisgw.astm.link), driven through every transition.

Frames are built with lisgw.astm.frames; no corpus bytes here (see test_astm_link_corpus).
"""

from __future__ import annotations

import dataclasses
import pickle
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.astm import frames as fr
from lisgw.astm.events import (
    NEED_DATA,
    PAUSED,
    ContentionDetected,
    Event,
    FrameDuplicate,
    FrameReceived,
    FrameRejected,
    MessageAborted,
    MessageDelivered,
    Noise,
    ProtocolWarning,
    RecordReceived,
    RecordsReceived,
    TransferEnded,
    TransferIncomplete,
    TransferStarted,
)
from lisgw.astm.link import AstmLink, LinkOptions, LinkState, LinkTimers
from lisgw.astm.scanner import FrameScanner
from lisgw.errors import ConfigError, LocalProtocolError

ENQ, EOT, ACK, NAK = b"\x05", b"\x04", b"\x06", b"\x15"
HEADER = b"H|\\^&|||Analyzer^1|||||host||P|1"
RESULT = b"R|1|^^^GLU|5.5|mmol/l||N||F"


def frame(number: int, text: bytes, final: bool = True) -> bytes:
    return fr.build_frame(number, text, final)


def drain(link: AstmLink, now: float = 0.0, *, decide: bool = True) -> list[Event]:
    """All events; FrameReceived acknowledged at once unless ``decide`` is False."""
    events: list[Event] = []
    while True:
        event = link.next_event()
        if event is NEED_DATA or event is PAUSED:
            return events
        events.append(event)
        if decide and isinstance(event, FrameReceived):
            link.acknowledge(now)


def feed(link: AstmLink, data: bytes, now: float = 0.0) -> list[Event]:
    link.receive_data(data, now)
    return drain(link, now)


def kinds(events: list[Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def records(events: list[Event]) -> list[bytes]:
    return [event.text for event in events if isinstance(event, RecordReceived)]


def receiving_link(**options: bool) -> AstmLink:
    link = AstmLink(LinkOptions(**options))  # type: ignore[arg-type]
    feed(link, ENQ)
    link.data_to_send()
    return link


def sending_link(records: list[bytes], *, instrument: bool = False) -> tuple[AstmLink, int]:
    """A link that sent ENQ for one message and got ACK: frame 1 is on the wire."""
    link = AstmLink(LinkOptions(we_are_instrument=instrument))
    message_id = link.send_message(records, 0.0)
    assert link.data_to_send() == ENQ
    assert feed(link, ACK) == []
    return link, message_id


# -- receiving: establishment, transfer, termination ----------------------------------------


def test_enq_is_acknowledged_and_starts_a_transfer() -> None:
    link = AstmLink()
    assert feed(link, ENQ, now=100.0) == [TransferStarted(0)]
    assert link.data_to_send() == ACK
    assert link.state is LinkState.RECEIVING
    assert link.deadline() == 130.0


def test_frame_is_acked_only_after_the_caller_acknowledges() -> None:
    link = receiving_link()
    data = frame(1, HEADER + b"\r" + RESULT + b"\rL|1|N\r")
    link.receive_data(data, 1.0)
    event = link.next_event()
    assert event == FrameReceived(1, data[2:-5], True, data[:-2], 1)
    assert link.next_event() is PAUSED
    assert link.state is LinkState.FRAME_PENDING
    assert link.data_to_send() == b""
    assert link.deadline() is None
    link.acknowledge(2.0)
    assert link.data_to_send() == ACK
    assert link.deadline() == 32.0
    events = drain(link)
    assert records(events) == [HEADER, RESULT, b"L|1|N"]
    offsets = [e.offset for e in events if isinstance(e, RecordReceived)]
    assert offsets == [3, 4 + len(HEADER), 5 + len(HEADER) + len(RESULT)]


def test_eot_ends_the_transfer() -> None:
    link = receiving_link()
    feed(link, frame(1, b"L|1|N\r"))
    link.data_to_send()
    assert feed(link, EOT) == [TransferEnded(1 + 13)]
    assert link.state is LinkState.IDLE
    assert link.deadline() is None
    assert link.data_to_send() == b""


def test_records_are_reassembled_across_etb_frames() -> None:
    link = receiving_link()
    data = frame(1, b"H|\\^&\rR|1|^^^7/1/no", False) + frame(2, b"t|9.61\rL|1", True)
    events = feed(link, data + EOT)
    assert records(events) == [b"H|\\^&", b"R|1|^^^7/1/not|9.61", b"L|1"]
    assert kinds(events)[-1] == "TransferEnded"


def test_caller_reject_naks_and_the_retransmission_is_delivered_once() -> None:
    link = receiving_link()
    data = frame(1, b"P|1\r")
    link.receive_data(data, 0.0)
    assert isinstance(link.next_event(), FrameReceived)
    link.reject(0.0)
    assert link.data_to_send() == NAK
    assert drain(link) == []
    events = feed(link, data)
    assert kinds(events) == ["FrameReceived", "RecordReceived"]
    assert link.data_to_send() == ACK


def test_acknowledge_or_reject_without_a_pending_frame_is_a_local_error() -> None:
    link = receiving_link()
    with pytest.raises(LocalProtocolError):
        link.acknowledge(0.0)
    with pytest.raises(LocalProtocolError):
        link.reject(0.0)


# -- receiving: defective frames, retransmission, frame numbers ------------------------------


def test_bad_checksum_is_naked_and_the_retransmission_accepted() -> None:
    link = receiving_link()
    good = frame(1, b"P|1\r")
    bad = good[:-4] + (b"00" if good[-4:-2] != b"00" else b"01") + b"\r\n"
    events = feed(link, bad)
    assert kinds(events) == ["FrameRejected"]
    assert isinstance(events[0], FrameRejected) and "checksum" in events[0].reason
    assert link.data_to_send() == NAK
    assert kinds(feed(link, good)) == ["FrameReceived", "RecordReceived"]
    assert link.data_to_send() == ACK


def test_identical_retransmission_is_acked_not_delivered_again() -> None:
    link = receiving_link()
    data = frame(1, b"P|1\r")
    feed(link, data)
    link.data_to_send()
    assert feed(link, data) == [FrameDuplicate(1, 1 + len(data))]
    assert link.data_to_send() == ACK


def test_same_number_different_content_is_accepted_with_a_warning() -> None:
    link = receiving_link()
    feed(link, frame(1, b"R|28|a\r") + frame(2, b"R|29|b\r"))
    events = feed(link, frame(2, b"R|29|c\r") + frame(3, b"R|30|d\r"))
    assert kinds(events) == [
        "ProtocolWarning",
        "FrameReceived",
        "RecordReceived",
        "FrameReceived",
        "RecordReceived",
    ]
    assert "repeated with different content" in events[0].text  # type: ignore[union-attr]
    assert records(events) == [b"R|29|c", b"R|30|d"]


def test_strict_frame_numbers_nak_reused_and_out_of_sequence_numbers() -> None:
    link = receiving_link(strict_frame_numbers=True)
    feed(link, frame(1, b"R|1|a\r"))
    link.data_to_send()
    assert kinds(feed(link, frame(1, b"R|1|b\r"))) == ["FrameRejected"]
    assert kinds(feed(link, frame(3, b"R|1|b\r"))) == ["FrameRejected"]
    assert link.data_to_send() == NAK + NAK


def test_out_of_sequence_number_is_accepted_with_a_warning() -> None:
    link = receiving_link()
    events = feed(link, frame(3, b"P|1\r"))
    assert kinds(events) == ["ProtocolWarning", "FrameReceived", "RecordReceived"]
    assert events[0] == ProtocolWarning("frame number 3, expected 1: accepted", 1)


def test_frame_numbers_wrap_from_7_to_0() -> None:
    link = receiving_link()
    data = b"".join(frame(n % 8, b"C|%d\r" % n) for n in range(1, 11))
    events = feed(link, data + EOT)
    numbers = [e.number for e in events if isinstance(e, FrameReceived)]
    assert numbers == [1, 2, 3, 4, 5, 6, 7, 0, 1, 2]
    assert "ProtocolWarning" not in kinds(events)
    assert link.data_to_send() == ACK * 10


def test_tolerated_frame_deviations_warn() -> None:
    link = receiving_link()
    body = b"1P|1\r\x03"
    lower_case = b"\x02" + body + fr.checksum(body).lower() + b"\r\n"
    no_trailer = frame(2, b"O|1\r")[:-2]
    doubled = frame(3, b"R|1\r") + b"\r\n"
    events = feed(link, lower_case + no_trailer + doubled + EOT)
    warnings = [e.text for e in events if isinstance(e, ProtocolWarning)]
    has_letters = fr.checksum(body) != fr.checksum(body).lower()
    assert warnings == [
        *(["lower-case checksum " + fr.checksum(body).lower().decode()] if has_letters else []),
        "frame not followed by CR LF",
        "extra CR/LF outside frames (doubled trailer?)",
    ]
    assert records(events) == [b"P|1", b"O|1", b"R|1"]


def test_missing_checksum_rejected_unless_optional() -> None:
    data = b"\x021L|1\r\x03\r\n"
    assert kinds(feed(receiving_link(), data)) == ["FrameRejected"]
    events = feed(receiving_link(checksum_optional=True), data)
    assert kinds(events) == ["ProtocolWarning", "FrameReceived", "RecordReceived"]
    assert kinds(feed(receiving_link(lenient=True), data))[-1] == "RecordReceived"


def test_lf_separators_split_records_and_default_mode_warns() -> None:
    data = frame(1, b"H|\\^&\r\nP|1\nL|1\r")
    events = feed(receiving_link(lf_separators=True), data)
    assert records(events) == [b"H|\\^&", b"P|1", b"L|1"]
    events = feed(receiving_link(), data)
    assert "ProtocolWarning" in kinds(events)
    assert records(events) == [b"H|\\^&", b"\nP|1\nL|1"]


def test_frame_longer_than_247_bytes_is_accepted_with_a_warning() -> None:
    events = feed(receiving_link(), frame(1, b"R|" + b"7" * 400 + b"\r"))
    assert kinds(events) == ["ProtocolWarning", "FrameReceived", "RecordReceived"]


def test_frame_over_max_frame_size_is_naked_in_bounded_memory() -> None:
    link = receiving_link(max_frame_size=64)  # type: ignore[arg-type]
    big = frame(1, b"R|" + b"7" * 300 + b"\r")
    link.receive_data(big[:150], 0.0)
    assert drain(link) == []
    assert link.buffered_size <= 64
    events = feed(link, big[150:])
    assert kinds(events) == ["FrameRejected"]
    rejected = events[0]
    assert isinstance(rejected, FrameRejected)
    assert rejected.reason == f"frame of {len(big)} bytes exceeds max_frame_size 64"
    assert rejected.raw == big[:60] and rejected.offset == 1
    assert link.data_to_send() == NAK
    assert kinds(feed(link, frame(1, b"P|1\r"))) == ["FrameReceived", "RecordReceived"]


def test_frame_interrupted_by_eot_is_rejected_without_nak() -> None:
    link = receiving_link()
    events = feed(link, b"\x021P|1" + EOT)
    assert kinds(events) == ["FrameRejected", "TransferEnded"]
    assert link.data_to_send() == b""


# -- receiving: the record size bound ----------------------------------------------------------


def record_limited_link(max_record_size: int, *, lf_separators: bool = False) -> AstmLink:
    link = AstmLink(LinkOptions(max_record_size=max_record_size, lf_separators=lf_separators))
    feed(link, ENQ)
    link.data_to_send()
    return link


def test_default_max_record_size_is_one_mib_and_must_be_positive() -> None:
    assert LinkOptions().max_record_size == 1 << 20
    with pytest.raises(ConfigError) as error:
        LinkOptions(max_record_size=0)
    assert error.value.problems == ["max_record_size: 0 is below 1 byte"]


def test_etb_frames_without_cr_stop_at_max_record_size_until_the_sender_gives_up() -> None:
    link = record_limited_link(600)
    chunk = b"M|1|" + b"Q" * 236  # 240 text bytes and no CR: a record that never ends
    for number in (1, 2):
        assert kinds(feed(link, frame(number, chunk, False))) == ["FrameReceived"]
        assert link.data_to_send() == ACK
    assert link.pending_record_size == 480
    third = frame(3, chunk, False)
    for attempt in range(6):  # E1381 §6.5.1: the sender retransmits, then gives up
        offset = 1 + (2 + attempt) * len(third)
        reason = "record of 720 bytes exceeds max_record_size 600"
        assert feed(link, third) == [FrameRejected(reason, third[:-2], offset)]
        assert link.data_to_send() == NAK
        assert link.pending_record_size == 480  # nothing of the rejected frame is kept
    events = feed(link, EOT)
    offset = 1 + 8 * len(third)
    assert events == [TransferIncomplete("EOT after an intermediate (ETB) frame", offset)]
    assert link.state is LinkState.IDLE
    assert link.pending_record_size == 0


def test_a_record_of_exactly_max_record_size_passes_one_byte_more_is_naked() -> None:
    link = record_limited_link(600)
    texts = [b"A" * 240, b"A" * 240, b"A" * 120 + b"\r" + b"B" * 119, b"B" * 240, b"B" * 240]
    events: list[Event] = []
    for number, text in enumerate(texts, 1):
        events += feed(link, frame(number, text, False))
    assert records(events) == [b"A" * 600]
    assert link.data_to_send() == ACK * 5
    assert link.pending_record_size == 599
    # The final frame would complete a record of 601 bytes: refused like a partial one.
    last = frame(6, b"BB")
    assert kinds(feed(link, last)) == ["FrameRejected"]
    assert link.data_to_send() == NAK
    events = feed(link, frame(6, b"B"))
    assert records(events) == [b"B" * 600]
    assert link.pending_record_size == 0
    assert kinds(feed(link, EOT)) == ["TransferEnded"]


def test_a_frame_holding_a_record_longer_than_max_record_size_is_naked() -> None:
    link = record_limited_link(100)
    data = frame(1, b"H|\\^&\r" + b"R|" + b"7" * 150 + b"\rL|1\r")
    events = feed(link, data)
    assert events == [
        FrameRejected("record of 152 bytes exceeds max_record_size 100", data[:-2], 1)
    ]
    assert link.data_to_send() == NAK


def test_lf_ends_records_for_the_bound_only_with_lf_separators() -> None:
    text = b"R|" + b"7" * 200 + b"\n"
    link = record_limited_link(300, lf_separators=True)
    events = feed(link, frame(1, text, False) + frame(2, text, False) + frame(3, text))
    assert records(events) == [text[:-1]] * 3
    link = record_limited_link(300)
    events = feed(link, frame(1, text, False) + frame(2, text, False))
    assert kinds(events) == ["ProtocolWarning", "FrameReceived", "FrameRejected"]


def test_default_bound_holds_with_large_frames() -> None:
    link = receiving_link()
    chunk = b"Q" * 60_000  # 17 of them fit in 1 MiB, 18 do not
    for number in range(1, 18):
        assert kinds(feed(link, frame(number, chunk, False))) == [
            "ProtocolWarning",
            "FrameReceived",
        ]
    assert link.pending_record_size == 17 * 60_000
    events = feed(link, frame(18, chunk, False))
    assert kinds(events) == ["FrameRejected"]
    rejected = events[0]
    assert isinstance(rejected, FrameRejected)
    assert rejected.reason == f"record of {18 * 60_000} bytes exceeds max_record_size {1 << 20}"
    assert link.pending_record_size == 17 * 60_000


# -- receiving: noise and irregular sessions ------------------------------------------------


def test_stray_bytes_while_idle_are_noise() -> None:
    link = AstmLink()
    events = feed(link, ACK + EOT + NAK + b"garbage" + ENQ)
    assert kinds(events) == ["Noise", "Noise", "Noise", "Noise", "TransferStarted"]
    assert events[3] == Noise(b"garbage", 3, "bytes outside a frame")
    assert link.data_to_send() == ACK


def test_doubled_enq_is_ignored_not_answered() -> None:
    link = AstmLink()
    events = feed(link, ENQ + ENQ + frame(1, b"P|1\r"))
    assert kinds(events) == ["TransferStarted", "Noise", "FrameReceived", "RecordReceived"]
    assert events[1] == Noise(ENQ, 1, "doubled ENQ ignored")
    assert link.data_to_send() == ACK + ACK  # one for ENQ, one for the frame


def test_enq_mid_transfer_ends_it_incomplete_and_starts_anew() -> None:
    link = receiving_link()
    events = feed(link, frame(1, b"P|1\r", False) + ENQ)
    assert kinds(events)[-2:] == ["TransferIncomplete", "TransferStarted"]
    assert link.data_to_send() == ACK + ACK


def test_eot_after_an_etb_frame_is_incomplete() -> None:
    link = receiving_link()
    events = feed(link, frame(1, b"R|1|^^^GL", False) + EOT)
    assert kinds(events) == ["FrameReceived", "TransferIncomplete"]


def test_frames_without_enq_form_an_implicit_transfer() -> None:
    link = AstmLink()
    events = feed(link, frame(1, b"H|\\^&\rL|1\r"))
    assert (
        kinds(events)
        == ["ProtocolWarning", "TransferStarted", "FrameReceived"] + ["RecordReceived"] * 2
    )
    link.close(5.0)
    assert drain(link) == [TransferIncomplete("connection closed before EOT", 17)]
    assert link.state is LinkState.CLOSED


def test_frame_timeout_ends_the_transfer_incomplete() -> None:
    link = receiving_link()
    feed(link, frame(1, b"P|1\r", False), now=10.0)
    link.data_to_send()
    assert link.deadline() == 40.0
    link.handle_timeout(39.0)
    assert drain(link) == []
    partial = b"\x022O|1|S1"
    link.receive_data(partial, 20.0)
    assert drain(link) == []
    link.handle_timeout(50.0)
    events = drain(link)
    assert kinds(events) == ["FrameRejected", "TransferIncomplete"]
    assert link.state is LinkState.IDLE
    assert link.data_to_send() == b""


def test_close_mid_transfer() -> None:
    link = receiving_link()
    link.receive_data(frame(1, b"P|1\r") + b"\x022O|1", 0.0)
    assert isinstance(link.next_event(), FrameReceived)
    link.close(1.0)
    assert link.next_event() is PAUSED  # the caller still decides on the frame
    link.acknowledge(1.0)
    events = drain(link)
    assert kinds(events) == ["RecordReceived", "FrameRejected", "TransferIncomplete"]
    assert link.state is LinkState.CLOSED
    assert link.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        link.receive_data(b"x", 2.0)
    with pytest.raises(LocalProtocolError):
        link.send_message([b"H|\\^&"], 2.0)


# -- sending --------------------------------------------------------------------------------


def test_send_message_enq_frames_eot() -> None:
    link = AstmLink()
    message_id = link.send_message([HEADER, b"L|1|N"], 5.0)
    assert link.data_to_send() == ENQ
    states = [link.state]
    assert link.deadline() == 20.0
    assert feed(link, ACK, now=6.0) == []
    assert link.data_to_send() == frame(1, HEADER + b"\rL|1|N\r")
    assert link.deadline() == 21.0
    states.append(link.state)
    assert feed(link, ACK, now=7.0) == [MessageDelivered(message_id)]
    assert link.data_to_send() == EOT
    states.append(link.state)
    assert states == [LinkState.SENDING_ENQ, LinkState.SENDING_FRAME, LinkState.IDLE]


def test_long_records_go_out_in_etb_frames_of_240_text_bytes() -> None:
    record = b"M|1|" + b"Q" * 700
    link, _ = sending_link([HEADER, record])
    sent = [link.data_to_send()]
    while link.state is LinkState.SENDING_FRAME:
        feed(link, ACK)
        sent.append(link.data_to_send())
    assert sent[-1] == EOT
    frames = sent[:-1]
    assert [len(f) for f in frames] == [247, 247, 247, len(frames[-1])]
    assert [f[-5] for f in frames] == [fr.ETB, fr.ETB, fr.ETB, fr.ETX]
    assert b"".join(fr.parse_frame(f).text for f in frames) == HEADER + b"\r" + record + b"\r"


def test_nak_retransmits_and_the_sixth_nak_aborts() -> None:
    link, message_id = sending_link([HEADER])
    first = link.data_to_send()
    for _ in range(5):
        assert feed(link, NAK) == []
        assert link.data_to_send() == first
    events = feed(link, NAK)
    assert events == [MessageAborted(message_id, "frame 1: NAK 6 times")]
    assert link.data_to_send() == EOT
    assert link.state is LinkState.IDLE


def test_unexpected_reply_counts_as_nak() -> None:
    link, _ = sending_link([HEADER])
    first = link.data_to_send()
    events = feed(link, b"\x86")
    assert kinds(events) == ["Noise"]
    assert link.data_to_send() == first


def test_reply_timeout_on_enq_and_on_frame_aborts_with_eot() -> None:
    link = AstmLink()
    first_id = link.send_message([HEADER], 0.0)
    link.data_to_send()
    link.handle_timeout(14.9)
    assert drain(link) == [] and link.data_to_send() == b""
    link.handle_timeout(15.0)
    assert drain(link) == [MessageAborted(first_id, "no reply to ENQ within the reply timeout")]
    assert link.data_to_send() == EOT
    link, second_id = sending_link([HEADER])
    assert link.data_to_send() == frame(1, HEADER + b"\r")
    link.handle_timeout(15.0)
    assert drain(link) == [
        MessageAborted(second_id, "no reply to frame 1 within the reply timeout")
    ]
    assert link.data_to_send() == EOT


def test_busy_nak_to_enq_backs_off_10_s_and_retries() -> None:
    link = AstmLink()
    message_id = link.send_message([HEADER], 0.0)
    link.data_to_send()
    assert feed(link, NAK, now=1.0) == []
    assert link.state is LinkState.IDLE
    assert link.deadline() == 11.0
    link.handle_timeout(11.0)
    assert link.data_to_send() == ENQ
    for attempt in range(2, 7):
        events = feed(link, NAK, now=float(attempt * 20))
        link.handle_timeout(float(attempt * 20 + 10))
    assert events == [MessageAborted(message_id, "receiver busy: NAK to 6 ENQs")]
    assert link.deadline() is None


def test_contention_as_host_yields_and_retries_after_the_instrument() -> None:
    link = AstmLink()
    message_id = link.send_message([HEADER], 0.0)
    assert link.data_to_send() == ENQ
    assert feed(link, ENQ, now=1.0) == [ContentionDetected(0)]
    assert link.data_to_send() == b""  # E1381 §6.2.1: silent; answer the next ENQ
    assert link.state is LinkState.IDLE
    assert link.deadline() == 21.0
    events = feed(link, ENQ + frame(1, b"R|1\r") + EOT, now=2.0)
    assert kinds(events) == ["TransferStarted", "FrameReceived", "RecordReceived", "TransferEnded"]
    assert link.data_to_send() == ACK + ACK
    assert link.deadline() == 21.0
    link.handle_timeout(21.0)
    assert link.data_to_send() == ENQ
    feed(link, ACK, now=22.0)
    assert feed(link, ACK, now=23.0) == [MessageDelivered(message_id)]


def test_contention_as_instrument_resends_enq_after_1_s() -> None:
    link = AstmLink(LinkOptions(we_are_instrument=True))
    link.send_message([HEADER], 0.0)
    link.data_to_send()
    assert feed(link, ENQ, now=3.0) == [ContentionDetected(0)]
    assert link.data_to_send() == b""
    assert link.deadline() == 4.0
    link.handle_timeout(4.0)
    assert link.data_to_send() == ENQ


def test_peer_frame_instead_of_ack_to_our_enq_is_received() -> None:
    link = AstmLink()
    link.send_message([HEADER], 0.0)
    link.data_to_send()
    events = feed(link, frame(1, b"R|1\r") + EOT, now=1.0)
    assert kinds(events) == [
        "ContentionDetected",
        "ProtocolWarning",
        "TransferStarted",
        "FrameReceived",
        "RecordReceived",
        "TransferEnded",
    ]


def test_receiver_eot_interrupt_counts_as_ack_then_line_is_left_to_receiver() -> None:
    link, message_id = sending_link([HEADER, b"M|1|" + b"z" * 300])
    link.data_to_send()
    assert feed(link, EOT, now=1.0) == []  # §6.3.5: like ACK; we finish the message
    assert link.data_to_send()[1:2] == b"2"
    assert feed(link, ACK, now=2.0) == [MessageDelivered(message_id)]
    assert link.data_to_send() == EOT
    link.send_message([b"L|1"], 2.5)
    assert link.data_to_send() == b""
    assert link.deadline() == 17.0
    feed(link, ENQ + frame(1, b"L|1\r") + EOT, now=3.0)  # the receiver sends its message
    assert link.data_to_send() == ACK + ACK + ENQ  # ...and then the line is ours again


def test_close_aborts_every_queued_message() -> None:
    link, first = sending_link([HEADER])
    second = link.send_message([b"L|1"], 0.0)
    link.close(1.0)
    assert drain(link) == [
        MessageAborted(first, "connection closed"),
        MessageAborted(second, "connection closed"),
    ]
    assert link.deadline() is None


def test_send_message_refuses_bad_records() -> None:
    link = AstmLink()
    with pytest.raises(LocalProtocolError):
        link.send_message([], 0.0)
    with pytest.raises(LocalProtocolError):
        link.send_message([b"H|\\^&\rP|1"], 0.0)
    with pytest.raises(LocalProtocolError):
        link.send_message([b"R|1|\x03"], 0.0)


def test_invalid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError) as error:
        LinkOptions(max_retries=0, max_text=300)
    assert len(error.value.problems) == 2
    assert LinkOptions().timers == LinkTimers(15.0, 30.0, 20.0, 1.0, 10.0, 15.0)


# -- two links back to back -------------------------------------------------------------------


def pump(host: AstmLink, instrument: AstmLink, now: float) -> tuple[list[Event], list[Event]]:
    """Carry bytes both ways until the line is quiet; every frame is acknowledged."""
    host_events, instrument_events = drain(host, now), drain(instrument, now)
    while True:
        to_instrument, to_host = host.data_to_send(), instrument.data_to_send()
        if not to_instrument and not to_host:
            return host_events, instrument_events
        instrument.receive_data(to_instrument, now)
        instrument_events += drain(instrument, now)
        host.receive_data(to_host, now)
        host_events += drain(host, now)


order_records = st.lists(
    st.binary(min_size=1, max_size=500).map(
        lambda data: fr.RESTRICTED_IN_RECORD.sub(b"", data) or b"O"
    ),
    min_size=1,
    max_size=6,
)


@given(order_records, order_records, st.integers(min_value=1, max_value=240))
@settings(max_examples=60, deadline=None)
def test_back_to_back_links_deliver_exactly_what_was_sent(
    orders: list[bytes], results: list[bytes], max_text: int
) -> None:
    host = AstmLink(LinkOptions(max_text=max_text))
    instrument = AstmLink(LinkOptions(we_are_instrument=True))
    order_id = host.send_message(orders, 0.0)
    host_events, instrument_events = pump(host, instrument, 0.0)
    assert MessageDelivered(order_id) in host_events
    assert records(instrument_events) == orders
    result_id = instrument.send_message(results, 1.0)
    host_events, instrument_events = pump(host, instrument, 1.0)
    assert MessageDelivered(result_id) in instrument_events
    assert records(host_events) == results
    assert kinds(host_events)[0] == "TransferStarted"
    assert kinds(host_events)[-1] == "TransferEnded"
    assert host.state is instrument.state is LinkState.IDLE


def test_back_to_back_contention_the_instrument_wins() -> None:
    host = AstmLink()
    instrument = AstmLink(LinkOptions(we_are_instrument=True))
    order_id = host.send_message([b"H|\\^&", b"O|1|S1", b"L|1"], 0.0)
    result_id = instrument.send_message([b"H|\\^&", b"R|1|^^^GLU|5.5", b"L|1"], 0.0)
    host_events, instrument_events = pump(host, instrument, 0.0)  # ENQ crosses ENQ
    assert kinds(host_events) == ["ContentionDetected"]
    assert kinds(instrument_events) == ["ContentionDetected"]
    assert instrument.deadline() == 1.0 and host.deadline() == 20.0
    instrument.handle_timeout(1.0)
    host_events, instrument_events = pump(host, instrument, 1.0)
    assert records(host_events) == [b"H|\\^&", b"R|1|^^^GLU|5.5", b"L|1"]
    assert MessageDelivered(result_id) in instrument_events
    host.handle_timeout(20.0)
    host_events, instrument_events = pump(host, instrument, 20.0)
    assert MessageDelivered(order_id) in host_events
    assert records(instrument_events) == [b"H|\\^&", b"O|1|S1", b"L|1"]


def test_back_to_back_with_a_corrupted_frame_retransmits() -> None:
    host = AstmLink()
    instrument = AstmLink(LinkOptions(we_are_instrument=True))
    order_id = host.send_message([b"H|\\^&", b"O|1|S1"], 0.0)
    instrument.receive_data(host.data_to_send(), 0.0)
    drain(instrument)
    host.receive_data(instrument.data_to_send(), 0.0)
    drain(host)
    sent = host.data_to_send()
    corrupted = sent.replace(b"S1", b"S7")
    instrument.receive_data(corrupted, 0.0)
    assert kinds(drain(instrument)) == ["FrameRejected"]
    host.receive_data(instrument.data_to_send(), 0.0)
    assert drain(host) == []
    assert host.data_to_send() == sent
    instrument.receive_data(sent, 0.0)
    assert records(drain(instrument)) == [b"H|\\^&", b"O|1|S1"]
    host_events, _ = pump(host, instrument, 0.0)
    assert host_events == [MessageDelivered(order_id)]


def test_back_to_back_an_endless_record_ends_in_abort_and_incomplete_transfer() -> None:
    host = AstmLink(LinkOptions(max_record_size=600))
    instrument = AstmLink(LinkOptions(we_are_instrument=True))
    result_id = instrument.send_message([HEADER, b"M|1|" + b"Q" * 1000, b"L|1"], 0.0)
    host_events, instrument_events = pump(host, instrument, 0.0)
    assert instrument_events == [MessageAborted(result_id, "frame 3: NAK 6 times")]
    assert records(host_events) == [HEADER]  # what was acknowledged was delivered
    assert kinds(host_events).count("FrameRejected") == 6
    assert kinds(host_events)[-1] == "TransferIncomplete"
    assert host.pending_record_size == 0
    assert host.state is instrument.state is LinkState.IDLE


@given(
    st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=6),
    st.sampled_from([1, 100, 500]),
    st.integers(min_value=1, max_value=240),
)
@settings(max_examples=100, deadline=None)
def test_back_to_back_records_over_max_record_size_never_get_through(
    lengths: list[int], max_record_size: int, max_text: int
) -> None:
    sent = [b"R|" + b"7" * length for length in lengths]
    host = AstmLink(LinkOptions(max_record_size=max_record_size))
    instrument = AstmLink(LinkOptions(we_are_instrument=True, max_text=max_text))
    result_id = instrument.send_message(sent, 0.0)
    host_events, instrument_events = pump(host, instrument, 0.0)
    delivered = records(host_events)
    if all(len(record) <= max_record_size for record in sent):
        assert instrument_events == [MessageDelivered(result_id)]
        assert delivered == sent
    else:
        assert kinds(instrument_events) == ["MessageAborted"]
        assert delivered == sent[: len(delivered)]  # in order, none garbled
        # The sender gave up after NAKs: the host never reports that session as complete.
        assert kinds(host_events)[-1] == "TransferIncomplete"
    assert all(len(record) <= max_record_size for record in delivered)
    assert host.pending_record_size == 0


def test_eot_after_a_naked_frame_is_an_aborted_message() -> None:
    """§6.5.1: a sender that answers our NAK with EOT gave up; earlier ETX frames don't count."""
    link = AstmLink()
    feed(link, ENQ)
    events = feed(link, frame(1, b"H|\\^&\r", True))  # one record per ETX frame
    assert records(events) == [b"H|\\^&"]
    feed(link, frame(2, b"P|1\r", True))
    bad = bytearray(frame(3, b"O|1|S1\r", True))
    bad[-4] ^= 0x01  # corrupt the checksum
    assert kinds(feed(link, bytes(bad))) == ["FrameRejected"]
    assert kinds(feed(link, EOT)) == ["TransferIncomplete"]


# -- batch_records: one RecordsReceived per frame -------------------------------------------


def test_batch_records_give_one_event_per_frame_with_the_same_records_and_offsets() -> None:
    data = frame(1, HEADER + b"\r" + RESULT + b"\rC|1|I|da", False)
    data += frame(2, b"ta\rR|2|^^^7/1/no", False) + frame(3, b"t|9.61\rL|1", True)
    per_record = feed(receiving_link(), data + EOT)
    batched = feed(receiving_link(batch_records=True), data + EOT)
    assert kinds(batched) == ["FrameReceived", "RecordsReceived"] * 3 + ["TransferEnded"]
    batches = [e for e in batched if isinstance(e, RecordsReceived)]
    assert batches[0] == RecordsReceived((HEADER, RESULT), (3, 4 + len(HEADER)))
    assert batches[1].records == (b"C|1|I|data",)
    assert batches[2].records == (b"R|2|^^^7/1/not|9.61", b"L|1")  # final: ends L|1
    singles = [e for e in per_record if isinstance(e, RecordReceived)]
    assert [(e.text, e.offset) for e in singles] == [
        pair for batch in batches for pair in zip(batch.records, batch.offsets, strict=True)
    ]


def test_batch_records_a_frame_completing_no_record_gives_no_records_event() -> None:
    link = receiving_link(batch_records=True)
    events = feed(link, frame(1, b"M|1|" + b"Q" * 200, False))
    assert kinds(events) == ["FrameReceived"]
    events = feed(link, frame(2, b"Q" * 100 + b"\r", True) + EOT)
    assert kinds(events) == ["FrameReceived", "RecordsReceived", "TransferEnded"]
    assert events[1] == RecordsReceived((b"M|1|" + b"Q" * 300,), (3,))


# -- events: frozen value objects -------------------------------------------------------------


def test_events_are_frozen_hashable_and_compare_by_type_and_value() -> None:
    received = FrameReceived(1, b"P|1\r", True, b"\x021P|1\r\x03B4", 7)
    same = FrameReceived(number=1, text=b"P|1\r", final=True, raw=b"\x021P|1\r\x03B4", offset=7)
    assert received == same and hash(received) == hash(same) and len({received, same}) == 1
    assert received != dataclasses.replace(received, offset=8)
    assert dataclasses.replace(received, offset=8).offset == 8
    assert repr(received).startswith("FrameReceived(number=1, text=b'P|1\\r', final=True")
    assert pickle.loads(pickle.dumps(received)) == received
    single = RecordReceived(b"P|1", 3)
    batch = RecordsReceived((b"P|1",), (3,))
    assert RecordReceived(b"P|1", 3) == single
    different_types: list[tuple[object, object]] = [
        (single, batch),
        (TransferStarted(3), TransferEnded(3)),
        (single, (b"P|1", 3)),
    ]
    assert all(a != b for a, b in different_types)
    assert dataclasses.astuple(batch) == ((b"P|1",), (3,))
    for event, name in ((received, "number"), (single, "text"), (batch, "records")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, name, None)
        with pytest.raises((AttributeError, TypeError)):
            event.extra = 1  # type: ignore[union-attr]


# -- the scanner's usual-frame path reads exactly what the general path reads ----------------


def scan(data: bytes, options: dict[str, object], *, general: bool) -> tuple[object, ...]:
    events: deque[Event] = deque()
    scanner = FrameScanner(events, **options)  # type: ignore[arg-type]
    scanner.buf += data
    found = scanner._read_any_frame(0) if general else scanner.read_frame(0)
    return found, scanner.pos, scanner.unfinished, list(events)


frame_bytes = st.builds(
    fr.build_frame,
    st.integers(0, 9),
    st.lists(
        st.sampled_from([b"R|1|^^^GLU", b"\r", b"\n", b"x" * 120, b"\x02", b"\x05", b"\x04"]),
        max_size=5,
    ).map(b"".join),
    st.booleans(),
)


@given(
    frame_bytes,
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=3),
    st.integers(0, 260),
    st.booleans(),
    st.booleans(),
    st.sampled_from([16, 40, 247, 300, 64 * 1024]),
)
@settings(max_examples=400, deadline=None)
def test_usual_frame_path_reads_what_the_general_path_reads(
    data: bytes,
    changes: list[tuple[int, int]],
    cut: int,
    lf_separators: bool,
    checksum_optional: bool,
    max_frame_size: int,
) -> None:
    mutated = bytearray(data + frame(2, b"L|1\r"))
    for position, value in changes:
        if position < len(mutated):
            mutated[position] = value
    for sample in (bytes(mutated), bytes(mutated[:cut])):
        options: dict[str, object] = {
            "max_frame_size": max_frame_size,
            "checksum_optional": checksum_optional,
            "lf_separators": lf_separators,
        }
        assert scan(sample, options, general=False) == scan(sample, options, general=True)


def test_clean_frames_take_the_usual_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not timing, but the reason batch_records is fast: no general-path read per frame."""

    def general_path(scanner: FrameScanner, pos: int) -> None:
        raise AssertionError(f"general path used for the frame at {pos}")

    monkeypatch.setattr(FrameScanner, "_read_any_frame", general_path)
    link = receiving_link(batch_records=True, lenient=True)
    text = b"".join(b"R|%d|^^^GLU|5.5|mmol/l||N||F\r" % n for n in range(40))
    events = feed(link, b"".join(fr.build_frames(text)) + EOT)
    assert sum(len(e.records) for e in events if isinstance(e, RecordsReceived)) == 40
    assert kinds(events)[-1] == "TransferEnded"
