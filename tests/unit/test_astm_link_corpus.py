"""The E1381 link replaying every framed ASTM capture of the shared corpus, and fuzzed.

Each capture is fed whole, one byte at a time, in its recorded read() boundaries and in
random splits: the events (offsets included) must be identical, and batch_records mode must
give exactly the same records and offsets (one RecordsReceived per frame instead of one
RecordReceived per record). Corpus bytes are read from ../shared/corpus at test time and
never copied here.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisgw.astm.events import (
    NEED_DATA,
    PAUSED,
    Event,
    FrameDuplicate,
    FrameReceived,
    FrameRejected,
    Noise,
    ProtocolWarning,
    RecordReceived,
    RecordsReceived,
    TransferEnded,
    TransferStarted,
)
from lisgw.astm.link import AstmLink, LinkOptions
from lisgw.errors import ProtocolError

CORPUS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus").resolve()


@cache
def framed_entries() -> tuple[dict[str, Any], ...]:
    manifest = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    return tuple(e for e in manifest["files"] if e["framing"] == "astm-frames")


def entry_ids() -> list[str]:
    return [Path(entry["path"]).stem for entry in framed_entries()]


@cache
def capture(name: str) -> bytes:
    path: str = next(e["path"] for e in framed_entries() if name in e["path"])
    return (CORPUS / path).read_bytes()


def replay(chunks: list[bytes], options: LinkOptions | None = None) -> tuple[list[Event], bytes]:
    """Events and bytes sent back for a stream read in ``chunks`` then closed; every
    FrameReceived is acknowledged."""
    return replay_deciding(chunks, options, reject_numbers=frozenset())


def replay_deciding(
    chunks: list[bytes], options: LinkOptions | None, reject_numbers: frozenset[int]
) -> tuple[list[Event], bytes]:
    """As replay(), but frames numbered in ``reject_numbers`` get reject() (NAK)."""
    link = AstmLink(options) if options is not None else AstmLink()
    events: list[Event] = []
    sent = bytearray()
    for chunk in [*chunks, None]:
        if chunk is None:
            link.close(0.0)
        else:
            link.receive_data(chunk, 0.0)
        while True:
            event = link.next_event()
            # bounded memory: a partial record never grows past its bound (it grows when
            # a frame is acknowledged, so check after every event)
            assert link.pending_record_size <= link.options.max_record_size
            if event is NEED_DATA:
                # and a partial frame or filler run is kept, never more
                assert link.buffered_size <= link.options.max_frame_size
                break
            assert event is not PAUSED
            events.append(event)
            if isinstance(event, FrameReceived):
                if event.number in reject_numbers:
                    link.reject(0.0)
                else:
                    link.acknowledge(0.0)
        sent += link.data_to_send()
    return events, bytes(sent)


def unbatched(events: list[Event]) -> list[Event]:
    """Batch-mode events with every RecordsReceived read as its RecordReceived events."""
    singles: list[Event] = []
    for event in events:
        assert not isinstance(event, RecordReceived)  # batch mode never sends them
        if isinstance(event, RecordsReceived):
            assert event.records and len(event.records) == len(event.offsets)
            singles.extend(map(RecordReceived, event.records, event.offsets))
        else:
            singles.append(event)
    return singles


def replay_batched(
    chunks: list[bytes],
    options: LinkOptions | None = None,
    reject_numbers: frozenset[int] = frozenset(),
) -> tuple[list[Event], bytes]:
    """replay_deciding() with batch_records=True, RecordsReceived unbatched: it must equal
    the per-record mode's result for the same bytes."""
    batched = replace(options or LinkOptions(), batch_records=True)
    events, sent = replay_deciding(chunks, batched, reject_numbers)
    return unbatched(events), sent


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def records(events: list[Event]) -> list[bytes]:
    return [e.text for e in events if isinstance(e, RecordReceived)]


def frame_events(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, FrameReceived | FrameDuplicate | FrameRejected)]


@pytest.fixture(params=framed_entries(), ids=entry_ids())
def entry(request: pytest.FixtureRequest) -> dict[str, Any]:
    found: dict[str, Any] = request.param
    return found


# -- every capture ------------------------------------------------------------------------


def test_whole_and_byte_by_byte_give_identical_events(entry: dict[str, Any]) -> None:
    data = (CORPUS / entry["path"]).read_bytes()
    whole = replay([data])
    byte_by_byte = [data[i : i + 1] for i in range(len(data))]
    assert replay(byte_by_byte) == whole
    assert replay_batched([data]) == whole
    assert replay_batched(byte_by_byte) == whole


