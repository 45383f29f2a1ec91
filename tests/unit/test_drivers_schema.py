"""Driver profiles: loading, validation (every problem at once, with file and key path),
inheritance, field references and compilation (lisgw.drivers.schema, lisgw.drivers.compiled).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.astm.link import LinkOptions
from lisgw.drivers import BUILTIN_DIRS, Catalogue, default_catalogue
from lisgw.drivers.catalogue import yaml_files
from lisgw.drivers.schema import RefSpec, deep_merge, load_profiles, parse_reference
from lisgw.errors import ConfigError

BUILTIN = yaml_files(BUILTIN_DIRS)
# The protocol definitions and the generic drivers: enough for a profile inheriting them.
BASES = [p for p in BUILTIN if p.parent.name == "protocols" or p.stem.endswith("-generic")]
MINIMAL = """\
driver: acme-x
version: 1
inherits: astm-generic
identify:
  sender: ['^ACME$']
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(*paths: Path, builtin: bool = True) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Catalogue.from_files([*(BUILTIN if builtin else []), *paths])
    return caught.value.problems


def one_problem(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, "acme-x.yaml", text)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: ")
    return problem.split(": ", 1)[1]


# The built-in catalogue.


def test_the_builtin_catalogue_loads_and_compiles() -> None:
    catalogue = default_catalogue()
    names = {d.name for d in catalogue.drivers}
    assert {"astm-generic", "hl7-generic"} <= names
    assert [d.key for d in catalogue.definitions] == ["astm-e1394@1", "e1381@1", "hl7-v2@1"]
    generic = catalogue.get("astm-generic")
    assert generic.chain == ("astm-generic@1", "astm-e1394@1", "e1381@1")
    assert generic.identify is None and generic.generic
    assert isinstance(generic.link, LinkOptions) and generic.link.lenient
    assert generic.link.timers.frame_timeout == 30.0  # E1381 §6.5.2.2, from e1381.yaml
    hl7 = catalogue.get("hl7-generic@1")
    assert hl7.link is None and hl7.astm is None and hl7.hl7 is not None
    assert hl7.hl7_kinds["OUL"].value == "results" and hl7.hl7_kinds["QCN"].value == "query_cancel"


def test_every_builtin_driver_has_the_keys_the_engine_needs() -> None:
    for driver in default_catalogue().drivers:
        if driver.not_mine:
            assert driver.protocol == "other" and driver.identify is not None
            continue
        rules = driver.astm if driver.protocol == "astm" else driver.hl7
        assert rules is not None, driver.key
        assert rules.sample_id and rules.test_code and rules.value, driver.key


def test_a_protocol_definition_is_not_a_driver() -> None:
    with pytest.raises(ConfigError, match="protocol definition, not a driver"):
        default_catalogue().get("astm-e1394")
    with pytest.raises(ConfigError, match='unknown driver "nope"'):
        default_catalogue().get("nope")
    with pytest.raises(ConfigError, match="unknown driver"):
        default_catalogue().get("astm-generic@9")


# A new profile.


def test_a_minimal_profile_inherits_everything_else(tmp_path: Path) -> None:
    path = write(tmp_path, "acme-x.yaml", MINIMAL)
    catalogue = Catalogue.from_files([*BUILTIN, path])
    driver = catalogue.get("acme-x@1")
    assert driver.chain == ("acme-x@1", "astm-generic@1", "astm-e1394@1", "e1381@1")
    assert driver.protocol == "astm"
    assert driver.astm is not None
    assert [r.text for r in driver.astm.sample_id.refs] == ["O.3.1+", "O.4.1+"]
    assert driver.astm.flag_map["HH"] == "critical_high"
    assert driver.label == str(path)  # outside the working directory: the full path


