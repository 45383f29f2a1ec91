"""``lisgw status``: is the gateway running, is each analyzer connected, what is waiting.

Layer: interface. Reads the daemon's store (lisgw.cli.storeopt) with one read-side unit of
work (lisgw.store.views.live_status): the gateway processes' heartbeats (``nodes``), every
analyzer connection as the gateway last reported it (``connection_status``, written by
lisgw.services.status.StatusReporter), the outbox, the order queue, the review queue and
the HIS link. Exit status: 0 when a gateway is running, 3 when none is (no heartbeat for
three intervals, or stopped), 1 when the store cannot be read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import click

from lisgw.cli._view import age, cli_store, echo_table, emit_json, format_option, when
from lisgw.cli.storeopt import store_options
from lisgw.store import migrate
from lisgw.store.database import describe
from lisgw.store.status import node_is_running
from lisgw.store.views import StatusView, live_status

NOT_RUNNING: Final = 3


@click.command()
@store_options
@format_option
def status(store_url: str | None, config_path: Path | None, output: str) -> None:
    """The gateway at a glance: process, connections, queues, HIS link, store.

    Connection states: listening (waiting for the analyzer to connect), connecting,
    connected, waiting (lost, backing off), down (the peer or device is missing), stopped.
    When the gateway is not running the states shown are its last report, and the exit
    status is 3.

    \b
    Examples:
      lisgw status                           # the store of /etc/lisgw/lisgw.yaml
      lisgw status --config lab.yaml
      lisgw status --store postgresql+psycopg://lisgw@db/lisgw --format json
    """
    with cli_store(store_url, config_path) as store:
        view = store.run_sync(live_status)
        url = describe(store.engine)
        schema = migrate.current(store.engine) or "?"
    now = time.time()
    running = [n for n in view.nodes if node_is_running(n, now)]
    if output == "json":
        emit_json(_document(view, now, url, schema))
    else:
        _print(view, now, url, schema)
    if not running:
        raise SystemExit(NOT_RUNNING)


def _document(view: StatusView, now: float, url: str, schema: str) -> dict[str, Any]:
    nodes = [
        {
            "name": n.name,
            "pid": n.pid,
            "version": n.version,
            "started_at": n.started_at,
            "heartbeat_at": n.heartbeat_at,
            "stopped_at": n.stopped_at,
            "running": node_is_running(n, now),
        }
        for n in view.nodes
    ]
    return {
        "now": now,
        "running": any(n["running"] for n in nodes),
        "nodes": nodes,
        "connections": view.connections,
        "outbox": dict(view.outbox),
        "oldest_pending_at": view.oldest_pending_at,
        "order_queue": dict(view.queued),
        "review": dict(view.review),
        "his": {
            "last_delivered_at": view.his_last_delivered_at,
            "last_error": view.his_last_error,
            "orders_last_received_at": view.his_orders_last_at,
        },
        "store": {"url": url, "schema": schema},
    }


def _print(view: StatusView, now: float, url: str, schema: str) -> None:
    running = False
    if not view.nodes:
        click.echo("Gateway   daemon not running: no gateway has ever used this store")
    for node in view.nodes:
        alive = node_is_running(node, now)
        running = running or alive
        beat = f"heartbeat {age(now - node.heartbeat_at)} ago"
        if alive:
            state = f"running since {when(node.started_at, now)}, {beat}"
        elif node.stopped_at is not None:
            state = f"daemon not running: stopped {when(node.stopped_at, now)}"
        else:
            state = f"daemon not running: last {beat}"
        click.echo(f"Gateway   {node.name} (pid {node.pid}, v{node.version}): {state}")
    click.echo(f"Store     {url} (schema {schema})")
    click.echo("")
    stale = "" if running else " (last reported: the gateway is not running)"
    click.echo(f"Connections{stale}")
    rows = [
        (
            c.name,
            c.state or "unknown",
            c.peer or "-",
            when(c.since, now),
            when(c.last_message_at, now),
            c.reconnects,
            c.errors,
            c.driver or "auto",
        )
        for c in view.connections
    ]
    headers = ("NAME", "STATE", "PEER", "SINCE", "LAST MSG", "RECON", "ERR", "DRIVER")
    echo_table(headers, rows, (12, 10, 21, 11, 11, 5, 3, 14), "  (no analyzer connections)")
    for c in view.connections:
        if c.last_error:
            click.echo(f"  {c.name}: last error: {c.last_error}")
    click.echo("")
    counts = view.outbox
    oldest = (
        f", oldest waiting {age(now - view.oldest_pending_at)}"
        if view.oldest_pending_at is not None
        else ""
    )
    click.echo(
        f"Outbox    pending {counts.get('pending', 0)}, in flight {counts.get('inflight', 0)}, "
        f"dead {counts.get('dead', 0)}{oldest}"
    )
    queued = ", ".join(f"{name} {count}" for name, count in sorted(view.queued.items()))
    click.echo(
        f"Orders    queued for analyzers: {sum(view.queued.values())}"
        + (f" ({queued})" if queued else "")
    )
    click.echo(
        f"Review    open {view.review.get('open', 0)}, assigned {view.review.get('assigned', 0)}"
    )
    delivered = when(view.his_last_delivered_at, now)
    received = when(view.his_orders_last_at, now)
    click.echo(f"HIS       last delivery {delivered}; orders last received {received}")
    if view.his_last_error:
        click.echo(f"          last delivery error: {view.his_last_error}")
    if counts.get("dead", 0):
        click.echo("          dead letters: `lisgw outbox list --dead`, then `lisgw outbox retry`")
