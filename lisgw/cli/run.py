"""``lisgw run --config FILE``: the gateway in the foreground, as systemd runs it.

Layer: interface (the top of the import graph). Reads the configuration with
``lisgw.config.load_config`` (every problem printed, exit status 2), starts logging, builds
the service tree (``lisgw.services.gateway.Gateway``) and runs the Twisted reactor until
SIGTERM or SIGINT; then stops the tree gracefully (frames being committed are committed and
acknowledged, links closed, the outbox's pass recorded) and exits 0.

Exit status: 0 after a graceful stop, 1 when the gateway could not start (store unreachable,
port taken, migration failed) or failed while running, 2 for a configuration error.
systemd's ``Restart=on-failure`` restarts it on 1, not on 2 (``ExecStartPre`` runs ``lisgw
config check`` first anyway).

Logs: twisted.logger to stdout, one line per event: ``text`` (the default; journald adds the
time and the unit) or ``json`` (one JSON object per line: time, level, namespace, message and
the event's own fields). Only INFO and above are written; patient data is logged at DEBUG at
most, so it never reaches these logs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

import click
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer

from lisgw.config import load_config
from lisgw.errors import ConfigError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "JsonLogObserver",
    "json_observer",
    "run",
    "start_logging",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
_SCALARS: Final = (str, int, float, bool, type(None))


@click.command()
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gateway configuration (YAML; config/README.md documents every key).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines on stdout: text for people and journald, json for log collectors.",
)
def run(config_file: Path, log_format: str) -> None:
    """Run the gateway: analyzer links, HIS order listener and result delivery.

    Runs in the foreground until SIGTERM (systemctl stop) or Ctrl-C, then stops gracefully:
    frames being stored are stored and acknowledged, a half-received transmission stays
    incomplete (never a result), undelivered results stay queued. Under systemd
    (Type=notify) it reports READY=1 once every link is up and pings the watchdog.
    Exit status: 0 stopped, 1 failed, 2 configuration error.

    \b
    Examples:
      lisgw run --config /etc/lisgw/lisgw.yaml
      lisgw run --config config/lisgw.yaml --log-format json
    """
    try:
        config = load_config(config_file)
    except ConfigError as error:
        for problem in error.problems:
            click.echo(problem, err=True)
        click.echo(f"{len(error.problems)} problem(s): not started", err=True)
        sys.exit(EXIT_CONFIG)
    start_logging(sys.stdout, log_format)
    # Imported here: the service tree pulls in Twisted's reactor, which `--help` does not need.
    from lisgw.services.gateway import serve

    sys.exit(serve(config))


def start_logging(stream: IO[str], log_format: str, level: LogLevel = LogLevel.info) -> None:
    """Send twisted.logger's events at ``level`` and above to ``stream``, text or JSON."""
    observer = json_observer(stream) if log_format == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [predicate])],
        discardBuffer=False,
        redirectStandardIO=False,
    )


def json_observer(stream: IO[str]) -> ILogObserver:
    """One JSON object per line: ``time`` (ISO 8601 UTC), ``level``, ``namespace``,
    ``message`` (the formatted text), ``failure`` (a traceback, when there is one) and the
    event's own fields that are plain values (identifiers, counts, names)."""
    return JsonLogObserver(stream)


@implementer(ILogObserver)
class JsonLogObserver:
    """Writes each event as one line of JSON (``json_observer``)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: LogEvent) -> None:
        self.stream.write(json.dumps(_json_record(event), ensure_ascii=False, default=str) + "\n")
        self.stream.flush()


def _json_record(event: LogEvent) -> dict[str, Any]:
    level = event.get("log_level")
    at = event.get("log_time") or time.time()
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z",
        "level": level.name if isinstance(level, LogLevel) else "info",
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and isinstance(value, _SCALARS):
            record[key] = value
    return record