def test_inheritance_is_a_deep_merge_where_lists_and_scalars_replace(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "acme-x.yaml",
        MINIMAL
        + textwrap.dedent(
            """\
            flags:
              map: {X: extreme}
            qc:
              sample_id_patterns: ['^Z']
            test_code:
              name: null
            sample_id:
              fields: "O.4.3"
            """
        ),
    )
    driver = Catalogue.from_files([*BUILTIN, path]).get("acme-x")
    assert driver.astm is not None
    # Mappings merge: the parent's flag map is kept, the new code added.
    assert driver.astm.flag_map["X"] == "extreme" and driver.astm.flag_map["L"] == "low"
    # Lists replace: only the child's pattern.
    assert [p.pattern for p in driver.astm.qc_id_patterns] == ["^Z"]
    # A single reference is a list of one.
    assert [r.text for r in driver.astm.sample_id.refs] == ["O.4.3"]
    # The parent's other keys stay.
    assert [r.text for r in driver.astm.flags.refs] == ["R.7"]


def test_deep_merge() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [3]}, "d": None}) == {"a": {"b": 1, "c": [3]}, "d": None}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # not modified


def test_versions_coexist_and_the_latest_is_the_default(tmp_path: Path) -> None:
    one = write(tmp_path, "acme-1.yaml", MINIMAL)
    two = write(tmp_path, "acme-2.yaml", MINIMAL.replace("version: 1", "version: 2"))
    child = write(
        tmp_path,
        "acme-child.yaml",
        """\
        driver: acme-child
        version: 1
        inherits: acme-x@1
        """,
    )
    catalogue = Catalogue.from_files([*BUILTIN, one, two, child])
    assert catalogue.get("acme-x").version == 2
    assert catalogue.get("acme-x@1").version == 1
    assert catalogue.get("acme-child").chain[1] == "acme-x@1"


# Validation: each problem names the file and the key path.


def test_a_bad_field_reference_names_file_key_path_and_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "acme-x.yaml",
        MINIMAL + 'sample_id:\n  fields: ["O.3.2", "O.x.2"]\n',
    )
    (problem,) = problems_of(path)
    assert problem == (
        f"{path}: "
        "sample_id.fields[1]: 'O.x.2' is not a field reference (RECORD.FIELD[.COMPONENT][+], "
        "e.g. R.4, O.3.2, R.3.4+)"
    )


def test_an_hl7_reference_in_an_astm_driver_is_an_error(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, MINIMAL + 'units: "OBX-6.1"\n')
    assert problem.startswith("units: 'OBX-6.1' is not a field reference")


def test_an_astm_reference_in_an_hl7_driver_is_an_error(tmp_path: Path) -> None:
    problem = one_problem(
        tmp_path,
        """\
        driver: acme-x
        version: 1
        inherits: hl7-generic
        test_code: {field: "R.3.4+"}
        """,
    )
    assert problem.startswith("test_code.field: 'R.3.4+' is not a field reference (SEGMENT-")


def test_references_are_checked_against_the_e1394_layout(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, MINIMAL + 'units: "R.15"\n')
    assert problem == 'units: "R.15": the R record has 14 fields in the layout'
    problem = one_problem(tmp_path, MINIMAL + 'units: "X.2"\n')
    assert problem.startswith('units: "X.2": record type X is not in the layout (C, H, L, M')
    # M records are manufacturer-defined: any field number is allowed there.
    path = write(tmp_path, "acme-x.yaml", MINIMAL + 'units: "M.40"\n')
    Catalogue.from_files([*BUILTIN, path])


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "acme-x.yaml",
        """\
        driver: acme-x
        version: 1
        inherits: astm-generic
        sampleid: {fields: ["O.3"]}
        protocol: astm
        identify:
          sender: ['(unclosed']
          priority: high
        transport:
          tcp: {analyzer_role: both}
          serial: {baud: fast}
        query: {form: telepathy}
        link: {lenient: "yes"}
        tests: {685: Glucose, true: oops}
        """,
    )
    found = problems_of(path)
    assert all(p.startswith(f"{path}: ") for p in found)
    keys = [p.split(": ")[1] for p in found]
    assert keys == [
        "sampleid",
        "identify.sender[0]",
        "identify.priority",
        "transport.tcp.analyzer_role",
        "transport.serial.baud",
        "query.form",
        "link.lenient",
        "tests",
    ]
    assert 'unknown key (did you mean "sample_id"?)' in found[0]
    assert "not a valid regular expression" in found[1]
    assert "'both' is not one of client | server" in found[3].replace('"', "'")
    assert "quote it" in found[7]


