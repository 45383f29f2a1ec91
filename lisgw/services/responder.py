"""Host-query responder: an analyzer asks for its orders, the gateway answers from its store.

Layer: service (Twisted). Never calls the HIS: the orders the HIS sent are already in the
store (lisgw.services.his), and the answer is one indexed unit of work
(lisgw.store.downloads.query_lookup) plus a pure build (lisgw.orders_out), well within the
seconds an analyzer waits. The lookup only reads, so it runs through ``Store.read``: on
SQLite it does not queue behind the frame commits and transfers of the other lines (one
writer), which is what made replies slow under load (issue 6). Nothing is lost by that:
the query was stored (its transfer committed) before the lookup, and the reply is recorded
(``record_reply``, a write) once the analyzer accepted it.

* ASTM: the ingest (lisgw.services.ingest) calls ``astm_queries`` once a transfer carrying
  Q records is stored, i.e. after the query's EOT, when the line is idle; the reply is sent
  on the same line with ``AstmLinkProtocol.send_message`` (E1381 sender role: the link
  bids for the line and handles contention). Delivered: the reply is kept (``replies``, the
  query answered) and its tests marked sent. Not delivered (NAK six times, timeout, line
  lost): the tests stay queued and the reason is logged; the query stays open, visible.
* HL7: ``hl7_reply`` builds the RSP^K11 (to a QBP) or the DSR^Q03 / QCK^Q02 "NF" (to a
  v2.3.1 QRY^Q02, lisgw.orders_out.hl7_qry) that the MLLP handler sends instead of the plain
  ACK (the reply is the acknowledgement, HL7 §5.4); it is kept and the tests marked sent
  as it is handed to the connection (MLLP has no acknowledgement of an acknowledgement).
  A QRY asks for every sample in QRD-8 (multi-tube); a QBP for the one in QPD-4.
* Query cancel: ``apply_query_cancel`` (called by the MLLP handler for a QCN^J01, whatever
  the order mode) marks the open query with the cancel's tag cancelled; the analyzer gets
  its ACK AA either way, an unknown tag only noted in the log. An ASTM Q record with status
  ``A`` (E1394 §12.1.13 abort, ``astm-q-abort``) is not answered: the line's open queries up
  to it are cancelled (only on lines with a responder).

Only connections whose order mode answers queries (``orders: query`` or ``both``) get a
responder (lisgw.services.gateway). A driver whose reply form is ``none``, or a form not
implemented (``mindray``), gets no reply: the HL7 analyzer gets its ACK, and a
warning says why. No patient data is logged: counts, sample counts, reasons.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.assemble import assemble_records
from lisgw.astm.message import AstmMessage
from lisgw.errors import LisgwError
from lisgw.hl7.message import Hl7Message, parse_message
from lisgw.model import Kind
from lisgw.orders_out import (
    ASTM_REPLIES,
    HL7_REPLIES,
    QRY_REPLIES,
    AskedSample,
    SampleOrders,
    asked_samples,
    build_astm_orders,
    build_hl7_reply,
    build_qry_reply,
    group_by_sample,
    is_query_abort,
)
from lisgw.routing import normalize_sample_id
from lisgw.services.his import hl7_now
from lisgw.services.ingest import AnalyzerIngest
from lisgw.services.pipeline import Decoded, TransferStored
from lisgw.store.downloads import QueryLookup, due_downloads, query_lookup, record_reply
from lisgw.store.queries import cancel_open_queries, cancel_query
from lisgw.store.records import QueryRecord
from lisgw.store.runner import Store
from lisgw.transports.astm import AstmLinkProtocol

__all__ = ["HostQueryResponder", "apply_query_cancel", "astm_now"]

_log = Logger()


async def apply_query_cancel(
    store: Store, name: str, decoded: Decoded, now: float
) -> QueryRecord | None:
    """An analyzer's query cancel (HL7 QCN^J01, tag in QID-1): the open query of connection
    ``name`` with that tag becomes cancelled. No open query with the tag (unknown, or already
    answered) is not the analyzer's fault: it is noted, and the cancel is still acknowledged."""
    message = decoded.message
    tag = "" if message.query is None else message.query.query_tag
    cancelled = await store.run(cancel_query, name, tag, now=now)
    if cancelled is None:
        _log.info(
            "{name}: query cancel for tag {tag!r}: no open query with that tag (unknown or "
            "already answered); acknowledged",
            name=name,
            tag=tag,
        )
    else:
        _log.info("{name}: query {id} (tag {tag!r}) cancelled", name=name, id=cancelled.id, tag=tag)
    return cancelled


