"""``lisgw top``: a live dashboard of the running gateway, redrawn in place.

Layer: interface (click, rich). Opens the daemon's store (lisgw.cli.storeopt) read-only
(lisgw.store.live.read_only_engine), reads a snapshot (lisgw.store.live_status) every
``--interval`` seconds and draws it with lisgw.cli.top_view in a ``rich.live.Live``, which
redraws the same lines in place (cursor movements, not a scrolling log).

Keys: ``q`` quits (stdin in cbreak mode while it runs, restored on exit); Ctrl-C quits too,
status 0. ``--once`` prints one snapshot and exits (for scripts; plain text when the output
is not a terminal); so does ``--format json``. When stdout is not a terminal and ``--once``
is not given, snapshots are printed one after the other (like ``top -b``). A store that
stops answering is shown as a red line above the last snapshot, and polling goes on.
"""

from __future__ import annotations

import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live

from lisgw.cli.storeopt import open_cli_store, store_options
from lisgw.cli.top_view import WIDTH, render, snapshot_json
from lisgw.errors import StoreError
from lisgw.store import live
from lisgw.store.database import describe
from lisgw.store.live_status import LiveStatus, live_status
from lisgw.store.runner import Store

__all__ = ["top"]


class _Snapshots:
    """Reads snapshots, carrying the results window from one to the next."""

    def __init__(self, store: Store, connections: Sequence[str] | None) -> None:
        self.store = store
        self.connections = connections
        self._hint = 0

    def read(self) -> LiveStatus:
        status = self.store.run_sync(
            live_status, time.time(), connections=self.connections, results_hint=self._hint
        )
        self._hint = status.results_from_id
        return status


@click.command(
    epilog="""\b
Examples:
  lisgw top                                # live dashboard; q or Ctrl-C quits
  lisgw top --interval 5                   # redraw every 5 seconds
  lisgw top --connection cobas-c311        # one analyzer's line
  lisgw top --once                         # one snapshot, then exit
  lisgw top --once --format json | jq .queues
  lisgw top --store postgresql+psycopg://lisgw@db/lisgw
"""
)
@click.option(
    "--connection",
    "-c",
    "connections",
    multiple=True,
    metavar="NAME",
    help="Only this connection (repeat for several).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between two redraws.",
)
@click.option("--once", is_flag=True, help="Print one snapshot and exit (for scripts).")
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: the dashboard; json: one JSON snapshot (per interval without --once).",
)
@store_options
def top(
    connections: Sequence[str],
    interval: float,
    once: bool,
    output: str,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Watch the running gateway: each connection's state, peer, last message, reconnects,
    errors and recent results; the outbox, review and order queues; whether the gateway is
    running at all (its heartbeat)."""
    checked = open_cli_store(store_url, config_path)
    name = describe(checked)
    reader = live.read_only_engine(checked)
    if reader is not checked:
        checked.dispose()
    store = Store(reader)
    try:
        known = store.run_sync(live.connection_names)
        unknown = [wanted for wanted in connections if wanted not in known]
        if unknown:
            listed = ", ".join(known) or "none yet"
            raise click.ClickException(
                f"unknown connection {', '.join(map(repr, unknown))} (known: {listed})"
            )
        snapshots = _Snapshots(store, list(connections) or None)
        if output == "json":
            _json_loop(snapshots, name, interval, once)
        elif once or not sys.stdout.isatty():
            _batch_loop(snapshots, name, interval, once)
        else:
            _live_loop(snapshots, name, interval)
    except StoreError as error:
        raise click.ClickException(f"store error: {error}") from error
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        store.close()


def _json_loop(snapshots: _Snapshots, name: str, interval: float, once: bool) -> None:
    while True:
        click.echo(json.dumps(snapshot_json(snapshots.read(), store=name)))
        if once:
            return
        time.sleep(interval)


def _batch_loop(snapshots: _Snapshots, name: str, interval: float, once: bool) -> None:
    console = Console(width=WIDTH) if not sys.stdout.isatty() else Console()
    while True:
        console.print(render(snapshots.read(), store=name))
        if once:
            return
        console.print()
        time.sleep(interval)


def _live_loop(snapshots: _Snapshots, name: str, interval: float) -> None:
    console = Console()
    status = snapshots.read()
    with (
        _keys() as wait_key,
        Live(render(status, store=name), console=console, auto_refresh=False) as view,
    ):
        while True:
            if wait_key(interval) in ("q", "Q"):
                return
            problem = ""
            try:
                status = snapshots.read()
            except StoreError as error:
                problem = f"store not answering: {error}"
            view.update(render(status, store=name, problem=problem), refresh=True)


@contextmanager
def _keys() -> Iterator[Callable[[float], str]]:
    """A function waiting up to N seconds for a key on a terminal stdin (cbreak mode,
    restored on exit), or just sleeping when stdin is not a terminal."""
    if not sys.stdin.isatty():
        yield _sleep
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:

        def wait(timeout: float) -> str:
            ready, _, _ = select.select([fd], [], [], timeout)
            return os.read(fd, 32).decode("utf-8", "replace")[:1] if ready else ""

        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _sleep(timeout: float) -> str:
    time.sleep(timeout)
    return ""