def test_problems_in_several_files_are_collected(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "driver: a\nversion: 1\ninherits: nowhere\n")
    b = write(tmp_path, "b.yaml", "driver: B\nversion: 0\n")
    c = write(tmp_path, "c.yaml", "driver: c\nversion: 1\ninherits: astm-generic\nvalue: 3\n")
    found = problems_of(a, b, c)
    assert any(f'{a}: inherits: unknown parent "nowhere" (known: ' in p for p in found)
    # b's bad name and version do not stop the later checks: its missing protocol is reported
    # in the same run.
    assert f"{b}: protocol: missing: set astm, hl7 or other here or in a parent" in found
    assert found[:3] == [
        f"{b}: driver: \"B\" is not a name (lower-case letters, digits and '-', starting with a"
        " letter or digit)",
        f"{b}: version: 0 is below 1",
        f"{c}: value: 3 is not a mapping",
    ]


def test_unknown_parent_cycle_and_duplicates(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "driver: a\nversion: 1\ninherits: b\n")
    b = write(tmp_path, "b.yaml", "driver: b\nversion: 1\ninherits: a\n")
    found = problems_of(a, b)
    assert any("inherits: inheritance cycle a@1 → b@1 → a@1" in p for p in found)
    dup = write(tmp_path, "dup.yaml", "driver: astm-generic\nversion: 1\ninherits: astm-e1394\n")
    (problem,) = problems_of(dup)
    assert problem.endswith(
        "driver: astm-generic@1 is already defined in drivers/astm-generic.yaml"
    )
    lost = write(tmp_path, "lost.yaml", "driver: lost\nversion: 1\ninherits: astm-generik\n")
    (problem,) = problems_of(lost)
    assert 'inherits: unknown parent "astm-generik" (known: ' in problem


