"""lisgw.cli.traffic and lisgw.cli.follow without a store: decoding, masking, gap watching.

The records and names are invented (tests/integration/live/traffic_data.py): no patient data.
"""

from __future__ import annotations

import re

from lisgw.astm.frames import build_frames
from lisgw.cli.follow import _Stream
from lisgw.cli.traffic import TrafficDecoder, visible
from lisgw.store.live import Delivery, FrameRow, MessageRow
from tests.integration.live.traffic_data import astm_records, orm, oru

RECORDS = astm_records().decode().split("\r")[:-1]
MASKED_P = "P|1||PID0001||D***^J***||19800101|F"


def frame_rows(text: bytes, max_text: int, session: int = 1) -> list[FrameRow]:
    frames = build_frames(text, max_text=max_text)
    return [
        FrameRow(n, session, n, "c311", "astm", "in", float(n), frame[:-2])
        for n, frame in enumerate(frames, 1)
    ]


def test_records_come_whole_whatever_the_frame_size() -> None:
    for max_text in range(1, 60):
        decoder = TrafficDecoder()
        lines = [
            line for row in frame_rows(astm_records(), max_text) for line in decoder.frame(row)
        ]
        expected = [MASKED_P if record.startswith("P") else record for record in RECORDS]
        assert [line.text for line in lines] == expected, max_text
        assert [line.type for line in lines] == ["H", "P", "O", "R", "L"]
        shown = TrafficDecoder(show_patient=True)
        texts = [
            line.text for row in frame_rows(astm_records(), max_text) for line in shown.frame(row)
        ]
        assert texts == RECORDS


def test_raw_frames_keep_their_bytes_and_star_the_name_across_frames() -> None:
    original = astm_records().decode()
    starred = original.replace("DOE^JANE", "***^****")
    for max_text in range(1, 60):
        decoder = TrafficDecoder(raw=True)
        rows = frame_rows(astm_records(), max_text)
        lines = [line for row in rows for line in decoder.frame(row)]
        assert len(lines) == len(rows)
        assert not any("DOE" in line.text or "JANE" in line.text for line in lines)
        texts = [re.sub(r"^<STX>\d|<(ETB|ETX)>[0-9A-F]{2}$", "", line.text) for line in lines]
        assert "".join(texts).replace("<CR>", "\r") == starred, max_text
        unmasked = TrafficDecoder(raw=True, show_patient=True)
        assert [line.text for row in rows for line in unmasked.frame(row)] == [
            visible(row.data or b"") for row in rows
        ]


def test_sessions_are_read_apart() -> None:
    decoder = TrafficDecoder()
    first = frame_rows(astm_records("A1"), 20, session=1)
    second = frame_rows(astm_records("B2"), 20, session=2)
    interleaved = [row for pair in zip(first, second, strict=False) for row in pair]
    interleaved += first[len(second) :] + second[len(first) :]
    lines = [line for row in interleaved for line in decoder.frame(row)]
    orders = sorted(line.text for line in lines if line.type == "O")
    assert orders == ["O|1|A1||^^^GLU|R", "O|1|B2||^^^GLU|R"]


def test_other_delimiters_are_read_from_the_header() -> None:
    text = b"H|`^&\rP|1||ID||DOE`X^JANE\rL|1\r"
    decoder = TrafficDecoder()
    row = FrameRow(1, 1, 1, "c", "astm", "in", 0.0, build_frames(text)[0][:-2])
    assert [line.text for line in decoder.frame(row)][1] == "P|1||ID||D***^J***"


def test_control_bytes_and_unreadable_frames() -> None:
    decoder = TrafficDecoder()
    (line,) = decoder.frame(FrameRow(1, 1, 1, "c", "astm", "in", 0.0, b"\x05"))
    assert (line.kind, line.text) == ("control", "<ENQ>")
    broken = build_frames(b"P|1||ID||DOE^JANE\r")[0][:-4] + b"00"
    (line,) = decoder.frame(FrameRow(2, 1, 2, "c", "astm", "in", 0.0, broken))
    assert line.kind == "unreadable" and "checksum" in line.text and "DOE" not in line.text
    (line,) = TrafficDecoder(show_patient=True).frame(
        FrameRow(2, 1, 2, "c", "astm", "in", 0.0, broken)
    )
    assert "DOE^JANE" in line.text


def test_hl7_segments_mask_pid_5_only() -> None:
    decoder = TrafficDecoder()
    rows = [FrameRow(1, 1, 1, "his", "hl7", "in", 0.0, orm())]
    texts = [line.text for line in decoder.frame(rows[0])]
    assert texts[1] == "PID|1||PID0001||D***^J***||19800101|F"
    assert texts[0].startswith("MSH|^~\\&|HIS|WARD")
    (raw,) = TrafficDecoder(raw=True).frame(rows[0])
    assert "PID|1||PID0001||***^****||19800101|F<CR>" in raw.text
    (bad,) = decoder.frame(FrameRow(2, 1, 2, "his", "hl7", "in", 0.0, b"not hl7 DOE"))
    assert bad.kind == "unreadable" and "DOE" not in bad.text


def test_filtered_rows_give_no_lines_and_outbound_messages_show_content() -> None:
    decoder = TrafficDecoder()
    assert decoder.frame(FrameRow(1, 1, 1, "c", "astm", "in", 0.0, None)) == []
    reply = MessageRow(
        7, None, "c311", "out", "astm", "query_reply", "sent", "", 5.0, True, astm_records()
    )
    lines = decoder.message(reply)
    assert lines[0].text == "message 7 astm query_reply: sent"
    assert [line.type for line in lines[1:]] == ["H", "P", "O", "R", "L"]
    assert lines[2].text == MASKED_P
    hidden = MessageRow(8, None, "x", "in", "astm", "results", "routed", "", 5.0, False, None)
    assert decoder.message(hidden) == []


def test_deliveries_delivered_and_dead() -> None:
    decoder = TrafficDecoder()
    delivered = Delivery(3, "c311", "S1", "C1", "delivered", 2, "", 1.0, 4.0, None, oru("S1"))
    lines = decoder.delivery(delivered)
    assert (lines[0].connection, lines[0].direction, lines[0].at) == ("HIS", "out", 4.0)
    assert "ORU^R01 delivered sample S1 from c311 (attempt 2)" in lines[0].text
    assert lines[2].text == "PID|1||PID0001||D***^J***"
    dead = Delivery(4, "c311", "S2", "C2", "dead", 6, "AE: unknown", 1.0, None, 3.0, oru("S2"))
    (line,) = decoder.delivery(dead)
    assert line.text.endswith("dead sample S2 from c311 (attempt 6): AE: unknown")


def test_ids_skipped_are_watched_until_they_come_or_time_runs_out() -> None:
    stream = _Stream(after=10)
    stream.advance([11, 14], now=100.0, wait=30.0)
    assert stream.after == 14 and sorted(stream.gaps) == [12, 13]
    stream.advance([12], now=110.0, wait=30.0)
    assert sorted(stream.gaps) == [13]
    stream.advance([15], now=131.0, wait=30.0)
    assert stream.gaps == {} and stream.after == 15
    stream.advance([15 + 5000], now=132.0, wait=30.0)
    assert stream.gaps == {}  # a jump this wide is not transactions in flight
