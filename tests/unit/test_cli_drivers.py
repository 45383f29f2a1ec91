"""`lisgw drivers list|show|check` and the driver options of `lisgw decode`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml
from click.testing import CliRunner

from lisgw.cli import main
from lisgw.drivers import BUILTIN_DIRS

C311 = "astm/roche_cobas_c311/roche_cobas_c311_chemistry_results.bin"
ERBA = "astm/erba_xl1000/erba_xl1000_result_backtick_repeat_delim.bin"
NEW_DRIVER = """\
driver: acme-x
version: 1
title: ACME X analyzer
inherits: astm-generic
identify:
  sender: ['^c311$']
  header: ['RSUPL']
  priority: 100
sample_id:
  fields: ["O.3.3"]
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_help_lists_the_commands_with_examples() -> None:
    code, out, _ = run("drivers", "--help")
    assert code == 0 and "Examples:" in out
    for command in ("list", "show", "check"):
        assert command in out
    code, out, _ = run("--help")
    assert code == 0 and "drivers" in out


def test_list_shows_every_driver_and_the_definitions() -> None:
    code, out, _ = run("drivers", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["DRIVER", "PROTOCOL", "DETECT", "TITLE"]
    rows = {line.split()[0]: line for line in lines[1:] if line and not line.startswith("protocol")}
    assert "fallback" in rows["astm-generic@1"] and "fallback" in rows["hl7-generic@1"]
    assert "other (not mine)" in rows["biomerieux-vidas@1"]
    assert "sender" in rows["sysmex-xn@1"]
    assert lines[-1] == "protocol definitions: astm-e1394@1, e1381@1, hl7-v2@1"


def test_show_prints_the_merged_profile_and_its_chain() -> None:
    code, out, _ = run("drivers", "show", "sysmex-xp")
    assert code == 0
    header = [line for line in out.splitlines() if line.startswith("#")]
    assert header[1] == (
        "# inheritance: sysmex-xp@1 ← sysmex-xn@1 ← astm-generic@1 ← astm-e1394@1 ← e1381@1"
    )
    assert "#   e1381@1: protocols/e1381.yaml" in header
    data = yaml.safe_load(out)
    assert data["driver"] == "sysmex-xp" and data["inherits"] == "sysmex-xn"
    # Inherited from sysmex-xn, astm-generic, astm-e1394 and e1381:
    assert data["sample_id"]["fields"] == ["O.4.3", "O.3.1"]
    assert data["link"]["max_retries"] == 6
    assert data["value"]["field"] == "R.4"
    assert data["link"]["timers"]["reply_timeout"] == 15.0
    assert "layout" not in data and "# layout: left out (--full shows it)" in header
    code, out, _ = run("drivers", "show", "--full", "sysmex-xp@1")
    assert code == 0 and yaml.safe_load(out)["layout"]["R"][3] == "data_value"


def test_show_a_definition_and_an_unknown_name() -> None:
    code, out, _ = run("drivers", "show", "astm-e1394")
    assert code == 0
    assert "(protocol definition)" in out.splitlines()[0]
    assert yaml.safe_load(out)["layout"]["O"][2] == "specimen_id"
    code, out, err = run("drivers", "show", "nope")
    assert code == 1 and out == ""
    assert err.startswith('lisgw drivers show: unknown driver or definition "nope"')


def test_check_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, "acme-x.yaml", NEW_DRIVER)
    code, out, _ = run("drivers", "check", str(path))
    assert code == 0
    assert out.startswith(f"ok: {path} (")


def test_check_a_builtin_file_replaces_itself() -> None:
    code, out, _ = run("drivers", "check", str(BUILTIN_DIRS[1] / "sysmex-xn.yaml"))
    assert code == 0, out
    code, out, _ = run("drivers", "check")
    assert code == 0 and out.startswith("ok: ")


def test_check_prints_every_problem_with_file_and_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "acme-x.yaml",
        NEW_DRIVER + "units: R.x\nflags: {feild: R.7}\nqc: {sample_id_patterns: ['(']}\n",
    )
    code, out, _ = run("drivers", "check", str(path))
    assert code == 1
    lines = out.splitlines()
    assert lines[-1] == "3 problem(s)"
    assert lines[0] == f'{path}: flags.feild: unknown key (did you mean "field"?)'
    assert lines[1].startswith(f'{path}: qc.sample_id_patterns[0]: "(" is not a valid regular')
    assert lines[2].startswith(f"{path}: units: 'R.x' is not a field reference (RECORD.FIELD")


