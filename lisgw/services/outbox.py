"""Outbox dispatcher: result messages from the store to the HIS over MLLP, each until ACKed.

Layer: service (Twisted). Claims due outbox rows with the store's units of work
(lisgw.store.work.claim_outbox …, on the store's thread pool), sends each payload over an
MLLP client connection (lisgw.transports.mllp, TCP or TLS endpoint from lisgw.transports.tls),
reads the reply with lisgw.his.ack.read_ack, and records the outcome:

* ``AA`` / ``CA`` → delivered;
* ``AE`` / ``AR`` / ``CE`` / ``CR`` → dead letter with the HIS's reason (issue 5: the HIS said
  no; a technician decides, and may requeue);
* no ACK within ``ack_timeout``, connection refused or lost, TLS refused, a reply that is not
  an ACK or acknowledges another control ID → retry later, with exponential backoff and
  jitter (lisgw.services.backoff, 1 s … 5 min ± 20 %), and dead letter once retries have
  lasted the policy's horizon (72 h by default: an overnight outage is well covered).

Per-sample order: the store never hands out a row while an earlier row of the same sample is
pending or in flight, so a failing row holds back the later results of its sample — and only
those. Each pass claims up to ``batch_size`` rows; rows are spread over ``connections``
parallel MLLP connections (lanes) by sample, and each lane sends one message at a time and
waits for its ACK (HL7 original mode). Outcomes are committed together at the end of a pass.

Exactly once, as far as the store goes: a row is delivered once it is marked delivered, which
happens only on an AA. A crash between the AA and that commit leaves the row in flight until
its lease runs out; it is then sent again with the same MSH-10 (derived from the results'
content identities), so the HIS can drop the copy.

Time comes from the injected clock (a ``Clock`` in tests), I/O from the endpoint. Passes run
every ``poll_interval`` seconds, at once after a full batch, and at once after ``wake()``.
Stopping aborts the connections (a message in flight is retried later), records the outcomes
of the current pass and releases the rows it had not sent yet.

Patient data stays out of the logs above DEBUG: row IDs, control IDs, codes and counts only
(the HIS's reason may name a patient; it is kept in the row's ``last_error``).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.errors import CodecError, LocalProtocolError, RemoteProtocolError
from lisgw.his.ack import read_ack
from lisgw.services.backoff import BackoffPolicy, next_attempt_at
from lisgw.store import work
from lisgw.store.outbox import outbox_delivered_many
from lisgw.store.records import OutboxRow
from lisgw.store.runner import Store
from lisgw.transports.mllp import MllpClientProtocol, MllpSettings, connect_mllp

__all__ = ["DispatcherSettings", "OutboxDispatcher", "PassReport"]

_log = Logger()


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    """How the dispatcher works. ``worker`` names this process in claims (unique per process).

    The lease of a claim covers a whole pass of one lane at the worst: every row waiting its
    full ``ack_timeout``, plus ``lease_margin`` for the commits.
    """

    worker: str
    batch_size: int = 50
    connections: int = 1
    poll_interval: float = 1.0
    ack_timeout: float = 30.0
    lease_margin: float = 60.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    encoding: str = "utf-8"  # the HIS profile's encoding, for reading ACKs
    mllp: MllpSettings = field(default_factory=lambda: MllpSettings(idle_timeout=300.0))
    # On stop, how long the message in flight may wait for its ACK before it is aborted
    # (well inside systemd's 90 s TimeoutStopSec).
    stop_grace: float = 10.0

    @property
    def lease(self) -> float:
        return self.batch_size * self.ack_timeout + self.lease_margin


@dataclass(frozen=True, slots=True)
class PassReport:
    """What one pass did."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0


