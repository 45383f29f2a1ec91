"""Unit tests of lisgw.drivers.mapping: the analyzer ↔ HIS test-code table.

The example file config/test-codes.example.yaml is checked against the corpus captures its
analyzer codes come from. Other tables are written here for the tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.decode import decode_capture
from lisgw.drivers.mapping import MappedCode, TestCodeMap, is_valid_loinc, loinc_check_digit
from lisgw.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config" / "test-codes.example.yaml"

# The capture each example driver's codes are taken from (generic decoding reads the same
# test code field as these drivers' profiles).
EXAMPLE_CAPTURES = {
    "sysmex-xn": "astm/sysmex_xn550/sysmex_xn550_cbc_results.bin",
    "horiba-pentra": "astm/horiba_pentra_xlr/horiba_pentra_xlr_cbc_diff_results.bin",
    "mindray-bc": "hl7/mindray_bc5130/mindray_bc5130_hl7_oru_r01_cbc.bin",
    "roche-cobas-c311": (
        "astm/roche_cobas_c311/roche_cobas_c311_H7600_batch_frame_split_midrecord.bin"
    ),
    "euroimmun-analyzer": (
        "astm/euroimmun_analyzer_i/euroimmun_analyzer_i_sarscov2_iga_multi_patient_results.bin"
    ),
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "codes.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        TestCodeMap.load(path)
    return caught.value.problems


# The example file.


def test_example_file_loads() -> None:
    codes = TestCodeMap.load(EXAMPLE)
    assert codes.drivers == set(EXAMPLE_CAPTURES)
    assert codes.lookup("sysmex-xn", "WBC") == MappedCode(
        "sysmex-xn", "WBC", "HEM-WBC", "6690-2", "Leukocytes"
    )
    assert codes.lookup("sysmex-xn", "RDW-SD") == MappedCode("sysmex-xn", "RDW-SD", "HEM-RDWSD")
    assert codes.lookup("roche-cobas-c311", "685/") is not None
    assert codes.reverse("mindray-bc", "HEM-HGB") == MappedCode(
        "mindray-bc", "718-7", "HEM-HGB", "718-7", "Hemoglobin"
    )
    assert codes.reverse("horiba-pentra", "HEM-RBC") == MappedCode(
        "horiba-pentra", "RBC", "HEM-RBC", "", "Erythrocytes"
    )
    assert all(is_valid_loinc(code.loinc) for code in codes if code.loinc)


def test_example_codes_are_those_the_captures_send(corpus_dir: Path) -> None:
    codes = TestCodeMap.load(EXAMPLE)
    for driver, capture in EXAMPLE_CAPTURES.items():
        messages = decode_capture((corpus_dir / capture).read_bytes())
        sent = {r.test for m in messages for s in m.specimens for r in s.results}
        mapped = {code.analyzer_code for code in codes if code.driver == driver}
        assert mapped <= sent, driver
        assert len(codes.unmapped((driver, code) for code in sent)) == len(sent - mapped)


def test_mindray_loinc_codes_are_its_test_codes(corpus_dir: Path) -> None:
    # The BC-5130 sends LOINC codes as its test codes (OBX-3 `6690-2^WBC^LN`): all valid.
    capture = corpus_dir / EXAMPLE_CAPTURES["mindray-bc"]
    sent = {
        r.test for m in decode_capture(capture.read_bytes()) for s in m.specimens for r in s.results
    }
    loinc = {code for code in sent if "-" in code}
    assert len(loinc) == 23
    assert all(is_valid_loinc(code) for code in loinc)


# Lookups.


TABLE = {
    "sysmex-xn": {
        "WBC": {"his": "HEM-WBC", "loinc": "6690-2", "name": "Leukocytes"},
        "RBC": "HEM-RBC",
    },
    "roche-cobas-c311": {"685/": {"his": "CHEM-ALT"}},
}


def test_lookup_and_reverse() -> None:
    codes = TestCodeMap.from_dict(TABLE)
    wbc = MappedCode("sysmex-xn", "WBC", "HEM-WBC", "6690-2", "Leukocytes")
    assert codes.lookup("sysmex-xn", "WBC") == wbc
    assert codes.reverse("sysmex-xn", "HEM-WBC") == wbc
    assert codes.lookup("sysmex-xn", "wbc") is None  # codes are matched exactly
    assert codes.lookup("sysmex-xn", " WBC") is None
    assert codes.lookup("horiba-pentra", "WBC") is None
    assert codes.lookup("roche-cobas-c311", "685") is None
    assert codes.reverse("roche-cobas-c311", "CHEM-ALT") == MappedCode(
        "roche-cobas-c311", "685/", "CHEM-ALT"
    )
    assert codes.reverse("sysmex-xn", "CHEM-ALT") is None
    assert len(codes) == 3
    assert [c.analyzer_code for c in codes] == ["WBC", "RBC", "685/"]
    assert codes.source == "<dict>"


def test_mapped_code_is_frozen() -> None:
    code = MappedCode("sysmex-xn", "WBC", "HEM-WBC")
    with pytest.raises(dataclasses.FrozenInstanceError):
        code.his_code = "X"  # type: ignore[misc]


def test_unmapped_counts_and_sorts() -> None:
    codes = TestCodeMap.from_dict(TABLE)
    seen = [
        ("sysmex-xn", "WBC"),
        ("sysmex-xn", "PLT"),
        ("sysmex-xn", "HGB"),
        ("sysmex-xn", "PLT"),
        ("horiba-pentra", "WBC"),
        ("sysmex-xn", "RBC"),
        ("roche-cobas-c311", "687/"),
    ]
    assert codes.unmapped(seen) == [
        ("horiba-pentra", "WBC", 1),
        ("roche-cobas-c311", "687/", 1),
        ("sysmex-xn", "HGB", 1),
        ("sysmex-xn", "PLT", 2),
    ]
    assert codes.unmapped(iter([])) == []


# YAML reading.


def test_scalars_are_read_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "roche-cobas-c311:\n"
        "  685: 123\n"  # YAML 1.1 would make both integers
        "  0675: {his: 0675}\n"  # and this one octal 445
        "  NO: {his: 'YES'}\n"  # and these booleans
        "  1.10: {his: 1.10, name: ON}\n"
        "  null-code: {his: X, name: ~}\n",
    )
    codes = TestCodeMap.load(path)
    assert codes.lookup("roche-cobas-c311", "685") == MappedCode("roche-cobas-c311", "685", "123")
    assert codes.lookup("roche-cobas-c311", "0675") == MappedCode(
        "roche-cobas-c311", "0675", "0675"
    )
    assert codes.lookup("roche-cobas-c311", "NO") is not None
    assert codes.reverse("roche-cobas-c311", "1.10") == MappedCode(
        "roche-cobas-c311", "1.10", "1.10", "", "ON"
    )
    assert codes.lookup("roche-cobas-c311", "null-code") == MappedCode(
        "roche-cobas-c311", "null-code", "X"
    )
    assert codes.source == str(path)


def test_empty_file_and_empty_driver(tmp_path: Path) -> None:
    assert len(TestCodeMap.load(write(tmp_path, "# nothing yet\n"))) == 0
    assert len(TestCodeMap.load(write(tmp_path, "sysmex-xn:\n"))) == 0


def test_every_problem_is_reported_with_file_and_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
sysmex-xn:
  WBC: {his: HEM-WBC, loinc: "6690-2"}
  WBC: {his: HEM-WBC2}
  RBC: {loinc: "789-8"}
  HGB: {his: HEM-HGB, loinc: "718-7X"}
  PLT: {his: HEM-PLT, loinc: "789-9"}
  HCT: {his: HEM-HCT, lonic: "4544-3"}
  MCV: {his: HEM-WBC}
  "RDW SD": {his: " HEM-RDW"}
  " MPV": {his: HEM-MPV}
  "1.0000+950+1.0": [HEM-X]
  PCT: {his: HEM-PCT, his: HEM-PCT2}
Sysmex XN:
  WBC: HEM-WBC
horiba-pentra: [WBC, RBC]
sysmex-xn:
  PDW: HEM-PDW
""",
    )
    problems = problems_of(path)
    expected = [
        "line 3: sysmex-xn.WBC: duplicate key (first at line 2)",
        "line 12: sysmex-xn.PCT.his: duplicate key (first at line 12)",
        "line 16: sysmex-xn: duplicate key (first at line 1)",
        "sysmex-xn.RBC.his: missing",
        "sysmex-xn.HGB.loinc: '718-7X' is not a LOINC code",
        "sysmex-xn.PLT.loinc: '789-9' fails the LOINC check digit (for 789 it is 8)",
        "sysmex-xn.HCT: unknown key 'lonic'",
        "sysmex-xn.\"RDW SD\".his: ' HEM-RDW' has surrounding spaces",
        'sysmex-xn." MPV": an analyzer code is not empty and has no surrounding spaces',
        'sysmex-xn."1.0000+950+1.0": expected a HIS code or a mapping',
        "'Sysmex XN': not a driver name",
        "horiba-pentra: expected a mapping of analyzer test codes",
        "sysmex-xn.MCV.his: 'HEM-WBC' is already the HIS code of sysmex-xn.WBC",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), fragment
    assert len(problems) == len(expected)
    assert all(p.startswith(f"{path}: ") for p in problems)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert problems_of(missing) == [f"{missing}: cannot read: {_no_such_file(missing)}"]
    (bad := tmp_path / "latin1.yaml").write_bytes("sysmex-xn: {WBC: Müller}\n".encode("latin-1"))
    assert problems_of(bad)[0].startswith(f"{bad}: cannot read: ")
    [syntax] = problems_of(write(tmp_path, "sysmex-xn: {WBC: [\n"))
    assert syntax.startswith(f"{tmp_path / 'codes.yaml'}: not valid YAML: ")
    assert "line 2" in syntax
    [two] = problems_of(write(tmp_path, "a: b\n---\nc: d\n"))
    assert "not valid YAML" in two
    assert problems_of(write(tmp_path, "- sysmex-xn\n")) == [
        f"{tmp_path / 'codes.yaml'}: expected a mapping of driver names to test codes"
    ]
    [key] = problems_of(write(tmp_path, "sysmex-xn:\n  ? [a, b]\n  : HEM-X\n"))
    assert "line 2: sysmex-xn: a key must be text" in key


