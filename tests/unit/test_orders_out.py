"""Order messages for analyzers (lisgw.orders_out): host-query replies and downloads, per form.

Queries are the shared corpus's host-query captures (../shared/corpus): cobas e411 TSREQ,
Erba EM-200 (backtick repeat delimiter), VITROS 3600 Q record, GeneXpert QBP^Z03. Orders,
patients and test codes are invented; the expected bytes are written by hand from E1394
§9.4 and the forms' descriptions in lisgw/orders_out/astm.py. Every HL7 reply is validated
with hl7apy (lisgw.hl7.apy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from lisgw.assemble import assemble_records
from lisgw.astm.message import AstmMessage
from lisgw.drivers import default_catalogue
from lisgw.errors import ConfigError
from lisgw.hl7 import apy
from lisgw.hl7.message import parse_message
from lisgw.orders_out import (
    OrderedTest,
    SampleOrders,
    asked_samples,
    build_astm_orders,
    build_hl7_reply,
    group_by_sample,
)

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
E411_TSREQ = "astm/roche_cobas_e411/roche_cobas_e411_host_query_TSREQ.bin"
ERBA_QUERY = "astm/erba_em200/erba_em200_host_query.bin"
VITROS_QUERY = "astm/ortho_vitros_3600/ortho_vitros_3600_host_query_Q_record.bin"
XPERT_QBP = "hl7/cepheid_genexpert/cepheid_genexpert_hl7_qbp_z03_host_query.bin"
NOW = "20260101120000"
CATALOGUE = default_catalogue()


def corpus_query(name: str, *, extra_q: bytes = b"") -> AstmMessage:
    """The E1394 message inside a captured query's frames (``extra_q`` replaces its Q.3)."""
    data = (CORPUS / name).read_bytes()
    texts = re.findall(rb"\x02\d(.*?)[\x03\x17]", data, re.S)
    records = [r for text in texts for r in text.split(b"\r") if r]
    if extra_q:
        records = [re.sub(rb"^(Q\|1\|)[^|]*", rb"\1" + extra_q, r) for r in records]
    (message,), _ = assemble_records(records, encoding="latin-1", lenient=True)
    return message.message


def codes_of(*codes: str, first: int = 1) -> tuple[OrderedTest, ...]:
    return tuple(OrderedTest(code, (first + n,)) for n, code in enumerate(codes))


def ordered(sample: str, *codes: str, priority: str = "R") -> SampleOrders:
    return SampleOrders(sample, codes_of(*codes), priority, "ORD-1", "PAT-9", "Nguyễn^Văn")


@dataclass(frozen=True)
class Row:
    queue_id: int
    analyzer_code: str
    sample_id: str
    placer: str = "ORD-1"
    priority: str = "S"
    patient_id: str = "PAT-1"
    patient_name: str = "DOE^JANE"
    ordered_at: str = "20260101110000"


def test_group_by_sample_keeps_the_asked_order_and_answers_unknown_samples() -> None:
    rows = [Row(1, "GLU", "S2"), Row(2, "CRE", "S1"), Row(3, "GLU", "S2"), Row(4, "NA", "S2")]
    grouped = group_by_sample(rows, ["S1", "S9", "S2"])
    assert [s.sample_id for s in grouped] == ["S1", "S9", "S2"]
    assert grouped[1] == SampleOrders("S9")  # nothing queued: "no orders"
    assert grouped[2].tests == (OrderedTest("GLU", (1, 3)), OrderedTest("NA", (4,)))
    assert grouped[2].queue_ids == (1, 3, 4)
    assert [s.sample_id for s in group_by_sample(rows)] == ["S2", "S1"]  # queue order


def test_roche_tsreq_is_answered_with_tsdwn_echoing_the_tube_position() -> None:
    query = corpus_query(E411_TSREQ)
    profile = CATALOGUE.get("roche-cobas-e411")
    asked = {a.sample_id: a for a in asked_samples(query, profile.query.form)}
    assert list(asked) == ["0000000387"]
    records = build_astm_orders(
        profile,
        [ordered("0000000387", "8/1/not", "3/1/not", priority="S")],
        now_timestamp=NOW,
        query=query,
        asked=asked,
    )
    assert records == [
        b"H|\\^&|||host^1|||||cobas-e411|TSDWN^REPLY|P|1",
        b"P|1|PAT-9|||Nguyen^Van",  # charset: ASCII, transliterated
        b"O|1|0000000387|587^0^2^^S1^SC|^^^8/1/not^1\\^^^3/1/not^1|S||||||A||||1||||||||||O",
        b"L|1|N",
    ]


def test_roche_no_orders_is_an_o_record_without_tests_report_type_y() -> None:
    query = corpus_query(E411_TSREQ)
    profile = CATALOGUE.get("roche-cobas-e411")
    asked = {a.sample_id: a for a in asked_samples(query, profile.query.form)}
    records = build_astm_orders(
        profile, [SampleOrders("0000000387")], now_timestamp=NOW, query=query, asked=asked
    )
    assert records[1:] == [
        b"P|1",
        b"O|1|0000000387|587^0^2^^S1^SC||||||||||||||||||||||Y",
        b"L|1|N",
    ]


