"""OrderDownloader asks the store only when it may find due tests (lisgw.services.download):
at start, when woken, after a delivery, when a retry is due, else every idle_recheck seconds.
A fake store counts the lookups; task.Clock drives time."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from lisgw.services.download import OrderDownloader


class _Store:
    def __init__(self) -> None:
        self.lookups = 0

    def run(self, unit: Any, *args: Any, **kwargs: Any) -> Deferred[list[object]]:
        assert unit.__name__ == "due_downloads"
        self.lookups += 1
        return succeed([])


class _Ingest:
    name = "xn-1"
    connected_line = object()  # a line is up: only the schedule decides


def _downloader(clock: Clock, store: _Store) -> OrderDownloader:
    service = OrderDownloader(
        store,  # type: ignore[arg-type]
        _Ingest(),  # type: ignore[arg-type]
        clock,
        poll_interval=0.5,
        idle_recheck=5.0,
    )
    service.startService()
    return service


def test_an_idle_connection_is_looked_at_every_idle_recheck_not_every_tick() -> None:
    clock, store = Clock(), _Store()
    service = _downloader(clock, store)
    assert store.lookups == 1  # at start: tests left by a restart
    clock.pump([0.5] * 9)  # 4.5 s of ticks
    assert store.lookups == 1
    clock.pump([0.5] * 2)  # 5.5 s
    assert store.lookups == 2
    service.stopService()


def test_wake_makes_the_next_tick_look() -> None:
    clock, store = Clock(), _Store()
    service = _downloader(clock, store)
    clock.advance(0.5)
    assert store.lookups == 1
    service.wake()
    clock.advance(0.5)
    assert store.lookups == 2
    clock.advance(0.5)
    assert store.lookups == 2  # back to the idle schedule
    service.stopService()


def test_no_line_no_lookup() -> None:
    clock, store = Clock(), _Store()
    ingest = _Ingest()
    ingest.connected_line = None  # type: ignore[assignment]
    service = OrderDownloader(store, ingest, clock)  # type: ignore[arg-type]
    service.startService()
    clock.pump([0.5] * 30)
    assert store.lookups == 0
    service.stopService()