def astm_now(now: float) -> str:
    """E1394 date and time (YYYYMMDDHHMMSS, §6.6.2) of the epoch time ``now``, in UTC."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(now))


class HostQueryResponder:
    """Answers one analyzer connection's host queries (module docstring)."""

    def __init__(self, store: Store, ingest: AnalyzerIngest, clock: IReactorTime) -> None:
        self.store = store
        self.ingest = ingest
        self.clock = clock
        self.name = ingest.name
        self.answered = 0  # replies delivered
        self.failed = 0  # replies not delivered or not built
        self._numbers = itertools.count(1)
        self._pending: set[Deferred[None]] = set()

    def attach(self) -> None:
        """Answer the ASTM queries the ingest stores from now on."""
        self.ingest.on_queries = self.astm_queries

    # -- ASTM -------------------------------------------------------------------------------

    def astm_queries(
        self, decoded: list[Decoded], stored: TransferStored, line: AstmLinkProtocol | None
    ) -> None:
        """A stored transfer carried host queries: answer each on ``line``."""
        for item, message_id in zip(decoded, stored.message_ids, strict=False):
            message = item.message
            if message.kind is not Kind.QUERY or message.query is None or item.rejected:
                continue
            if message.incomplete:
                continue
            job = Deferred.fromCoroutine(self._answer_astm(item, message_id, line))
            self._pending.add(job)
            job.addErrback(self._failed, "ASTM")
            job.addBoth(self._settled, job)

    async def _answer_astm(
        self, item: Decoded, message_id: int, line: AstmLinkProtocol | None
    ) -> None:
        profile = self.ingest.reader.driver
        query = self._astm_query(item.raw, profile.records_lenient)
        if query is not None and is_query_abort(query):
            await self._astm_abort(message_id)
            return
        if (profile.query.reply or "astm-orders") not in ASTM_REPLIES:
            _log.warn(
                "{name}: host query not answered: driver {driver} replies {reply!r}",
                name=self.name,
                driver=profile.key,
                reply=profile.query.reply,
            )
            return
        asked_query = item.message.query
        asked_ids = [] if asked_query is None else list(asked_query.sample_ids)
        sample_ids = [normalize_sample_id(s) for s in asked_ids]
        lookup = await self._lookup(message_id, sample_ids)
        samples = group_by_sample(lookup.tests, sample_ids or None)
        asked: dict[str, AskedSample] = {}
        if query is not None:
            for sample in asked_samples(query, profile.query.form):
                asked.setdefault(normalize_sample_id(sample.sample_id), sample)
        now = self.clock.seconds()
        records = build_astm_orders(
            profile,
            samples,
            now_timestamp=astm_now(now),
            query=query,
            asked=asked,
            encoding=profile.charset.encoding or self.ingest.connection.encoding,
        )
        if line is None or line.lost:
            self._not_delivered(samples, "the line closed before the reply")
            return
        outcome = await line.send_message(records)
        if not outcome.delivered:
            self._not_delivered(samples, outcome.reason or "not delivered")
            return
        raw = b"".join(record + b"\r" for record in records)
        await self._record(lookup, raw, samples)

    async def _astm_abort(self, message_id: int) -> None:
        """E1394 §12.1.13 status ``A``: the analyzer withdraws its last request; the open
        queries up to this one are cancelled and nothing is sent."""
        now = self.clock.seconds()
        count = await self.store.run(
            cancel_open_queries, self.name, up_to_message_id=message_id, now=now
        )
        _log.info(
            "{name}: host query abort (Q status A): {count} open query(ies) cancelled",
            name=self.name,
            count=count,
        )

    def _astm_query(self, raw: bytes, lenient: bool) -> AstmMessage | None:
        records = [record for record in raw.split(b"\r") if record]
        assembled, _ = assemble_records(
            records, encoding=self.ingest.connection.encoding, lenient=lenient
        )
        return assembled[0].message if assembled else None

    async def _lookup(self, message_id: int, sample_ids: Sequence[str]) -> QueryLookup:
        if sample_ids:
            return await self.store.read(query_lookup, message_id, self.name, sample_ids)
        # E1394 §12.1.3 "ALL": every pending order of this analyzer (what a download sends).
        found = await self.store.read(query_lookup, message_id, self.name, [])
        due = await self.store.read(due_downloads, self.name, now=self.clock.seconds())
        return QueryLookup(found.query_id, tuple(due))

    async def _record(self, lookup: QueryLookup, raw: bytes, samples: list[SampleOrders]) -> None:
        queue_ids = [q for sample in samples for q in sample.queue_ids]
        self.answered += 1
        if lookup.query_id is not None:
            now = self.clock.seconds()
            await self.store.run(record_reply, lookup.query_id, raw, queue_ids, now=now)
        _log.info(
            "{name}: host query answered: {samples} sample(s), {tests} test(s)",
            name=self.name,
            samples=len(samples),
            tests=len(queue_ids),
        )

    def _not_delivered(self, samples: list[SampleOrders], reason: str) -> None:
        self.failed += 1
        _log.warn(
            "{name}: host query reply for {samples} sample(s) not delivered ({reason}); "
            "the tests stay queued",
            name=self.name,
            samples=len(samples),
            reason=reason,
        )

    # -- HL7 --------------------------------------------------------------------------------

    async def hl7_reply(self, decoded: Decoded, stored: TransferStored) -> bytes | None:
        """The reply to a stored HL7 query (None: not a query this driver answers)."""
        message = decoded.message
        if message.kind is not Kind.QUERY or message.query is None or decoded.rejected:
            return None
        profile = self.ingest.reader.driver
        reply = profile.query.reply or "hl7-rsp-k11"
        if reply not in HL7_REPLIES and reply not in QRY_REPLIES:
            _log.warn(
                "{name}: HL7 host query answered with an ACK only: driver {driver} replies "
                "{reply!r}",
                name=self.name,
                driver=profile.key,
                reply=reply,
            )
            return None
        encoding = self.ingest.connection.encoding
        parsed: Hl7Message = parse_message(decoded.raw, encoding=encoding, lenient=True)
        if parsed.segment("QPD") is None and parsed.segment("QRD") is not None:
            return await self._answer_qry(decoded, stored, parsed)
        if parsed.segment("QPD") is None:
            _log.warn("{name}: HL7 query without QPD or QRD: ACK only", name=self.name)
            return None
        sample_ids = [normalize_sample_id(s) for s in message.query.sample_ids][:1]
        message_id = stored.message_ids[0]
        lookup = await self.store.read(query_lookup, message_id, self.name, sample_ids)
        (sample,) = group_by_sample(lookup.tests, sample_ids) or [SampleOrders("")]
        now = self.clock.seconds()
        raw = build_hl7_reply(
            profile,
            parsed,
            sample,
            control_id=f"Q{int(now)}.{next(self._numbers)}"[:20],
            now_timestamp=hl7_now(now),
            encoding=encoding,
        )
        await self._record(lookup, raw, [sample])
        return raw

    async def _answer_qry(
        self, decoded: Decoded, stored: TransferStored, parsed: Hl7Message
    ) -> bytes:
        """QRY^Q02 (v2.3.1 original mode): DSR^Q03 with every asked sample, QCK^Q02 NF when
        none has orders (lisgw.orders_out.hl7_qry)."""
        query = decoded.message.query
        asked = [] if query is None else list(query.sample_ids)
        sample_ids = list(dict.fromkeys(normalize_sample_id(s) for s in asked))
        lookup = await self.store.read(query_lookup, stored.message_ids[0], self.name, sample_ids)
        samples = group_by_sample(lookup.tests, sample_ids)
        now = self.clock.seconds()
        raw = build_qry_reply(
            self.ingest.reader.driver,
            parsed,
            samples,
            control_id=f"Q{int(now)}.{next(self._numbers)}"[:20],
            now_timestamp=hl7_now(now),
            encoding=self.ingest.connection.encoding,
        )
        await self._record(lookup, raw, samples)
        return raw

    def _settled(self, _: object, job: Deferred[None]) -> None:
        self._pending.discard(job)

    def _failed(self, failure: Failure, what: str) -> None:
        self.failed += 1
        if isinstance(failure.value, LisgwError):
            _log.error(
                "{name}: {what} host query not answered: {error}",
                name=self.name,
                what=what,
                error=str(failure.value),
            )
            return
        _log.failure("{name}: {what} host query not answered", failure, name=self.name, what=what)

    def when_idle(self) -> Deferred[list[None]]:
        """Fires once every reply in progress is settled (tests, stop)."""
        return gatherResults(list(self._pending), consumeErrors=True)
