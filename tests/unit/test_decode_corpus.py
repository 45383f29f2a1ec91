"""Every corpus capture decoded by `lisgw.decode`, compared with hand-written expectations.

The expectations in tests/data/expected/ were written by reading each capture's bytes (see
that folder's README), not by running this code. Each file names its corpus source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lisgw.decode import decode_capture
from lisgw.model import NormalizedMessage
from tests.conftest import CORPUS_DIR, corpus_manifest

EXPECTED_DIR = Path(__file__).resolve().parents[1] / "data" / "expected"
CORPUS_FILES = [entry["path"] for entry in corpus_manifest()]


def expected_path(corpus_path: str) -> Path:
    return EXPECTED_DIR / Path(corpus_path).with_suffix(".json")


def expected_for(corpus_path: str) -> dict[str, Any]:
    with expected_path(corpus_path).open(encoding="utf-8") as f:
        expected: dict[str, Any] = json.load(f)
    return expected


def test_every_corpus_file_has_expectations() -> None:
    assert len(CORPUS_FILES) == len(list(CORPUS_DIR.rglob("*.bin"))) == 32
    missing = [
        p for p in CORPUS_FILES if not (EXPECTED_DIR / Path(p).with_suffix(".json")).is_file()
    ]
    assert missing == []


def _specimen_view(specimen: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "sample_id": specimen["sample_id"],
        "qc": specimen.get("qc", False),
        "results": [
            (r["test"], r["value"], r.get("units", "")) for r in specimen.get("results", [])
        ],
    }
    if specimen.get("tests"):
        view["tests"] = list(specimen["tests"])
    return view


def _message_view(message: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "kind": message["kind"],
        "sender": message.get("sender", ""),
        "specimens": [_specimen_view(s) for s in message.get("specimens", [])],
    }
    query = message.get("query")
    if query:
        view["query"] = {k: query[k] for k in ("sample_ids", "query_tag") if query.get(k)}
    return view


def _actual_view(message: NormalizedMessage, expected: dict[str, Any]) -> dict[str, Any]:
    """The decoded message in the golden's shape.

    Where an analyzer keeps its barcode somewhere the generic rule does not look, the golden
    records both the true ID and what the generic rule gives (`sample_id_generic_rule`). The
    generic answer is accepted only from a generic driver (`astm-generic`, `hl7-generic`):
    every corpus analyzer has a vendor profile, so with the full catalogue the true ID is
    required (test_drivers_engine.py runs the generic drivers alone).
    """
    view = _message_view(message.to_json())
    if "query" in view:  # compare the query keys the golden states
        view["query"] = {k: v for k, v in view["query"].items() if k in expected.get("query", {})}
    generic = message.driver.partition("@")[0].endswith("-generic")
    for got, want in zip(view["specimens"], expected.get("specimens", []), strict=False):
        if (
            generic
            and "sample_id_generic_rule" in want
            and got["sample_id"] == want["sample_id_generic_rule"]
        ):
            got["sample_id"] = want["sample_id"]
    return view


@pytest.mark.parametrize("corpus_path", CORPUS_FILES)
def test_decode_matches_hand_written_expectations(corpus_path: str) -> None:
    expected = expected_for(corpus_path)
    assert expected["source"] == corpus_path
    messages = decode_capture((CORPUS_DIR / corpus_path).read_bytes())
    assert [str(m.protocol) for m in messages] == [expected["protocol"]] * len(messages)
    assert all(m.driver for m in messages), "every message names the driver that read it"
    wanted = [_message_view(m) for m in expected["messages"]]
    assert len(messages) == len(wanted)
    actual = [_actual_view(m, e) for m, e in zip(messages, expected["messages"], strict=True)]
    for index, (got, want) in enumerate(zip(actual, wanted, strict=True)):
        assert got == want, f"message {index}"
    for index, want in enumerate(expected["messages"]):
        for fragment in want.get("warnings_expected", []):
            # Categories ("frame_number") are matched as words ("frame number ...").
            joined = " ".join(messages[index].warnings).lower().replace("_", " ")
            wanted_words = fragment.lower().replace("_", " ")
            assert wanted_words in joined, f"message {index}: no warning about {fragment}"


SESSION_FILES = [
    p
    for p in CORPUS_FILES
    if b"\x05" in (data := (CORPUS_DIR / p).read_bytes()) and b"\x04" in data
]


@pytest.mark.parametrize("corpus_path", SESSION_FILES)
def test_a_session_cut_before_its_eot_gives_no_results(corpus_path: str) -> None:
    """A transmission that never saw its EOT is reported incomplete, never as results."""
    data = (CORPUS_DIR / corpus_path).read_bytes()
    last_eot = data.rindex(b"\x04")
    last_start = data.find(b"\x05", data.rfind(b"\x04", 0, last_eot) + 1)
    messages = decode_capture(data[:last_eot])
    late = [m for m in messages if m.offset >= last_start]
    assert late, "the cut session must still be shown"
    assert all(m.incomplete and str(m.kind) == "unknown" for m in late)
    assert all(m.incomplete is False for m in messages if m.offset < last_start)