@pytest.mark.parametrize(
    "entry",
    [e for e in framed_entries() if "chunks" in e],
    ids=[Path(e["path"]).stem for e in framed_entries() if "chunks" in e],
)
def test_recorded_read_boundaries_give_identical_events(entry: dict[str, Any]) -> None:
    data = (CORPUS / entry["path"]).read_bytes()
    lengths = json.loads((CORPUS / entry["chunks"]).read_text(encoding="utf-8"))
    assert len(lengths) == entry["reads"] and sum(lengths) == len(data)
    chunks, start = [], 0
    for length in lengths:
        chunks.append(data[start : start + length])
        start += length
    assert replay(chunks) == replay([data])
    assert replay_batched(chunks) == replay([data])


@given(st.data())
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_splits_give_identical_events(entry: dict[str, Any], data: st.DataObject) -> None:
    stream = capture(Path(entry["path"]).name)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    lenient = data.draw(st.booleans(), label="lenient")
    options = LinkOptions(lenient=lenient)
    whole = replay([stream], options)
    assert replay(split_at(stream, cuts), options) == whole
    assert replay_batched(split_at(stream, cuts), options) == whole


def test_frame_count_and_exactly_the_bad_checksum_frames_are_naked(
    entry: dict[str, Any],
) -> None:
    events, sent = replay([(CORPUS / entry["path"]).read_bytes()])
    frames = frame_events(events)
    assert len(frames) == entry["frames"]
    rejected = [i for i, e in enumerate(frames) if isinstance(e, FrameRejected)]
    assert rejected == entry["bad_checksum_frames"]
    assert all("checksum" in frames[i].reason for i in rejected)  # type: ignore[union-attr]
    assert sent.count(b"\x15") == len(rejected)
    established = sum(isinstance(e, TransferStarted) for e in events)
    assert sent.count(b"\x06") == entry["frames"] - len(rejected) + established - sum(
        "implicit transfer" in e.text for e in events if isinstance(e, ProtocolWarning)
    )


# -- what specific captures must give -------------------------------------------------------


def test_cobas_e411_reassembles_records_split_across_etb_frames() -> None:
    stream = capture("roche_cobas_e411_multi_frame_results.bin")
    events, sent = replay([stream])
    got = records(events)
    assert len(got) == 12
    assert got[0].startswith(b"H|\\^&|||cobas-e411^1|||||host|RSUPL^BATCH")
    assert got[3] == b"R|1|^^^8/1/not|1.95|uIU/ml||N||F||pathof|||E1"
    assert got[4] == b"R|2|^^^7/1/not|9.61|ug/dl||N||F||pathof|||E1"
    assert got[9] == b"C|1|I|27|I"
    assert got[10] == b"R|7|^^^1/1/not|141.3|pg/ml||N||F||pathof|||E1"
    assert got[-1] == b"L|1|N"
    r2 = next(e for e in events if isinstance(e, RecordReceived) and e.text.startswith(b"R|2|"))
    assert stream[r2.offset : r2.offset + 14] == b"R|2|^^^7/1/no\x17"  # starts in frame 1
    assert isinstance(events[-1], TransferEnded)
    assert sent == b"\x06" * 4  # ENQ and three frames


def test_cobas_c311_batch_split_mid_field_comes_out_whole() -> None:
    events, _ = replay([capture("roche_cobas_c311_H7600_batch_frame_split_midrecord.bin")])
    got = records(events)
    assert len(got) == 27
    comment = got[3]
    assert comment.startswith(b"C|1|I| ") and comment.endswith(b"|G") and len(comment) == 112
    assert b"R|6|^^^687/|70.37|U/l||H||F||bmserv|20250714075441||P1" in got
    assert b"R|10|^^^962/|3.3|g/dL||H||F||bmserv|00000000000000||" in got
    assert [e.reason for e in events if isinstance(e, Noise)] == ["doubled ENQ ignored"]


def test_cobas_c111_bad_checksum_frame_is_naked_and_its_record_withheld() -> None:
    events, sent = replay([capture("roche_cobas_c111_multi_result_ETB_frames.bin")])
    rejected = [e for e in events if isinstance(e, FrameRejected)]
    assert len(rejected) == 1 and rejected[0].offset == 104
    assert rejected[0].raw.startswith(b"\x023O|1||S0417")
    got = records(events)
    assert not any(r.startswith(b"O|") for r in got)
    assert got[-1] == b"L|1|N" and len(got) == 11
    assert sent == b"\x06" * 3 + b"\x15" + b"\x06" * 9


def test_sysmex_qc_reused_frame_number_loses_no_result() -> None:
    events, _ = replay([capture("sysmex_xn550_qc_results_framed.bin")])
    got = records(events)
    r29 = [r for r in got if r.startswith(b"R|29|")]
    assert len(r29) == 2 and r29[0] != r29[1]
    assert r29[1] == b"R|29|^^^^HGB_WDF|10.28|||N||F||||20181106093509"
    warnings = [e.text for e in events if isinstance(e, ProtocolWarning)]
    assert warnings == [
        "frame of 321 bytes exceeds the E1381 maximum of 247",
        "frame number 2 repeated with different content: accepted",
    ]
    assert sum(r.startswith(b"R|") for r in got) == 33


