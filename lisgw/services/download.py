"""Order download: queued tests sent to an ASTM analyzer as order messages (E1381 sender).

Layer: service (Twisted). One ``OrderDownloader`` per analyzer connection whose order mode
downloads (``orders: batch`` or ``both``). It looks for due queued tests
(lisgw.store.downloads.due_downloads) when it may find some: at once when woken (``wake``:
the gateway calls it when the HIS listener has committed tests for this connection), when a
failed download's retry is due, right after a delivered batch (there may be more), and
otherwise every ``idle_recheck`` seconds (5 s: tests queued by another gateway node sharing
the store, or left by a restart). A tick every ``poll_interval`` (0.5 s) checks those times
without touching the store, so two hundred idle analyzers cost no queries. When there are
due tests and a line of the connection is connected with no download in flight, it builds one
message for the batch (lisgw.orders_out: H, then P and O per sample, L) and hands it to the
line's ``AstmLinkProtocol.send_message``. The link bids for the line when it is idle and
resolves contention (E1381 §6.2.7: the instrument wins, the host waits and bids again).

* Delivered (every frame ACKed, EOT sent): the message is kept (outbound, ``orders``) and
  its tests marked sent.
* Not delivered (NAK six times, no reply, the analyzer busy, the line lost): the tests stay
  queued with ``attempts`` + 1, ``last_error`` and ``next_attempt_at`` (the outbox backoff
  policy, lisgw.services.backoff: 1 s doubling to 5 min ± 20 %), retried when due; never
  given up (a technician sees and cancels them). A line that is down means no attempt at
  all: the tests wait, unchanged, until a line is up.

The store failing is logged and the poll goes on. No patient data is logged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.errors import LisgwError
from lisgw.orders_out import build_astm_orders, group_by_sample
from lisgw.services.backoff import BackoffPolicy
from lisgw.services.ingest import AnalyzerIngest
from lisgw.services.responder import astm_now
from lisgw.store.downloads import download_failed, due_downloads, record_download
from lisgw.store.runner import Store
from lisgw.transports.astm import AstmLinkProtocol

__all__ = ["DOWNLOAD_POLL_INTERVAL", "IDLE_RECHECK", "OrderDownloader"]

_log = Logger()
DOWNLOAD_POLL_INTERVAL: Final = 0.5
IDLE_RECHECK: Final = 5.0
BATCH_TESTS: Final = 200  # queued tests per message at most (whole samples)


class OrderDownloader(Service):
    """Sends one connection's queued tests to its analyzer (module docstring)."""

    def __init__(
        self,
        store: Store,
        ingest: AnalyzerIngest,
        clock: IReactorTime,
        *,
        poll_interval: float = DOWNLOAD_POLL_INTERVAL,
        idle_recheck: float = IDLE_RECHECK,
        backoff: BackoffPolicy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.clock = clock
        self.name = f"downloads {ingest.name}"
        self.poll_interval = poll_interval
        self.idle_recheck = idle_recheck
        self.backoff = backoff or BackoffPolicy()
        self.rand = rand
        self.delivered = 0  # messages delivered
        self.failures = 0  # consecutive failed attempts (reset by a delivery)
        self._loop: LoopingCall | None = None
        self._busy: Deferred[None] | None = None
        self._next_look = 0.0  # the store is not asked before this time (module docstring)

    def wake(self) -> None:
        """Tests were queued for this connection: look at the next tick."""
        self._next_look = 0.0

    def startService(self) -> None:  # Service's own is untyped: set running ourselves
        self.running = True
        loop = LoopingCall(self.poll)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.poll_interval, now=True).addErrback(self._loop_failed)

    def stopService(self) -> Deferred[None]:
        """Stop polling; fires once the download in flight (if any) is settled."""
        self.running = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        busy = self._busy
        if busy is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        busy.addBoth(lambda _: done.callback(None))
        return done

    def poll(self) -> Deferred[None] | None:
        """One look for due tests; nothing when a download is in flight or no line is up."""
        if self._busy is not None or self.clock.seconds() < self._next_look:
            return None
        line = self.ingest.connected_line
        if line is None:
            return None
        job = Deferred.fromCoroutine(self._download(line))
        job.addErrback(self._failed)
        self._busy = job

        def settled(_: object) -> None:
            self._busy = None

        job.addBoth(settled)
        return None

    async def _download(self, line: AstmLinkProtocol) -> None:
        now = self.clock.seconds()
        self._next_look = now + self.idle_recheck
        queued = await self.store.run(due_downloads, self.ingest.name, now=now, limit=BATCH_TESTS)
        if not queued:
            return
        samples = group_by_sample(queued)
        queue_ids = [q for sample in samples for q in sample.queue_ids]
        profile = self.ingest.reader.driver
        try:
            records = build_astm_orders(
                profile,
                samples,
                now_timestamp=astm_now(now),
                encoding=profile.charset.encoding or self.ingest.connection.encoding,
            )
        except LisgwError as error:
            await self._give_up_for_now(queue_ids, f"order message not built: {error}")
            return
        outcome = await line.send_message(records)
        if not outcome.delivered:
            await self._give_up_for_now(queue_ids, outcome.reason or "not delivered")
            return
        raw = b"".join(record + b"\r" for record in records)
        done = self.clock.seconds()
        await self.store.run(record_download, self.ingest.name, raw, queue_ids, now=done)
        self.failures = 0
        self.delivered += 1
        self._next_look = 0.0  # a full batch may have left more behind
        _log.info(
            "{name}: order download delivered: {samples} sample(s), {tests} test(s)",
            name=self.name,
            samples=len(samples),
            tests=len(queue_ids),
        )

    async def _give_up_for_now(self, queue_ids: list[int], reason: str) -> None:
        self.failures += 1
        delay = self.backoff.delay(self.failures, self.rand())
        now = self.clock.seconds()
        await self.store.run(download_failed, queue_ids, error=reason, next_attempt_at=now + delay)
        self._next_look = min(self._next_look, now + delay)
        _log.warn(
            "{name}: order download of {tests} test(s) failed ({reason}); retry in {delay:.1f} s",
            name=self.name,
            tests=len(queue_ids),
            reason=reason,
            delay=delay,
        )

    def _failed(self, failure: Failure) -> None:
        if isinstance(failure.value, LisgwError):
            _log.error("{name}: download failed: {error}", name=self.name, error=str(failure.value))
            return
        _log.failure("{name}: download failed", failure, name=self.name)

    def _loop_failed(self, failure: Failure) -> None:
        _log.failure("{name}: poll loop stopped", failure, name=self.name)
