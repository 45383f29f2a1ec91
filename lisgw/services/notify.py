"""systemd notifications: READY, WATCHDOG, STOPPING and STATUS over ``$NOTIFY_SOCKET``.

Layer: service (Twisted for the watchdog timer only). The protocol is sd_notify(3): one
datagram of newline-separated ``KEY=VALUE`` assignments sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract socket when it starts with ``@``). A plain
``socket`` does it: no libsystemd, no extra dependency.

``systemd/lisgw.service`` runs the gateway as ``Type=notify`` with ``WatchdogSec=30s``:

* ``READY=1`` once the store is migrated, recovery has run and every link listens (or
  retries): systemd then considers the unit started;
* ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` (sd_watchdog_enabled(3): only when
  ``$WATCHDOG_PID`` is unset or is this process), from the reactor: a reactor that hangs
  stops the pings and systemd restarts the unit;
* ``STOPPING=1`` when a graceful stop begins (SIGTERM), so ``systemctl status`` says so.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing. A notification that cannot
be sent is logged once and otherwise ignored: the gateway's work matters more than its report.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["SystemdNotifier", "WatchdogService", "watchdog_interval"]

_log = Logger()
_MAX_STATUS: Final = 200  # characters of STATUS= shown by systemctl: keep it one line


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half ``$WATCHDOG_USEC``; None when not asked for.

    sd_watchdog_enabled(3): the watchdog applies to this process only when ``$WATCHDOG_PID``
    is unset or names it; a value that is not a positive integer disables it.
    """
    text = environ.get("WATCHDOG_USEC", "").strip()
    owner = environ.get("WATCHDOG_PID", "").strip()
    if not text.isdigit() or int(text) <= 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(text) / 1_000_000 / 2


class SystemdNotifier:
    """Sends sd_notify datagrams to ``$NOTIFY_SOCKET`` (module docstring)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = watchdog_interval(env)
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """True when run by systemd with a notification socket."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True when it was sent."""
        if self.address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8", errors="replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(data, self.address)
        except OSError as error:
            if not self._failed:  # once: a missing socket would otherwise log every ping
                _log.warn("systemd notification not sent: {error}", error=str(error))
            self._failed = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *_status(status))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status(text))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None


def _status(text: str) -> tuple[str, ...]:
    line = " ".join(text.split())[:_MAX_STATUS]
    return (f"STATUS={line}",) if line else ()


def _socket_address(value: str) -> str | None:
    """The address to send to: a path, or an abstract name (``@name`` → ``\\0name``)."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # sd_notify(3) accepts only absolute paths and abstract names (vsock: not here)


class WatchdogService(Service):
    """Pings the systemd watchdog every ``notifier.watchdog_interval`` seconds while running.

    The pings come from the reactor's own timer: if the reactor blocks (a stuck thread, a
    busy loop), they stop and systemd restarts the gateway after WatchdogSec.
    """

    def __init__(self, notifier: SystemdNotifier, *, clock: IReactorTime) -> None:
        self.notifier = notifier
        self.clock = clock
        self.name = "systemd-watchdog"
        self._loop: LoopingCall | None = None
        self._done: Deferred[LoopingCall] | None = None

    def startService(self) -> Deferred[None]:
        self.running = True
        interval = self.notifier.watchdog_interval
        if interval is None or not self.notifier.enabled:
            return succeed(None)
        loop = LoopingCall(self.notifier.watchdog)
        loop.clock = self.clock
        self._loop = loop
        self._done = loop.start(interval, now=True)
        self._done.addErrback(lambda failure: _log.failure("watchdog pings failed", failure))
        _log.info("systemd watchdog: a ping every {interval:.3g} s", interval=interval)
        return succeed(None)

    def stopService(self) -> Deferred[None]:
        self.running = False
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        return succeed(None)
