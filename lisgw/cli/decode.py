"""``lisgw decode``: read analyzer captures through the gateway's own protocol code.

Layer: interface. Reads files, calls ``lisgw.decode.decode_capture``, prints one normalized
message per line. Problems with the input never produce a traceback: an unreadable file is
one line on stderr naming it, and exit status 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lisgw.decode import DecodeOptions, decode_capture
from lisgw.errors import LisgwError
from lisgw.model import NormalizedMessage


def _text_line(path: str, message: NormalizedMessage) -> str:
    parts = [f"{path}@{message.offset}", str(message.protocol), str(message.kind)]
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
    for warning in message.warnings:
        parts.append(f"(warning: {warning})")
    return " ".join(parts)


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
    "--encoding",
    default="utf-8",
    show_default=True,
    help="Character set of HL7 messages (falls back to ISO-8859-1 with a warning).",
)
def decode(paths: tuple[Path, ...], output_format: str, encoding: str) -> None:
    """Decode analyzer captures (ASTM framed or unframed, HL7 with or without MLLP).

    Each PATH is read whole and run through the same E1381 link, E1394 codec, MLLP framer and
    HL7 parser the gateway uses; one normalized message is printed per line. Noise on the
    line (double ENQ, stray ACKs, bad checksums, missing MLLP bytes) becomes a warning on the
    message. A transmission without EOT is marked "incomplete" and never reported as results.
    Use "-" to read standard input.

    \b
    Examples:
      lisgw decode ../shared/corpus/astm/roche_cobas_e411/*.bin
      lisgw decode --format text capture.bin
      lisgw decode capture.bin | jq '.specimens[].results[] | .test + "=" + .value'
    """
    options = DecodeOptions(hl7_encoding=encoding)
    failed = False
    for path in paths:
        label = str(path)
        try:
            data = sys.stdin.buffer.read() if label == "-" else path.read_bytes()
        except OSError as error:
            click.echo(f"lisgw decode: {label}: cannot read: {error.strerror}", err=True)
            failed = True
            continue
        try:
            messages = decode_capture(data, options)
        except LisgwError as error:
            offset = getattr(error, "offset", None)
            where = f" at offset {offset}" if offset is not None else ""
            click.echo(f"lisgw decode: {label}{where}: {error}", err=True)
            failed = True
            continue
        for message in messages:
            if output_format == "json":
                line = json.dumps({"file": label, **message.to_json()}, ensure_ascii=False)
            else:
                line = _text_line(label, message)
            click.echo(line)
    if failed:
        sys.exit(1)
