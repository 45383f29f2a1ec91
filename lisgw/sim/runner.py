"""Plays a scenario (lisgw.sim.scenario) against a gateway: the HIS and every analyzer.

Layer: simulator (Twisted), above lisgw.sim.analyzer and lisgw.sim.his; ``lisgw simulate
scenario`` runs it against a running gateway, ``lisgw demo`` against one in its own process.
The gateway's configuration (lisgw.config) says where everything is: the HIS simulator
listens where ``his.results`` points, orders go to ``his.orders``, and each analyzer reaches
the connection it plays by that connection's transport (the scenario's transport must agree:
``tcp`` ↔ tcp-server, ``tcp-listen`` ↔ tcp-client, ``serial`` ↔ serial, where the
simulator creates a pseudo-terminal and links the configured device path to it).

A run: the HIS simulator listens (and goes down and up as the scenario says); the HIS sends
each analyzer's orders (ORM^O01 or OML^O21) for its sample; then every analyzer at once
connects, asks for its sample's orders by host query when the scenario says so (and waits
for the gateway's download), and replays its capture; order downloads are shown as they
come; finally the run waits until an ORU^R01 for every analyzer's sample reached the HIS.
One progress line per event (``echo``), naming analyzers, samples and counts, never a
patient; ``ScenarioReport.summary`` is the table at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from lisgw.config_schema import ConnectionConfig, GatewayConfig, TransportKind, WireProtocol
from lisgw.errors import CodecError, ConfigError, LisgwError
from lisgw.his.ack import read_ack
from lisgw.hl7.message import parse_message
from lisgw.sim.analyzer import AnalyzerSimulator, PtyMasterPort, open_pty
from lisgw.sim.captures import read_astm_messages, read_hl7_messages
from lisgw.sim.his import AckMode, HisSimulator, Received, order_message, send_order
from lisgw.sim.report import AnalyzerTally, ScenarioReport, download_summary
from lisgw.sim.scenario import Scenario, ScenarioAnalyzer, ScenarioTransport
from lisgw.transports.mllp import connect_mllp

__all__ = ["AnalyzerTally", "ScenarioReport", "ScenarioRun", "download_summary"]

_POLL: Final = 0.1
_EXPECTED: Final = {
    ScenarioTransport.TCP: TransportKind.TCP_SERVER,
    ScenarioTransport.TCP_LISTEN: TransportKind.TCP_CLIENT,
    ScenarioTransport.SERIAL: TransportKind.SERIAL,
}
LineReady = Callable[[ScenarioAnalyzer], Awaitable[None]]


class ScenarioRun:
    """One run of a scenario against the gateway ``config`` describes (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        scenario: Scenario,
        config: GatewayConfig,
        echo: Callable[[str], None],
        *,
        line_ready: LineReady | None = None,
    ) -> None:
        self.reactor = reactor
        self.scenario = scenario
        self.config = config
        self.echo = echo
        self.line_ready = line_ready
        self.connections = {a.connection: self._connection(a) for a in scenario.analyzers}
        results = config.his.results
        behaviour = scenario.his
        self.his = HisSimulator(
            reactor,
            clock=reactor,
            host=results.host,
            port=results.port,
            mode=behaviour.ack,
            delay=behaviour.delay,
        )
        self.tallies = {a.connection: AnalyzerTally(a) for a in scenario.analyzers}
        self.simulators: dict[str, AnalyzerSimulator] = {}
        self.ptys: list[tuple[PtyMasterPort, Path]] = []
        self._ports: list[IListeningPort] = []
        self._calls: list[IDelayedCall] = []
        self._watching: list[Deferred[tuple[bytes, ...]]] = []
        self._his_seen = 0
        self._his_watch = LoopingCall(self._his_progress)
        self._his_watch.clock = reactor
        self._stopping = False

    def _connection(self, analyzer: ScenarioAnalyzer) -> ConnectionConfig:
        where = f"{self.scenario.source}: analyzer {analyzer.connection!r}"
        try:
            connection = self.config.connection(analyzer.connection)
        except KeyError:
            names = ", ".join(c.name for c in self.config.connections)
            raise ConfigError(
                [f"{where}: {self.config.source} has no such connection (it has: {names})"]
            ) from None
        problems = []
        if connection.protocol is not analyzer.protocol:
            problems.append(f"protocol {analyzer.protocol}, the gateway's is {connection.protocol}")
        if connection.transport is not _EXPECTED[analyzer.transport]:
            problems.append(
                f"transport {analyzer.transport} needs a {_EXPECTED[analyzer.transport]} "
                f"connection, the gateway's is {connection.transport}"
            )
        if problems:
            raise ConfigError([f"{where}: {problem}" for problem in problems])
        return connection

    # -- the run --------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Listen as the HIS and plug the serial lines in (before the gateway starts, in the
        demo, so that its first open finds them)."""
        for analyzer in self.scenario.analyzers:  # a bad capture is reported before anything
            self._messages(analyzer)
        port = await self.his.start()
        self.echo(f"HIS simulator listening on {self.his.host}:{port} (answers {self._ack()})")
        for analyzer in self.scenario.analyzers:
            if analyzer.transport is ScenarioTransport.SERIAL:
                self._plug(analyzer)

    async def run(self, timeout: float) -> ScenarioReport:
        """Orders, analyzers, deliveries (module docstring); the report after ``timeout``
        seconds at most."""
        started = self.reactor.seconds()
        deadline = started + timeout
        for period in self.scenario.his.down:
            self._calls.append(self.reactor.callLater(period.after, self._down, period.duration))
        self._his_watch.start(_POLL, now=False).addErrback(self._ignore)
        for number, analyzer in enumerate(self.scenario.analyzers, 1):
            if analyzer.orders:
                await self._send_orders(analyzer, number)
        playing = [Deferred.fromCoroutine(self._play(a)) for a in self.scenario.analyzers]
        remaining = max(deadline - self.reactor.seconds(), 0.1)
        try:
            await gatherResults(playing, consumeErrors=True).addTimeout(remaining, self.reactor)
        except defer.TimeoutError:
            self.echo(f"timed out after {timeout:g} s waiting for the analyzers")
        except defer.FirstError as error:  # an analyzer failed: its own error, not the wrapper
            cause = error.subFailure.value
            if isinstance(cause, Exception):
                raise cause from None
            raise
        await self._wait_deliveries(deadline)
        report = ScenarioReport(list(self.tallies.values()))
        report.elapsed = self.reactor.seconds() - started
        self._judge(report)
        return report

    async def stop(self) -> None:
        """Close every line and stop the HIS simulator (idempotent)."""
        self._stopping = True
        if self._his_watch.running:
            self._his_watch.stop()
        for call in self._calls:
            if call.active():
                call.cancel()
        for waiting in self._watching:
            waiting.cancel()
        for simulator in self.simulators.values():
            await simulator.close()
        for port in self._ports:
            await maybeDeferred(port.stopListening)
        for pty, link in self.ptys:
            pty.loseConnection()  # type: ignore[no-untyped-call]
            link.unlink(missing_ok=True)  # the line is gone
        self.ptys = []
        await self.his.stop()

    # -- HIS side -----------------------------------------------------------------------

    def _ack(self) -> str:
        mode = self.scenario.his.ack
        text = "nothing" if mode is AckMode.SILENT else mode.value
        return f"{text} after {self.scenario.his.delay:g} s" if self.scenario.his.delay else text

    def _down(self, duration: float) -> None:
        async def outage() -> None:
            await self.his.stop()
            self.echo(f"HIS down for {duration:g} s")
            await deferLater(self.reactor, duration, lambda: None)
            if not self._stopping:
                await self.his.start()
                self.echo("HIS up again")

        Deferred.fromCoroutine(outage()).addErrback(self._report_failure, "the HIS outage")

    async def _send_orders(self, analyzer: ScenarioAnalyzer, number: int) -> None:
        orders = self.config.his.orders
        if orders is None:
            self.echo(f"orders not sent: {self.config.source} has no his.orders listener")
            return
        message = order_message(
            f"SIM{number:04d}", analyzer.sample, analyzer.orders, kind=analyzer.order_kind
        )
        ack = await send_order(self.reactor, orders.host, orders.port, message)
        if ack.accepted:
            self.tallies[analyzer.connection].orders += 1
        codes = ", ".join(analyzer.orders)
        self.echo(
            f"order sent: {analyzer.order_kind} sample {analyzer.sample} ({codes}) for "
            f"{analyzer.connection}: {ack.code}"
        )

    def _his_progress(self) -> None:
        received = self.his.received
        for message in received[self._his_seen :]:
            sample = _oru_sample(message)
            if sample is None:
                continue
            names = [a.connection for a in self.scenario.analyzers if a.sample == sample]
            for name in names:
                self.tallies[name].delivered += 1
            who = names[0] if names else "no simulated analyzer"
            self.echo(
                f"ORU delivered: {who} sample {sample} to the HIS (answered "
                f"{'nothing' if message.answer is AckMode.SILENT else message.answer.value})"
            )
        self._his_seen = len(received)

    async def _wait_deliveries(self, deadline: float) -> None:
        while any(t.delivered == 0 for t in self.tallies.values()):
            if self.reactor.seconds() > deadline:
                return
            await deferLater(self.reactor, _POLL, lambda: None)
            self._his_progress()

    def _judge(self, report: ScenarioReport) -> None:
        for tally in report.tallies:
            analyzer = tally.analyzer
            if analyzer.orders and tally.orders == 0:
                report.missing.append(
                    f"{analyzer.connection}: the gateway did not accept its orders"
                )
            if analyzer.query is not None and tally.query != "answered":
                report.missing.append(
                    f"{analyzer.connection}: host query for sample {analyzer.sample}: "
                    f"{tally.query or 'not sent'}"
                )
            if tally.delivered == 0:
                report.missing.append(
                    f"{analyzer.connection}: no ORU^R01 for sample {analyzer.sample} reached "
                    "the HIS"
                )

    # -- analyzer side ------------------------------------------------------------------

    def _messages(self, analyzer: ScenarioAnalyzer) -> list[Any]:
        if analyzer.protocol is WireProtocol.HL7:
            return list(read_hl7_messages(analyzer.capture))
        return list(read_astm_messages(analyzer.capture))

    def _simulator(self, analyzer: ScenarioAnalyzer) -> AnalyzerSimulator:
        simulator = AnalyzerSimulator(
            clock=self.reactor, name=analyzer.sender, faults=analyzer.faults
        )
        self.simulators[analyzer.connection] = simulator
        return simulator

    def _plug(self, analyzer: ScenarioAnalyzer) -> None:
        line = self.connections[analyzer.connection].serial
        if line is None:
            raise LisgwError(f"connection {analyzer.connection} has no serial device")
        pty = open_pty(self._simulator(analyzer), self.reactor)
        device = Path(line.device)
        device.unlink(missing_ok=True)
        device.symlink_to(pty.device)
        self.ptys.append((pty, device))
        self.echo(f"serial line for {analyzer.connection}: {device} -> {pty.device}")

    async def _play(self, analyzer: ScenarioAnalyzer) -> None:
        if analyzer.protocol is WireProtocol.HL7:
            await self._play_hl7(analyzer)
            return
        simulator = await self._open_astm(analyzer)
        self._watch_downloads(analyzer, simulator)
        if analyzer.query is not None:
            await self._query(analyzer, simulator)
        tally = self.tallies[analyzer.connection]
        for _ in range(analyzer.repeat):
            for message in self._messages(analyzer):
                dropped = simulator.plan.eots_dropped
                outcome = await simulator.send_message(message)
                if simulator.plan.eots_dropped > dropped:  # the drop-eot fault
                    self.echo(f"sent without EOT: {analyzer.connection} (fault): incomplete")
                elif outcome.delivered:
                    tally.messages += 1
                    results = sum(1 for r in message if r[:2] == b"R" + message[0][1:2])
                    tally.results += results
                    self.echo(
                        f"results stored: {analyzer.connection} sample {analyzer.sample} "
                        f"({results} results)"
                    )
                else:
                    self.echo(f"not stored: {analyzer.connection}: {outcome.reason}")

    async def _open_astm(self, analyzer: ScenarioAnalyzer) -> AnalyzerSimulator:
        connection = self.connections[analyzer.connection]
        name = analyzer.connection
        if analyzer.transport is ScenarioTransport.SERIAL:
            simulator = self.simulators[name]
            if self.line_ready is not None:
                await self.line_ready(analyzer)
            else:
                wait = min(connection.reconnect.maximum, 30.0) + 1.0
                self.echo(f"waiting {wait:g} s for the gateway to open the line of {name}")
                await deferLater(self.reactor, wait, lambda: None)
            self.echo(f"analyzer connected: {name} over serial line (pty)")
            return simulator
        tcp = connection.tcp
        if tcp is None:
            raise LisgwError(f"connection {name} has no TCP address")
        simulator = self._simulator(analyzer)
        if analyzer.transport is ScenarioTransport.TCP:
            endpoint = TCP4ClientEndpoint(self.reactor, tcp.host, tcp.port, timeout=10)
            await endpoint.connect(simulator.factory())
            await simulator.when_connected()
            self.echo(f"analyzer connected: {name} over TCP port {tcp.port}")
        else:
            server = TCP4ServerEndpoint(self.reactor, tcp.port, interface=tcp.host)  # type: ignore[no-untyped-call]
            self._ports.append(await server.listen(simulator.factory()))  # type: ignore[no-untyped-call]
            self.echo(f"analyzer listening: {name} on TCP port {tcp.port}")
            await simulator.when_connected()
            self.echo(f"gateway connected to {name}")
        return simulator

    def _watch_downloads(self, analyzer: ScenarioAnalyzer, simulator: AnalyzerSimulator) -> None:
        def downloaded(records: tuple[bytes, ...]) -> None:
            self._watching.remove(waiting)
            samples, tests = download_summary(records)
            self.tallies[analyzer.connection].downloads += 1
            self.echo(
                f"order download: {analyzer.connection}: {len(samples)} order(s), sample(s) "
                f"{', '.join(samples) or '-'}, tests {', '.join(tests) or '-'}"
            )
            self._watch_downloads(analyzer, simulator)

        waiting = simulator.next_download()
        self._watching.append(waiting)
        waiting.addCallback(downloaded).addErrback(self._ignore)

    async def _query(self, analyzer: ScenarioAnalyzer, simulator: AnalyzerSimulator) -> None:
        tally = self.tallies[analyzer.connection]
        before = len(simulator.downloads)
        form = analyzer.query.value if analyzer.query is not None else "astm-q"
        outcome = await simulator.send_host_query([analyzer.sample], form)
        if not outcome.delivered:
            tally.query = f"not sent: {outcome.reason}"
            self.echo(f"host query not sent: {analyzer.connection}: {outcome.reason}")
            return
        self.echo(f"host query sent: {analyzer.connection} sample {analyzer.sample} ({form})")
        deadline = self.reactor.seconds() + analyzer.query_wait
        while len(simulator.downloads) == before and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, _POLL / 2, lambda: None)
        if len(simulator.downloads) == before:
            tally.query = "no reply"
            self.echo(
                f"host query: no reply for {analyzer.connection} sample {analyzer.sample} "
                f"within {analyzer.query_wait:g} s"
            )
            return
        samples, tests = download_summary(simulator.downloads[before])
        tally.query = "answered"
        tally.query_orders = len(samples)
        self.echo(
            f"host query answered: {analyzer.connection} sample {analyzer.sample}: "
            f"{len(samples)} order(s), tests {', '.join(tests) or '-'}"
        )

    async def _play_hl7(self, analyzer: ScenarioAnalyzer) -> None:
        tcp = self.connections[analyzer.connection].tcp
        if tcp is None:
            raise LisgwError(f"connection {analyzer.connection} has no TCP address")
        endpoint = TCP4ClientEndpoint(self.reactor, tcp.host, tcp.port, timeout=10)
        client = await connect_mllp(endpoint, clock=self.reactor)
        self.echo(f"analyzer connected: {analyzer.connection} over MLLP port {tcp.port}")
        tally = self.tallies[analyzer.connection]
        try:
            for _ in range(analyzer.repeat):
                for payload in read_hl7_messages(analyzer.capture):
                    ack = read_ack((await client.request(payload, timeout=30)).payload)
                    results = payload.count(b"\rOBX|")
                    if ack.accepted:
                        tally.messages += 1
                        tally.results += results
                        self.echo(
                            f"results stored: {analyzer.connection} sample {analyzer.sample} "
                            f"({results} results)"
                        )
                    else:
                        self.echo(f"not stored: {analyzer.connection}: {ack.code} {ack.text}")
        finally:
            await client.close()

    def _ignore(self, failure: Failure) -> None:
        failure.trap(CancelledError)  # type: ignore[no-untyped-call]

    def _report_failure(self, failure: Failure, what: str) -> None:
        self.echo(f"{what} failed: {failure.getErrorMessage()}")


def _oru_sample(message: Received) -> str | None:
    """OBR-3 of an ORU the HIS received (None for anything else)."""
    if not message.message_type.startswith("ORU"):
        return None
    with contextlib.suppress(CodecError):
        obr = parse_message(message.payload, lenient=True).segment("OBR")
        if obr is not None:
            return obr.get(3).strip()
    return None
