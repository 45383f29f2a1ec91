"""The running gateway: the service tree ``lisgw run`` starts from a ``GatewayConfig``.

Layer: service (Twisted), the top of the service layer; lisgw.cli.run calls ``serve``.
Wires what the other services do: the store (lisgw.store, migrated to head), the frame
journal (lisgw.services.journal, one group commit for every link), one ingest per analyzer
connection (lisgw.services.ingest) on its transport (lisgw.transports: tcp-server through a
guarded listener, tcp-client and serial through a reconnecting client; ASTM through
AstmLinkProtocol, HL7 through an MLLP server protocol), the HIS order listener
(lisgw.services.his), the outbox dispatcher (lisgw.services.outbox) and the systemd
notifications (lisgw.services.notify).

Start (``Gateway.start``), in this order, so that no frame is acknowledged before the store
can keep it and nothing left by a crash is overtaken by new traffic:

1. the watchdog pings (when systemd asks for them);
2. crash recovery (lisgw.services.recovery): ASTM sessions a killed process left open are
   processed from their committed frames; outbox rows this gateway had claimed are released
   at once instead of waiting for their lease (the worker name is stable across restarts:
   host name and data directory);
3. the outbox dispatcher, the HIS order listener, then every analyzer link;
4. READY=1 to systemd.

Stop (``Gateway.stop``, on SIGTERM or SIGINT): STOPPING=1; stop accepting (listeners close);
stop reading every analyzer line; let the frames being committed finish, so their ACKs go
out; close the lines (a transfer cut short stays incomplete, never results) and process what
they ended; stop the HIS listener after the messages it is handling; stop the dispatcher
(lisgw.services.outbox: a send in flight is aborted and retried after restart, with the same
MSH-10); close the store. Undelivered results stay in the outbox.

The analyzer-side pieces (the HL7 analyzers' MLLP handler, the listeners and their
attribution) are in lisgw.services.analyzer_lines; what the gateway is built from (the
configured files, its worker name, the order routes, the store, the release of a dead
predecessor's claims) in lisgw.services.gateway_parts. Several analyzers on one listener are
told apart by peer address (``peers``); where the address leaves several, or a connection
lists ``senders``, by the sender name of the first message (ASTM H.5.1, HL7 MSH-3.1):
lisgw.transports.attribute holds the connection until it is named, then hands every byte to
the chosen connection's protocol; an unknown or ambiguous sender is refused with a warning.
No patient data is logged here: names, ports, counts.
"""

from __future__ import annotations

import gc
from typing import Any, Final

from twisted.application.service import IService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from lisgw.config_schema import (
    ConnectionConfig,
    GatewayConfig,
    TransportKind,
    WireProtocol,
)
from lisgw.errors import ConfigError, LisgwError
from lisgw.services.analyzer_lines import AnalyzerListener, AnalyzerMllpHandler, pause_reading_of
from lisgw.services.batcher import UnitBatcher
from lisgw.services.download import OrderDownloader
from lisgw.services.gateway_parts import (
    GatewayParts,
    open_store,
    order_routes,
    release_own_claims,
    worker_name,
)
from lisgw.services.his import HisOrderListener
from lisgw.services.ingest import AnalyzerIngest
from lisgw.services.journal import FrameJournal
from lisgw.services.notify import SystemdNotifier, WatchdogService
from lisgw.services.outbox import DispatcherSettings, OutboxDispatcher
from lisgw.services.recovery import recover
from lisgw.services.responder import HostQueryResponder
from lisgw.services.status import StatusReporter
from lisgw.store.runner import Store
from lisgw.transports.astm import AstmLinkFactory, AstmLinkProtocol
from lisgw.transports.mllp import MllpServerFactory, MllpSettings
from lisgw.transports.serial import FlowControl, Parity, SerialSettings, serial_client
from lisgw.transports.tcp import (
    ConnectionLimits,
    ReconnectingClient,
    ReconnectPolicy,
)
from lisgw.transports.tls import client_endpoint, server_endpoint

__all__ = [
    "DISPATCH_POLL_INTERVAL",
    "AnalyzerListener",
    "AnalyzerMllpHandler",
    "Gateway",
    "GatewayParts",
    "open_store",
    "order_routes",
    "release_own_claims",
    "serve",
    "worker_name",
]

_log = Logger()
# The ingest does not wake the dispatcher when it queues results: a short poll keeps the
# delay from commit to delivery small (one indexed query per poll when idle).
DISPATCH_POLL_INTERVAL: Final = 0.2
# 10 ms (30 ms before): on PostgreSQL at 50 x 1 session/s, p50 EOT -> HIS ACK 13 ms lower
# and p99 lower in three alternated pairs, with no throughput cost seen (bench/README.md).
DISPATCH_WAKE_DELAY: Final = 0.01