def test_sysmex_qc_strict_frame_numbers_nak_the_reused_number() -> None:
    options = LinkOptions(strict_frame_numbers=True)
    events, _ = replay([capture("sysmex_xn550_qc_results_framed.bin")], options)
    rejected = [e for e in events if isinstance(e, FrameRejected)]
    assert rejected[0].reason == "frame number 2 repeated with different content"


def test_stago_frame_numbers_wrap_7_to_0() -> None:
    events, _ = replay([capture("stago_sta_satellite_max_coag_results.bin")])
    numbers = [e.number for e in events if isinstance(e, FrameReceived)]
    assert numbers[:10] == [1, 2, 3, 4, 5, 6, 7, 0, 1, 2] and len(numbers) == 31
    assert not any(isinstance(e, ProtocolWarning) for e in events)
    assert records(events)[7] == b"O|2|000004782|227||R||||||||||||||||||||F"


def test_erba_two_sessions_after_a_stray_eot() -> None:
    events, _ = replay([capture("erba_em200_results_two_sessions.bin")])
    assert events[0] == Noise(b"\x04", 0, "stray EOT while idle")
    assert sum(isinstance(e, TransferEnded) for e in events) == 2
    assert [r[:6] for r in records(events) if r.startswith(b"R|")] == [b"R|1|^^"] * 2


def test_e411_host_query_after_two_stray_acks() -> None:
    events, _ = replay([capture("roche_cobas_e411_host_query_TSREQ.bin")])
    assert [e for e in events if isinstance(e, Noise)] == [
        Noise(b"\x06", 0, "stray ACK while idle"),
        Noise(b"\x06", 1, "stray ACK while idle"),
    ]
    assert b"Q|1|^^0000000387^587^0^2^^S1^SC||ALL||||||||A" in records(events)


def test_genexpert_4339_byte_frame_is_accepted() -> None:
    events, _ = replay([capture("cepheid_genexpert_mtb_rif_astm_results.bin")])
    assert "frame of 4339 bytes exceeds the E1381 maximum of 247" in [
        e.text for e in events if isinstance(e, ProtocolWarning)
    ]
    assert records(events)[0].startswith(b"H|@^\\|")


# -- fuzzing ----------------------------------------------------------------------------------


def fuzz_options() -> st.SearchStrategy[LinkOptions]:
    return st.builds(
        LinkOptions,
        lenient=st.booleans(),
        strict_frame_numbers=st.booleans(),
        max_frame_size=st.sampled_from([64, 300, 64 * 1024]),
        max_record_size=st.sampled_from([8, 200, 1 << 20]),
    )


def check_fuzzed(stream: bytes, cuts: list[int], options: LinkOptions) -> None:
    reject = frozenset({5})
    try:
        whole = replay_deciding([stream], options, reject)
        assert replay_deciding(split_at(stream, cuts), options, reject) == whole
        assert replay_batched(split_at(stream, cuts), options, reject) == whole
    except ProtocolError:
        pass


control_heavy = st.lists(
    st.sampled_from([b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x15", b"\x17", b"\r\n"])
    | st.binary(min_size=1, max_size=12),
    max_size=60,
).map(b"".join)


@given(st.binary(max_size=2000) | control_heavy, st.lists(st.integers(0, 2000)), fuzz_options())
@settings(max_examples=200, deadline=None)
def test_any_bytes_give_events_only_the_same_for_any_chunking(
    stream: bytes, cuts: list[int], options: LinkOptions
) -> None:
    check_fuzzed(stream, cuts, options)


@given(st.integers(0, 2**32), st.integers(1, 12), fuzz_options())
@settings(max_examples=200, deadline=None)
def test_mutated_captures_give_events_only(seed: int, mutations: int, options: LinkOptions) -> None:
    rng = random.Random(seed)
    entry = rng.choice(framed_entries())
    stream = bytearray((CORPUS / entry["path"]).read_bytes())
    for _ in range(mutations):
        position = rng.randrange(len(stream) + 1)
        action = rng.randrange(3)
        if action == 0 and position < len(stream):
            stream[position] = rng.choice([2, 3, 4, 5, 6, 13, 10, 0x15, 0x17, rng.randrange(256)])
        elif action == 1:
            del stream[position : position + rng.randrange(1, 30)]
        else:
            stream[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
    cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.randrange(20))]
    check_fuzzed(bytes(stream), cuts, options)
