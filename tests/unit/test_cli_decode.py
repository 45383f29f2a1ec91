"""`lisgw decode` from the command line: output shapes, errors, help."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lisgw.cli import main

E411 = "astm/roche_cobas_e411/roche_cobas_e411_multi_frame_results.bin"
CLINITEK = "hl7/siemens_clinitek_status/siemens_clinitek_status_hl7_oru_r01.bin"


def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_help_teaches_with_examples() -> None:
    code, out, _ = run("decode", "--help")
    assert code == 0
    assert "Examples:" in out
    assert "--format [json|text]" in out
    code, out, _ = run("--help")
    assert code == 0 and "decode" in out


def test_json_lines_have_the_documented_shape(corpus_dir: Path) -> None:
    code, out, err = run("decode", str(corpus_dir / E411))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    message = json.loads(lines[0])
    for key in ("protocol", "kind", "sender", "driver", "specimens", "offset", "warnings"):
        assert key in message
    assert message["protocol"] == "astm"
    assert message["kind"] == "results"
    assert message["sender"] == "cobas-e411"
    assert message["driver"] == "roche-cobas-e411@1"
    result = message["specimens"][0]["results"][0]
    for key in (
        "test",
        "test_name",
        "value",
        "units",
        "flags",
        "status",
        "completed_at",
        "numeric",
        "censor",
        "flag_meanings",
        "status_meaning",
        "comments",
    ):
        assert key in result


def test_text_format_is_one_line_per_message(corpus_dir: Path) -> None:
    code, out, _ = run("decode", "--format", "text", str(corpus_dir / CLINITEK))
    assert code == 0
    (line,) = out.splitlines()
    assert " hl7 results " in line
    assert "GLU=Negative" in line
    assert "URO=3.2 umol/L" in line


def test_several_files_in_order(corpus_dir: Path) -> None:
    code, out, _ = run("decode", str(corpus_dir / E411), str(corpus_dir / CLINITEK))
    assert code == 0
    files = [json.loads(line)["file"] for line in out.splitlines()]
    assert files == [str(corpus_dir / E411), str(corpus_dir / CLINITEK)]


def test_unreadable_file_is_one_line_and_exit_1(tmp_path: Path, corpus_dir: Path) -> None:
    missing = tmp_path / "nope.bin"
    code, out, err = run("decode", str(missing), str(corpus_dir / E411))
    assert code == 1
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert str(missing) in line and "cannot read" in line
    # The readable file after it is still decoded.
    assert len(out.splitlines()) == 1


def test_a_directory_is_unreadable(tmp_path: Path) -> None:
    code, _, err = run("decode", str(tmp_path))
    assert code == 1
    assert str(tmp_path) in err and "Traceback" not in err


def test_garbage_is_unknown_not_a_crash(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 3)
    code, out, err = run("decode", str(junk))
    assert code == 0, err
    message = json.loads(out)
    assert message["protocol"] == "unknown"
    assert message["kind"] == "unknown"
    assert message["specimens"] == []


def test_standard_input(corpus_dir: Path) -> None:
    data = (corpus_dir / CLINITEK).read_bytes()
    code, out, _ = run("decode", "-", stdin=data)
    assert code == 0
    assert json.loads(out)["sender"] == "Clinitek Status"


def test_empty_file_is_unknown(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    code, out, _ = run("decode", str(empty))
    assert code == 0
    assert json.loads(out)["kind"] == "unknown"
