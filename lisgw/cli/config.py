"""``lisgw config``: check a gateway configuration file before running it.

Layer: interface. Loads the file with ``lisgw.config.load_config``; ``check`` prints every
problem at once, each with its file, line and key path, and exits with status 1 when there is
any; otherwise it prints what the gateway would run: the store, the HIS link and one line per
analyzer connection.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from lisgw.config import GatewayConfig, HisConfig, load_config
from lisgw.errors import ConfigError


@click.group()
def config() -> None:
    """The gateway configuration: one YAML file (config/README.md documents every key).

    \b
    Examples:
      lisgw config check config/lisgw.yaml
      lisgw config check /etc/lisgw/lisgw.yaml
    """


@config.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Check FILE: every problem at once, or a summary of what would run.

    Each problem names the file, the line and the key path (`lisgw.yaml: line 31:
    connections[1].port: 70000 is not a TCP port (0-65535)`); the exit status is 1 when
    there is any. The drivers connections pin are checked against the catalogue, the HIS
    profile and test-code table the file names are checked too. A serial device that is
    not plugged in is not a problem: the gateway waits for it.

    \b
    Examples:
      lisgw config check config/lisgw.yaml
      lisgw config check /etc/lisgw/lisgw.yaml && systemctl restart lisgw
    """
    try:
        loaded = load_config(file)
    except ConfigError as error:
        for problem in error.problems:
            click.echo(problem)
        click.echo(f"{len(error.problems)} problem(s)")
        sys.exit(1)
    for line in summary(loaded):
        click.echo(line)


def summary(loaded: GatewayConfig) -> list[str]:
    """What the gateway would run, for people: a few lines and a table of connections."""
    lines = [
        f"ok: {loaded.source}",
        f"data dir:    {loaded.data_dir}",
        f"store:       {_hidden_password(loaded.store_url)}",
        f"time zone:   {loaded.time_zone or 'none (analyzer times kept without offset)'}",
        f"test codes:  {loaded.test_codes or 'none (results go out with analyzer codes)'}",
        *_his_lines(loaded.his),
        f"connections: {len(loaded.connections)}",
    ]
    rows = [("NAME", "PROTOCOL", "DRIVER", "TRANSPORT", "ORDERS", "WHERE")]
    rows += [
        (c.name, c.protocol, c.driver or "auto", c.transport, c.orders, c.describe())
        for c in loaded.connections
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
        lines.append("  " + "  ".join([*cells, row[5]]))
    shared = [listener for listener in loaded.listeners if len(listener.connections) > 1]
    for listener in shared:
        names = ", ".join(c.name for c in listener.connections)
        lines.append(f"shared listener {listener.host}:{listener.port}: {names}")
    return lines


def _his_lines(his: HisConfig) -> list[str]:
    results = f"{his.results.host}:{his.results.port}"
    orders = f"{his.orders.host}:{his.orders.port}" if his.orders else "none"
    tls = "on" if his.tls is not None else "off"
    return [
        f"HIS profile: {his.profile} ({his.profile_path})",
        f"HIS link:    results to {results}, orders received on {orders}, TLS {tls}",
    ]


def _hidden_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