class _Kind(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    RELEASE = "release"  # not sent (stopping): claimable again at once


@dataclass(frozen=True, slots=True)
class _Outcome:
    row: OutboxRow
    kind: _Kind
    reason: str = ""
    next_attempt_at: float = 0.0


class _ConnectFailed(Exception):
    """The HIS could not be reached in this pass: the other rows do not try again."""


class OutboxDispatcher(Service):
    """Delivers the outbox to the HIS (module docstring).

    ``startService`` and ``stopService`` return Deferreds: await them (the service tree does).
    ``run_once()`` runs one pass now (after any pass in progress), for tests and the CLI.
    """

    def __init__(
        self,
        store: Store,
        *,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        settings: DispatcherSettings,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if settings.batch_size < 1 or settings.connections < 1:
            raise ValueError("batch_size and connections must be at least 1")
        self.store = store
        self.endpoint = endpoint
        self.clock = clock
        self.settings = settings
        self.rand = rand
        self.name = f"outbox:{settings.worker}"
        self._lock = DeferredLock()
        self._timer: IDelayedCall | None = None
        self._stopping = False
        self._lanes: list[MllpClientProtocol | None] = [None] * settings.connections
        self._unreachable: str | None = None

    # -- service

    def startService(self) -> Deferred[None]:
        self.running = True
        self._stopping = False
        self._schedule(0)
        _log.info("outbox dispatcher {worker} started", worker=self.settings.worker)
        return succeed(None)

    def stopService(self) -> Deferred[None]:
        self.running = False
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        # The message in flight may still get its ACK within the grace, so that a result the
        # HIS has taken is recorded as delivered; rows not yet sent are released. Past the
        # grace the send is aborted: the row stays queued and goes again with the same MSH-10.
        grace = self.clock.callLater(self.settings.stop_grace, self._abort_lanes)
        await self._lock.acquire()  # the pass in progress records its outcomes
        self._lock.release()
        if grace.active():
            grace.cancel()
        await self._close_lanes()
        _log.info("outbox dispatcher {worker} stopped", worker=self.settings.worker)

    def _abort_lanes(self) -> None:
        for client in self._lanes:
            if client is not None:
                client.abort()  # the message in flight fails: retried later, never lost

    def wake(self) -> None:
        """New rows were queued: run a pass at once (when the service is running)."""
        self._schedule(0)

    def run_once(self) -> Deferred[PassReport]:
        """Run one pass now, after the pass in progress if there is one."""
        return self._lock.run(lambda: Deferred.fromCoroutine(self._pass()))

    # -- scheduling

    def _schedule(self, delay: float) -> None:
        if not self.running or self._stopping:
            return
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() > self.clock.seconds() + delay:
                timer.reset(delay)
            return
        self._timer = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        ran = self.run_once()
        ran.addCallbacks(self._after_pass, self._pass_failed)

    def _after_pass(self, report: PassReport) -> None:
        full = report.claimed >= self.settings.batch_size
        self._schedule(0 if full else self.settings.poll_interval)

    def _pass_failed(self, failure: Failure) -> None:
        _log.failure("outbox pass failed; trying again later", failure)
        self._schedule(self.settings.poll_interval)

    # -- one pass

    async def _pass(self) -> PassReport:
        if self._stopping:
            return PassReport()
        settings = self.settings
        now = self.clock.seconds()
        rows = await self.store.run(
            work.claim_outbox, settings.worker, now, settings.batch_size, settings.lease
        )
        if not rows:
            return PassReport()
        self._unreachable = None
        lanes = self._split(rows)
        results = await gatherResults(
            [Deferred.fromCoroutine(self._run_lane(i, lane)) for i, lane in enumerate(lanes)]
        )
        outcomes = [outcome for lane in results for outcome in lane]
        await self.store.run(_record_outcomes, outcomes, settings.worker, self.clock.seconds())
        return self._report(rows, outcomes)

    def _split(self, rows: Sequence[OutboxRow]) -> list[list[OutboxRow]]:
        """Rows by lane: a sample always in the same lane, in id order (claim order)."""
        lanes: list[list[OutboxRow]] = [[] for _ in self._lanes]
        by_sample: dict[str, int] = {}
        for row in rows:
            lane = by_sample.setdefault(row.sample_id, len(by_sample) % len(lanes))
            lanes[lane].append(row)
        return lanes

    async def _run_lane(self, lane: int, rows: Sequence[OutboxRow]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        held: dict[str, _Outcome] = {}  # samples whose earlier row failed in this pass
        for row in rows:
            earlier = held.get(row.sample_id)
            if self._stopping:
                reason = "released: the dispatcher stopped before sending"
                outcome = _Outcome(row, _Kind.RELEASE, reason, self.clock.seconds())
            elif earlier is not None:
                reason = "held back: an earlier message of the sample was not delivered"
                outcome = _Outcome(row, _Kind.RELEASE, reason, earlier.next_attempt_at)
            else:
                outcome = await self._deliver(lane, row)
            if outcome.kind in (_Kind.RETRY, _Kind.RELEASE):  # a dead row blocks nothing
                held.setdefault(row.sample_id, outcome)
            outcomes.append(outcome)
        return outcomes

    async def _deliver(self, lane: int, row: OutboxRow) -> _Outcome:
        try:
            client = await self._client(lane)
            reply = await client.request(row.payload, timeout=self.settings.ack_timeout)
        except _ConnectFailed as exc:
            return self._failed(row, str(exc))
        except LocalProtocolError as exc:  # the payload cannot be framed: sending will never work
            return _Outcome(row, _Kind.DEAD, f"cannot be sent over MLLP: {exc}")
        except RemoteProtocolError as exc:  # timeout, connection lost, TLS refused, oversize
            return self._failed(row, str(exc))
        try:
            ack = read_ack(reply.payload, self.settings.encoding)
        except CodecError as exc:
            self._drop(lane)
            return self._failed(row, f"the reply is not an ACK: {exc}")
        if ack.control_id != row.control_id:
            self._drop(lane)  # out of step with the HIS: start afresh on a new connection
            reason = f"ACK for {ack.control_id!r}, the message sent was {row.control_id!r}"
            return self._failed(row, reason)
        if ack.accepted:
            _log.debug("outbox row {id} delivered ({code})", id=row.id, code=ack.code)
            return _Outcome(row, _Kind.DELIVERED)
        _log.warn(
            "outbox row {id} (MSH-10 {control_id}) refused by the HIS with {code}: dead letter",
            id=row.id,
            control_id=row.control_id,
            code=ack.code,
        )
        return _Outcome(row, _Kind.DEAD, f"HIS answered {ack.code}: {ack.text or 'no reason'}")

    def _failed(self, row: OutboxRow, error: str) -> _Outcome:
        """A failed attempt: retry with backoff, or give up once the horizon is reached."""
        now = self.clock.seconds()
        policy = self.settings.backoff
        later = next_attempt_at(policy, failures=row.attempts, now=now, rand=self.rand())
        _log.debug(
            "outbox row {id} attempt {n} failed: {error}", id=row.id, n=row.attempts, error=error
        )
        if later is None:
            reason = f"gave up after {row.attempts} attempts: {error}"
            _log.warn(
                "outbox row {id}: {n} attempts failed: dead letter", id=row.id, n=row.attempts
            )
            return _Outcome(row, _Kind.DEAD, reason)
        return _Outcome(row, _Kind.RETRY, error, later)

    async def _client(self, lane: int) -> MllpClientProtocol:
        client = self._lanes[lane]
        if client is not None and not client.lost:
            return client
        if self._unreachable is not None:
            raise _ConnectFailed(self._unreachable)
        try:
            client = await connect_mllp(
                self.endpoint, clock=self.clock, settings=self.settings.mllp
            )
        except Exception as exc:  # refused, unreachable, DNS, timeout: all mean "not now"
            self._unreachable = f"cannot connect to the HIS: {exc}"
            _log.warn("outbox: {why}", why=self._unreachable)
            raise _ConnectFailed(self._unreachable) from exc
        self._lanes[lane] = client
        return client

    def _drop(self, lane: int) -> None:
        client = self._lanes[lane]
        if client is not None:
            client.abort()

    async def _close_lanes(self) -> None:
        lanes, self._lanes = self._lanes, [None] * len(self._lanes)
        await gatherResults([c.close() for c in lanes if c is not None], consumeErrors=True)

    def _report(self, rows: Sequence[OutboxRow], outcomes: Sequence[_Outcome]) -> PassReport:
        counts = {kind: 0 for kind in _Kind}
        for outcome in outcomes:
            counts[outcome.kind] += 1
        report = PassReport(
            claimed=len(rows),
            delivered=counts[_Kind.DELIVERED],
            retried=counts[_Kind.RETRY],
            dead=counts[_Kind.DEAD],
            released=counts[_Kind.RELEASE],
        )
        _log.info(
            "outbox pass: {claimed} claimed, {delivered} delivered, {retried} to retry, "
            "{dead} dead, {released} released",
            claimed=report.claimed,
            delivered=report.delivered,
            retried=report.retried,
            dead=report.dead,
            released=report.released,
        )
        return report


def _record_outcomes(
    conn: sa.Connection, outcomes: Sequence[_Outcome], worker: str, now: float
) -> None:
    """One unit of work: the outcomes of a pass, committed together (the delivered rows,
    the common case, in one statement)."""
    delivered = [o.row.id for o in outcomes if o.kind is _Kind.DELIVERED]
    outbox_delivered_many(conn, delivered, now=now, worker=worker)
    for outcome in outcomes:
        row_id = outcome.row.id
        if outcome.kind is _Kind.DELIVERED:
            continue
        if outcome.kind is _Kind.DEAD:
            work.outbox_dead(conn, row_id, worker=worker, reason=outcome.reason, now=now)
        else:
            work.outbox_retry(
                conn,
                row_id,
                worker=worker,
                next_attempt_at=outcome.next_attempt_at,
                error=outcome.reason,
                now=now,
            )
