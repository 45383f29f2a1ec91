"""What the technician commands share: options, times, masking, tables, JSON, the store.

Layer: interface (internal to lisgw.cli). Used by ``status``, ``orders``, ``results``,
``sample``, ``outbox`` and ``unmatched``.

* Times are float epoch seconds in the store; tables show them in local time, compact:
  ``14:03:07`` today, ``01-02 14:03`` this year, ``2025-12-30`` before. JSON keeps the
  exact floats (``*_at`` keys, seconds since the epoch, UTC), so scripts lose nothing.
* ``--since``/``--until`` take ``2026-01-02``, ``2026-01-02T14:00``, ``14:00`` (today), or
  an age: ``90s``, ``15m``, ``2h``, ``3d`` (that long ago).
* Patient names are masked, in tables and JSON alike, unless ``--show-patient``: each name
  part keeps its initial (``DOE^JANE`` → ``D*** J***``).
* Tables are plain text sized for 80 columns (long cells cut with ``…``): stable to read by
  eye and by ``grep``, whether or not the output is a terminal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import getpass
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from lisgw.cli.storeopt import open_cli_store
from lisgw.errors import StoreError
from lisgw.routing import normalize_sample_id
from lisgw.store.runner import Store
from lisgw.store.views import TimeWindow

F = TypeVar("F", bound=Callable[..., Any])
WIDTH: Final = 80
_AGE: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME_PARTS: Final = re.compile(r"[\^\s,]+")


# -- options -----------------------------------------------------------------------------


def format_option(function: F) -> F:
    return click.option(
        "--format",
        "output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people, json for scripts.",
    )(function)


def patient_option(function: F) -> F:
    return click.option(
        "--show-patient",
        is_flag=True,
        help="Show patient names in clear (masked by default, e.g. D*** J***).",
    )(function)


@dataclasses.dataclass(frozen=True, slots=True)
class ListFilters:
    """What ``filter_options`` collects for a listing: the sample ID normalized as routing
    stores it, the time window parsed, and ``now`` (the moment the window was read from,
    also what the table's times are shown against). ``state`` is as typed: each listing
    checks it against its own states."""

    analyzer: str | None
    sample_id: str | None
    state: str | None
    window: TimeWindow
    limit: int
    now: float


def filter_options(*, state_help: str) -> Callable[[F], F]:
    """--analyzer, --sample, --state, --since, --until, --limit, handed to the command as one
    ``filters: ListFilters`` argument."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def collected(
            *args: Any,
            analyzer: str | None,
            sample: str | None,
            state: str | None,
            since: str | None,
            until: str | None,
            limit: int,
            **kwargs: Any,
        ) -> Any:
            now = time.time()
            filters = ListFilters(
                analyzer=analyzer,
                sample_id=normalize_sample_id(sample) if sample is not None else None,
                state=state,
                window=window(since, until, now),
                limit=limit,
                now=now,
            )
            return function(*args, filters=filters, **kwargs)

        command: Any = collected
        for option in reversed(
            (
                click.option("--analyzer", metavar="NAME", help="Only this analyzer connection."),
                click.option("--sample", metavar="ID", help="Only this sample ID."),
                click.option("--state", metavar="STATE", help=state_help),
                click.option(
                    "--since", metavar="WHEN", help="From: 2026-01-02[T14:00], 14:00, 2h ago."
                ),
                click.option("--until", metavar="WHEN", help="Before (same forms as --since)."),
                click.option(
                    "--limit",
                    type=click.IntRange(1, 100_000),
                    default=50,
                    show_default=True,
                    help="At most this many rows, newest first.",
                ),
            )
        ):
            command = option(command)
        return command  # type: ignore[no-any-return]

    return decorate


def user_option(function: F) -> F:
    return click.option(
        "--user",
        metavar="NAME",
        help="Name written to the audit trail (default: your login name; for sudo).",
    )(function)