def test_erba_multi_tube_query_gets_one_p_and_o_per_tube_with_its_delimiters() -> None:
    query = corpus_query(ERBA_QUERY, extra_q=b"^010520182`^010520183`^010520184")
    profile = CATALOGUE.get("erba-em")
    asked = asked_samples(query, profile.query.form)
    assert [a.sample_id for a in asked] == ["010520182", "010520183", "010520184"]
    samples = [ordered("010520182", "GLU", "CRE"), SampleOrders("010520183")]
    samples.append(ordered("010520184", "GLU", priority="stat"))
    records = build_astm_orders(profile, samples, now_timestamp=NOW, query=query)
    assert records == [
        b"H|`^&|||LISGW|||||||P|LIS2-A2|20260101120000",
        b"P|1|PAT-9|||Nguyen^Van",
        b"O|1|010520182||^^^GLU`^^^CRE|R||||||N||||||||||||||O",
        b"P|2",
        b"O|2|010520183|||||||||||||||||||||||Y",  # unknown tube: no orders
        b"P|3|PAT-9|||Nguyen^Van",
        b"O|3|010520184||^^^GLU|S||||||N||||||||||||||O",
        b"L|1|N",
    ]


def test_vitros_query_is_answered_with_an_order_message_to_the_analyzer() -> None:
    query = corpus_query(VITROS_QUERY)
    profile = CATALOGUE.get("ortho-vitros")
    (asked,) = asked_samples(query, profile.query.form)
    assert asked.sample_id == "1068687"
    records = build_astm_orders(
        profile, [ordered("1068687", "1.0000+002+1.0")], now_timestamp=NOW, query=query
    )
    assert records == [
        b"H|\\^&|||LISGW|||||3600796||P|LIS2-A2|20260101120000",
        b"P|1|PAT-9|||Nguyen^Van",
        b"O|1|1068687||^^^1.0000+002+1.0|R||||||N||||||||||||||O",
        b"L|1|N",
    ]


def test_a_batch_download_uses_the_driver_template_and_standard_delimiters() -> None:
    profile = CATALOGUE.get("sysmex-xn")
    records = build_astm_orders(profile, [ordered("S|1", "WBC", "RBC")], now_timestamp=NOW)
    assert records == [
        b"H|\\^&|||LISGW|||||||P|LIS2-A2|20260101120000",
        b"P|1|PAT-9|||Nguyen^Van",
        b"O|1|S&F&1||^^^^WBC\\^^^^RBC|R||||||N||||||||||||||O",  # `|` escaped (§7.1.4)
        b"L|1|N",
    ]


def test_roche_batch_download_is_tsdwn_batch() -> None:
    profile = CATALOGUE.get("roche-cobas-c311")
    records = build_astm_orders(profile, [ordered("12345", "685")], now_timestamp=NOW)
    assert records[0] == b"H|\\^&|||host^1||||||TSDWN^BATCH|P|1"
    assert records[2] == b"O|1|12345||^^^685^|R||||||A||||1||||||||||O"


def test_an_hl7_driver_reply_form_is_refused_for_astm() -> None:
    with pytest.raises(ConfigError, match="not an ASTM reply"):
        build_astm_orders(CATALOGUE.get("cepheid-genexpert-hl7"), [], now_timestamp=NOW)


def xpert_query() -> bytes:
    return (CORPUS / XPERT_QBP).read_bytes()


def test_genexpert_qbp_z03_is_answered_with_its_orders_and_a_patient() -> None:
    profile = CATALOGUE.get("cepheid-genexpert-hl7")
    specimen = "SpecimenID-DEV01210000000000005"
    sample = SampleOrders(specimen, codes_of("MTB-RIF"), "S", "ORD-7", "", "Ngô^An", "20260101")
    reply = build_hl7_reply(
        profile, parse_message(xpert_query()), sample, control_id="R1", now_timestamp=NOW
    )
    apy.validate(reply)
    assert reply.split(b"\r") == [
        b"MSH|^~\\&|LIS||ICU^GeneXpert^1.0||20260101120000||RSP^K11^RSP_K11|R1|P|2.5",
        b"MSA|AA|662f165ebb1b4354b100cba090f1e7e5",
        b"QAK|662f165ebb1b4354b100cba090f1e7e5|OK|Z03^HOST QUERY",
        b"QPD|Z03^HOST QUERY|662f165ebb1b4354b100cba090f1e7e5|PatientID-556|" + specimen.encode(),
        b"PID|1||" + specimen.encode() + "||Ngô^An".encode(),  # no patient ID: the sample's
        b"ORC|NW|ORD-7|||||||20260101",
        b"OBR|1|ORD-7||MTB-RIF^^L",
        b"TQ1|1||||||||S",
        b"SPM|1|" + specimen.encode() + b"||ORH",
        b"",
    ]


def test_genexpert_unknown_sample_gets_qak_nf_and_no_order() -> None:
    profile = CATALOGUE.get("cepheid-genexpert-hl7")
    reply = build_hl7_reply(
        profile, parse_message(xpert_query()), SampleOrders("X"), control_id="R2", now_timestamp=NOW
    )
    apy.validate(reply)
    segments = [s.split(b"|")[0] for s in reply.split(b"\r") if s]
    assert segments == [b"MSH", b"MSA", b"QAK", b"QPD"]
    assert b"QAK|662f165ebb1b4354b100cba090f1e7e5|NF|Z03^HOST QUERY" in reply


def test_generic_hl7_reply_leaves_the_pid_out_without_a_patient_id() -> None:
    profile = CATALOGUE.get("hl7-generic")
    sample = SampleOrders("S1", codes_of("GLU", "CRE"), "R", "ORD-2")
    reply = build_hl7_reply(
        profile, parse_message(xpert_query()), sample, control_id="R3", now_timestamp=NOW
    )
    apy.validate(reply)
    names = [s.split(b"|")[0] for s in reply.split(b"\r") if s]
    assert names == [b"MSH", b"MSA", b"QAK", b"QPD"] + [b"ORC", b"OBR", b"TQ1", b"SPM"] * 2
