"""The HL7 corpus (../shared/corpus/hl7) through MllpFramer and the fast parser.

Expectations were written from reading the bytes of each capture (see the corpus README for
their provenance); patient names and IDs are not asserted. hl7apy is the reference parser for
field positions: every corpus message and a generated ORU^R01 with 40 OBX must give the same
leaf values in both parsers (hl7apy in tolerant mode: most captures do not validate strictly).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisgw.errors import CodecError
from lisgw.hl7 import apy
from lisgw.hl7.build import Hl7Header, OruObservation, OruOrder, OruPatient, build_oru_r01
from lisgw.hl7.message import Hl7Message, Segment, parse_message
from lisgw.hl7.mllp import (
    ENDED_BY_CLOSE,
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
)

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
GENEXPERT = "hl7/cepheid_genexpert/cepheid_genexpert_hl7_"
ORU_R30 = GENEXPERT + "oru_r30_ctng_results.bin"
QBP_Z03 = GENEXPERT + "qbp_z03_host_query.bin"
QCN_J01 = GENEXPERT + "qcn_j01_query_cancel.bin"
CLINITEK = "hl7/siemens_clinitek_status/siemens_clinitek_status_hl7_oru_r01.bin"
MINDRAY = "hl7/mindray_bc5130/mindray_bc5130_hl7_oru_r01_cbc.bin"
SNIBE = "hl7/snibe_maglumi/snibe_maglumi_hl7_oul_r22_batch.bin"
FILES = [ORU_R30, QBP_Z03, QCN_J01, CLINITEK, MINDRAY, SNIBE]
QUERY_TAG = "662f165ebb1b4354b100cba090f1e7e5"


@dataclass(frozen=True)
class Expected:
    """What one message of a capture must parse to."""

    message_type: str
    structure: str
    version: str
    control_id: str
    obx_count: int
    complete: bool = True
    warnings: tuple[str, ...] = ()


def read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def events_of(chunks: list[bytes], lenient: bool = True) -> list[MllpEvent]:
    framer = MllpFramer(lenient=lenient)
    events: list[MllpEvent] = []
    for chunk in chunks:
        framer.receive_data(chunk)
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
    framer.close()
    while (event := framer.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def messages_of(name: str) -> list[tuple[MllpMessage, Hl7Message]]:
    found = [e for e in events_of([read(name)]) if isinstance(e, MllpMessage)]
    return [(event, parse_message(event.payload)) for event in found]


def obx(message: Hl7Message, set_id: int) -> Segment:
    """The OBX whose OBX-1 is ``set_id``."""
    matches = [s for s in message.segments("OBX") if s.get(1) == str(set_id)]
    assert len(matches) == 1, set_id
    return matches[0]


BARE_AT_CLOSE = (NO_FRAMING, ENDED_BY_CLOSE)
EXPECTED: dict[str, list[Expected]] = {
    CLINITEK: [Expected("ORU^R01", "", "2.4", "636796458870000022", 12)],
    ORU_R30: [Expected("ORU^R32", "ORU_R30", "2.5", "URM-sj+xSBVA-03", 23, False, BARE_AT_CLOSE)],
    QBP_Z03: [Expected("QBP^Z03", "QBP_Z03", "2.5", QUERY_TAG, 0, False, BARE_AT_CLOSE)],
    QCN_J01: [Expected("QCN^J01", "QCN_J01", "2.5", "UDC000", 0, False, BARE_AT_CLOSE)],
    MINDRAY: [
        Expected("ORU^R01", "", "2.3.1", "8", 29, True, (NO_FRAMING, ENDED_BY_VT)),
        Expected("ORU^R01", "", "2.3.1", "9", 32, True, (NO_END_BLOCK, ENDED_BY_MSH)),
        Expected("ORU^R01", "", "2.3.1", "10", 29, False, BARE_AT_CLOSE),
    ],
    SNIBE: [
        Expected("OUL^R22", "", "2.5", str(849 + i), count, True, (NO_END_BLOCK, ENDED_BY_VT))
        for i, count in enumerate((1, 2, 8, 4, 2, 1, 3, 2))
    ]
    + [Expected("OUL^R22", "", "2.5", "857", 2, False, (NO_END_BLOCK, ENDED_BY_CLOSE))],
}


def test_corpus_is_present_and_every_hl7_file_has_expectations(corpus_dir: Path) -> None:
    assert CORPUS.resolve() == corpus_dir
    on_disk = sorted(str(p.relative_to(corpus_dir)) for p in (corpus_dir / "hl7").rglob("*.bin"))
    assert on_disk == sorted(EXPECTED)


@pytest.mark.parametrize("name", FILES)
def test_messages_types_versions_and_framing(name: str) -> None:
    found = messages_of(name)
    assert len(found) == len(EXPECTED[name])
    for (event, message), expected in zip(found, EXPECTED[name], strict=True):
        assert message.message_type == expected.message_type
        assert message.message_structure == expected.structure
        assert message.version == expected.version
        assert message.control_id == expected.control_id
        assert len(message.segments("OBX")) == expected.obx_count
        assert event.complete == expected.complete
        assert event.warnings == expected.warnings


def test_mindray_stray_stx_is_the_only_noise() -> None:
    noise = [e for e in events_of([read(MINDRAY)]) if not isinstance(e, MllpMessage)]
    data = read(MINDRAY)
    assert noise == [MllpNoise(b"\x02", data.index(b"\x02\x0b"), "control bytes after a message")]


@pytest.mark.parametrize("name", [ORU_R30, QBP_Z03, QCN_J01, MINDRAY, SNIBE])
def test_degraded_and_bare_captures_are_noise_in_strict_mode(name: str) -> None:
    events = events_of([read(name)], lenient=False)
    assert len([e for e in events if isinstance(e, MllpMessage)]) < len(EXPECTED[name])


def test_clinitek_values() -> None:
    [(_, msg)] = messages_of(CLINITEK)
    assert msg.sending_application == "Clinitek Status"
    obr = msg.segment("OBR")
    assert obr is not None
    assert (obr.get(3), obr.get(4), obr.get(15), obr.get(15, 7)) == (
        "143",
        "Multistix 10 SG",
        "UR",
        "P",
    )
    assert (obx(msg, 4).get(3), obx(msg, 4).get(5)) == ("SG", "<=1.005")
    assert [obx(msg, 8).get(n) for n in (2, 3, 5, 6, 11)] == ["ST", "URO", "3.2", "umol/L", "F"]
    assert (obx(msg, 11).get(3), obx(msg, 11).get(5)) == ("COL", "Yellow")
    assert obx(msg, 12).get(19) == "201812052237"


def test_genexpert_oru_r30_values() -> None:
    [(_, msg)] = messages_of(ORU_R30)
    assert (msg.sending_application, msg.msh.get(3, 3)) == ("GeneXpert PC", "Dx4.7b.1_Demo")
    first = obx(msg, 1)
    assert [first.get(3, 1, 1, n) for n in (1, 2, 3, 4)] == ["CTNG", "CT", "CT-NG IUO Assay", "1"]
    assert (first.get(4), first.get(5), first.get(11)) == ("CT", "NOT DETECTED", "F")
    assert len(first.repeats(18)) == 6
    assert (obx(msg, 3).get(4, 1, 1, 2), obx(msg, 3).get(5, 2)) == ("Ct", "0.0")
    assert (obx(msg, 11).get(3, 1, 1, 2), obx(msg, 11).get(5)) == ("NG", "DETECTED")
    assert (obx(msg, 13).get(4), obx(msg, 13).get(5, 2)) == ("NG2", "31.1")
    assert obx(msg, 23).get(5, 2) == "280.0"
    nte = msg.segments("NTE")
    assert [(n.get(2), n.get(3), n.get(3, 3)) for n in nte] == 2 * [("L", "Notes", "notes for OBM")]
    tq1, spm = msg.segment("TQ1"), msg.segment("SPM")
    assert tq1 is not None and (tq1.get(7), tq1.get(8)) == ("20120110111554", "20120110124533")
    assert spm is not None and (spm.get(2), spm.get(4), spm.get(11)) == ("sidOBM", "ORH", "P")


def test_genexpert_query_tag_patient_and_specimen() -> None:
    [(_, msg)] = messages_of(QBP_Z03)
    qpd = msg.segment("QPD")
    assert qpd is not None
    assert (qpd.get(1), qpd.get(1, 2)) == ("Z03", "HOST QUERY")
    assert qpd.get(2) == QUERY_TAG
    assert qpd.get(3) == "PatientID-556"
    assert qpd.get(4) == "SpecimenID-DEV01210000000000005"
    rcp = msg.segment("RCP")
    assert rcp is not None and rcp.get(1) == "I"
    assert (msg.sending_application, msg.msh.get(3, 2)) == ("ICU", "GeneXpert")


def test_genexpert_query_cancel_names_the_query_tag() -> None:
    [(_, msg)] = messages_of(QCN_J01)
    qid = msg.segment("QID")
    assert qid is not None and (qid.get(1), qid.get(2)) == (QUERY_TAG, "N/D")
    assert (msg.accept_ack_type, msg.application_ack_type) == ("AL", "NE")


def test_genexpert_queries_validate_strictly() -> None:
    for name in (QBP_Z03, QCN_J01):
        [(event, _)] = messages_of(name)
        apy.validate(event.payload)


def test_mindray_values() -> None:
    found = [msg for _, msg in messages_of(MINDRAY)]
    assert [m.character_set for m in found] == ["UNICODE"] * 3
    assert [m.segments("OBR")[0].get(3) for m in found] == ["5", "6", "1"]
    assert [m.segments("OBR")[0].get(7) for m in found] == [
        "20240920135955",
        "20240920190847",
        "20240921124121",
    ]
    first, second, third = found
    wbc = obx(first, 5)
    assert [wbc.get(3, n) for n in (1, 2, 3)] == ["6690-2", "WBC", "LN"]
    assert [wbc.get(n) for n in (2, 5, 6, 7, 8)] == ["NM", "5.43", "10*3/uL", "4.00-10.00", "N"]
    assert (obx(first, 18).get(5), obx(first, 18).repeats(8)) == ("77.1", ["L", "N"])
    assert (obx(first, 1).get(2), obx(first, 1).get(3, 2), obx(first, 1).get(5)) == (
        "IS",
        "Take Mode",
        "O",
    )
    assert (obx(second, 9).get(3, 2), obx(second, 9).get(5), obx(second, 9).get(8)) == (
        "NEU%",
        "79.1",
        "H",
    )
    assert (obx(second, 32).get(3), obx(second, 32).get(5)) == ("15199-3", "T")
    assert (obx(third, 17).get(5), obx(third, 17).get(6), obx(third, 17).get(8, repeat=2)) == (
        "17.0",
        "g/dL",
        "N",
    )
    assert obx(third, 26).get(6) == ""


def test_snibe_values() -> None:
    found = [msg for _, msg in messages_of(SNIBE)]
    specimens = [m.segments("SPM")[0].get(2) for m in found]
    assert specimens == ["1", "10", "11", "12", "13", "13re", "14", "15", "16"]
    assert {m.character_set for m in found} == {"UTF-8"}
    tsh = obx(found[0], 1)
    assert [tsh.get(n) for n in (2, 3, 5, 6, 7, 8, 11)] == [
        "",
        "TSH",
        "1.08",
        "uIU/mL",
        "0.3 to 4.5",
        "N",
        "F",
    ]
    assert (tsh.get(18), tsh.get(18, 2), tsh.get(19)) == ("P1", "Maglumi", "20240821104849")
    vitd = obx(found[1], 1)
    assert (vitd.get(3), vitd.get(5), vitd.get(7), vitd.get(8)) == (
        "25-OH VD II",
        "28.1",
        "30 to 100",
        "L",
    )
    assert (obx(found[3], 3).get(5), obx(found[3], 3).get(8)) == ("11.1", "H")
    assert (obx(found[6], 2).get(3), obx(found[6], 2).get(5)) == ("Ferritin", "93.2")
    assert [obx(found[8], 1).get(n) for n in (3, 5, 6, 7)] == ["CCP", "7.07", "U/mL", "0 to 17"]
    assert [len(m.segments("NTE")) for m in found] == [1, 2, 8, 4, 2, 1, 3, 2, 2]


# -- chunking invariance and fuzzing


@pytest.mark.parametrize("name", FILES)
def test_byte_by_byte_reads_give_the_same_events(name: str) -> None:
    data = read(name)
    assert events_of([data[i : i + 1] for i in range(len(data))]) == events_of([data])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(FILES),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=40),
)
def test_random_splits_give_the_same_events(name: str, cuts: list[int]) -> None:
    data = read(name)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert events_of(chunks) == events_of([data])


def _mutate(data: bytes, seed: int, count: int) -> bytes:
    rng = random.Random(seed)
    buf = bytearray(data)
    special = b"\x0b\x1c\r\n\x02|^~\\&"
    for _ in range(count):
        pos = rng.randrange(len(buf) + 1)
        op = rng.randrange(4)
        byte = rng.choice(special) if rng.random() < 0.5 else rng.randrange(256)
        if op == 0 and pos < len(buf):
            buf[pos] = byte
        elif op == 1:
            buf.insert(pos, byte)
        elif op == 2 and pos < len(buf):
            del buf[pos]
        else:
            buf[pos:pos] = b"MSH|^~\\&|"
    return bytes(buf)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(FILES),
    seed=st.integers(min_value=0, max_value=2**32),
    count=st.integers(min_value=1, max_value=30),
    chunk=st.integers(min_value=1, max_value=500),
)
def test_mutated_captures_give_events_and_messages_or_codec_errors(
    name: str, seed: int, count: int, chunk: int
) -> None:
    data = _mutate(read(name), seed, count)
    framer = MllpFramer(max_message_size=4096)
    events: list[MllpEvent] = []
    for start in range(0, len(data), chunk):
        framer.receive_data(data[start : start + chunk])
        while (event := framer.next_event()) is not NEED_DATA:
            events.append(event)
        assert framer.buffered <= 4096 + 3 + chunk
    framer.close()
    while (event := framer.next_event()) is not NEED_DATA:
        events.append(event)
    assert all(isinstance(e, MllpMessage | MllpNoise | MllpOversize) for e in events)
    for event in events:
        if isinstance(event, MllpMessage):
            try:
                message = parse_message(event.payload)
            except CodecError:
                continue
            assert message.msh.get(1)
            for segment in message:
                segment.get(5, 2, 1, 1)


# -- hl7apy as the reference for field positions


def _position(name: str, index: int) -> int:
    """hl7apy names components CE_1, XCN_2 ... (empty ones are omitted) or just by type."""
    suffix = name.rsplit("_", 1)[-1]
    return int(suffix) if "_" in name and suffix.isdigit() else index + 1


def _trim(value: str) -> str:
    """hl7apy's to_er7 sometimes drops trailing empty components ("1^^" → "1")."""
    return value.rstrip("^&")


