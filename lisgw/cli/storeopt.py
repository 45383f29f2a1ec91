"""Which store a technician command reads: ``--config FILE`` or ``--store URL``.

Layer: interface. Shared by the technician commands (``lisgw status``, ``orders``,
``results``, ``sample``, ``outbox``, ``unmatched``, ``tail``, ``top``): they open the same
store the running daemon uses, SQLite or PostgreSQL, while it runs.

Resolution, first that applies:

1. ``--store URL`` (or ``LISGW_STORE``): that database;
2. ``--config FILE`` (or ``LISGW_CONFIG``, else ``/etc/lisgw/lisgw.yaml``): the store the
   configuration names (its ``store.url``, or the SQLite file in its ``data_dir``).

The store is never created here: a SQLite file that does not exist, or a database the gateway
has not set up (no ``lisgw run`` yet, or an older schema), is an error that says so, rather
than an empty store that would show nothing is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import click
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lisgw.config import load_config
from lisgw.errors import ConfigError, StoreError
from lisgw.store import migrate
from lisgw.store.database import describe, make_engine

__all__ = [
    "DEFAULT_CONFIG",
    "StoreChoice",
    "open_cli_store",
    "store_options",
]

DEFAULT_CONFIG: Final = Path("/etc/lisgw/lisgw.yaml")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class StoreChoice:
    """What the options said: a store URL, or a configuration file to read it from."""

    store: str | None
    config: Path | None


def store_options(function: F) -> F:
    """Add ``--config`` and ``--store`` to a command; it receives ``choice: StoreChoice``."""
    function = click.option(
        "--store",
        "store_url",
        envvar="LISGW_STORE",
        metavar="URL",
        help="Database URL of the store (sqlite:///… or postgresql+psycopg://…); "
        "overrides --config. Env: LISGW_STORE.",
    )(function)
    function = click.option(
        "--config",
        "config_path",
        envvar="LISGW_CONFIG",
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
        help=f"Gateway configuration whose store to read (default {DEFAULT_CONFIG}). "
        "Env: LISGW_CONFIG.",
    )(function)
    return function


def open_cli_store(store_url: str | None, config_path: Path | None) -> Engine:
    """An engine on the daemon's store, checked to be a lisgw store at the current schema;
    click.ClickException (exit 1) saying what is wrong otherwise."""
    url = store_url or _url_from_config(config_path or DEFAULT_CONFIG, explicit=bool(config_path))
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as error:
        raise click.ClickException(f"not a database URL: {url!r} ({error})") from error
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not os.path.exists(database):
            raise click.ClickException(
                f"store not found: {database or url} does not exist "
                "(has the gateway been started with this configuration? `lisgw run --config …`)"
            )
    try:
        engine = make_engine(url)
    except StoreError as error:
        raise click.ClickException(f"store not reachable: {error}") from error
    try:
        revision = migrate.current(engine)
    except StoreError as error:
        engine.dispose()
        raise click.ClickException(f"store not readable: {error}") from error
    if revision is None:
        engine.dispose()
        raise click.ClickException(
            f"{describe(engine)} is not a lisgw store (no schema): start the gateway once "
            "with `lisgw run` to create it"
        )
    head = migrate.head()
    if revision != head:
        engine.dispose()
        raise click.ClickException(
            f"{describe(engine)} is at schema {revision}, this lisgw expects {head}: "
            "restart the gateway (it upgrades the store) or use the matching lisgw"
        )
    return engine


def _url_from_config(path: Path, *, explicit: bool) -> str:
    if not path.exists():
        hint = "" if explicit else " (give --config FILE or --store URL)"
        raise click.ClickException(f"configuration not found: {path}{hint}")
    try:
        return load_config(path).store_url
    except ConfigError as error:
        problems = "\n  ".join(error.problems)
        raise click.ClickException(f"configuration {path} has errors:\n  {problems}") from error
