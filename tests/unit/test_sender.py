"""The sender probes (lisgw.sender): ASTM H.5.1 and HL7 MSH-3.1 from a connection's first bytes.

Every framed ASTM capture and every HL7 capture of the shared corpus (../shared/corpus, read
at test time) is probed whole and one byte at a time, and the sender found checked against
the record/message parsers and the independent goldens (tests/data/expected); the ASTM
probe's answers are compared with what lisgw.astm.link.AstmLink answers to the same bytes.
Hand-written streams (no patient data) cover the edge cases; hypothesis checks that chunking
never changes the outcome and that no byte string crashes a probe.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.astm import frames as fr
from lisgw.astm.events import NEED_DATA, PAUSED
from lisgw.astm.link import AstmLink
from lisgw.astm.records import decode_record
from lisgw.hl7.message import parse_message
from lisgw.hl7.mllp import NEED_DATA as MLLP_NEED_DATA
from lisgw.hl7.mllp import MllpFramer, MllpMessage
from lisgw.sender import (
    AstmSenderProbe,
    Hl7SenderProbe,
    SenderFound,
    SenderOutcome,
    SenderProbe,
    SenderUnknown,
    hl7_sender,
)
from lisgw.sim.analyzer import capture_messages
from tests.conftest import CORPUS_DIR, corpus_manifest

EXPECTED = Path(__file__).resolve().parents[1] / "data" / "expected"
ENQ, EOT, ACK, NAK, STX = b"\x05", b"\x04", b"\x06", b"\x15", b"\x02"
HEADER = b"H|\\^&|||XN-550^00-24^22723|||||||P|E1394-97"
PATIENT = b"P|1"


def frame(number: int, text: bytes, final: bool = True) -> bytes:
    return fr.build_frame(number, text, final)


def message(*records: bytes) -> bytes:
    return frame(1, b"".join(r + b"\r" for r in records))


def feed(probe: SenderProbe, data: bytes, one_byte: bool = False) -> tuple[object, bytes]:
    """The outcome after feeding ``data`` (whole, or a byte at a time) and the answers."""
    outcome: SenderOutcome | None = None
    answers = b""
    chunks = [data[i : i + 1] for i in range(len(data))] if one_byte else [data]
    for chunk in chunks:
        outcome = probe.receive_data(chunk)
        answers += probe.data_to_send()
        if outcome is not None:
            break
    return outcome, answers


def link_answers(data: bytes) -> bytes:
    """What lisgw.astm.link.AstmLink writes in answer to ``data``."""
    link = AstmLink()
    link.receive_data(data, 0.0)
    while link.next_event() not in (NEED_DATA, PAUSED):
        pass
    return link.data_to_send()


def golden_sender(path: str) -> str:
    """The first message's sender in the independent goldens (tests/data/expected)."""
    golden = json.loads((EXPECTED / path).with_suffix(".json").read_text("utf-8"))
    sender: str = golden["messages"][0]["sender"]
    return sender


def files(kind: str) -> list[str]:
    return sorted(e["path"] for e in corpus_manifest() if e["path"].startswith(kind + "/"))


FRAMED_ASTM = [p for p in files("astm") if fr.STX in (CORPUS_DIR / p).read_bytes()]
HL7 = files("hl7")


# -- ASTM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FRAMED_ASTM)
@pytest.mark.parametrize("one_byte", [False, True])
def test_astm_corpus_sender_and_answers_match_the_link(path: str, one_byte: bool) -> None:
    data = (CORPUS_DIR / path).read_bytes()
    header = capture_messages(data)[0][0]
    expected = decode_record(header).component(5, 1).strip()
    assert expected == golden_sender(path)
    outcome, answers = feed(AstmSenderProbe(), data, one_byte)
    assert outcome == SenderFound(expected), path
    # The probe answered what the link answers to every byte before frame 1.
    assert answers == link_answers(data[: data.index(STX) + 1]), path


def test_astm_sender_is_trimmed_first_component() -> None:
    data = ENQ + message(b"H|\\^&|||    XN-550^00-24^22723^^^^BD634545||||||||E1394-97", PATIENT)
    assert feed(AstmSenderProbe(), data) == (SenderFound("XN-550"), ACK)


def test_astm_decides_as_soon_as_the_name_is_whole() -> None:
    probe = AstmSenderProbe()
    assert probe.receive_data(ENQ + STX + b"1H|\\^&|||XN-5") is None
    assert probe.data_to_send() == ACK
    assert probe.receive_data(b"50") is None
    assert probe.receive_data(b"^") == SenderFound("XN-550")
    assert probe.receive_data(b"more") == SenderFound("XN-550")  # decided once
    assert probe.data_to_send() == b""


def test_astm_other_delimiters() -> None:
    # cepheid GeneXpert: H|@^\ (component ^); erba: H|`^& ; a made-up ! field delimiter.
    for header, name in (
        (b"H|@^\\|URM-1||GeneXpert^1|||||LIS||P|1394-97", "GeneXpert"),
        (b"H|`^&|||XL1000`x^7|", "XL1000`x"),
        (b"H!\\^&!!!EM200^1!", "EM200"),
    ):
        assert feed(AstmSenderProbe(), ENQ + message(header, PATIENT))[0] == SenderFound(name)


