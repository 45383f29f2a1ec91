"""HL7 v2.3.1 QRY^Q02 host queries: decoding (QRD-8 sample IDs, QRD-4 tag) and the DSR^Q03 /
QCK^Q02 replies (lisgw.orders_out.hl7_qry).

The QRY messages are hand-written from the HL7 v2.3.1 standard (chapter 2: QRD, QRF), with
invented analyzer names, sample IDs and tests; they are not captures (no QRY^Q02 capture is in
the corpus). Every reply is validated with hl7apy (lisgw.hl7.apy) against its v2.3.1
DSR_Q03 / QCK_Q02 structure. Also the E1394 query abort (Q status ``A``) test, hand-written
from E1394 §12.1.13.
"""

from __future__ import annotations

import pytest

from lisgw.assemble import assemble_records
from lisgw.astm.message import AstmMessage
from lisgw.drivers import default_catalogue
from lisgw.drivers.engine import normalize_hl7
from lisgw.errors import CodecError
from lisgw.hl7 import apy
from lisgw.hl7.message import parse_message
from lisgw.model import Kind
from lisgw.orders_out.astm import is_query_abort
from lisgw.orders_out.hl7_qry import build_qry_reply
from lisgw.orders_out.model import OrderedTest, SampleOrders

CATALOGUE = default_catalogue()
GENERIC = CATALOGUE.get("hl7-generic")
NOW = "20260101120001"


def qry(who: str, *, tag: str = "7", qrf: bool = True) -> bytes:
    """A QRY^Q02 as HL7 v2.3.1 §2.24.4 lays QRD out: QRD-4 query ID, QRD-8 the samples."""
    segments = [
        "MSH|^~\\&|CHEM-1|ANALYZER|LIS|LAB|20260101120000||QRY^Q02|Q100|P|2.3.1",
        f"QRD|20260101120000|R|I|{tag}|||1^RD|{who}|OTH|LAB||T",
    ]
    if qrf:
        segments.append("QRF|CHEM-1|20260101000000|20260101120000|||RCT|COR|ALL")
    return ("\r".join(segments) + "\r").encode()


def sample(sample_id: str, *codes: str) -> SampleOrders:
    tests = tuple(OrderedTest(code, (n,)) for n, code in enumerate(codes, 1))
    return SampleOrders(sample_id, tests)


def lines(reply: bytes) -> list[str]:
    return reply.decode().rstrip("\r").split("\r")


def test_the_query_is_valid_hl7_and_decodes_to_its_samples_and_tag() -> None:
    raw = qry("S-1001~S-1002", tag="Q-55")
    apy.validate(raw)
    message = normalize_hl7(parse_message(raw), GENERIC)
    assert message.kind is Kind.QUERY
    assert message.query is not None
    assert message.query.sample_ids == ("S-1001", "S-1002")
    assert message.query.query_tag == "Q-55"


def test_orders_found_give_a_dsr_with_the_tests_of_the_sample() -> None:
    query = parse_message(qry("S-1001"))
    reply = build_qry_reply(
        GENERIC, query, [sample("S-1001", "GLU", "ALT")], control_id="R1", now_timestamp=NOW
    )
    apy.validate(reply)
    msh, msa, qak, qrd, qrf, *dsp = lines(reply)
    assert msh.split("|")[2:12] == [
        "LIS",
        "LAB",
        "CHEM-1",
        "ANALYZER",
        NOW,
        "",
        "DSR^Q03^DSR_Q03",
        "R1",
        "P",
        "2.3.1",
    ]
    assert msa == "MSA|AA|Q100"
    assert qak == "QAK|7|OK"
    assert qrd == lines(qry("S-1001"))[1] and qrf == lines(qry("S-1001"))[2]
    assert dsp == [
        "DSP|1|1|S-1001||S-1001",
        "DSP|2|2|GLU||S-1001",
        "DSP|3|2|ALT|S-1001|S-1001",
    ]


def test_several_samples_are_listed_in_the_order_asked_including_those_without_orders() -> None:
    query = parse_message(qry("S-2~S-1~S-3", qrf=False))
    samples = [sample("S-2", "TSH"), sample("S-1"), sample("S-3", "FT4", "FT3")]
    reply = build_qry_reply(GENERIC, query, samples, control_id="R2", now_timestamp=NOW)
    apy.validate(reply)
    got = lines(reply)
    assert [line.split("|")[0] for line in got[:4]] == ["MSH", "MSA", "QAK", "QRD"]
    assert got[4:] == [
        "DSP|1|1|S-2||S-2",
        "DSP|2|2|TSH|S-2|S-2",
        "DSP|3|1|S-1|S-1|S-1",
        "DSP|4|1|S-3||S-3",
        "DSP|5|2|FT4||S-3",
        "DSP|6|2|FT3|S-3|S-3",
    ]


def test_no_orders_for_any_asked_sample_give_a_qck_with_qak_nf() -> None:
    query = parse_message(qry("UNKNOWN-1~UNKNOWN-2", tag="Q-9"))
    reply = build_qry_reply(
        GENERIC,
        query,
        [sample("UNKNOWN-1"), sample("UNKNOWN-2")],
        control_id="R3",
        now_timestamp=NOW,
    )
    apy.validate(reply)
    msh, msa, qak = lines(reply)
    assert msh.split("|")[8] == "QCK^Q02^QCK_Q02"
    assert (msa, qak) == ("MSA|AA|Q100", "QAK|Q-9|NF")


def test_delimiters_in_a_sample_id_or_code_are_escaped() -> None:
    query = parse_message(qry("S\\F\\7"))
    reply = build_qry_reply(
        GENERIC, query, [sample("S|7", "A^B")], control_id="R4", now_timestamp=NOW
    )
    apy.validate(reply)
    assert lines(reply)[-2:] == ["DSP|1|1|S\\F\\7||S\\F\\7", "DSP|2|2|A\\S\\B|S\\F\\7|S\\F\\7"]


def test_a_query_without_qrd_is_refused_naming_the_segment() -> None:
    raw = b"MSH|^~\\&|CHEM-1|ANALYZER|LIS|LAB|20260101120000||QRY^Q02|Q101|P|2.3.1\r"
    with pytest.raises(CodecError, match="Q101 has no QRD"):
        build_qry_reply(GENERIC, parse_message(raw), [], control_id="R5", now_timestamp=NOW)


def test_an_astm_q_record_with_status_a_is_an_abort() -> None:
    """E1394 §12.1.13 request information status: ``O`` orders, ``A`` cancel (abort)."""
    head = b"H|\\^&|||XN-550^1|||||host||P|1\r"
    asking = assemble(head + b"Q|1|^S100||ALL||||||||O\rL|1|N\r")
    aborting = assemble(head + b"Q|1|^S100||ALL||||||||A\rL|1|N\r")
    assert not is_query_abort(asking)
    assert is_query_abort(aborting)


def assemble(raw: bytes) -> AstmMessage:
    records = [record for record in raw.split(b"\r") if record]
    (assembled,), _ = assemble_records(records, encoding="latin-1", lenient=False)
    return assembled.message
