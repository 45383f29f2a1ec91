"""Bare E1394 records: RecordSplitter and UnframedReader (lisgw.astm.unframed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.astm.events import NEED_DATA, RecordReceived
from lisgw.astm.unframed import RecordSplitter, UnframedReader
from lisgw.errors import LocalProtocolError, RemoteProtocolError

SAMPLE = b"H|\\^&|||Test\rP|1\nO|1|S1||^^^GLU\r\nR|1|^^^GLU|5.5|mmol/l\r\nL|1|N"


def read_all(chunks: list[bytes], *, close: bool = True) -> list[RecordReceived]:
    reader = UnframedReader()
    records: list[RecordReceived] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        records.extend(drain(reader))
    if close:
        reader.close()
        records.extend(drain(reader))
    return records


def drain(reader: UnframedReader) -> list[RecordReceived]:
    records = []
    while (event := reader.next_event()) is not NEED_DATA:
        assert isinstance(event, RecordReceived)
        records.append(event)
    return records


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_records_split_on_cr_lf_and_crlf_with_offsets() -> None:
    records = read_all([SAMPLE])
    assert [r.text for r in records] == [
        b"H|\\^&|||Test",
        b"P|1",
        b"O|1|S1||^^^GLU",
        b"R|1|^^^GLU|5.5|mmol/l",
        b"L|1|N",
    ]
    assert [r.offset for r in records] == [SAMPLE.index(r.text) for r in records]


def test_last_record_without_terminator_waits_for_close() -> None:
    assert [r.text for r in read_all([b"H|\\^&\rL|1"], close=False)] == [b"H|\\^&"]
    assert [r.text for r in read_all([b"H|\\^&\rL|1"])] == [b"H|\\^&", b"L|1"]


def test_cr_at_end_of_chunk_then_lf_makes_no_empty_record() -> None:
    records = read_all([b"H|\\^&\r", b"\nP|1\r", b"\n"])
    assert [r.text for r in records] == [b"H|\\^&", b"P|1"]
    assert records[1].offset == 7


def test_one_byte_at_a_time() -> None:
    whole = read_all([SAMPLE])
    assert read_all([SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == whole


@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=12))
@settings(max_examples=200, deadline=None)
def test_any_chunking_gives_the_same_records(cuts: list[int]) -> None:
    assert read_all(split_at(SAMPLE, cuts)) == read_all([SAMPLE])


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
@settings(max_examples=200, deadline=None)
def test_any_bytes_any_chunking_same_records_never_empty(data: bytes, cuts: list[int]) -> None:
    records = read_all(split_at(data, cuts))
    assert records == read_all([data])
    assert all(r.text and b"\r" not in r.text and b"\n" not in r.text for r in records)
    assert b"".join(r.text for r in records) == data.replace(b"\r", b"").replace(b"\n", b"")


def test_record_too_long_raises_after_the_records_before_it() -> None:
    reader = UnframedReader(max_record_size=8)
    reader.receive_data(b"P|1\r" + b"x" * 20 + b"\rL|1\r")
    assert reader.next_event() == RecordReceived(b"P|1", 0)
    with pytest.raises(RemoteProtocolError) as error:
        reader.next_event()
    assert error.value.offset == 4


def test_unterminated_record_too_long_raises_while_streaming() -> None:
    reader = UnframedReader(max_record_size=8)
    for _ in range(3):
        reader.receive_data(b"xxxx")
    with pytest.raises(RemoteProtocolError):
        drain(reader)


def test_receive_after_close_is_a_local_error() -> None:
    reader = UnframedReader()
    reader.close()
    with pytest.raises(LocalProtocolError):
        reader.receive_data(b"H\r")


def test_splitter_cr_only_keeps_lf_as_data_and_reassembles_across_feeds() -> None:
    splitter = RecordSplitter(lf_separators=False)
    assert splitter.feed(b"R|2|^^^7/1/no", 10) == []
    assert splitter.pending_size == 13
    records = splitter.feed(b"t|9.61\rC|1|\n\r", 40)
    assert records == [RecordReceived(b"R|2|^^^7/1/not|9.61", 10), RecordReceived(b"C|1|\n", 47)]
    assert splitter.flush() == []
    splitter.feed(b"L|1", 60)
    assert splitter.flush() == [RecordReceived(b"L|1", 60)]
    splitter.feed(b"tail", 70)
    splitter.discard()
    assert splitter.flush() == []


def test_longest_record_with_counts_the_held_tail_and_every_piece() -> None:
    splitter = RecordSplitter(lf_separators=False)
    splitter.feed(b"H|1\rR|12", 0)  # holds b"R|12"
    assert splitter.longest_record_with(b"345") == 7
    assert splitter.longest_record_with(b"3\rL|1") == 5
    assert splitter.longest_record_with(b"\rC|" + b"x" * 20 + b"\rL") == 22
    assert splitter.longest_record_with(b"\n") == 5  # LF is text without lf_separators
    assert splitter.pending_size == 4  # asking feeds nothing
    lf = RecordSplitter(lf_separators=True)
    lf.feed(b"R|12", 0)
    assert lf.longest_record_with(b"3\nL") == 5


@given(
    st.booleans(),
    st.binary(max_size=60).map(lambda data: data.replace(b"\r", b"").replace(b"\n", b"")),
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"ab", b"x" * 30]), max_size=12),
)
@settings(max_examples=200, deadline=None)
def test_longest_record_with_is_the_longest_record_feed_and_flush_give(
    lf_separators: bool, held: bytes, pieces: list[bytes]
) -> None:
    splitter = RecordSplitter(lf_separators=lf_separators)
    splitter.feed(held, 0)
    text = b"".join(pieces)
    predicted = splitter.longest_record_with(text)
    made = splitter.feed(text, len(held)) + splitter.flush()
    assert predicted == max((len(record.text) for record in made), default=0)


# -- RecordSplitter.split: the records of a frame as two tuples (batch_records) -------------

split_text = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"R|1", b"x" * 30, b"|", b""]), max_size=8
).map(b"".join)


def byte_by_byte_records(
    texts: list[tuple[bytes, bool]], lf_separators: bool
) -> list[tuple[bytes, int]]:
    """The model: records and offsets, found one byte at a time; a ``final`` text ends
    the record it leaves unfinished."""
    found: list[tuple[bytes, int]] = []
    current, start, position = bytearray(), 0, 0
    for text, final in texts:
        for byte in text:
            if byte == 0x0D or (lf_separators and byte == 0x0A):
                if current:
                    found.append((bytes(current), start))
                current = bytearray()
            else:
                if not current:
                    start = position
                current.append(byte)
            position += 1
        if final and current:
            found.append((bytes(current), start))
            current = bytearray()
    return found


@given(st.booleans(), st.lists(st.tuples(split_text, st.booleans()), max_size=8))
@settings(max_examples=300, deadline=None)
def test_split_and_feed_give_the_records_and_offsets_of_the_byte_model(
    lf_separators: bool, texts: list[tuple[bytes, bool]]
) -> None:
    expected = byte_by_byte_records(texts, lf_separators)
    by_split = RecordSplitter(lf_separators=lf_separators)
    by_feed = RecordSplitter(lf_separators=lf_separators)
    split_records: list[tuple[bytes, int]] = []
    feed_records: list[RecordReceived] = []
    offset = 0
    for text, final in texts:
        records, offsets = by_split.split(text, offset, final=final)
        assert len(records) == len(offsets) and all(records)
        split_records.extend(zip(records, offsets, strict=True))
        feed_records += by_feed.feed(text, offset) + (by_feed.flush() if final else [])
        assert by_split.pending_size == by_feed.pending_size
        offset += len(text)
    assert split_records == expected
    assert [(r.text, r.offset) for r in feed_records] == expected


def test_split_holds_a_record_across_frames_and_final_ends_it() -> None:
    splitter = RecordSplitter(lf_separators=False)
    assert splitter.split(b"H|1\rR|2|^^^7/1/no", 2) == ((b"H|1",), (2,))
    assert splitter.pending_size == 13 and splitter.pending_offset == 6
    assert splitter.split(b"t|9", 30) == ((), ())  # no separator: held
    assert splitter.split(b".61\rL|1", 40, final=True) == (
        (b"R|2|^^^7/1/not|9.61", b"L|1"),
        (6, 44),
    )
    assert splitter.pending_size == 0 and splitter.flush() == []
    assert splitter.split(b"\r\r", 50, final=True) == ((), ())  # empty records: none