def test_astm_doubled_enq_eot_and_stray_bytes() -> None:
    # ENQ ENQ STX (Beckman, cobas): one ACK. EOT then ENQ again: a second ACK. Stray ACK/NAK
    # and filler: nothing. Exactly what AstmLink answers.
    data = ACK + NAK + b"\r\n" + ENQ + ENQ + EOT + ENQ + message(HEADER, PATIENT)
    assert feed(AstmSenderProbe(), data) == (SenderFound("XN-550"), ACK + ACK)
    assert link_answers(data[: data.index(STX)]) == ACK + ACK


def test_astm_frame_without_enq_is_not_answered() -> None:
    assert feed(AstmSenderProbe(), message(HEADER, PATIENT)) == (SenderFound("XN-550"), b"")


def test_astm_header_without_sender_field_names_nobody() -> None:
    assert feed(AstmSenderProbe(), ENQ + message(b"H|\\^&", PATIENT))[0] == SenderFound("")
    assert feed(AstmSenderProbe(), ENQ + message(b"H|\\^&|||", PATIENT))[0] == SenderFound("")


def test_astm_refusals_say_why() -> None:
    cases = {
        message(b"P|1", HEADER): "not a header",
        frame(1, b"H|\\^&|||XN", final=False): "split across frames",
        frame(1, b"H|\\^&|", final=False): "split before its sender",
        STX + b"1H|\\^&|||XN" + EOT: "cut short",
        message(b"H|"): "no delimiters",
    }
    for data, why in cases.items():
        outcome, _ = feed(AstmSenderProbe(), ENQ + data)
        assert isinstance(outcome, SenderUnknown), data
        assert why in outcome.reason, (data, outcome.reason)


def test_astm_probe_is_bounded() -> None:
    probe = AstmSenderProbe(max_bytes=100)
    assert probe.receive_data(ENQ + b"\x00" * 100) is not None
    outcome = AstmSenderProbe(max_bytes=100).receive_data(ENQ + STX + b"1H|\\^&|||" + b"X" * 200)
    assert outcome == SenderUnknown("no sender name in the first 100 bytes")


# -- HL7 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", HL7)
@pytest.mark.parametrize("one_byte", [False, True])
def test_hl7_corpus_sender(path: str, one_byte: bool) -> None:
    data = (CORPUS_DIR / path).read_bytes()
    framer = MllpFramer()
    framer.receive_data(data)
    framer.close()
    while not isinstance(event := framer.next_event(), MllpMessage):
        assert event is not MLLP_NEED_DATA, f"no message in {path}"
    first = parse_message(event.payload, lenient=True)
    msh = first.segment("MSH")
    assert msh is not None
    expected = msh.get(3).strip()  # MSH-3.1, as the HL7 parser reads it
    assert expected == golden_sender(path)
    outcome, answers = feed(Hl7SenderProbe(), data, one_byte)
    assert outcome == SenderFound(expected), path
    assert answers == b""


def test_hl7_sender_cases() -> None:
    assert hl7_sender(b"\x0bMSH|^~\\&|CLINITEK^1.0|LAB|") == SenderFound("CLINITEK")
    assert hl7_sender(b"\x0bMSH|^~\\&| Maglumi |") == SenderFound("Maglumi")
    assert hl7_sender(b"\x02\x0bMSH|^~\\&|BC-5130\r") == SenderFound("BC-5130")
    assert hl7_sender(b"MSH|^~\\&|||||") == SenderFound("")
    assert hl7_sender(b"MSH#^~\\&#APP^X#") == SenderFound("APP")
    assert hl7_sender(b"\x0bMSH|^~\\&|BC-51") is None
    assert hl7_sender(b"\x0bMS") is None
    unknown = hl7_sender(b"\x0bPID|1\r\x1c\r")
    assert isinstance(unknown, SenderUnknown) and "no MSH" in unknown.reason


def test_hl7_probe_is_bounded() -> None:
    probe = Hl7SenderProbe(max_bytes=64)
    assert probe.receive_data(b"\x0bMSH|^~\\&|" + b"A" * 100) == SenderUnknown(
        "no MSH-3 in the first 64 bytes"
    )


# -- properties ------------------------------------------------------------------------------

ASTM_STREAM = ACK + ENQ + ENQ + message(HEADER, PATIENT) + EOT
HL7_STREAM = b"\x02\x0bMSH|^~\\&|BC-5130^X|LAB|||20240101||ORU^R01|1|P|2.3.1\rPID|1\r\x1c\r"


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=20)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(chunkings(ASTM_STREAM))
def test_astm_any_chunking_same_outcome(chunks: list[bytes]) -> None:
    probe = AstmSenderProbe()
    outcome = None
    for chunk in chunks:
        outcome = probe.receive_data(chunk) or outcome
    assert outcome == SenderFound("XN-550")
    assert probe.data_to_send() == ACK


@given(chunkings(HL7_STREAM))
def test_hl7_any_chunking_same_outcome(chunks: list[bytes]) -> None:
    probe = Hl7SenderProbe()
    outcome = None
    for chunk in chunks:
        outcome = probe.receive_data(chunk) or outcome
    assert outcome == SenderFound("BC-5130")


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64) | st.sampled_from([ENQ, EOT, STX, b"H|\\^&|", b"|", b"^"])))
def test_any_bytes_give_an_outcome_or_need_more(chunks: list[bytes]) -> None:
    astm, hl7 = AstmSenderProbe(max_bytes=256), Hl7SenderProbe(max_bytes=256)
    for chunk in chunks:
        for probe in (astm, hl7):
            outcome = probe.receive_data(chunk)
            assert outcome is None or isinstance(outcome, SenderFound | SenderUnknown)
            assert set(probe.data_to_send()) <= {fr.ACK}