def actor(user: str | None) -> str:
    """The technician's name for the audit trail."""
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError) as error:
        raise click.ClickException("cannot tell who you are: give --user NAME") from error


# -- the store ---------------------------------------------------------------------------


@contextmanager
def cli_store(store_url: str | None, config_path: Path | None) -> Iterator[Store]:
    """The daemon's store (lisgw.cli.storeopt), closed on exit; store errors exit 1."""
    store = Store(open_cli_store(store_url, config_path))
    try:
        yield store
    except StoreError as error:
        raise click.ClickException(str(error)) from error
    finally:
        store.close()


# -- times -------------------------------------------------------------------------------


def parse_when(text: str | None, now: float, option: str) -> float | None:
    """``--since``/``--until`` (module docstring) as epoch seconds; BadParameter otherwise."""
    if text is None:
        return None
    value = text.strip()
    age = _AGE.match(value)
    if age:
        return now - float(age.group(1)) * _UNITS[age.group(2)]
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", value):
            today = dt.datetime.fromtimestamp(now).date().isoformat()
            return dt.datetime.fromisoformat(f"{today}T{value}").timestamp()
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        pass
    raise click.BadParameter(
        f"{text!r} is not a time: use 2026-01-02, 2026-01-02T14:00, 14:00 or an age like 2h",
        param_hint=option,
    )


def window(since: str | None, until: str | None, now: float) -> TimeWindow:
    return TimeWindow(parse_when(since, now, "--since"), parse_when(until, now, "--until"))


def when(at: float | None, now: float | None = None) -> str:
    """Local time, compact (module docstring): at most 11 characters."""
    if at is None:
        return "-"
    moment = dt.datetime.fromtimestamp(at)
    today = dt.datetime.fromtimestamp(time.time() if now is None else now).date()
    if moment.date() == today:
        return moment.strftime("%H:%M:%S")
    if moment.year == today.year:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%Y-%m-%d")


def full_time(at: float | None) -> str:
    """Local date and time to the second, for detail views."""
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float) -> str:
    """A duration as people say it: 42 s, 5 min, 3 h, 2 d."""
    if seconds < 90:
        return f"{max(0, int(seconds))} s"
    if seconds < 90 * 60:
        return f"{int(seconds // 60)} min"
    if seconds < 36 * 3600:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


# -- patient data ------------------------------------------------------------------------


def mask_name(name: str) -> str:
    """``DOE^JANE`` → ``D*** J***``; empty stays empty."""
    parts = [part for part in _NAME_PARTS.split(name) if part]
    return " ".join(f"{part[0]}***" for part in parts)


def patient(name: str, show: bool) -> str:
    return name if show else mask_name(name)


# -- output ------------------------------------------------------------------------------


def as_json(value: Any) -> Any:
    """Dataclasses, mappings and sequences as JSON values (bytes as their size)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, bytes):
        return len(value)
    return value


def emit_json(value: Any) -> None:
    click.echo(json.dumps(as_json(value), indent=2, ensure_ascii=False))


def cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caps: Sequence[int]) -> str:
    """A plain table; each column as wide as its content up to its cap, the last column
    taking what is left of 80 characters."""
    cells = [[str(c) for c in row] for row in rows]
    widths = []
    for i, header in enumerate(headers):
        content = max([len(header)] + [len(" ".join(r[i].split())) for r in cells])
        widths.append(min(content, caps[i]))
    used = sum(widths[:-1]) + 2 * (len(widths) - 1)
    widths[-1] = max(len(headers[-1]), min(widths[-1], WIDTH - used))
    lines = []
    for row in [list(headers), *cells]:
        padded = [cut(cell, w).ljust(w) for cell, w in zip(row, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def echo_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], caps: Sequence[int], empty: str
) -> None:
    click.echo(table(headers, rows, caps) if rows else empty)


def fail(message: str) -> click.ClickException:
    """An error for the technician: exit status 1, message on stderr."""
    return click.ClickException(message)
