"""Self-check for the golden decode expectations in tests/data/expected.

Test-data tooling, standard library only; it imports nothing from lisgw on purpose, so the
goldens can be checked without the code they judge. It verifies that every corpus ``.bin``
listed in ``manifest.json`` (and every ``.bin`` on disk) has exactly one expectation file, that
each file follows the format described in README.md beside it, and prints per-file counts.

Usage: ``python3 tests/data/expected/check_expected.py [CORPUS_DIR]``; exits 1 on any problem,
after listing all of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

EXPECTED_DIR = Path(__file__).resolve().parent
DEFAULT_CORPUS = EXPECTED_DIR.parents[2] / ".." / "shared" / "corpus"

PROTOCOLS = {"astm": "astm", "hl7": "hl7", "other": "unknown"}
KINDS = {"results", "query", "orders", "unknown", "query_cancel"}
WARNINGS = {"checksum", "frame_number", "record_type"}
TOP_KEYS = {"source", "protocol", "messages", "notes"}
MESSAGE_KEYS = {"kind", "sender", "specimens"}
MESSAGE_OPTIONAL = {"query", "warnings_expected"}
SPECIMEN_KEYS = {"sample_id", "qc"}
SPECIMEN_OPTIONAL = {"sample_id_generic_rule"}
RESULT_KEYS = {"test", "value", "units"}


def check_keys(obj: Any, required: set[str], optional: set[str], where: str) -> list[str]:
    """Return problems if ``obj`` is not a dict with exactly the allowed keys."""
    if not isinstance(obj, dict):
        return [f"{where}: expected an object"]
    problems = [f"{where}: missing key {key!r}" for key in sorted(required - obj.keys())]
    extra = obj.keys() - required - optional
    problems += [f"{where}: unexpected key {key!r}" for key in sorted(extra)]
    return problems


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def check_result(result: Any, where: str) -> list[str]:
    problems = check_keys(result, RESULT_KEYS, set(), where)
    if not problems:
        problems += [
            f"{where}.{k}: not a string" for k in RESULT_KEYS if not isinstance(result[k], str)
        ]
    return problems


def check_specimen(specimen: Any, kind: str, where: str) -> list[str]:
    # Orders carry the ordered test codes, results carry result rows.
    list_key = "tests" if kind == "orders" else "results"
    problems = check_keys(specimen, SPECIMEN_KEYS | {list_key}, SPECIMEN_OPTIONAL, where)
    if problems:
        return problems
    if not isinstance(specimen["sample_id"], str):
        problems.append(f"{where}.sample_id: not a string")
    if not isinstance(specimen.get("sample_id_generic_rule", ""), str):
        problems.append(f"{where}.sample_id_generic_rule: not a string")
    if not isinstance(specimen["qc"], bool):
        problems.append(f"{where}.qc: not a boolean")
    if kind == "orders":
        if not is_str_list(specimen["tests"]) or not specimen["tests"]:
            problems.append(f"{where}.tests: expected a non-empty list of strings")
        return problems
    if not isinstance(specimen["results"], list):
        return [*problems, f"{where}.results: expected a list"]
    for index, result in enumerate(specimen["results"]):
        problems += check_result(result, f"{where}.results[{index}]")
    return problems


def check_query(message: dict[str, Any], where: str) -> list[str]:
    kind = message["kind"]
    query = message.get("query")
    if kind == "query":
        if not isinstance(query, dict) or set(query) != {"sample_ids"}:
            return [f"{where}.query: expected {{'sample_ids': [...]}}"]
        return [] if is_str_list(query["sample_ids"]) else [f"{where}.query.sample_ids: bad"]
    if kind == "query_cancel":
        if not isinstance(query, dict) or set(query) != {"query_tag"}:
            return [f"{where}.query: expected {{'query_tag': '...'}}"]
        return [] if isinstance(query["query_tag"], str) else [f"{where}.query.query_tag: bad"]
    return [f"{where}.query: only allowed for query kinds"] if query is not None else []


def check_message(message: Any, where: str) -> list[str]:
    problems = check_keys(message, MESSAGE_KEYS, MESSAGE_OPTIONAL, where)
    if problems:
        return problems
    kind = message["kind"]
    if kind not in KINDS:
        return [f"{where}.kind: {kind!r} not one of {sorted(KINDS)}"]
    if not isinstance(message["sender"], str):
        problems.append(f"{where}.sender: not a string")
    warnings = message.get("warnings_expected", [])
    if not is_str_list(warnings) or not set(warnings) <= WARNINGS:
        problems.append(f"{where}.warnings_expected: must be a subset of {sorted(WARNINGS)}")
    problems += check_query(message, where)
    specimens = message["specimens"]
    if not isinstance(specimens, list):
        return [*problems, f"{where}.specimens: expected a list"]
    if kind in {"query", "query_cancel", "unknown"} and specimens:
        problems.append(f"{where}.specimens: must be empty for kind {kind!r}")
    for index, specimen in enumerate(specimens):
        problems += check_specimen(specimen, kind, f"{where}.specimens[{index}]")
    return problems


def check_document(doc: Any, source: str, manifest_protocol: str) -> list[str]:
    where = source
    problems = check_keys(doc, TOP_KEYS, set(), where)
    if problems:
        return problems
    if doc["source"] != source:
        problems.append(f"{where}: source is {doc['source']!r}")
    if doc["protocol"] != PROTOCOLS.get(manifest_protocol, "unknown"):
        problems.append(f"{where}: protocol {doc['protocol']!r} vs manifest {manifest_protocol!r}")
    if not isinstance(doc["notes"], str) or not doc["notes"].strip():
        problems.append(f"{where}: notes must be a non-empty string")
    if not isinstance(doc["messages"], list) or not doc["messages"]:
        return [*problems, f"{where}: messages must be a non-empty list"]
    for index, message in enumerate(doc["messages"]):
        problems += check_message(message, f"{where}: messages[{index}]")
    return problems


def counts(doc: dict[str, Any]) -> tuple[int, int, int, int]:
    """Messages, specimens, results and ordered tests of one expectation document."""
    specimens = [s for m in doc["messages"] for s in m["specimens"]]
    results = sum(len(s.get("results", [])) for s in specimens)
    tests = sum(len(s.get("tests", [])) for s in specimens)
    return len(doc["messages"]), len(specimens), results, tests


def expected_path(source: str) -> Path:
    return EXPECTED_DIR / (source.removesuffix(".bin") + ".json")


def load_sources(corpus: Path) -> tuple[dict[str, str], list[str]]:
    """Corpus files from the manifest (path -> protocol), plus problems with the corpus listing."""
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    sources = {entry["path"]: entry["protocol"] for entry in manifest["files"]}
    on_disk = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*.bin")}
    problems = [
        f"{path}: .bin on disk but not in manifest" for path in sorted(on_disk - set(sources))
    ]
    problems += [
        f"{path}: in manifest but missing on disk" for path in sorted(set(sources) - on_disk)
    ]
    return sources, problems


def stray_expectations(sources: dict[str, str]) -> list[str]:
    wanted = {expected_path(source) for source in sources}
    found = set(EXPECTED_DIR.rglob("*.json"))
    return [f"{p.relative_to(EXPECTED_DIR)}: no corpus file for it" for p in sorted(found - wanted)]


def main(argv: list[str]) -> int:
    corpus = Path(argv[1]) if len(argv) > 1 else DEFAULT_CORPUS
    sources, problems = load_sources(corpus.resolve())
    problems += stray_expectations(sources)
    totals = [0, 0, 0, 0]
    print(f"{'file':<92} {'msgs':>4} {'spec':>4} {'res':>4} {'ord':>3}")
    for source in sorted(sources):
        path = expected_path(source)
        if not path.is_file():
            problems.append(f"{source}: no expectation file {path.relative_to(EXPECTED_DIR)}")
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{source}: unreadable expectation: {exc}")
            continue
        file_problems = check_document(doc, source, sources[source])
        problems += file_problems
        if not file_problems:
            row = counts(doc)
            totals = [a + b for a, b in zip(totals, row, strict=True)]
            print(f"{source:<92} {row[0]:>4} {row[1]:>4} {row[2]:>4} {row[3]:>3}")
    print(
        f"{'TOTAL (' + str(len(sources)) + ' corpus files)':<92} "
        f"{totals[0]:>4} {totals[1]:>4} {totals[2]:>4} {totals[3]:>3}"
    )
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