def _no_such_file(path: Path) -> str:
    try:
        path.open()
    except OSError as error:
        return str(error)
    raise AssertionError(path)


def test_from_dict_reports_python_types() -> None:
    with pytest.raises(ConfigError) as caught:
        TestCodeMap.from_dict(
            {"sysmex-xn": {685: "X", "WBC": {"his": 5}, "RBC": {"his": "R", "name": ["x"]}}},
            source="lisgw.yaml: test_codes",
        )
    assert caught.value.problems == [
        "lisgw.yaml: test_codes: sysmex-xn.685: an analyzer code must be text (quote it in YAML)",
        "lisgw.yaml: test_codes: sysmex-xn.WBC.his: 5 must be text (quote it in YAML)",
        "lisgw.yaml: test_codes: sysmex-xn.WBC.his: missing: "
        "every analyzer code needs its HIS code",
        "lisgw.yaml: test_codes: sysmex-xn.RBC.name: ['x'] must be text (quote it in YAML)",
    ]
    with pytest.raises(ConfigError, match="expected a mapping of driver names"):
        TestCodeMap.from_dict(["sysmex-xn"])


def test_constructor_refuses_ambiguous_rows() -> None:
    with pytest.raises(ConfigError, match="duplicate analyzer code"):
        TestCodeMap([MappedCode("a", "X", "H1"), MappedCode("a", "X", "H2")])
    with pytest.raises(ConfigError, match="order download could not choose"):
        TestCodeMap([MappedCode("a", "X", "H1"), MappedCode("a", "Y", "H1")])
    # The same HIS code on two analyzers is normal.
    assert len(TestCodeMap([MappedCode("a", "X", "H1"), MappedCode("b", "X", "H1")])) == 2


