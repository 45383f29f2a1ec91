"""``lisgw orders``, ``results`` and ``sample`` against a populated store, on both backends:
output content, JSON structure, patient masking, filters, unknown IDs."""

from __future__ import annotations

import json

import pytest

from lisgw.store.runner import Store
from tests.integration.cli.conftest import (
    DEAD_SAMPLE,
    LOST_SAMPLE,
    OTHER_SAMPLE,
    SAMPLE,
    Populated,
    lisgw,
)

CLEAR = "DOE^JANE"  # the invented patient of tests/integration/store/factories.py
MASKED = "D*** J***"


def rows_of(output: str) -> list[list[str]]:
    """The table's data rows, split on runs of spaces (header dropped)."""
    return [line.split() for line in output.splitlines()[1:] if line.strip()]


def test_orders_list_masks_patients_and_filters(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "orders", "list")
    assert result.exit_code == 0, result.output
    assert [row[:4] for row in rows_of(result.output)] == [
        ["ORD-2", OTHER_SAMPLE, "open", "0/1"],
        ["ORD-1", SAMPLE, "partial", "1/2"],
    ]
    assert MASKED in result.output and "DOE" not in result.output
    assert rows_of(lisgw(facts.url, "orders", "list", "--sample", f" {SAMPLE} ").output)[0][0] == (
        "ORD-1"
    )
    assert rows_of(lisgw(facts.url, "orders", "list", "--state", "open").output)[0][0] == "ORD-2"
    only_xn2 = lisgw(facts.url, "orders", "list", "--analyzer", "xn-2").output
    assert [row[0] for row in rows_of(only_xn2)] == ["ORD-2"]
    assert "no orders match" in lisgw(facts.url, "orders", "list", "--since", "1h").output
    old = lisgw(facts.url, "orders", "list", "--since", "1970-01-01", "--until", "1971-01-01")
    assert len(rows_of(old.output)) == 2


def test_orders_list_json_masked_unless_show_patient(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    masked = json.loads(lisgw(facts.url, "orders", "list", "--format", "json").output)
    assert [o["placer"] for o in masked] == ["ORD-2", "ORD-1"]
    assert {o["patient_name"] for o in masked} == {MASKED}
    assert masked[1]["tests"] == 2 and masked[1]["resulted"] == 1
    assert isinstance(masked[1]["created_at"], float)
    clear = lisgw(facts.url, "orders", "list", "--format", "json", "--show-patient").output
    assert {o["patient_name"] for o in json.loads(clear)} == {CLEAR}


def test_orders_show_tests_and_queue(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "orders", "show", "ORD-1")
    assert result.exit_code == 0, result.output
    assert "Order ORD-1 (#1): partial, 1/2 tests resulted" in result.output
    assert f"patient    {MASKED} (P-0001)" in result.output
    tests = {row[0]: row[1:4] for row in rows_of(result.output) if row[0].startswith("HEM-")}
    assert tests == {
        "HEM-WBC": ["resulted", "xn-1", "queued"],
        "HEM-RBC": ["open", "xn-1", "queued"],
    }
    document = json.loads(lisgw(facts.url, "orders", "show", "ORD-1", "--format", "json").output)
    assert document["patient_name"] == MASKED
    assert [t["his_code"] for t in document["tests"]] == ["HEM-WBC", "HEM-RBC"]
    assert document["tests"][0]["queue"][0]["connection"] == "xn-1"
    shown = lisgw(facts.url, "orders", "show", "ORD-1", "--show-patient").output
    assert f"patient    {CLEAR}" in shown


def test_orders_show_unknown(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "orders", "show", "ORD-404")
    assert result.exit_code == 1
    assert "no order 'ORD-404'" in result.output


def test_results_list_and_filters(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "results", "list")
    assert result.exit_code == 0, result.output
    rows = rows_of(result.output)
    assert [(r[0], r[-2], r[-1]) for r in rows] == [
        (str(facts.unmatched_result), "unmatched", "-"),
        (str(facts.matched_result), "matched", "delivered"),
    ]
    unmatched = lisgw(facts.url, "results", "list", "--match", "unmatched", "--format", "json")
    assert [r["sample_id"] for r in json.loads(unmatched.output)] == [LOST_SAMPLE]
    delivered = json.loads(
        lisgw(facts.url, "results", "list", "--state", "delivered", "--format", "json").output
    )
    assert [(r["id"], r["delivery"]) for r in delivered] == [(facts.matched_result, "delivered")]
    nowhere = json.loads(
        lisgw(facts.url, "results", "list", "--state", "none", "--format", "json").output
    )
    assert [r["id"] for r in nowhere] == [facts.unmatched_result]
    bad = lisgw(facts.url, "results", "list", "--state", "lost")
    assert bad.exit_code == 2 and "'lost': use one of" in bad.output


def test_results_show(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    shown = lisgw(facts.url, "results", "show", str(facts.matched_result))
    assert shown.exit_code == 0, shown.output
    assert "Result 1: WBC = 7.1 10*3/uL" in shown.output
    assert f"HIS        outbox {facts.delivered_outbox}: delivered at" in shown.output
    document = json.loads(
        lisgw(facts.url, "results", "show", str(facts.unmatched_result), "--format", "json").output
    )
    assert document["match"] == "unmatched"
    assert document["review_id"] == facts.review_id and document["review_state"] == "open"
    assert document["result"]["value"] == "3.3"
    missing = lisgw(facts.url, "results", "show", "999")
    assert missing.exit_code == 1 and "no result 999" in missing.output


def test_sample_story_in_time_order(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "sample", SAMPLE)
    assert result.exit_code == 0, result.output
    assert f"order ORD-1: partial, 1/2 tests resulted; patient {MASKED}" in result.output
    assert "results 1; HIS messages 1: 1 delivered, 0 not" in result.output
    # Events of 1970 (the factories' clock) show their date only: one word, then the kind.
    kinds = [row[1] for row in rows_of(result.output) if row[1] in _KINDS]
    assert kinds == [
        "order", "queue", "queue", "audit", "query", "query", "result", "outbox", "outbox",
    ]  # fmt: skip
    assert "answered: 2 test(s)" in result.output
    assert "delivered (AA)" in result.output


_KINDS = {"order", "queue", "download", "query", "result", "outbox", "review", "audit"}


def test_sample_story_json(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    document = json.loads(lisgw(facts.url, "sample", SAMPLE, "--format", "json").output)
    assert document["sample_id"] == SAMPLE
    assert document["orders"][0]["summary"]["patient_name"] == MASKED
    assert [q["connection"] for q in document["queries"]] == ["xn-1"]
    assert [r["id"] for r in document["results"]] == [facts.matched_result]
    assert [o["state"] for o in document["outbox"]] == ["delivered"]
    times = [e["at"] for e in document["events"]]
    assert times == sorted(times) and len(times) == 9
    clear = lisgw(facts.url, "sample", SAMPLE, "--format", "json", "--show-patient").output
    assert json.loads(clear)["orders"][0]["summary"]["patient_name"] == CLEAR


def test_sample_dead_letter_and_audit(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "sample", DEAD_SAMPLE)
    assert result.exit_code == 0, result.output
    assert f"outbox {facts.dead_outbox} dead" in result.output
    assert "outbox.dead by w: AE: unknown patient" in result.output


@pytest.mark.parametrize("sample", ["NOPE", ""])
def test_sample_unknown(populated: tuple[Populated, Store], sample: str) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "sample", sample)
    assert result.exit_code == 1
    assert "nothing stored" in result.output
