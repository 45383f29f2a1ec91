"""The E1394 record codec against every ASTM capture of the shared corpus (../shared/corpus).

Records are extracted here without the link layer: "astm-records" files are split on CR/LF;
"astm-frames" files have the text of each frame (between STX + frame number and ETX/ETB)
concatenated and split on CR. Every count and value asserted below was read from the bytes of
the named capture (provenance in ../shared/corpus/README.md).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from lisgw.astm.escapes import DEFAULT_DELIMITERS, Delimiters
from lisgw.astm.message import AstmMessage, MessageAssembler, encode_message
from lisgw.astm.records import Record, decode_record, encode_record
from lisgw.errors import CodecError

_FRAME = re.compile(rb"\x02[0-7]([^\x02\x03\x17]*)[\x03\x17]")

# Records per type in each capture, counted from its bytes.
EXPECTED_COUNTS: dict[str, dict[str, int]] = {
    "abbott_afinion2/abbott_afinion2_hba1c_result.bin": {"H": 1, "P": 1, "O": 1, "R": 1, "L": 1},
    "roche_cobas_c111/roche_cobas_c111_result_with_M_record.bin": {
        "H": 1, "P": 1, "O": 1, "R": 1, "C": 1, "M": 1, "L": 1,
    },
    "roche_cobas_c311/roche_cobas_c311_chemistry_results.bin": {
        "H": 1, "P": 1, "O": 1, "R": 7, "C": 7, "L": 1,
    },
    "cepheid_genexpert/cepheid_genexpert_mtb_rif_astm_results.bin": {
        "H": 1, "P": 1, "O": 1, "R": 84, "C": 3, "L": 1,
    },
    "horiba_pentra_xlr/horiba_pentra_xlr_cbc_diff_results.bin": {
        "H": 1, "P": 1, "O": 1, "R": 21, "C": 3, "L": 1,
    },
    "sysmex_xn550/sysmex_xn550_cbc_results.bin": {
        "H": 1, "P": 1, "O": 1, "R": 41, "C": 3, "L": 1,
    },
    "sysmex_xp100/sysmex_xp100_cbc_results.bin": {"H": 1, "P": 1, "O": 1, "R": 20, "L": 1},
    "roche_cobas_e411/roche_cobas_e411_multi_frame_results.bin": {
        "H": 1, "P": 1, "O": 1, "R": 7, "C": 1, "L": 1,
    },
    "roche_cobas_e411/roche_cobas_e411_result_fragmented_reads.bin": {
        "H": 1, "P": 1, "O": 1, "R": 1, "L": 1,
    },
    "stago_sta_satellite_max/stago_sta_satellite_max_coag_results.bin": {
        "H": 1, "P": 1, "O": 6, "R": 6, "C": 10, "M": 6, "L": 1,
    },
    "roche_cobas_e411/roche_cobas_e411_host_query_TSREQ.bin": {"H": 1, "Q": 1, "L": 1},
    "erba_em200/erba_em200_results_two_sessions.bin": {
        "H": 2, "P": 2, "O": 2, "R": 2, "C": 2, "L": 2,
    },
    "erba_em200/erba_em200_host_query.bin": {"H": 1, "Q": 1, "L": 1},
    "sysmex_xn550/sysmex_xn550_qc_results_framed.bin": {
        "H": 1, "P": 1, "O": 1, "R": 33, "C": 3, "L": 1,
    },
    "euroimmun_analyzer_i/euroimmun_analyzer_i_sarscov2_iga_multi_patient_results.bin": {
        "H": 1, "P": 20, "O": 20, "R": 20, "L": 1,
    },
    "biorad_ih1000/biorad_ih1000_ihcom52_bloodgroup_multi_patient.bin": {
        "H": 1, "P": 2, "O": 2, "R": 5, "C": 4, "L": 1,
    },
    "abbott_architect_i1000sr/abbott_architect_i1000sr_multi_message_serology_results.bin": {
        "H": 5, "P": 5, "O": 5, "R": 14, "L": 5,
    },
    "immucor_galileo_echo/immucor_galileo_echo_crossmatch_order.bin": {
        "H": 1, "P": 1, "O": 1, "C": 1, "L": 1,
    },
    "ortho_vitros_3600/ortho_vitros_3600_host_query_Q_record.bin": {"H": 1, "Q": 1, "L": 1},
    "ortho_vitros_3600/ortho_vitros_3600_LIS_order_reply_to_query_single_frame.bin": {
        "H": 1, "P": 1, "O": 1, "L": 1,
    },
    "ortho_vitros_3600/ortho_vitros_3600_tsh_result_serum_indices.bin": {
        "H": 1, "P": 1, "O": 1, "R": 4, "M": 1, "L": 1,
    },
    "erba_xl1000/erba_xl1000_result_backtick_repeat_delim.bin": {
        "H": 1, "P": 1, "O": 1, "R": 1, "C": 1, "L": 1,
    },
    "beckman_access2/beckman_access2_pct_result_with_comment.bin": {
        "H": 1, "P": 1, "O": 1, "R": 1, "C": 1, "L": 1,
    },
    "roche_cobas_c111/roche_cobas_c111_multi_result_ETB_frames.bin": {
        "H": 1, "P": 1, "O": 1, "R": 4, "C": 4, "L": 1,
    },
    "roche_cobas_c311/roche_cobas_c311_H7600_batch_frame_split_midrecord.bin": {
        "H": 1, "P": 1, "O": 1, "R": 11, "C": 12, "L": 1,
    },
}  # fmt: skip

# Records whose bytes the canonical encoding does not reproduce, and why.
NOT_CANONICAL = {
    b"P|15||TEST-27-026-5-1  57  ": "lenient decoding trims the record's trailing spaces",
    b"L|1|N ": "lenient decoding trims the record's trailing spaces",
    b"2P|1|||||||": "an LIS put a digit before the record type",
    b"3O|1|1068687||^^^1.0000+002+1.0|R||20201121111002||||N||||5||||||||||O": "digit prefix",
    b"4L|1|N": "an LIS put a digit before the record type",
}


def _astm_entries(corpus_dir: Path) -> dict[str, dict[str, str]]:
    with (corpus_dir / "manifest.json").open(encoding="utf-8") as manifest:
        files = json.load(manifest)["files"]
    return {
        entry["path"].removeprefix("astm/"): entry for entry in files if entry["protocol"] == "astm"
    }


def extract_records(corpus_dir: Path, name: str) -> list[bytes]:
    """The records of one capture, CR terminators stripped, without the link layer."""
    entry = _astm_entries(corpus_dir)[name]
    data = (corpus_dir / entry["path"]).read_bytes()
    if entry["framing"] == "astm-records":
        return [record for record in re.split(rb"[\r\n]+", data) if record]
    text = b"".join(match.group(1) for match in _FRAME.finditer(data))
    return [record for record in text.split(b"\r") if record]


def assemble(records: list[bytes]) -> list[AstmMessage]:
    assembler = MessageAssembler()
    messages = [message for record in records for message in assembler.feed(record)]
    return messages + assembler.flush()


def decoded(corpus_dir: Path, name: str) -> list[Record]:
    return [record for message in assemble(extract_records(corpus_dir, name)) for record in message]


def test_every_astm_capture_is_covered(corpus_dir: Path) -> None:
    assert set(_astm_entries(corpus_dir)) == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_record_counts_per_type(corpus_dir: Path, name: str) -> None:
    counts = Counter(record.type for record in decoded(corpus_dir, name))
    assert dict(counts) == EXPECTED_COUNTS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_every_capture_assembles_into_complete_messages(corpus_dir: Path, name: str) -> None:
    records = extract_records(corpus_dir, name)
    messages = assemble(records)
    assert all(message.complete for message in messages)
    if name != "ortho_vitros_3600/ortho_vitros_3600_LIS_order_reply_to_query_single_frame.bin":
        assert all(not message.warnings for message in messages)
    assert sum(len(message) for message in messages) == len(records)
    assert [record.raw for message in messages for record in message] == [
        record.decode("latin-1") for record in records
    ]


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_every_record_round_trips(corpus_dir: Path, name: str) -> None:
    for message in assemble(extract_records(corpus_dir, name)):
        for record, data in zip(message, encode_message(message), strict=True):
            raw = (record.raw or "").encode("latin-1")
            if raw not in NOT_CANONICAL:
                assert data == raw
                assert decode_record(raw, message.delimiters, lenient=False) == record
            assert decode_record(data, message.delimiters) == record
            assert decode_record(data, message.delimiters, lenient=False) == record


def test_the_corpus_has_the_expected_non_canonical_records(corpus_dir: Path) -> None:
    raws = {
        (record.raw or "").encode("latin-1")
        for name in EXPECTED_COUNTS
        for record in decoded(corpus_dir, name)
    }
    assert set(NOT_CANONICAL) <= raws


# Values read from the bytes of individual captures.


def test_genexpert_delimiters_and_results(corpus_dir: Path) -> None:
    (message,) = assemble(
        extract_records(corpus_dir, "cepheid_genexpert/cepheid_genexpert_mtb_rif_astm_results.bin")
    )
    assert message.delimiters == Delimiters("|", "@", "^", "\\")
    assert message.header is not None
    assert message.header.component(2) == "@^\\"
    assert message.header.component(5, 2) == "GeneXpert"
    results = list(message.of_type("R"))
    assert len(results) == 84
    assert results[0].component(3, 5) == "Xpert MTB-RIF Ultra"
    assert results[0].component(4) == "NOT DETECTED"
    assert results[0].repeats(14) == (
        ("Cepheid-44413S0", "806149", "653624", "831583371", "56401", "20250525"),
    )
    # The instrument truncated one test ID.
    assert results[20].component(2) == "21"
    assert results[20].component(3, 2) == "MTB-RI"
    assert results[83].component(3, 7) == "IS1081-IS6110"
    assert results[83].component(4, 2) == "3.0"


def test_sysmex_xn550_escaped_repeat_delimiters_in_png_names(corpus_dir: Path) -> None:
    records = decoded(corpus_dir, "sysmex_xn550/sysmex_xn550_cbc_results.bin")
    scattergram = next(record for record in records if record.component(3, 5) == "SCAT_WDF")
    assert scattergram.raw is not None and "PNG&R&20240628&R&" in scattergram.raw
    assert scattergram.repeats(4) == (("PNG\\20240628\\2024_06_27_13_54_27_WDF.PNG",),)
    assert encode_record(scattergram) == scattergram.raw.encode("latin-1")
    order = next(record for record in records if record.type == "O")
    # Sample number right-aligned with spaces, kept as sent.
    assert order.component(4, 3) == "                    27"
    assert len(order.repeats(5)) == 23
    assert order.component(5, 5, 1) == "WBC"
    assert order.component(5, 5, 23) == "IG%"


def test_erba_backtick_repeat_delimiter(corpus_dir: Path) -> None:
    first, second = assemble(
        extract_records(corpus_dir, "erba_em200/erba_em200_results_two_sessions.bin")
    )
    for message in (first, second):
        assert message.delimiters == Delimiters("|", "`", "^", "&")
    result = next(first.of_type("R"))
    assert result.repeats(6) == (("", "DEFAULT"),)
    assert result.component(4) == "115.5"
    assert result.component(7) == "H"
    assert next(first.of_type("C")).component(4) == "Instrument Flag H"
    assert next(second.of_type("R")).component(3, 4) == "CRE"
    (xl1000,) = assemble(
        extract_records(corpus_dir, "erba_xl1000/erba_xl1000_result_backtick_repeat_delim.bin")
    )
    xl_result = next(xl1000.of_type("R"))
    assert xl_result.component(6, 2) == "DEFAULT"
    assert xl_result.component(7) == "A"


def test_cobas_c311_seven_repeated_test_ids(corpus_dir: Path) -> None:
    records = decoded(corpus_dir, "roche_cobas_c311/roche_cobas_c311_chemistry_results.bin")
    order = next(record for record in records if record.type == "O")
    assert [repeat[3] for repeat in order.repeats(5)] == [
        "685/", "687/", "712/", "158/", "735/", "717/", "690/",
    ]  # fmt: skip
    assert order.component(3, 2) == "CL-PL-24-0370         "
    assert [r.component(4) for r in records if r.type == "R"] == [
        "22.4", "15.0", "4.1", "301", "1.6", "5.85", "34",
    ]  # fmt: skip


def test_cobas_c311_records_split_across_frames_are_whole(corpus_dir: Path) -> None:
    records = decoded(
        corpus_dir, "roche_cobas_c311/roche_cobas_c311_H7600_batch_frame_split_midrecord.bin"
    )
    order = next(record for record in records if record.type == "O")
    assert order.component(3) == "               28987-S"
    assert len(order.repeats(5)) == 11
    results = [record for record in records if record.type == "R"]
    assert [r.component(3, 4) for r in results][:3] == ["989/", "990/", "413/"]
    assert results[9].component(12) == "00000000000000"


def test_euroimmun_twenty_patients_in_one_message(corpus_dir: Path) -> None:
    (message,) = assemble(
        extract_records(
            corpus_dir,
            "euroimmun_analyzer_i/euroimmun_analyzer_i_sarscov2_iga_multi_patient_results.bin",
        )
    )
    assert message.header is not None
    assert message.header.fields == ((("H",),), (("\\^&",),), (("",),), (("",),), (("",),))
    patients = list(message.of_type("P"))
    assert len(patients) == 20
    assert patients[0].component(4) == "TEST-27-079-5-1"
    # The one patient ID with extra spaces and digits: trailing spaces trimmed, raw kept.
    assert patients[14].component(4) == "TEST-27-026-5-1  57"
    assert patients[14].raw == "P|15||TEST-27-026-5-1  57  "
    values = [record.component(4) for record in message.of_type("R")]
    assert values[:2] == [">8", "7,41"]


def test_architect_five_messages(corpus_dir: Path) -> None:
    messages = assemble(
        extract_records(
            corpus_dir,
            "abbott_architect_i1000sr/abbott_architect_i1000sr_multi_message_serology_results.bin",
        )
    )
    assert len(messages) == 5
    assert [len(list(message.of_type("R"))) for message in messages] == [3, 3, 3, 2, 3]
    order = next(messages[0].of_type("O"))
    assert order.repeats(4) == (("276056250158121", "U265", "1"),)
    interpretation = list(messages[0].of_type("R"))[1]
    assert interpretation.component(3, 11) == "I"
    assert interpretation.component(4) == "Nonreactive"
    assert all(message.terminator is not None for message in messages)
    assert messages[0].terminator is not None and len(messages[0].terminator) == 2


def test_biorad_two_patients_and_multi_component_result(corpus_dir: Path) -> None:
    (message,) = assemble(
        extract_records(
            corpus_dir, "biorad_ih1000/biorad_ih1000_ihcom52_bloodgroup_multi_patient.bin"
        )
    )
    assert len(list(message.of_type("P"))) == 2
    blood_group = list(message.of_type("R"))[3]
    assert blood_group.repeats(4) == (("A", "NEG", "NEG", "ccee", "K-", "NEG", "", "", ""),)
    order = next(message.of_type("O"))
    assert order.repeats(4) == (("1122206642", "", "", ""), ("1122206642", "", "", ""))


def test_vitros_digit_prefixed_records(corpus_dir: Path) -> None:
    name = "ortho_vitros_3600/ortho_vitros_3600_LIS_order_reply_to_query_single_frame.bin"
    raw_records = extract_records(corpus_dir, name)
    assert raw_records[1].startswith(b"2P|1")
    (message,) = assemble(raw_records)
    assert [record.type for record in message] == ["H", "P", "O", "L"]
    assert len(message.warnings) == 3
    assert message.warnings[0].startswith("record_type: record 2 (P) began with '2'")
    order = next(message.of_type("O"))
    assert order.component(3) == "1068687"
    assert order.component(5, 4) == "1.0000+002+1.0"
    assert encode_message(message)[2].startswith(b"O|1|1068687|")
    with pytest.raises(CodecError) as caught:
        decode_record(raw_records[2], DEFAULT_DELIMITERS, lenient=False)
    assert caught.value.where == "3O.1"


def test_vitros_repeated_flags_and_m_record_between_results(corpus_dir: Path) -> None:
    records = decoded(
        corpus_dir, "ortho_vitros_3600/ortho_vitros_3600_tsh_result_serum_indices.bin"
    )
    assert [record.type for record in records] == ["H", "P", "O", "R", "M", "R", "R", "R", "L"]
    tsh = records[3]
    assert tsh.component(4) == "8.25"
    assert tsh.repeats(7) == (("", "1", ""), ("", "0", ""), ("", "0", ""), ("", "0", ""))
    assert [records[i].component(4) for i in (5, 6, 7)] == ["<15", "<2", "<20"]


def test_cobas_c111_manufacturer_record_values(corpus_dir: Path) -> None:
    records = decoded(corpus_dir, "roche_cobas_c111/roche_cobas_c111_result_with_M_record.bin")
    curve = next(record for record in records if record.type == "M")
    assert curve.component(3, 3) == "c111"
    assert len(curve.repeats(5)) == 18
    assert curve.repeats(5)[-1] == ("141",)
    assert curve.component(6) == "0.018514"


def test_stago_manufacturer_and_comment_records(corpus_dir: Path) -> None:
    records = decoded(
        corpus_dir, "stago_sta_satellite_max/stago_sta_satellite_max_coag_results.bin"
    )
    lots = [record for record in records if record.type == "M"]
    assert lots[0].repeats(9) == (("STA-NEO CI PLUS 5", "254169"),)
    comments = [record for record in records if record.type == "C"]
    assert comments[1].repeats(4) == (("-3016", "Test Co 24 Stirring defect"),)


def test_galileo_trailing_space_in_the_terminator(corpus_dir: Path) -> None:
    records = decoded(corpus_dir, "immucor_galileo_echo/immucor_galileo_echo_crossmatch_order.bin")
    terminator = records[-1]
    assert terminator.component(3) == "N"
    assert terminator.raw == "L|1|N "
    assert records[3].repeats(4) == (("Donor", "R02460"),)


def test_e411_host_query(corpus_dir: Path) -> None:
    records = decoded(corpus_dir, "roche_cobas_e411/roche_cobas_e411_host_query_TSREQ.bin")
    query = records[1]
    assert query.repeats(3) == (("", "", "0000000387", "587", "0", "2", "", "S1", "SC"),)
    assert query.component(5) == "ALL"
    assert query.component(13) == "A"
    assert records[0].component(11, 1) == "TSREQ"
