"""HIS orders (ORM^O01, OML^O21) and result versions (ORU^R01 2.3.1, 2.4, 2.5).

The messages are synthetic (written for these tests, no patient data). hl7apy's strict
parse is the reference for structure; the fast parser and `lisgw decode` must read the same
fields from them.
"""

from __future__ import annotations

import pytest

from lisgw.decode import decode_capture
from lisgw.hl7.apy import parse_strict, parse_tolerant
from lisgw.hl7.message import parse_message
from lisgw.hl7.mllp import frame

ORM_NEW = (
    "MSH|^~\\&|HIS|WARD|LISGW|LAB|20261122101500||ORM^O01^ORM_O01|MSG0001|P|2.5.1\r"
    "PID|1||PAT0001^^^HIS^MR||TEST^PATIENT^A||19800101|F\r"
    "PV1|1|O\r"
    "ORC|NW|ORD0001|||||||20261122101400\r"
    "OBR|1|ORD0001||WBC^White blood cells^L|||20261122100000\r"
    "ORC|NW|ORD0001|||||||20261122101400\r"
    "OBR|2|ORD0001||HGB^Hemoglobin^L|||20261122100000\r"
)
ORM_CANCEL = ORM_NEW.replace("ORC|NW|", "ORC|CA|").replace("MSG0001", "MSG0003")
OML_NEW = (
    "MSH|^~\\&|HIS|WARD|LISGW|LAB|20261122101500||OML^O21^OML_O21|MSG0002|P|2.5.1\r"
    "PID|1||PAT0002^^^HIS^MR||TEST^PATIENT^B||19900101|M\r"
    "ORC|NW|ORD0002|||||||20261122101400\r"
    "OBR|1|ORD0002||GLU^Glucose^L|||20261122100000\r"
)


def oru(version: str) -> str:
    return (
        f"MSH|^~\\&|ANALYZER||LIS||20261122101500||ORU^R01|R1|P|{version}\r"
        "PID|1||S0001\r"
        "OBR|1||S0001|CBC\r"
        "OBX|1|NM|WBC^Leukocytes||5.43|10*3/uL|4.00-10.00|N|||F\r"
        "OBX|2|ST|COM^Comment||A \\T\\ B \\F\\ C||||||F\r"
    )


@pytest.mark.parametrize(
    ("text", "structure", "control"),
    [(ORM_NEW, "ORM_O01", "NW"), (ORM_CANCEL, "ORM_O01", "CA"), (OML_NEW, "OML_O21", "NW")],
)
def test_his_orders_are_valid_and_read_alike(text: str, structure: str, control: str) -> None:
    if structure == "ORM_O01":
        # hl7apy's tables make every member of ORM_O01's choice group <OBR|RQD|RQ1|RXO|ODS|ODT>
        # required, so its Validator rejects any real ORM; its grouping is still the reference.
        reference = parse_tolerant(text, find_groups=True)
        groups = [child.name for child in reference.children]
        assert groups == ["MSH", "ORM_O01_PATIENT", "ORM_O01_ORDER", "ORM_O01_ORDER"]
    else:
        reference = parse_strict(text)
    assert reference.name == structure
    fast = parse_message(text.encode())
    assert fast.message_structure == structure
    orcs = fast.segments("ORC")
    assert orcs and all(orc.get(1) == control for orc in orcs)
    obr_tests = [obr.get(4, 1) for obr in fast.segments("OBR")]
    assert obr_tests == (["WBC", "HGB"] if structure == "ORM_O01" else ["GLU"])
    assert fast.segment("PID") is not None
    assert fast.segment("PID").get(3, 1) in {"PAT0001", "PAT0002"}  # type: ignore[union-attr]


def test_orders_decode_as_orders_with_their_tests() -> None:
    (message,) = decode_capture(frame(ORM_NEW.encode()))
    assert str(message.kind) == "orders"
    assert message.sender == "HIS"
    assert [t for s in message.specimens for t in s.tests] == ["WBC", "HGB"]
    assert {s.sample_id for s in message.specimens} == {"ORD0001"}
    assert message.specimens[0].results == ()
    (oml,) = decode_capture(frame(OML_NEW.encode()))
    assert str(oml.kind) == "orders"
    assert [t for s in oml.specimens for t in s.tests] == ["GLU"]


@pytest.mark.parametrize("version", ["2.3.1", "2.4", "2.5"])
def test_oru_r01_of_each_version_decodes_to_the_same_results(version: str) -> None:
    (message,) = decode_capture(frame(oru(version).encode()))
    assert str(message.kind) == "results"
    (specimen,) = message.specimens
    assert specimen.sample_id == "S0001"
    assert [(r.test, r.value, r.units) for r in specimen.results] == [
        ("WBC", "5.43", "10*3/uL"),
        ("COM", "A & B | C", ""),  # escapes decoded
    ]
    assert specimen.results[0].reference_range == "4.00-10.00"
    assert specimen.results[0].status == "F"


def test_iso_8859_1_connection_encoding() -> None:
    text = oru("2.5").replace("Comment", "Commentaire évalué")
    data = frame(text.encode("iso-8859-1"))
    fast = parse_message(data[1:-2], encoding="iso-8859-1")
    assert fast.segments("OBX")[1].get(3, 2) == "Commentaire évalué"
    (message,) = decode_capture(data)  # utf-8 first, then ISO-8859-1 with a warning
    assert message.specimens[0].results[1].test_name == "Commentaire évalué"
    assert any("ISO-8859-1" in w for w in message.warnings)


def test_lf_segment_separators_are_tolerated() -> None:
    (message,) = decode_capture(frame(oru("2.5").replace("\r", "\n").encode()))
    assert [r.test for r in message.specimens[0].results] == ["WBC", "COM"]
