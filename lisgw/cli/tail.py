"""``lisgw tail``: the traffic of the running gateway, decoded, as it is stored.

Layer: interface (click). Opens the daemon's store (lisgw.cli.storeopt) read-only
(lisgw.store.live.read_only_engine), follows it with lisgw.cli.follow every ``--interval``
seconds, and prints one line per E1394 record, HL7 segment, control byte run or message
summary (lisgw.cli.traffic), each prefixed by local time, connection and direction; or one
JSON object per line with ``--format json``. Ctrl-C ends it with status 0.

Times in text are local ``HH:MM:SS.mmm``, with a ``--- YYYY-MM-DD ---`` line whenever the
day changes (and before the first line when it is not today); JSON carries the epoch
seconds (``at``) and the local ISO 8601 time with its offset (``time``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

import click

from lisgw.cli._view import parse_when
from lisgw.cli.follow import TrafficFollower
from lisgw.cli.storeopt import open_cli_store, store_options
from lisgw.cli.traffic import TrafficDecoder, TrafficLine
from lisgw.errors import StoreError
from lisgw.store import live
from lisgw.store.live_status import gateway_nodes
from lisgw.store.runner import Store
from lisgw.store.status import node_is_running

__all__ = ["tail"]

_CONNECTION_WIDTH: Final = 12


class _Printer:
    """Prints lines as text (with day separators) or JSON, flushing after each batch."""

    def __init__(self, output: str, width: int) -> None:
        self.output = output
        self.width = width
        self._day = datetime.now().strftime("%Y-%m-%d")
        self._first = True

    def emit(self, lines: Iterable[TrafficLine]) -> None:
        chunks: list[str] = []
        for line in lines:
            chunks.extend(self._json(line) if self.output == "json" else self._text(line))
        if chunks:
            click.echo("\n".join(chunks))

    def _text(self, line: TrafficLine) -> list[str]:
        moment = datetime.fromtimestamp(line.at)
        day = moment.strftime("%Y-%m-%d")
        out = []
        if day != self._day or (self._first and day != datetime.now().strftime("%Y-%m-%d")):
            out.append(f"--- {day} ---")
        self._day, self._first = day, False
        marker = "== " if line.kind in ("message", "delivery") else ""
        stamp = moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
        name = line.connection or "-"
        out.append(f"{stamp} {name:<{self.width}} {line.direction:<3} {marker}{line.text}")
        return out

    @staticmethod
    def _json(line: TrafficLine) -> list[str]:
        document = {
            "at": line.at,
            "time": datetime.fromtimestamp(line.at).astimezone().isoformat(timespec="milliseconds"),
            "connection": line.connection,
            "direction": line.direction,
            "protocol": line.protocol,
            "source": line.source,
            "id": line.source_id,
            "kind": line.kind,
            "type": line.type,
            "text": line.text,
            **line.details,
        }
        return [json.dumps(document, ensure_ascii=False)]


@click.command(
    epilog="""\b
Examples:
  lisgw tail                               # follow every connection (Ctrl-C ends)
  lisgw tail --connection cobas-c311       # one analyzer
  lisgw tail -c xn-1 -c his-orders         # several connections
  lisgw tail --since 15m --once            # the last quarter of an hour, then exit
  lisgw tail --since 2026-11-22T08:00 --once --format json | jq .
  lisgw tail --raw                         # frames byte for byte: <STX>1H|\\^&…<ETX>A5
  lisgw tail --store sqlite:////var/lib/lisgw/lisgw.sqlite
"""
)
@click.option(
    "--connection",
    "-c",
    "connections",
    multiple=True,
    metavar="NAME",
    help="Only this connection (repeat for several). Deliveries to the HIS are shown for "
    "the results of these connections.",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Start with the traffic stored since WHEN: 15m, 2h, 1d ago, a time today (10:30) "
    "or a local date/time (2026-11-22T10:30).",
)
@click.option(
    "--last",
    "-n",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Without --since: start with the last N frames and messages.",
)
@click.option("--once", is_flag=True, help="Print what is stored and exit (for scripts).")
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: aligned lines; json: one JSON object per line.",
)
@click.option("--raw", is_flag=True, help="One line per frame, bytes exact, controls named.")
@click.option(
    "--show-patient", is_flag=True, help="Show patient names (P.6, PID-5) instead of masking."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=0.5,
    show_default=True,
    help="Seconds between two looks at the store.",
)
@store_options
def tail(
    connections: Sequence[str],
    since: str | None,
    last: int,
    once: bool,
    output: str,
    raw: bool,
    show_patient: bool,
    interval: float,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Follow the traffic the running gateway stores: ASTM records, HL7 segments, message
    states and ORU deliveries to the HIS, one line each, prefixed by time, connection and
    direction (in: from the peer, out: to it). Patient names are masked unless
    --show-patient."""
    start_at = parse_when(since, time.time(), "--since")
    checked = open_cli_store(store_url, config_path)
    reader = live.read_only_engine(checked)
    if reader is not checked:
        checked.dispose()
    store = Store(reader)
    try:
        _tail(store, connections, start_at, last, once, output, raw, show_patient, interval)
    except StoreError as error:
        raise click.ClickException(f"store error: {error}") from error
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        pass  # `lisgw tail | head`: the reader has gone
    finally:
        store.close()


def _tail(
    store: Store,
    connections: Sequence[str],
    start_at: float | None,
    last: int,
    once: bool,
    output: str,
    raw: bool,
    show_patient: bool,
    interval: float,
) -> None:
    known = store.run_sync(live.connection_names)
    unknown = [name for name in connections if name not in known]
    if unknown:
        listed = ", ".join(known) or "none yet"
        raise click.ClickException(
            f"unknown connection {', '.join(map(repr, unknown))} (known: {listed})"
        )
    names = list(connections) or None
    width = max([_CONNECTION_WIDTH, *(len(name) for name in names or known)])
    follower = TrafficFollower(
        store.run_sync, TrafficDecoder(show_patient=show_patient, raw=raw), connections=names
    )
    follower.start(since=start_at, last=last)
    printer = _Printer(output, min(width, 20))
    if not once:
        _warn_if_not_running(store)
    while True:
        polled = follower.poll(time.time())
        printer.emit(polled.lines)
        if polled.more:
            continue
        if once:
            return
        time.sleep(interval)


def _warn_if_not_running(store: Store) -> None:
    now = time.time()
    running = [node for node in store.run_sync(gateway_nodes) if node_is_running(node, now)]
    if not running:
        click.echo(
            "lisgw tail: no gateway is running on this store (no recent heartbeat); "
            "waiting for traffic…",
            err=True,
        )