# LOINC check digits.


@pytest.mark.parametrize(
    "code", ["6690-2", "789-8", "718-7", "1742-6", "804-5", "717-9", "21000-5", "4544-3", "15199-3"]
)
def test_valid_loinc(code: str) -> None:
    assert is_valid_loinc(code)


@pytest.mark.parametrize(
    "code",
    [
        "789-9",  # Horiba Pentra XLR capture, RBC
        "2100-5",  # Horiba Pentra XLR capture, RDWSD (21000-5 truncated?)
        "6690-3",
        "6690",
        "6690-22",
        "12345678-0",
        "-2",
        "LP1234-5",
        "６６９０-２",
    ],
)
def test_invalid_loinc(code: str) -> None:
    assert not is_valid_loinc(code)


@settings(max_examples=200, deadline=None)
@given(number=st.from_regex(r"\A[0-9]{1,7}\Z"), position=st.integers(0, 6), delta=st.integers(1, 9))
def test_check_digit_catches_any_single_digit_error(number: str, position: int, delta: int) -> None:
    digit = loinc_check_digit(number)
    assert is_valid_loinc(f"{number}-{digit}")
    assert sum(is_valid_loinc(f"{number}-{d}") for d in range(10)) == 1
    position %= len(number)
    wrong = number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1 :]
    assert not is_valid_loinc(f"{wrong}-{digit}")


drivers = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,12}\Z")
codes_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Zs", "Cc")), min_size=1
).filter(lambda s: s == s.strip())


@settings(max_examples=100, deadline=None)
@given(
    table=st.dictionaries(drivers, st.dictionaries(codes_text, codes_text, max_size=6), max_size=4)
)
def test_any_valid_table_round_trips(table: dict[str, dict[str, str]]) -> None:
    his_unique = {d: rows for d, rows in table.items() if len(set(rows.values())) == len(rows)}
    codes = TestCodeMap.from_dict(his_unique)
    for driver, rows in his_unique.items():
        for code, his in rows.items():
            assert codes.lookup(driver, code) == MappedCode(driver, code, his)
            assert codes.reverse(driver, his) == MappedCode(driver, code, his)
    assert len(codes) == sum(len(rows) for rows in his_unique.values())