def test_file_level_errors(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.yaml", "driver: [unclosed\n")
    (problem,) = problems_of(broken, builtin=False)
    assert "broken.yaml: line " in problem and "not valid YAML" in problem
    listing = write(tmp_path, "list.yaml", "- a\n- b\n")
    (problem,) = problems_of(listing, builtin=False)
    assert problem.endswith("a profile is a YAML mapping (key: value lines)")
    both = write(tmp_path, "both.yaml", "driver: x\ndefinition: x\nversion: 1\n")
    found = problems_of(both, builtin=False)
    assert "exactly one of `driver:`" in found[0]
    assert any("protocol: missing" in p for p in found)  # the later checks still ran
    noversion = write(tmp_path, "nov.yaml", "driver: x\nprotocol: astm\n")
    found = problems_of(noversion, builtin=False)
    assert found[0].endswith("version: missing (a positive integer)")
    (problem,) = problems_of(tmp_path / "absent.yaml", builtin=False)
    assert "absent.yaml: cannot read" in problem


def test_protocol_rules(tmp_path: Path) -> None:
    problem = one_problem(
        tmp_path,
        """\
        driver: acme-x
        version: 1
        inherits: astm-generic
        protocol: hl7
        """,
    )
    assert problem == 'protocol: "hl7" contradicts the parent\'s "astm"'
    problem = one_problem(tmp_path, "driver: acme-x\nversion: 1\nprotocol: other\n")
    assert problem.startswith("not_mine: protocol other is only for not-mine payloads")
    problem = one_problem(tmp_path, "driver: acme-x\nversion: 1\nprotocol: other\nnot_mine: true\n")
    assert problem == "identify: a not-mine profile needs identify.content or header"
    problem = one_problem(tmp_path, "driver: acme-x\nversion: 1\ninherits: hl7-v2\nlink: {}\n")
    assert problem.startswith("link: ASTM only")
    problem = one_problem(tmp_path, "driver: acme-x\nversion: 1\n")
    assert problem.startswith("protocol: missing")


def test_a_root_driver_must_say_where_the_values_are(tmp_path: Path) -> None:
    path = write(tmp_path, "acme-x.yaml", "driver: acme-x\nversion: 1\nprotocol: astm\n")
    found = problems_of(path, builtin=False)
    assert [p.split(": ")[1] for p in found] == [
        "sample_id.fields",
        "test_code.field",
        "value.field",
    ]


def test_a_problem_inherited_from_a_parent_names_the_parent_once(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent.yaml", MINIMAL.replace("acme-x", "parent") + 'units: "R"\n')
    child = write(tmp_path, "child.yaml", "driver: child\nversion: 1\ninherits: parent\n")
    (problem,) = problems_of(parent, child)
    assert "parent.yaml: units: 'R' is not a field reference" in problem


def test_the_sample_id_pattern_needs_a_group(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, MINIMAL + "sample_id: {pattern: '^S'}\n")
    assert problem == 'sample_id.pattern: "^S" needs a group: the ID is group 1'


def test_load_profiles_returns_chains() -> None:
    merged = {p.key: p for p in load_profiles(BUILTIN)}
    e1394 = merged["astm-e1394@1"]
    assert e1394.source.definition
    assert [s.key for s in e1394.chain] == ["astm-e1394@1", "e1381@1"]
    assert e1394.data["definition"] == "astm-e1394"
    assert "layout" in e1394.data and "timers" in e1394.data["link"]


# Field references.


@pytest.mark.parametrize(
    ("text", "protocol", "spec"),
    [
        ("R.4", "astm", RefSpec("R.4", "astm", "R", 4)),
        ("O.3.2", "astm", RefSpec("O.3.2", "astm", "O", 3, 2)),
        ("R.3.4+", "astm", RefSpec("R.3.4+", "astm", "R", 3, 4, 0, True)),
        ("OBX-5", "hl7", RefSpec("OBX-5", "hl7", "OBX", 5)),
        ("OBX-3.1", "hl7", RefSpec("OBX-3.1", "hl7", "OBX", 3, 1)),
        ("SPM-2.1.1", "hl7", RefSpec("SPM-2.1.1", "hl7", "SPM", 2, 1, 1)),
        ("OBX-3.4+", "hl7", RefSpec("OBX-3.4+", "hl7", "OBX", 3, 4, 0, True)),
    ],
)
def test_references_parse(text: str, protocol: str, spec: RefSpec) -> None:
    assert parse_reference(text, protocol) == spec


@pytest.mark.parametrize(
    ("text", "protocol"),
    [
        ("O.x.2", "astm"),
        ("R.0", "astm"),
        ("R4", "astm"),
        ("RR.4", "astm"),
        ("R.4.2.1", "astm"),
        ("O.4.3@2", "astm"),
        ("OBX.5", "hl7"),
        ("OBX-0", "hl7"),
        ("obx-5", "hl7"),
        ("OBX-3.1+.2", "hl7"),
    ],
)
def test_bad_references_are_refused(text: str, protocol: str) -> None:
    with pytest.raises(ValueError, match="is not a field reference"):
        parse_reference(text, protocol)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12), st.sampled_from(["astm", "hl7"]))
def test_any_text_is_a_reference_or_a_value_error(text: str, protocol: str) -> None:
    try:
        spec = parse_reference(text, protocol)
    except ValueError:
        return
    assert spec.field >= 1 and spec.text == text


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["units", "sample_id", "flags", "link", "identify", "tests", "bogus"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=6),
            st.lists(st.text(max_size=4), max_size=3),
            st.dictionaries(st.text(max_size=6), st.text(max_size=4), max_size=3),
        ),
        max_size=4,
    )
)
def test_any_profile_content_loads_or_raises_config_error(
    tmp_path_factory: pytest.TempPathFactory, extra: dict[str, object]
) -> None:
    path = tmp_path_factory.mktemp("p") / "acme-x.yaml"
    data = {"driver": "acme-x", "version": 1, "inherits": "astm-generic", **extra}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    try:
        Catalogue.from_files([*BASES, path])
    except ConfigError as error:
        assert error.problems and all(isinstance(p, str) for p in error.problems)