def test_check_a_duplicate_of_a_builtin_driver(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", "driver: sysmex-xn\nversion: 1\ninherits: astm-generic\n")
    code, out, _ = run("drivers", "check", str(path))
    assert code == 1
    assert f"{path}: driver: sysmex-xn@1 is already defined in drivers/sysmex-xn.yaml" in out


def test_check_a_test_code_table(tmp_path: Path) -> None:
    table = write(
        tmp_path,
        "codes.yaml",
        """\
        sysmex-xn:
          WBC: {his: HEM-WBC, loinc: 6690-2}
        no-such-driver:
          X: HIS-X
        """,
    )
    code, out, _ = run("drivers", "check", "--test-codes", str(table))
    assert code == 1
    assert f"{table}: no-such-driver: no such driver in the catalogue" in out
    assert "note: sysmex-xn: " in out and "unmapped: RBC, HGB" in out


def test_a_broken_drivers_dir_stops_every_command(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "driver: bad\nversion: 1\ninherits: astm-generic\nunits: 4\n")
    for args in (["drivers", "list"], ["drivers", "show", "bad"], ["decode", "x.bin"]):
        code, _, err = run(*args[:2], "--drivers-dir", str(tmp_path), *args[2:])
        assert code == 2, args
        assert f"{tmp_path / 'bad.yaml'}: units: 4 is not a string" in err


# lisgw decode --driver / --drivers-dir / --tz / --test-codes.


def test_decode_output_names_the_driver(corpus_dir: Path) -> None:
    code, out, _ = run("decode", str(corpus_dir / C311))
    assert code == 0
    message = json.loads(out)
    assert message["driver"] == "roche-cobas-c311@1"
    assert message["specimens"][0]["sample_id"] == "CL-PL-24-0370"
    assert message["instrument"]["name"] == "c311"
    code, out, _ = run("decode", "--format", "text", str(corpus_dir / C311))
    assert " driver=roche-cobas-c311@1 " in out


def test_decode_with_a_pinned_driver(corpus_dir: Path) -> None:
    code, out, _ = run("decode", "--driver", "astm-generic@1", str(corpus_dir / C311))
    assert code == 0
    message = json.loads(out)
    assert message["driver"] == "astm-generic@1"
    assert message["specimens"][0]["sample_id"] == "11625"
    code, out, err = run("decode", "--driver", "nope", str(corpus_dir / C311))
    assert code == 2 and out == ""
    assert err.startswith('lisgw decode: unknown driver "nope" (known: ')


def test_decode_with_an_extra_drivers_dir(tmp_path: Path, corpus_dir: Path) -> None:
    write(tmp_path, "acme-x.yaml", NEW_DRIVER)
    code, out, err = run("decode", "--drivers-dir", str(tmp_path), str(corpus_dir / C311))
    assert code == 0, err
    message = json.loads(out)
    # Same score as roche-cobas-c311 (sender and header match): priority 100 wins.
    assert message["driver"] == "acme-x@1"
    assert message["specimens"][0]["sample_id"] == "1"


def test_decode_with_a_time_zone(corpus_dir: Path) -> None:
    code, out, _ = run("decode", "--tz", "Europe/Paris", str(corpus_dir / ERBA))
    assert code == 0
    (result,) = json.loads(out)["specimens"][0]["results"]
    assert result["completed_at"] == "2020-09-28T13:23:12+02:00"
    assert (result["numeric"], result["flag_meanings"], result["status_meaning"]) == (
        0.3,
        ["abnormal"],
        "final",
    )
    code, _, err = run("decode", "--tz", "Mars/Olympus", str(corpus_dir / ERBA))
    assert code == 2 and "unknown time zone 'Mars/Olympus'" in err


def test_decode_with_a_test_code_table(tmp_path: Path, corpus_dir: Path) -> None:
    table = write(
        tmp_path,
        "codes.yaml",
        """\
        roche-cobas-c311:
          "685/": {his: CHEM-ALT, loinc: 1742-6}
        """,
    )
    code, out, err = run("decode", "--test-codes", str(table), str(corpus_dir / C311))
    assert code == 0
    results = json.loads(out)["specimens"][0]["results"]
    assert (results[0]["test"], results[0]["his_code"], results[0]["loinc"]) == (
        "685/",
        "CHEM-ALT",
        "1742-6",
    )
    assert results[1]["his_code"] is None
    lines = err.splitlines()
    assert lines[0] == f"lisgw decode: 6 test code(s) have no row in {table}:"
    assert "  roche-cobas-c311 '687/': 1 result(s)" in lines
