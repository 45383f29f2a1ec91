"""Inbound HIS orders: ORM^O01 and OML^O21 (new, cancel, change) through HIS profiles.

Every message here is synthetic, written for these tests; the names are invented (Vietnamese,
French and German spellings to exercise Unicode), no patient data.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.errors import CodecError
from lisgw.his.orders import UnsupportedMessageError, parse_orders, read_orders
from lisgw.his.profile import HisProfile
from lisgw.his.types import HisOrder, OrderedTest
from lisgw.hl7.apy import parse_strict
from lisgw.hl7.message import parse_message

CONFIG = Path(__file__).resolve().parents[2] / "config" / "his"
V251 = HisProfile.load(CONFIG / "hl7-v251.yaml")
V231 = HisProfile.load(CONFIG / "hl7-v231.yaml")

# ORM^O01 v2.5.1: one patient, two specimens (barcodes in OBR-3), one ORC/OBR pair per test.
ORM_TWO_SPECIMENS = (
    "MSH|^~\\&|HIS|WARD|LISGW|LAB|20260102080500||ORM^O01^ORM_O01|ORM-1|P|2.5.1|||||VN|"
    "UNICODE UTF-8\r"
    "PID|1||PAT-1^^^HIS^MR||Nguyễn^Thị Kim Tiến^Ánh||19800101|F\r"
    "PV1|1|O\r"
    "ORC|NW|ORD-10|||||^^^^^S||20260102080000\r"
    "OBR|1|ORD-10|BC-0001|GLU^Glucose^L\r"
    "NTE|1||fasting\r"
    "ORC|NW|ORD-10|||||^^^^^S||20260102080000\r"
    "OBR|2|ORD-10|BC-0001|NA^Sodium^L\r"
    "ORC|NW|ORD-11||||||||20260102080100\r"
    "OBR|3|ORD-11|BC-0002|WBC^Leukocytes^L\r"
)
# OML^O21 v2.5.1: TQ1 priority, SPM specimen IDs, a new and a changed order.
OML_NEW_AND_CHANGE = (
    "MSH|^~\\&|HIS|WARD|LISGW|LAB|20260102090500||OML^O21^OML_O21|OML-1|P|2.5.1\r"
    "PID|1||NAT-99^^^STATE^NN~PAT-2^^^HIS^MR||Müller^Jürgen||19700101|M\r"
    "ORC|NW|ORD-20||||||||20260102090000\r"
    "TQ1|1||||||||S\r"
    "OBR|1|ORD-20||K^Potassium^L\r"
    "SPM|1|SP-20||BLD\r"
    "ORC|XO|ORD-21||||||||20260102090100\r"
    "OBR|1|ORD-21||GLU^Glucose^L\r"
    "SPM|1|SP-21||SER\r"
)
# ORM^O01 v2.3.1 as many older HISs write it: barcode in OBR-2, priority in ORC-7.6.
ORM_V231 = (
    "MSH|^~\\&|HIS|WARD|LISGW|LAB|20260102100500||ORM^O01|ORM-3|P|2.3.1\r"
    "PID|1||PAT-3||Lefèvre^Françoise^Élodie\r"
    "ORC|NW|ORD-30|||||^^^^^R||20260102100000\r"
    "OBR|1|BC-0030||CRP^C-reactive protein^L\r"
)


def orders(text: str, profile: HisProfile = V251, encoding: str = "utf-8") -> list[HisOrder]:
    return parse_orders(text.encode(encoding), profile)


def test_orm_with_two_specimens_gives_one_order_per_placer_and_sample() -> None:
    first, second = orders(ORM_TWO_SPECIMENS)
    assert first == HisOrder(
        control="new",
        placer="ORD-10",
        filler="BC-0001",
        sample_id="BC-0001",
        patient_id="PAT-1",
        patient_name="Nguyễn^Thị Kim Tiến^Ánh",
        tests=(OrderedTest("GLU", "Glucose"), OrderedTest("NA", "Sodium")),
        priority="S",
        ordered_at="2026-01-02T08:00:00",
    )
    assert (second.placer, second.sample_id, second.tests) == (
        "ORD-11",
        "BC-0002",
        (OrderedTest("WBC", "Leukocytes"),),
    )
    assert (second.patient_name, second.priority) == (first.patient_name, "")


def test_oml_reads_spm_tq1_and_a_change() -> None:
    # The first order alone validates with hl7apy. With the second, hl7apy's greedy grouping
    # takes its ORC for OML_O21_PRIOR_RESULT's ORDER_PRIOR (which would need an OBX), a known
    # ambiguity of the OML_O21 grammar: a second ORDER group is valid HL7.
    first_order = "\r".join(OML_NEW_AND_CHANGE.split("\r")[:6])
    assert parse_strict(first_order).name == "OML_O21"
    new, change = orders(OML_NEW_AND_CHANGE)
    assert (new.control, new.placer, new.sample_id, new.priority) == ("new", "ORD-20", "SP-20", "S")
    assert new.tests == (OrderedTest("K", "Potassium"),)
    assert (change.control, change.placer, change.sample_id) == ("change", "ORD-21", "SP-21")
    assert new.patient_name == "Müller^Jürgen"
    assert new.patient_id == "NAT-99"  # the first PID-3 repetition by default


def test_patient_id_type_picks_the_pid3_repetition() -> None:
    mr = HisProfile.from_dict({"version": "2.5.1", "orders": {"patient_id_type": "MR"}})
    assert {o.patient_id for o in orders(OML_NEW_AND_CHANGE, mr)} == {"PAT-2"}
    other = HisProfile.from_dict({"version": "2.5.1", "orders": {"patient_id_type": "PI"}})
    assert {o.patient_id for o in orders(OML_NEW_AND_CHANGE, other)} == {""}


@pytest.mark.parametrize("code", ["CA", "DC"])
def test_cancel_with_and_without_obr(code: str) -> None:
    with_tests = ORM_TWO_SPECIMENS.replace("ORC|NW|", f"ORC|{code}|")
    assert {o.control for o in orders(with_tests)} == {"cancel"}
    bare = (
        "MSH|^~\\&|HIS||LISGW||20260102||ORM^O01^ORM_O01|C-1|P|2.5.1\r"
        f"PID|1||PAT-1||Doe^Jo\rORC|{code}|ORD-10\r"
    )
    (cancel,) = orders(bare)
    assert (cancel.control, cancel.placer, cancel.sample_id, cancel.tests) == (
        "cancel",
        "ORD-10",
        "ORD-10",  # the profile falls back on the placer number
        (),
    )
    no_fallback = HisProfile.from_dict({"version": "2.5.1", "orders": {"sample_id": "SPM-2.1"}})
    assert orders(bare, no_fallback)[0].sample_id == ""  # a cancel needs none


@pytest.mark.parametrize("code", ["XO", "RP"])
def test_change_controls(code: str) -> None:
    text = ORM_TWO_SPECIMENS.replace("ORC|NW|", f"ORC|{code}|")
    assert [o.control for o in orders(text)] == ["change", "change"]


def test_v231_order_in_iso_8859_1() -> None:
    (order,) = orders(ORM_V231, V231, "iso-8859-1")
    assert (order.placer, order.sample_id, order.priority) == ("ORD-30", "BC-0030", "R")
    assert order.patient_name == "Lefèvre^Françoise^Élodie"
    assert order.tests == (OrderedTest("CRP", "C-reactive protein"),)


def test_the_same_names_in_utf_8_under_the_v231_layout() -> None:
    utf8 = HisProfile.from_dict({"version": "2.3.1", "encoding": "utf-8"})
    text = ORM_V231.replace("Lefèvre^Françoise^Élodie", "Trần^Văn Đức")
    assert orders(text, utf8)[0].patient_name == "Trần^Văn Đức"


def test_msh18_rescues_latin_1_bytes_on_a_utf_8_profile_and_nothing_else_does() -> None:
    latin = ORM_V231.replace("|2.3.1\r", "|2.3.1||||||8859/1\r").encode("iso-8859-1")
    assert parse_orders(latin, V251)[0].patient_name == "Lefèvre^Françoise^Élodie"
    with pytest.raises(CodecError, match="cannot decode byte 0xE8"):
        parse_orders(ORM_V231.encode("iso-8859-1"), V251)


def test_escapes_in_names_are_decoded() -> None:
    text = ORM_V231.replace("Lefèvre^Françoise^Élodie", "Dupont \\T\\ Fils^Jean\\X2D\\Luc")
    assert orders(text, V231, "iso-8859-1")[0].patient_name == "Dupont & Fils^Jean-Luc"


def test_read_orders_takes_a_parsed_message() -> None:
    message = parse_message(OML_NEW_AND_CHANGE.encode())
    assert read_orders(message, V251) == orders(OML_NEW_AND_CHANGE)


def test_repeated_tests_of_one_order_are_listed_once() -> None:
    text = ORM_TWO_SPECIMENS.replace("NA^Sodium^L", "GLU^Glucose again^L")
    assert orders(text)[0].tests == (OrderedTest("GLU", "Glucose"),)


@pytest.mark.parametrize(
    "message_type", ["ADT^A01^ADT_A01", "ORU^R01^ORU_R01", "ORM^O02", "OML^O33^OML_O33", ""]
)
def test_other_message_types_are_unsupported(message_type: str) -> None:
    text = ORM_TWO_SPECIMENS.replace("ORM^O01^ORM_O01", message_type)
    with pytest.raises(UnsupportedMessageError) as caught:
        orders(text)
    assert caught.value.where == "MSH-9"
    assert "is not an order message (ORM^O01, OML^O21)" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "where", "reason"),
    [
        (("ORC|NW|ORD-11", "ORC|SC|ORD-11"), "order 3: ORC-1", "order control 'SC' not supported"),
        (("|ORD-11|", "||"), "order 3", "no placer order number at ORC-2.1, OBR-2.1"),
        (("WBC^Leukocytes^L", "^Leukocytes"), "order 3: OBR", "no test code at OBR-4.1"),
        (("PV1|1|O\r", "PV1|1|O\rOBR|1|X||GLU\r"), "OBR", "OBR before any ORC"),
    ],
)
def test_malformed_orders_say_where_and_why(
    change: tuple[str, str], where: str, reason: str
) -> None:
    bad = ORM_TWO_SPECIMENS.replace(*change)
    with pytest.raises(CodecError) as caught:
        orders(bad)
    assert not isinstance(caught.value, UnsupportedMessageError)
    assert caught.value.where == where
    assert reason in str(caught.value)


def test_new_orders_need_a_sample_id_and_a_test() -> None:
    spm_only = HisProfile.from_dict({"version": "2.5.1", "orders": {"sample_id": "SPM-2.1"}})
    with pytest.raises(CodecError, match=r"order 1: no sample ID at SPM-2.1"):
        orders(ORM_TWO_SPECIMENS, spm_only)
    header = "MSH|^~\\&|HIS||LISGW||20260102||ORM^O01^ORM_O01|C-1|P|2.5.1\r"
    with pytest.raises(CodecError, match="order 'ORD-1' has no test"):
        orders(header + "ORC|NW|ORD-1\r")
    with pytest.raises(CodecError, match="no order"):
        orders(header + "PID|1||P\r")


def test_bytes_that_are_not_hl7_are_codec_errors() -> None:
    for data in (b"", b"hello", b"MSH", b"\x0bMSH|^~\\&|\x1c\r", b"\xff\xfe\x00"):
        with pytest.raises(CodecError):
            parse_orders(data, V251)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_orders_or_a_codec_error(data: bytes) -> None:
    try:
        result = parse_orders(data, V251)
    except CodecError:
        return
    assert all(isinstance(order, HisOrder) for order in result)


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([ORM_TWO_SPECIMENS, OML_NEW_AND_CHANGE, ORM_V231]),
    position=st.integers(0, 10_000),
    insert=st.text(st.sampled_from("|^~\\&\rXO1 "), max_size=4),
    cut=st.integers(0, 6),
)
def test_mangled_orders_give_orders_or_a_codec_error(
    base: str, position: int, insert: str, cut: int
) -> None:
    at = position % (len(base) + 1)
    text = base[:at] + insert + base[at + cut :]
    try:
        result = parse_orders(text.encode(), V251)
    except CodecError:
        return
    for order in result:
        assert order.control in ("new", "cancel", "change")
        assert order.placer
        assert order.control == "cancel" or (order.sample_id and order.tests)