def _compare_segment(apy_segment: Any, ours: Segment) -> int:
    """Check every hl7apy leaf equals our raw value at the same position; count the leaves."""
    assert apy_segment.name == ours.name
    repetitions: dict[int, list[Any]] = {}
    for field in apy_segment.children:
        repetitions.setdefault(int(field.name.rsplit("_", 1)[1]), []).append(field)
    checked = 0
    for number in range(1, len(ours) + 1):
        fields = repetitions.get(number, [])
        assert [_trim(f.to_er7()) for f in fields] == [_trim(r) for r in ours.repeats(number)]
        if ours.name == "MSH" and number <= 2:
            continue
        for rep, field in enumerate(fields, 1):
            for c_index, component in enumerate(field.children):
                comp = _position(component.name, c_index)
                subs = list(component.children) or [component]
                for s_index, sub in enumerate(subs):
                    assert sub.to_er7() == ours.get(number, comp, rep, s_index + 1, raw=True)
                    checked += 1
    return checked


def _compare_with_hl7apy(payload: bytes) -> int:
    ours = parse_message(payload)
    reference = apy.parse_tolerant(payload)
    assert len(reference.children) == len(ours)
    return sum(_compare_segment(a, o) for a, o in zip(reference.children, ours, strict=True))


@pytest.mark.parametrize("name", FILES)
def test_fast_parser_agrees_with_hl7apy_on_the_corpus(name: str) -> None:
    for event, _ in messages_of(name):
        assert _compare_with_hl7apy(event.payload) > 10


def test_fast_parser_agrees_with_hl7apy_on_a_generated_oru_with_40_obx() -> None:
    observations = [
        OruObservation(
            f"{1000 + i}",
            f"{i}.5" if i % 2 else f"text|{i}^with~all&escapes\\",
            f"Analyte & {i}",
            "LN",
            units="mmol/L",
            reference_range="1-9",
            abnormal_flags=("H", "A"),
            equipment_id=f"SN{i}",
            equipment_namespace="XN^550",
        )
        for i in range(40)
    ]
    header = Hl7Header(control_id="G-1", timestamp="20240101120000", receiving_facility="A^B")
    payload = build_oru_r01(
        header,
        OruPatient("P|1", "DOE", "JANE"),
        OruOrder("S-1", "PANEL", "Panel & more", specimen_type="BLD"),
        observations,
    )
    assert len(parse_message(payload).segments("OBX")) == 40
    assert _compare_with_hl7apy(payload) > 40 * 10
