"""Crash recovery: ASTM sessions left open by a crash, processed from their committed frames.

Layer: service core, synchronous (``Store.run_sync``): it runs once at start-up, before any
link opens, so nothing else writes meanwhile. Uses lisgw.assemble (records of the archived
frames) and lisgw.services.pipeline (the same decoding and unit of work as live ingest).

Why it is needed: a frame is acknowledged once it is durable (lisgw.services.journal), but a
transfer is processed only at its end. A process killed in between leaves a session open in
the store with frames the instrument considers delivered and will not send again. For each
such session, recovery reads the frames back (direction "in", wire order), splits them into
records as the link did, and processes them as live ingest does for a transfer that ended
without EOT (lisgw.services.pipeline): every message an ``L`` record closed is routed and
queued for the HIS; the message the frames ran out in is kept as incomplete, never results.

Idempotent: a processed session is closed in the same transaction that keeps its messages,
so a second run finds nothing; a session that somehow has messages already is only closed;
and results are stored once by content identity, whatever happens.

With ``connections`` given, only their sessions are recovered, each read with its own
settings (pinned driver, character set, time zone, line options): several gateway processes
may share one PostgreSQL store, and another process's open sessions are live, not crashed.
Without it, every open ASTM session is recovered, the driver detected from its messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from twisted.logger import Logger

from lisgw.assemble import records_of_frames
from lisgw.config_schema import ConnectionConfig, WireProtocol
from lisgw.drivers import Catalogue
from lisgw.drivers.mapping import TestCodeMap
from lisgw.his.profile import HisProfile
from lisgw.routing import RoutingConfig
from lisgw.services.pipeline import IngestContext, TransferReader, TransferStored, store_transfer
from lisgw.store import work
from lisgw.store.ingest_work import open_sessions, session_message_ids
from lisgw.store.records import Direction, SessionRecord
from lisgw.store.runner import Store

__all__ = ["RECOVERED_REASON", "RecoveryReport", "recover"]

_log = Logger()
RECOVERED_REASON = "recovered: the gateway stopped before EOT"
ALREADY_PROCESSED_REASON = "recovered: already processed"


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What recovery found and did.

    ``sessions``: open ASTM sessions found; ``recovered``: processed from their frames;
    ``already_processed``: only closed (their messages were kept before); ``failed``: left
    open (``problems`` says why; the next start tries again). ``stored`` adds up what the
    recovered sessions gave: messages, new results, duplicates, outbox rows, incomplete.
    """

    sessions: int = 0
    recovered: int = 0
    already_processed: int = 0
    failed: int = 0
    stored: TransferStored = field(default_factory=TransferStored)
    problems: tuple[str, ...] = ()


def recover(
    store: Store,
    catalogue: Catalogue,
    his_profile: HisProfile,
    routing_config: RoutingConfig,
    test_codes: TestCodeMap | None,
    now: float,
    *,
    connections: Sequence[ConnectionConfig] | None = None,
) -> RecoveryReport:
    """Process every ASTM session a crash left open (module docstring); run before links."""
    configs = (
        {c.name: c for c in connections if c.protocol is WireProtocol.ASTM}
        if connections is not None
        else None
    )
    found = store.run_sync(
        open_sessions,
        protocol="astm",
        connections=list(configs) if configs is not None else None,
    )
    recovery = _Recovery(store, catalogue, his_profile, routing_config, test_codes, now, configs)
    for session in found:
        recovery.session(session)
    report = recovery.report(len(found))
    if found:
        _log.info(
            "recovery: {sessions} open session(s): {recovered} recovered, {already} already "
            "processed, {failed} failed; {results} new result(s), {outbox} for the HIS, "
            "{incomplete} incomplete message(s)",
            sessions=report.sessions,
            recovered=report.recovered,
            already=report.already_processed,
            failed=report.failed,
            results=report.stored.results,
            outbox=report.stored.outbox,
            incomplete=report.stored.incomplete,
        )
    return report


class _Recovery:
    def __init__(
        self,
        store: Store,
        catalogue: Catalogue,
        his_profile: HisProfile,
        routing_config: RoutingConfig,
        test_codes: TestCodeMap | None,
        now: float,
        configs: dict[str, ConnectionConfig] | None,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.his_profile = his_profile
        self.routing_config = routing_config
        self.test_codes = test_codes
        self.now = now
        self.configs = configs
        self.readers: dict[str, TransferReader] = {}
        self.recovered = 0
        self.already = 0
        self.problems: list[str] = []
        self.stored = TransferStored()

    def report(self, sessions: int) -> RecoveryReport:
        return RecoveryReport(
            sessions=sessions,
            recovered=self.recovered,
            already_processed=self.already,
            failed=len(self.problems),
            stored=self.stored,
            problems=tuple(self.problems),
        )

    def session(self, session: SessionRecord) -> None:
        try:
            self._session(session)
        except Exception as error:  # one bad session must not stop the start
            problem = f"session {session.id} ({session.connection}): {error}"
            self.problems.append(problem)
            _log.error("recovery: {problem}; left open", problem=problem)

    def _session(self, session: SessionRecord) -> None:
        store = self.store
        if store.run_sync(session_message_ids, session.id):
            store.run_sync(
                work.close_session, session.id, reason=ALREADY_PROCESSED_REASON, now=self.now
            )
            self.already += 1
            return
        reader = self._reader(session.connection)
        frames = store.run_sync(work.session_frames, session.id)
        records, problems = records_of_frames(
            (f.data for f in frames if f.direction is Direction.IN), reader.link_options()
        )
        decoded = reader.astm(records, ended=False)
        if problems and decoded:
            first = decoded[0]
            warnings = (*problems, *first.message.warnings)
            decoded[0] = replace(first, message=replace(first.message, warnings=warnings))
        context = IngestContext(
            session.connection, self.his_profile, self.routing_config, self.test_codes
        )
        stored = store.run_sync(
            store_transfer,
            decoded,
            context,
            session_id=session.id,
            now=self.now,
            close_reason=RECOVERED_REASON,
        )
        self.recovered += 1
        self.stored += stored

    def _reader(self, connection: str) -> TransferReader:
        reader = self.readers.get(connection)
        if reader is None:
            config = self.configs.get(connection) if self.configs is not None else None
            reader = TransferReader(
                self.catalogue,
                protocol="astm",
                driver=config.driver if config is not None else None,
                encoding=config.encoding if config is not None else "latin-1",
                tz=config.time_zone if config is not None else None,
            )
            self.readers[connection] = reader
        return reader
