"""HIS profiles: the shipped ones load, defaults are plain HL7, all problems reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from lisgw.errors import ConfigError
from lisgw.his.profile import HIS_VERSIONS, HisProfile, load_his_profile

CONFIG = Path(__file__).resolve().parents[2] / "config" / "his"


def refs(profile: HisProfile, key: str) -> list[str]:
    return [ref.text for ref in getattr(profile.orders, key)]


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        HisProfile.load(path)
    return caught.value.problems


def test_shipped_v251_profile() -> None:
    profile = load_his_profile(CONFIG / "hl7-v251.yaml")
    assert (profile.name, profile.version, profile.modern) == ("hl7-v251", "2.5.1", True)
    assert (profile.encoding, profile.character_set) == ("utf-8", "UNICODE UTF-8")
    assert (profile.results_per, profile.unencodable) == ("specimen", "transliterate")
    assert (profile.sending_application, profile.receiving_application) == ("LISGW", "HIS")
    assert refs(profile, "sample_id") == ["SPM-2.1", "OBR-3.1", "ORC-2.1"]
    assert refs(profile, "priority") == ["TQ1-9.1", "ORC-7.6", "OBR-27.6"]
    assert profile.source.endswith("hl7-v251.yaml")


def test_shipped_v231_profile() -> None:
    profile = HisProfile.load(CONFIG / "hl7-v231.yaml")
    assert (profile.version, profile.modern) == ("2.3.1", False)
    assert (profile.encoding, profile.character_set) == ("iso8859-1", "8859/1")
    assert refs(profile, "sample_id") == ["OBR-3.1", "OBR-2.1", "ORC-2.1"]
    assert all(
        not ref.startswith(("SPM", "TQ1"))
        for key in ("sample_id", "priority")
        for ref in refs(profile, key)
    )


@pytest.mark.parametrize("version", HIS_VERSIONS)
def test_a_profile_needs_only_a_version(version: str) -> None:
    profile = HisProfile.plain(version)
    assert profile.version == version
    assert refs(profile, "placer") == ["ORC-2.1", "OBR-2.1"]
    assert refs(profile, "test_code") == ["OBR-4.1"]
    expected = "OBR-3.1" if version == "2.3.1" else "SPM-2.1"
    assert refs(profile, "sample_id")[0] == expected


def test_the_shipped_files_only_write_down_the_defaults() -> None:
    # The shipped files are documentation: what they say is what a bare version gives.
    for name, version in (("hl7-v251.yaml", "2.5.1"), ("hl7-v231.yaml", "2.3.1")):
        shipped = HisProfile.load(CONFIG / name)
        plain = HisProfile.from_dict(
            {
                "version": version,
                "name": shipped.name,
                "encoding": shipped.encoding,
                "sending": {"application": "LISGW", "facility": "LAB"},
                "receiving": {"application": "HIS", "facility": "HOSPITAL"},
            }
        )
        assert shipped == plain


def test_a_single_reference_or_a_list(tmp_path: Path) -> None:
    path = tmp_path / "his.yaml"
    path.write_text(
        'version: "2.5.1"\norders:\n  sample_id: OBR-2.1\n  placer: [ORC-2.1]\n'
        "  patient_id_type: MR\nresults: {per: order}\n",
        encoding="utf-8",
    )
    profile = HisProfile.load(path)
    assert refs(profile, "sample_id") == ["OBR-2.1"]
    assert profile.orders.patient_id_type == "MR"
    assert profile.results_per == "order"


def test_every_problem_is_reported_at_once_with_file_line_and_key_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "version: 2.4\n"  # 1
        "encoding: klingon\n"  # 2
        "character_set: 8859/1\n"  # 3
        "unencodable: ignore\n"  # 4
        "sending: LISGW\n"  # 5
        "results:\n"  # 6
        "  per: sample\n"  # 7
        "  colour: blue\n"  # 8
        "orders:\n"  # 9
        "  sample_id: [SPM-2.1, OBR-3.x, 7]\n"  # 10
        "  placer: MSH-10\n"  # 11
        "  patinet_id: PID-3.1\n"  # 12
        "  patient_name: PID-5.1\n"  # 13
        "  test_code: []\n"  # 14
        "  test_name: {a: b}\n",  # 15
        encoding="utf-8",
    )
    problems = problems_of(path)
    label = str(path)
    assert all(p.startswith(f"{label}: line ") for p in problems), problems
    text = "\n".join(problems)
    expected = [
        "line 1: version: '2.4' is not one of 2.5.1, 2.5, 2.3.1",
        "line 2: encoding: 'klingon' is not a known character encoding",
        "line 4: unencodable: 'ignore' is not one of transliterate, error",
        "line 5: sending: expected a mapping with keys application, facility",
        "line 7: results.per: 'sample' is not one of specimen, order",
        "line 8: results.colour: unknown key",
        "line 10: orders.sample_id[1]: 'OBR-3.x' is not a field reference",
        "line 10: orders.sample_id[2]: '7' is not a field reference",  # YAML text, not 7
        "line 11: orders.placer: 'MSH-10': orders are read from OBR, ORC, PID, PV1, SPM, TQ1",
        "line 12: orders.patinet_id: unknown key (did you mean 'patient_id'?)",
        "line 13: orders.patient_name: 'PID-5.1': name the whole XPN field",
        "line 14: orders.test_code: expected a field reference or a non-empty list",
        "line 15: orders.test_name: expected a field reference or a non-empty list",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    assert len(problems) == len(expected)


def test_version_specific_and_consistency_problems(tmp_path: Path) -> None:
    path = tmp_path / "v231.yaml"
    path.write_text(
        'version: "2.3.1"\nencoding: utf-8\ncharacter_set: 8859/1\n'
        "orders:\n  sample_id: [SPM-2.1, OBR-3.1]\n  priority: TQ1-9.1\n",
        encoding="utf-8",
    )
    problems = problems_of(path)
    assert problems == [
        f"{path}: line 3: character_set: '8859/1' names iso-8859-1, but encoding is utf-8",
        f"{path}: line 5: orders.sample_id[0]: 'SPM-2.1': SPM does not exist in HL7 2.3.1",
        f"{path}: line 6: orders.priority: 'TQ1-9.1': TQ1 does not exist in HL7 2.3.1",
    ]


def test_missing_version_unknown_charset_and_unsafe_encoding() -> None:
    with pytest.raises(ConfigError) as caught:
        HisProfile.from_dict({"encoding": "utf-16", "character_set": "EBCDIC"}, "his.yaml")
    assert caught.value.problems == [
        "his.yaml: version: missing: the HL7 version (2.5.1, 2.5, 2.3.1)",
        "his.yaml: encoding: 'utf-16' does not keep ASCII and MLLP bytes as they are",
        "his.yaml: character_set: 'EBCDIC' is not an HL7 table 0211 value lisgw knows",
    ]


def test_character_set_defaults_follow_the_encoding() -> None:
    assert HisProfile.from_dict({"version": "2.5.1", "encoding": "latin-1"}).character_set == (
        "8859/1"
    )
    assert HisProfile.from_dict({"version": "2.5.1", "encoding": "ascii"}).character_set == ""
    no_msh18 = HisProfile.from_dict({"version": "2.5.1", "character_set": ""})
    assert no_msh18.character_set == ""


def test_duplicate_keys_and_non_mapping_files(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text('version: "2.5.1"\norders:\n  placer: ORC-2.1\n  placer: OBR-2.1\n')
    assert problems_of(path) == [f"{path}: line 4: orders.placer: duplicate key (first at line 3)"]
    listing = tmp_path / "list.yaml"
    listing.write_text("- version\n")
    assert problems_of(listing) == [
        f"{listing}: line 1: top level: expected a mapping with keys name, version, encoding, "
        "character_set, unencodable, sending, receiving, results, orders"
    ]


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    (missing,) = problems_of(tmp_path / "absent.yaml")
    assert missing.startswith(f"{tmp_path / 'absent.yaml'}: cannot read:")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [\n")
    (invalid,) = problems_of(bad)
    assert invalid.startswith(f"{bad}: not valid YAML:")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert problems_of(empty) == [f"{empty}: version: missing: the HL7 version (2.5.1, 2.5, 2.3.1)"]