def _settled(waiting: Deferred[Any]) -> Deferred[None]:
    """Fires (with None) when ``waiting`` has a result, leaving that result to its chain."""
    done: Deferred[None] = Deferred()

    def pass_on(result: object) -> object:
        done.callback(None)
        return result

    waiting.addBoth(pass_on)
    return done


# -- the tree ------------------------------------------------------------------------------


class Gateway:
    """Every service of one ``GatewayConfig``, started and stopped in order (module doc)."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        parts: GatewayParts,
        *,
        reactor: Any,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.parts = parts
        self.reactor = reactor
        self.notifier = notifier if notifier is not None else SystemdNotifier({})
        self.worker = worker_name(config)
        self.journal = FrameJournal(store, reactor)
        # The transfers of every connection share commits, as their frames do (issue 6);
        # PostgreSQL runs five such transactions at once (lisgw.services.batcher): a
        # transfer there is a dozen round trips, so its wall time, not CPU, bounds one lane.
        concurrent = 5 if store.engine.dialect.name == "postgresql" else 1
        self.units = UnitBatcher(store, reactor, max_inflight=concurrent)
        self.status = StatusReporter(store, clock=reactor, node=self.worker)
        self.ingests = {
            c.name: AnalyzerIngest(
                store,
                self.journal,
                parts.catalogue,
                parts.his_profile,
                config.routing,
                parts.test_codes,
                reactor,
                connection=c,
                units=self.units,
            )
            for c in config.connections
        }
        # Orders out (issue 6): host-query replies and batch downloads, by order mode.
        self.responders = {
            c.name: HostQueryResponder(store, self.ingests[c.name], reactor)
            for c in config.connections
            if c.orders.answers_queries
        }
        for name, responder in self.responders.items():
            if self.ingests[name].connection.protocol is WireProtocol.ASTM:
                responder.attach()
        self.downloaders = [
            OrderDownloader(store, self.ingests[c.name], reactor)
            for c in config.connections
            if c.orders.downloads and c.protocol is WireProtocol.ASTM
        ]
        self.watchdog = WatchdogService(self.notifier, clock=reactor)
        self.dispatcher = self._dispatcher()
        self._wake_call: Any = None
        for ingest in self.ingests.values():
            ingest.on_outbox = self._wake_dispatcher
        self.his_listener = self._his_listener()
        self.listeners = [
            AnalyzerListener(
                listener,
                {c.name: self._protocol_factory(c) for c in listener.connections},
                reactor=reactor,
            )
            for listener in config.listeners
        ]
        self.clients = [
            self._client(c)
            for c in config.connections
            if c.transport is not TransportKind.TCP_SERVER
        ]
        for client in self.clients:
            self.status.track_client(client.name or "", client)
        for name, ingest in self.ingests.items():
            self.status.watch_messages(name, lambda ingest=ingest: ingest.transfers)  # type: ignore[misc]
        self._started: list[IService] = []
        self._starting: Deferred[None] | None = None
        self._stopping = False
        self._stop_done = False
        self._stop_waiters: list[Deferred[None]] = []

    # -- building ---------------------------------------------------------------------------

    def _dispatcher(self) -> OutboxDispatcher:
        his = self.config.his
        tls = his.tls
        endpoint = client_endpoint(
            self.reactor,
            host=his.results.host,
            port=his.results.port,
            tls=self.parts.tls,
            server_name=tls.server_name if tls is not None else None,
            connect_timeout=his.results.connect_timeout,
        )
        settings = DispatcherSettings(
            worker=self.worker,
            poll_interval=DISPATCH_POLL_INTERVAL,
            ack_timeout=his.results.ack_timeout,
            backoff=his.results.backoff,
            encoding=self.parts.his_profile.encoding,
        )
        return OutboxDispatcher(
            self.store, endpoint=endpoint, clock=self.reactor, settings=settings
        )

    def _his_listener(self) -> HisOrderListener | None:
        orders = self.config.his.orders
        if orders is None:
            return None
        endpoint = server_endpoint(
            self.reactor, host=orders.host, port=orders.port, tls=self.parts.tls
        )
        return HisOrderListener(
            self.store,
            self.parts.his_profile,
            endpoint=endpoint,
            clock=self.reactor,
            routes=order_routes(self.config, self.parts.test_codes),
            connection="his-orders",
            settings=MllpSettings(
                max_message_size=orders.max_message_bytes, idle_timeout=orders.idle_timeout
            ),
            on_queued=self._wake_downloaders,
        )

    def _protocol_factory(self, connection: ConnectionConfig) -> IProtocolFactory:
        ingest = self.ingests[connection.name]
        if connection.protocol is WireProtocol.HL7:
            handler = AnalyzerMllpHandler(
                ingest,
                clock=self.reactor,
                encoding=connection.encoding,
                responder=self.responders.get(connection.name),
            )
            settings = MllpSettings(
                max_message_size=connection.limits.max_message_bytes,
                idle_timeout=connection.limits.idle_timeout,
            )
            factory: IProtocolFactory = MllpServerFactory(
                handler,
                clock=self.reactor,
                settings=settings,
                max_connections=connection.limits.max_connections,
                name=connection.name,
            )
        else:

            def build(_: IAddress | None) -> AstmLinkProtocol:
                return ingest.build_protocol()

            factory = AstmLinkFactory(build)
        factory.noisy = False  # type: ignore[attr-defined]  # Twisted's "Starting factory" lines
        if connection.transport is TransportKind.TCP_SERVER:
            self.status.track_server(connection.name)
            factory = self.status.line_factory(connection.name, factory)
        return factory

    def _client(self, connection: ConnectionConfig) -> ReconnectingClient:
        policy = ReconnectPolicy(
            initial_delay=connection.reconnect.initial, max_delay=connection.reconnect.maximum
        )
        factory = self._protocol_factory(connection)
        line = connection.serial
        if connection.transport is TransportKind.SERIAL and line is not None:
            settings = SerialSettings(
                line.device,
                baudrate=line.baud,
                data_bits=line.data_bits,
                parity=Parity(line.parity),
                stop_bits=line.stop_bits,
                flow_control=FlowControl(line.flow_control),
            )
            return serial_client(
                settings,
                factory,
                reactor=self.reactor,
                policy=policy,
                idle_timeout=connection.limits.idle_timeout,
                name=connection.name,
            )
        if connection.tcp is None:
            raise ConfigError([f"{connection.name}: a tcp-client connection needs host and port"])
        endpoint = TCP4ClientEndpoint(self.reactor, connection.tcp.host, connection.tcp.port)
        limits = ConnectionLimits(
            idle_timeout=connection.limits.idle_timeout, keepalive=connection.keepalive
        )
        return ReconnectingClient(
            endpoint,
            factory,
            clock=self.reactor,
            policy=policy,
            limits=limits,
            name=connection.name,
        )

    def _wake_downloaders(self, connections: frozenset[str]) -> None:
        """The HIS listener queued tests for ``connections``: their downloaders look now."""
        for downloader in self.downloaders:
            if downloader.ingest.name in connections:
                downloader.wake()

    def _wake_dispatcher(self) -> None:
        """Results were queued: deliver within DISPATCH_WAKE_DELAY instead of the next poll;
        the short delay lets the transfers stored meanwhile share one outbox pass."""
        if self._wake_call is None or not self._wake_call.active():
            self._wake_call = self.reactor.callLater(DISPATCH_WAKE_DELAY, self.dispatcher.wake)

    # -- start ------------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Recovery, then every service, then READY=1 (module docstring)."""
        self._starting = Deferred.fromCoroutine(self._start_all())
        return self._starting

    async def _start_all(self) -> None:
        await self._start(self.watchdog)
        self.notifier.status("recovering sessions left open")
        self._recover()
        await self._start(self.status)
        await self._start(self.dispatcher)
        if self.his_listener is not None:
            await self._start(self.his_listener)
        for service in [*self.listeners, *self.clients, *self.downloaders]:
            await self._start(service)
        if self._stopping:
            return
        status = f"running: {len(self.config.connections)} analyzer connection(s)"
        # What start-up built (modules, drivers, schema, codecs, the HL7 tables) lives as
        # long as the process: out of the collector's full passes, which would otherwise
        # walk it every time (a pause every frame and transfer in flight waits through).
        gc.freeze()
        self.notifier.ready(status)
        _log.info(
            "gateway ready: {connections} analyzer connection(s), {listeners} listener(s), "
            "store {backend}; {frozen} start-up objects left out of garbage collection",
            connections=len(self.config.connections),
            listeners=len(self.listeners),
            backend=self.store.engine.dialect.name,
            frozen=gc.get_freeze_count(),
        )

    def _recover(self) -> None:
        now = self.reactor.seconds()
        parts = self.parts
        report = recover(
            self.store,
            parts.catalogue,
            parts.his_profile,
            self.config.routing,
            parts.test_codes,
            now,
            connections=self.config.connections,
        )
        released = self.store.run_sync(release_own_claims, self.worker, now)
        if released or report.sessions:
            _log.info(
                "recovery: {sessions} open session(s), {failed} left open; {released} "
                "outbox claim(s) of this gateway released",
                sessions=report.sessions,
                failed=report.failed,
                released=released,
            )

    async def _start(self, service: IService) -> None:
        if self._stopping:
            return
        await maybeDeferred(service.startService)
        self._started.append(service)

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """Stop gracefully (module docstring); once, however often it is called."""
        if self._stop_done:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._stop_waiters.append(waiter)
        if not self._stopping:
            self._stopping = True
            stopping = Deferred.fromCoroutine(self._stop())
            stopping.addErrback(self._stop_failed)
            stopping.addBoth(self._stop_finished)
        return waiter

    def _stop_finished(self, _: object) -> None:
        self._stop_done = True
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _stop(self) -> None:
        if self._starting is not None and not self._starting.called:
            # A service starting now would be missed below; starting takes no long wait.
            await _settled(self._starting)
        self.notifier.stopping("finishing the frames in hand")
        _log.info("gateway stopping: no new connections; frames in hand are finished")
        listeners = [s for s in self.listeners if s in self._started]
        clients = [s for s in self.clients if s in self._started]
        await self._step("stop listening", *(s.stopService() for s in listeners))
        for listener in listeners:
            listener.pause_reading()
        for client in clients:
            pause_reading_of(getattr(client.protocol, "transport", None))
        await self._step("finish the frames being committed", self.journal.drain())
        closing = [s.close_connections() for s in listeners]
        await self._step("close the analyzer lines", *closing, *(s.stopService() for s in clients))
        idle = [ingest.close() for ingest in self.ingests.values()]
        await self._step("process what the lines ended", *idle)
        await self._step("close the sessions", self.journal.drain())
        for service in (
            *self.downloaders,
            self.his_listener,
            self.dispatcher,
            self.status,
            self.watchdog,
        ):
            if service is not None and service in self._started:
                await self._step(f"stop {service.name}", maybeDeferred(service.stopService))
        self.store.close()
        self.notifier.close()
        frames, units = self.journal.stats, self.units.stats
        _log.info(
            "gateway stopped; store transactions since start: {flushes} frame flushes for "
            "{frames} frames (largest {largest}), {unit_flushes} transfer transactions for "
            "{units} transfers (largest {largest_units})",
            flushes=frames.flushes,
            frames=frames.frames,
            largest=frames.largest_batch,
            unit_flushes=units.flushes,
            units=units.units,
            largest_units=units.largest_batch,
        )

    async def _step(self, what: str, *waiting: Deferred[Any]) -> None:
        """Wait for every Deferred; a failure is logged and the stop carries on."""
        results = await gatherResults(
            [d.addErrback(self._step_failed, what) for d in waiting], consumeErrors=True
        )
        del results

    def _step_failed(self, failure: Failure, what: str) -> None:
        _log.failure("gateway stop: {what} failed", failure, what=what)

    def _stop_failed(self, failure: Failure) -> None:
        _log.failure("gateway stop failed", failure)

    # -- for tests and the CLI --------------------------------------------------------------

    @property
    def listening_ports(self) -> dict[str, int]:
        """Bound ports: ``his-orders`` and the name of each analyzer listener."""
        ports = {s.name or "": s.port for s in self.listeners if s.port is not None}
        if self.his_listener is not None and self.his_listener.port is not None:
            ports["his-orders"] = self.his_listener.port
        return ports


def serve(
    config: GatewayConfig, *, reactor: Any = None, notifier: SystemdNotifier | None = None
) -> int:
    """Run the gateway until the reactor stops (SIGTERM, SIGINT); the exit status: 0 after a
    graceful stop, 1 when it could not start."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    notifier = notifier if notifier is not None else SystemdNotifier()
    try:
        parts = GatewayParts.load(config)
        store = open_store(config, reactor)
    except (LisgwError, OSError) as error:
        _log.critical("gateway not started: {error}", error=str(error))
        notifier.status(f"not started: {error}")
        return 1
    gateway = Gateway(config, store, parts, reactor=reactor, notifier=notifier)
    status = [0]

    def start_failed(failure: Failure) -> None:
        _log.failure("gateway not started", failure)
        status[0] = 1
        if reactor.running:
            reactor.stop()

    def begin() -> None:
        gateway.start().addErrback(start_failed)

    reactor.callWhenRunning(begin)
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stop)
    reactor.run()
    return status[0]
