"""``lisgw decode``: read analyzer captures through the gateway's own protocol code.

Layer: interface. Reads files, calls ``lisgw.decode.decode_capture`` with the driver catalogue,
prints one normalized message per line. Problems with the input never produce a traceback: an
unreadable file is one line on stderr naming it, and exit status 1. A configuration problem
(an unknown driver or zone, a broken profile or test-code table) is reported before any file
is read, one line per problem, with exit status 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from lisgw.cli.drivers import drivers_dir_option, load_catalogue
from lisgw.decode import DecodeOptions, decode_capture
from lisgw.drivers import Catalogue
from lisgw.drivers.mapping import TestCodeMap
from lisgw.drivers.timestamps import check_zone
from lisgw.errors import ConfigError, LisgwError
from lisgw.model import Kind, NormalizedMessage


def _text_line(path: str, message: NormalizedMessage) -> str:
    parts = [f"{path}@{message.offset}", str(message.protocol), str(message.kind)]
    if message.driver:
        parts.append(f"driver={message.driver}")
    if message.sender:
        parts.append(f"sender={message.sender!r}")
    if message.incomplete:
        parts.append("INCOMPLETE")
    for specimen in message.specimens:
        qc = " QC" if specimen.qc else ""
        values = ", ".join(
            f"{r.test}={r.value}{(' ' + r.units) if r.units else ''}" for r in specimen.results
        )
        tests = ",".join(specimen.tests)
        parts.append(f"[{specimen.sample_id or '?'}{qc}: {values or tests}]")
    if message.query is not None:
        parts.append(f"query={','.join(message.query.sample_ids) or message.query.query_tag}")
    if message.raw:
        parts.append(f"raw={len(message.raw)} bytes")
    for warning in message.warnings:
        parts.append(f"(warning: {warning})")
    return " ".join(parts)


def _driver_name(message: NormalizedMessage) -> str:
    return message.driver.partition("@")[0]


def _code_pairs(message: NormalizedMessage) -> Iterable[tuple[str, str]]:
    if message.kind is not Kind.RESULTS or not message.driver:
        return
    for specimen in message.specimens:
        for result in specimen.results:
            if result.test:
                yield _driver_name(message), result.test


def _json_line(label: str, message: NormalizedMessage, codes: TestCodeMap | None) -> str:
    out: dict[str, Any] = {"file": label, **message.to_json()}
    if codes is not None:
        name = _driver_name(message)
        for specimen in out["specimens"]:
            for result in specimen["results"]:
                row = codes.lookup(name, result["test"])
                result["his_code"] = row.his_code if row is not None else None
                result["loinc"] = row.loinc if row is not None else None
    return json.dumps(out, ensure_ascii=False)


def _configure(
    catalogue: Catalogue, driver: str | None, tz: str | None, test_codes: Path | None
) -> TestCodeMap | None:
    """Check the options before any file is read; exit 2 with every problem."""
    problems: list[str] = []
    codes = None
    for check in (
        lambda: catalogue.get(driver) if driver else None,
        lambda: check_zone(tz) if tz else None,
    ):
        try:
            check()
        except ConfigError as error:
            problems.extend(error.problems)
    if test_codes is not None:
        try:
            codes = TestCodeMap.load(test_codes)
        except ConfigError as error:
            problems.extend(error.problems)
    for problem in problems:
        click.echo(f"lisgw decode: {problem}", err=True)
    if problems:
        sys.exit(2)
    return codes


def _report_unmapped(codes: TestCodeMap, pairs: list[tuple[str, str]]) -> None:
    unmapped = codes.unmapped(pairs)
    if not unmapped:
        return
    click.echo(
        f"lisgw decode: {len(unmapped)} test code(s) have no row in {codes.source}:", err=True
    )
    for driver, code, count in unmapped:
        click.echo(f"  {driver} {code!r}: {count} result(s)", err=True)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    help="json: one JSON object per line, for scripts; text: one readable line per message.",
)
@click.option(
    "--driver",
    metavar="NAME[@VERSION]",
    help="Read every capture with this driver (see `lisgw drivers list`). "
    "Default: detect it from the first message, as a connection that pins none does.",
)
@drivers_dir_option
@click.option(
    "--tz",
    metavar="ZONE",
    help="IANA time zone of the analyzer's clock (e.g. Asia/Ho_Chi_Minh): result times get "
    "its offset. Default: times without a zone, as sent.",
)
@click.option(
    "--encoding",
    default=None,
    help="Character set of HL7 messages. Default: the driver's, else UTF-8 "
    "(falls back to ISO-8859-1 with a warning).",
)
@click.option(
    "--test-codes",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Test-code mapping table: each result gains his_code and loinc, and the codes "
    "with no row are reported on stderr.",
)
def decode(
    paths: tuple[Path, ...],
    output_format: str,
    driver: str | None,
    drivers_dirs: tuple[Path, ...],
    tz: str | None,
    encoding: str | None,
    test_codes: Path | None,
) -> None:
    """Decode analyzer captures (ASTM framed or unframed, HL7 with or without MLLP).

    Each PATH is read whole and run through the same E1381 link, E1394 codec, MLLP framer,
    HL7 parser and driver the gateway uses; one normalized message is printed per line, with
    the driver that read it ("driver": "sysmex-xn@1"). Noise on the line (double ENQ, stray
    ACKs, bad checksums, missing MLLP bytes) becomes a warning on the message. A transmission
    without EOT is marked "incomplete" and never reported as results. Bytes that a driver
    recognises as another device's protocol are kept raw ("raw"), never read as results.
    Use "-" to read standard input.

    \b
    Examples:
      lisgw decode ../shared/corpus/astm/roche_cobas_e411/*.bin
      lisgw decode --format text capture.bin
      lisgw decode --driver sysmex-xn@1 --tz Europe/Paris capture.bin
      lisgw decode capture.bin | jq '.specimens[].results[] | .test + "=" + .value'
    """
    catalogue = load_catalogue(drivers_dirs, "decode")
    codes = _configure(catalogue, driver, tz, test_codes)
    options = DecodeOptions(hl7_encoding=encoding, driver=driver, tz=tz)
    failed = False
    pairs: list[tuple[str, str]] = []
    for path in paths:
        label = str(path)
        try:
            data = sys.stdin.buffer.read() if label == "-" else path.read_bytes()
        except OSError as error:
            click.echo(f"lisgw decode: {label}: cannot read: {error.strerror}", err=True)
            failed = True
            continue
        try:
            messages = decode_capture(data, options, catalogue)
        except LisgwError as error:
            offset = getattr(error, "offset", None)
            where = f" at offset {offset}" if offset is not None else ""
            click.echo(f"lisgw decode: {label}{where}: {error}", err=True)
            failed = True
            continue
        for message in messages:
            pairs.extend(_code_pairs(message))
            if output_format == "json":
                click.echo(_json_line(label, message, codes))
            else:
                click.echo(_text_line(label, message))
    if codes is not None:
        _report_unmapped(codes, pairs)
    if failed:
        sys.exit(1)
