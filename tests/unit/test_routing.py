"""Routing core: each rule on its own, the identity, a property test, and corpus captures.

Synthetic messages are written here (no patient data). The end-to-end tests decode real
captures from the shared corpus (../shared/corpus) with lisgw.decode.decode_capture:
astm/sysmex_xn550/sysmex_xn550_cbc_results.bin (sample 27, 41 results) and
astm/sysmex_xn550/sysmex_xn550_qc_results_framed.bin (QC sample QC-82151403).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.decode import decode_capture
from lisgw.drivers.mapping import TestCodeMap
from lisgw.his.profile import HisProfile
from lisgw.his.results import build_result_message, delivery_groups, group_placer
from lisgw.his.types import HisOrder, OrderedTest, RoutedResult
from lisgw.hl7 import apy
from lisgw.model import Kind, NormalizedMessage, Protocol, Result, Specimen
from lisgw.routing import (
    MATCHES,
    OpenOrder,
    RoutingConfig,
    RoutingOutcome,
    driver_name,
    is_correction,
    normalize_sample_id,
    result_identity,
    route,
)

CODES = TestCodeMap.from_dict(
    {
        "demo": {
            "GLU": {"his": "CHEM-GLU", "loinc": "2345-7"},
            "NA": "CHEM-NA",
            "K": "CHEM-K",
        }
    }
)
GLU = Result("GLU", "5.4", units="mmol/L", status="F", completed_at="2026-01-02T10:00:00")
NA = Result("NA", "140", units="mmol/L", status="F", completed_at="2026-01-02T10:00:00")
K = Result("K", "4.1", units="mmol/L", status="F", completed_at="2026-01-02T10:00:00")
UNKNOWN = Result("XYZ", "1", status="F")
ORDERS = {
    "S1": [
        OpenOrder("ORD-1", "S1", "CHEM-GLU", "GLU", "an-1"),
        OpenOrder("ORD-1", "S1", "CHEM-NA", "NA", "an-1"),
        OpenOrder("ORD-1", "S1", "CHEM-CRP", "", "an-2"),
    ]
}
DEFAULT = RoutingConfig()
_UNSOLICITED = RoutingConfig(send_unsolicited=True)


def message(*specimens: Specimen, incomplete: bool = False) -> NormalizedMessage:
    return NormalizedMessage(
        Protocol.ASTM, Kind.RESULTS, specimens=specimens, driver="demo@1", incomplete=incomplete
    )


def routed(
    *specimens: Specimen,
    orders: dict[str, list[OpenOrder]] | None = None,
    codes: TestCodeMap | None = CODES,
    known: frozenset[str] = frozenset(),
    config: RoutingConfig = DEFAULT,
) -> RoutingOutcome:
    return route(
        message(*specimens),
        connection="an-1",
        orders=ORDERS if orders is None else orders,
        codes=codes,
        known=known,
        config=config,
    )


def only(outcome: RoutingOutcome) -> RoutedResult:
    (result,) = outcome.results
    return result


# The rules, one by one.


def test_a_result_matches_its_order_by_sample_id_and_mapped_code() -> None:
    result = only(routed(Specimen("S1", results=(GLU,))))
    assert (result.match, result.reason, result.order_placer) == ("matched", "", "ORD-1")
    assert (result.his_code, result.loinc, result.sample_id) == ("CHEM-GLU", "2345-7", "S1")
    assert (result.connection, result.driver, result.qc) == ("an-1", "demo@1", False)
    assert result.result is GLU


def test_sample_ids_are_matched_after_trimming_padding_but_keep_leading_zeros() -> None:
    assert normalize_sample_id("      27") == "27"
    assert normalize_sample_id("\x00 S1\t\r\n") == "S1"
    assert normalize_sample_id("0000000387") == "0000000387"
    assert normalize_sample_id("abc") != normalize_sample_id("ABC")
    assert only(routed(Specimen("   S1 ", results=(GLU,)))).match == "matched"
    padded = {"  S1": [replace(t, sample_id="S1  ") for t in ORDERS["S1"]]}
    assert only(routed(Specimen("S1", results=(GLU,)), orders=padded)).match == "matched"
    assert only(routed(Specimen("0S1", results=(GLU,)))).match == "unmatched"


def test_a_result_may_complete_part_of_an_order() -> None:
    outcome = routed(Specimen("S1", results=(NA,)))
    assert [(r.match, r.his_code, r.order_placer) for r in outcome.results] == [
        ("matched", "CHEM-NA", "ORD-1")
    ]
    assert outcome.to_deliver == outcome.results


def test_an_extra_result_is_kept_and_reported_and_sent_as_configured() -> None:
    outcome = routed(Specimen("S1", results=(GLU, K)))
    extra = outcome.results[1]
    assert (extra.match, extra.his_code, extra.order_placer) == ("extra", "CHEM-K", "")
    assert extra.reason == "test 'K' not ordered for sample 'S1'"
    assert outcome.to_deliver == outcome.results
    assert outcome.review == ()
    quiet = routed(Specimen("S1", results=(GLU, K)), config=RoutingConfig(send_extra=False))
    assert [r.result for r in quiet.to_deliver] == [GLU]


def test_qc_is_never_matched_to_patient_orders() -> None:
    outcome = routed(Specimen("S1", qc=True, results=(GLU, NA)))
    assert [(r.match, r.qc, r.order_placer) for r in outcome.results] == [("qc", True, "")] * 2
    assert outcome.results[0].reason == "QC sample: never matched to patient orders"
    assert outcome.to_deliver == ()
    assert outcome.review == ()
    unsolicited = routed(Specimen("QC-1", qc=True, results=(GLU,)), config=_UNSOLICITED)
    assert unsolicited.to_deliver == ()


def test_a_result_without_order_goes_to_review_with_the_reason() -> None:
    outcome = routed(Specimen("S2", results=(GLU,)))
    result = only(outcome)
    assert (result.match, result.reason) == ("unmatched", "no order for sample 'S2'")
    assert result.his_code == "CHEM-GLU"
    assert outcome.review == outcome.results
    assert outcome.to_deliver == ()


def test_an_unknown_code_goes_to_review_even_when_the_sample_has_orders() -> None:
    result = only(routed(Specimen("S1", results=(UNKNOWN,))))
    assert result.match == "unmatched"
    assert result.reason == "unknown test code 'XYZ' for driver 'demo'"
    assert (result.his_code, result.loinc) == ("", "")
    both = only(routed(Specimen("S9", results=(UNKNOWN,))))
    assert both.reason == "no order for sample 'S9'; unknown test code 'XYZ' for driver 'demo'"
    blank = only(routed(Specimen("", results=(GLU,))))
    assert (blank.match, blank.reason) == ("unmatched", "no sample ID")


def test_send_unsolicited_decides_whether_unmatched_results_reach_the_his() -> None:
    specimens = (Specimen("S2", results=(GLU,)), Specimen("S1", results=(UNKNOWN,)))
    off = routed(*specimens)
    on = routed(*specimens, config=_UNSOLICITED)
    assert off.review == on.review == off.results
    assert off.to_deliver == ()
    assert on.to_deliver == on.results


def test_a_duplicate_is_recognised_by_its_identity_and_never_delivered_again() -> None:
    first = routed(Specimen("S1", results=(GLU,)))
    known = frozenset(r.identity for r in first.results)
    again = only(routed(Specimen("S1", results=(GLU,)), known=known))
    assert (again.match, again.identity) == ("duplicate", first.results[0].identity)
    assert again.reason == "same content as a result already received"
    twice = routed(Specimen("S1", results=(GLU, GLU)))
    assert [r.match for r in twice.results] == ["matched", "duplicate"]
    assert [r.result for r in twice.new] == [GLU]
    assert len(twice.to_deliver) == 1


def test_a_correction_has_another_identity_and_is_delivered_as_a_correction() -> None:
    corrected = replace(GLU, value="5.9", status="C", status_meaning="correction")
    first = routed(Specimen("S1", results=(GLU,)))
    known = frozenset(r.identity for r in first.results)
    result = only(routed(Specimen("S1", results=(corrected,)), known=known))
    assert (result.match, result.correction, result.order_placer) == ("matched", True, "ORD-1")
    assert result.identity not in known
    same_value = replace(GLU, status="C", status_meaning="")
    assert only(routed(Specimen("S1", results=(same_value,)), known=known)).correction
    assert not first.results[0].correction


def test_is_correction_prefers_the_driver_meaning() -> None:
    assert is_correction(Result("A", "1", status="C"))
    assert is_correction(Result("A", "1", status="c "))
    assert is_correction(Result("A", "1", status="X", status_meaning="correction"))
    assert not is_correction(Result("A", "1", status="C", status_meaning="final"))
    assert not is_correction(Result("A", "1", status="F"))


def test_without_a_mapping_results_match_on_the_order_analyzer_code() -> None:
    outcome = routed(Specimen("S1", results=(GLU, K)), codes=None)
    assert [(r.match, r.his_code, r.loinc) for r in outcome.results] == [
        ("matched", "CHEM-GLU", ""),
        ("extra", "", ""),
    ]


def test_the_order_test_queued_for_this_connection_wins() -> None:
    orders = {
        "S1": [
            OpenOrder("ORD-A", "S1", "CHEM-GLU", "GLU", "an-2"),
            OpenOrder("ORD-B", "S1", "CHEM-GLU", "GLU", "an-1"),
        ]
    }
    assert only(routed(Specimen("S1", results=(GLU,)), orders=orders)).order_placer == "ORD-B"
    other = {"S1": orders["S1"][:1]}
    assert only(routed(Specimen("S1", results=(GLU,)), orders=other)).order_placer == "ORD-A"


def test_an_incomplete_transmission_gives_no_results() -> None:
    outcome = route(
        message(Specimen("S1", results=(GLU,)), incomplete=True),
        connection="an-1",
        orders=ORDERS,
        codes=CODES,
        known=set(),
    )
    assert outcome.results == ()
    assert "incomplete" in outcome.ignored


# The identity.


def test_identity_is_the_content_that_makes_a_result_the_same_result() -> None:
    base = result_identity("an-1", "S1", GLU)
    assert len(base) == 64 and int(base, 16) >= 0
    assert result_identity("an-1", "  S1 ", GLU) == base
    same = replace(GLU, flags="H", reference_range="3-6", comments=("re-run",), test_name="G")
    assert result_identity("an-1", "S1", same) == base
    changes = [
        ("an-2", "S1", GLU),
        ("an-1", "S2", GLU),
        ("an-1", "S1", replace(GLU, test="GLU2")),
        ("an-1", "S1", replace(GLU, value="5.5")),
        ("an-1", "S1", replace(GLU, units="mg/dL")),
        ("an-1", "S1", replace(GLU, status="C")),
        ("an-1", "S1", replace(GLU, completed_at="2026-01-02T10:05:00")),
    ]
    identities = {result_identity(*change) for change in changes}
    assert len(identities) == len(changes) and base not in identities


def test_identity_fields_cannot_run_into_each_other() -> None:
    a = result_identity("an", "1S", Result("T", "1"))
    b = result_identity("an1", "S", Result("T", "1"))
    assert a != b


def test_driver_name_drops_the_version() -> None:
    assert driver_name("sysmex-xn@1") == "sysmex-xn"
    assert driver_name("demo") == "demo"


# Property: routing never raises and every result comes out exactly once.

_texts = st.text(st.sampled_from("S1 0\x00\t"), max_size=4)
_results = st.builds(
    Result,
    test=st.sampled_from(["GLU", "NA", "K", "XYZ", ""]),
    value=st.sampled_from(["5.4", "140", "", ">8", "7,41"]),
    units=st.sampled_from(["", "mmol/L"]),
    status=st.sampled_from(["F", "C", "P", ""]),
    status_meaning=st.sampled_from(["", "final", "correction"]),
    completed_at=st.sampled_from(["", "2026-01-02T10:00:00"]),
)
_specimens = st.builds(
    Specimen,
    sample_id=_texts,
    qc=st.booleans(),
    results=st.lists(_results, max_size=5).map(tuple),
)
_orders = st.dictionaries(
    _texts,
    st.lists(
        st.builds(
            OpenOrder,
            placer=st.sampled_from(["ORD-1", "ORD-2"]),
            sample_id=_texts,
            his_code=st.sampled_from(["CHEM-GLU", "CHEM-NA", "CHEM-CRP", ""]),
            analyzer_code=st.sampled_from(["GLU", "XYZ", ""]),
            connection=st.sampled_from(["an-1", "an-2", ""]),
        ),
        max_size=4,
    ),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(
    specimens=st.lists(_specimens, max_size=4),
    orders=_orders,
    codes=st.sampled_from([CODES, None]),
    known_picks=st.lists(st.integers(0, 30), max_size=5),
    config=st.builds(RoutingConfig, st.booleans(), st.booleans()),
)
def test_routing_never_raises_and_every_result_comes_out_once(
    specimens: list[Specimen],
    orders: dict[str, list[OpenOrder]],
    codes: TestCodeMap | None,
    known_picks: list[int],
    config: RoutingConfig,
) -> None:
    inputs = [(s, r) for s in specimens for r in s.results]
    known = {
        result_identity("an-1", inputs[i][0].sample_id, inputs[i][1])
        for i in known_picks
        if i < len(inputs)
    }
    outcome = route(
        message(*specimens),
        connection="an-1",
        orders=orders,
        codes=codes,
        known=known,
        config=config,
    )
    assert [r.result for r in outcome.results] == [r for _, r in inputs]
    assert all(a.result is b for a, (_, b) in zip(outcome.results, inputs, strict=True))
    _check_invariants(outcome, known)


@settings(max_examples=200, deadline=None)
@given(
    specimens=st.lists(_specimens, max_size=4), orders=_orders, codes=st.sampled_from([CODES, None])
)
def test_each_result_gets_the_order_test_a_plain_scan_would_pick(
    specimens: list[Specimen], orders: dict[str, list[OpenOrder]], codes: TestCodeMap | None
) -> None:
    """The router indexes a sample's order tests by code; this is the rule it must keep,
    as a scan: the tests matching by mapped HIS code or by analyzer code, in store order,
    the first queued for this connection, else the first."""
    outcome = route(message(*specimens), connection="an-1", orders=orders, codes=codes, known=set())
    by_sample: dict[str, list[OpenOrder]] = {}
    for key, tests in orders.items():
        for test in tests:
            by_sample.setdefault(normalize_sample_id(test.sample_id or key), []).append(test)
    for item in outcome.results:
        if item.match not in ("matched", "extra", "unmatched"):
            continue
        mapped = codes.lookup("demo", item.result.test) if codes is not None else None
        candidates = [
            t
            for t in (by_sample.get(item.sample_id, []) if item.sample_id else [])
            if (mapped is not None and t.his_code == mapped.his_code)
            or (t.analyzer_code != "" and t.analyzer_code == item.result.test)
        ]
        mine = [t for t in candidates if t.connection == "an-1"]
        expected = (mine or candidates or [None])[0]
        assert item.order_placer == (expected.placer if expected is not None else "")
        if expected is not None and mapped is None:
            assert item.his_code == expected.his_code


def _check_invariants(outcome: RoutingOutcome, known: set[str]) -> None:
    new_identities = [r.identity for r in outcome.new]
    assert len(new_identities) == len(set(new_identities))
    assert not set(new_identities) & known
    for result in outcome.results:
        assert result.match in MATCHES
        assert (result.reason == "") == (result.match == "matched")
        assert bool(result.order_placer) == (result.match == "matched")
        if result.qc:
            assert result.match in ("qc", "duplicate")
        assert result.correction == is_correction(result.result)
    assert all(r.match not in ("qc", "duplicate") for r in outcome.to_deliver)
    assert set(outcome.review) <= set(outcome.results)


# Corpus captures, end to end.


def _capture(corpus_dir: Path, name: str) -> list[NormalizedMessage]:
    return decode_capture((corpus_dir / "astm" / "sysmex_xn550" / name).read_bytes())


def _example_codes() -> TestCodeMap:
    return TestCodeMap.load(Path(__file__).resolve().parents[2] / "config/test-codes.example.yaml")


SYSMEX_ORDERS = {
    "27": [
        OpenOrder("HIS-0027", "27", "HEM-WBC", "WBC", "xn-1"),
        OpenOrder("HIS-0027", "27", "HEM-HGB", "HGB", "xn-1"),
        OpenOrder("HIS-0027", "27", "HEM-CRP", "", "cobas-1"),
    ]
}


def _route_sysmex(message: NormalizedMessage, known: Sequence[str] = ()) -> RoutingOutcome:
    return route(
        message, connection="xn-1", orders=SYSMEX_ORDERS, codes=_example_codes(), known=set(known)
    )


def test_corpus_cbc_is_matched_partly_with_extras_and_unknown_codes(corpus_dir: Path) -> None:
    (message,) = _capture(corpus_dir, "sysmex_xn550_cbc_results.bin")
    outcome = _route_sysmex(message)
    assert len(outcome.results) == 41
    by_match: dict[str, list[str]] = {}
    for result in outcome.results:
        by_match.setdefault(result.match, []).append(result.result.test)
    assert by_match["matched"] == ["WBC", "HGB"]
    assert sorted(by_match["extra"]) == ["HCT", "NEUT%", "PLT", "RBC", "RDW-SD"]
    assert len(by_match["unmatched"]) == 41 - 7
    assert all("unknown test code" in r.reason for r in outcome.review)
    assert {r.order_placer for r in outcome.results if r.match == "matched"} == {"HIS-0027"}
    assert {r.sample_id for r in outcome.results} == {"27"}
    wbc = outcome.results[0]
    assert (wbc.his_code, wbc.loinc, wbc.result.value) == ("HEM-WBC", "6690-2", "8.13")


def test_corpus_cbc_delivers_one_valid_oru_that_reads_back(corpus_dir: Path) -> None:
    (message,) = _capture(corpus_dir, "sysmex_xn550_cbc_results.bin")
    outcome = _route_sysmex(message)
    (group,) = delivery_groups(outcome.to_deliver)
    assert group_placer(group) == "HIS-0027"
    order = HisOrder(
        "new", "HIS-0027", "", "27", "PAT-1", "Lê^Thị Ánh", (OrderedTest("HEM-WBC", "WBC"),)
    )
    profile = HisProfile.load(Path(__file__).resolve().parents[2] / "config/his/hl7-v251.yaml")
    data = build_result_message(group, order, profile, analyzer="xn-1", now_timestamp="20260101")
    apy.validate(data)
    (back,) = decode_capture(b"\x0b" + data + b"\x1c\r")
    assert [(r.test, r.value, r.units) for r in back.specimens[0].results] == [
        (r.his_code, r.result.value, r.result.units) for r in group
    ]


def test_corpus_resent_session_is_all_duplicates(corpus_dir: Path) -> None:
    (first,) = _capture(corpus_dir, "sysmex_xn550_cbc_results.bin")
    (again,) = _capture(corpus_dir, "sysmex_xn550_cbc_results.bin")
    stored = [r.identity for r in _route_sysmex(first).new]
    outcome = _route_sysmex(again, stored)
    assert {r.match for r in outcome.results} == {"duplicate"}
    assert outcome.to_deliver == outcome.review == outcome.new == ()


def test_corpus_qc_run_is_reported_as_qc_only(corpus_dir: Path) -> None:
    (message,) = _capture(corpus_dir, "sysmex_xn550_qc_results_framed.bin")
    qc_orders = {"QC-82151403": [OpenOrder("X", "QC-82151403", "HEM-WBC", "WBC", "xn-1")]}
    outcome = route(
        message,
        connection="xn-1",
        orders=qc_orders,
        codes=_example_codes(),
        known=set(),
        config=_UNSOLICITED,
    )
    assert len(outcome.results) == 33
    assert {(r.match, r.qc) for r in outcome.results} == {("qc", True)}
    assert outcome.to_deliver == outcome.review == ()
