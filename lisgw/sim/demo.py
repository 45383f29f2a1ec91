"""The ``lisgw demo`` scenario: a gateway, the HIS simulator and three analyzers in one reactor.

Layer: simulator (Twisted), above lisgw.services.gateway; lisgw.cli.demo runs it. Nothing here
is new machinery: the gateway is ``lisgw.services.gateway.Gateway`` on its embedded SQLite
store, the HIS is ``lisgw.sim.his.HisSimulator``, the ASTM analyzers are
``lisgw.sim.analyzer.AnalyzerSimulator`` (real E1381, over TCP and over a pseudo-terminal
whose slave a symlink in the data directory names, as a serial device), and the HL7 analyzer
is an MLLP client (lisgw.transports.mllp) sending corpus ORU^R01 messages.

The scenario: write a configuration of the shape of config/lisgw.yaml into the data
directory (ports chosen free at run time), start the HIS simulator and the gateway, send one
ORM^O01 per analyzer for the sample of its capture, replay each capture, and wait until every
expected ORU^R01 reached the HIS simulator. Host queries are not part of the demo yet: the
gateway does not answer them (issue 6).

Captures come from the shared corpus (../shared/corpus beside a checkout, or ``--corpus``).
The orders' patients are invented; progress lines name samples and counts, never patients.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from twisted.internet import defer
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater

from lisgw.config import load_config
from lisgw.config_schema import ConnectionConfig, GatewayConfig
from lisgw.errors import CodecError, LisgwError
from lisgw.his.ack import read_ack
from lisgw.hl7.message import parse_message
from lisgw.hl7.mllp import NEED_DATA, MllpFramer, MllpMessage
from lisgw.services.gateway import Gateway, GatewayParts, open_store
from lisgw.sim.analyzer import AnalyzerSimulator, PtyMasterPort, capture_messages, open_pty
from lisgw.sim.his import AckMode, HisSimulator
from lisgw.store.records import OutboxState
from lisgw.store.work import outbox_rows
from lisgw.transports.mllp import connect_mllp

__all__ = [
    "DEMO_ANALYZERS",
    "AnalyzerTally",
    "DemoAnalyzer",
    "DemoReport",
    "default_corpus",
    "free_port",
    "mllp_payloads",
    "order_message",
    "run_demo",
    "write_demo_config",
]

HOST: Final = "127.0.0.1"
_POLL: Final = 0.1
_SERIAL_LINK: Final = "cobas-c311.tty"  # the device path the cobas connection opens


@dataclass(frozen=True, slots=True)
class DemoAnalyzer:
    """One simulated analyzer: its connection, capture, sample and ordered HIS codes."""

    name: str
    label: str
    capture: str
    sample: str
    his_codes: tuple[str, ...]


DEMO_ANALYZERS: Final = (
    DemoAnalyzer(
        "xn-550",
        "Sysmex XN-550 (ASTM, TCP)",
        "astm/sysmex_xn550/sysmex_xn550_cbc_results.bin",
        "27",
        ("HEM-WBC", "HEM-HGB"),
    ),
    DemoAnalyzer(
        "cobas-c311",
        "Roche cobas c311 (ASTM, serial pty)",
        "astm/roche_cobas_c311/roche_cobas_c311_chemistry_results.bin",
        "CL-PL-24-0370",
        ("CHEM-ALT", "CHEM-AST"),
    ),
    DemoAnalyzer(
        "bc-5130",
        "Mindray BC-5130 (HL7, MLLP)",
        "hl7/mindray_bc5130/mindray_bc5130_hl7_oru_r01_cbc.bin",
        "5",
        ("HEM-WBC", "HEM-HGB"),
    ),
)

# The demo's own test-code table: only the codes it orders (config/test-codes.example.yaml).
_TEST_CODES: Final = {
    "sysmex-xn": {"WBC": "HEM-WBC", "HGB": "HEM-HGB"},
    "roche-cobas-c311": {"685/": "CHEM-ALT", "687/": "CHEM-AST"},
    "mindray-bc": {"6690-2": "HEM-WBC", "718-7": "HEM-HGB"},
}


@dataclass(slots=True)
class AnalyzerTally:
    """What one analyzer did during the demo."""

    analyzer: DemoAnalyzer
    orders: int = 0
    messages: int = 0
    results: int = 0
    delivered: int = 0


@dataclass(slots=True)
class DemoReport:
    """The demo's outcome: per analyzer tallies, dead letters, what is missing."""

    tallies: list[AnalyzerTally]
    dead_letters: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        """The summary table (plain text)."""
        header = f"{'analyzer':<38} {'orders':>6} {'messages':>8} {'results':>7} {'to HIS':>6}"
        lines = [header, "-" * len(header)]
        for t in self.tallies:
            lines.append(
                f"{t.analyzer.label:<38} {t.orders:>6} {t.messages:>8} {t.results:>7} "
                f"{t.delivered:>6}"
            )
        lines.append(f"dead letters: {self.dead_letters}")
        lines.append("host queries: not part of the demo yet (the gateway does not answer them)")
        for what in self.missing:
            lines.append(f"MISSING: {what}")
        lines.append("demo OK" if self.ok else "demo FAILED")
        return "\n".join(lines)


def default_corpus() -> Path:
    """The shared corpus beside the checkout (../shared/corpus): found from the package's
    place in a checkout, else from the working directory (an installed lisgw started from
    the checkout's root, as the README's first command does)."""
    beside_checkout = (Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus").resolve()
    for candidate in (beside_checkout, (Path.cwd() / ".." / "shared" / "corpus").resolve()):
        if candidate.is_dir():
            return candidate
    return beside_checkout  # reported missing, by name, before anything starts


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def write_demo_config(data_dir: Path, his_port: int) -> Path:
    """config/lisgw.yaml's shape, in ``data_dir``, with free ports; returns its path."""
    codes = data_dir / "test-codes.yaml"
    codes.write_text(yaml.safe_dump(_TEST_CODES, sort_keys=False), encoding="utf-8")
    xn, cobas, bc = DEMO_ANALYZERS
    data: dict[str, Any] = {
        "data_dir": str(data_dir),
        "time_zone": "Asia/Ho_Chi_Minh",
        "test_codes": str(codes),
        "routing": {"send_unsolicited": False},
        "his": {
            "profile": "hl7-v251",
            "results": {
                "host": HOST,
                "port": his_port,
                "ack_timeout": "10s",
                "backoff": {"base": "1s", "cap": "5s"},
            },
            "orders": {"host": HOST, "port": free_port()},
        },
        "connections": [
            {
                **{"name": xn.name, "protocol": "astm", "driver": "sysmex-xn"},
                **{"transport": "tcp-server", "host": HOST, "port": free_port()},
                **{"peers": [HOST], "orders": "both"},
            },
            {
                **{"name": cobas.name, "protocol": "astm", "driver": "roche-cobas-c311"},
                **{"transport": "serial", "device": str(data_dir / _SERIAL_LINK)},
                **{"baud": 9600, "data_bits": 8, "parity": "none", "stop_bits": 1},
                **{"flow_control": "none", "orders": "query"},
                "reconnect": {"initial": "200ms", "maximum": "2s"},
            },
            {
                **{"name": bc.name, "protocol": "hl7", "driver": "mindray-bc"},
                **{"transport": "tcp-server", "host": HOST, "port": free_port()},
                **{"orders": "none", "limits": {"max_connections": 2, "idle_timeout": "10m"}},
            },
        ],
    }
    path = data_dir / "lisgw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def order_message(analyzer: DemoAnalyzer, number: int) -> bytes:
    """An ORM^O01 for the analyzer's sample (invented patient)."""
    placer = f"DEMO{number:04d}"
    lines = [
        f"MSH|^~\\&|HIS|WARD|LISGW|LAB|20260101115900||ORM^O01^ORM_O01|ORM{placer}|P|2.5.1",
        f"PID|1||PAT{placer}^^^HIS^MR||DEMO^PATIENT{number}||19800101|F",
    ]
    for index, code in enumerate(analyzer.his_codes, 1):
        lines.append(f"ORC|NW|{placer}|{analyzer.sample}||||||20260101115800")
        lines.append(f"OBR|{index}|{placer}|{analyzer.sample}|{code}^{code}^L|||20260101115000")
    return "".join(line + "\r" for line in lines).encode("ascii")


def mllp_payloads(data: bytes) -> list[bytes]:
    """The complete HL7 messages of an MLLP capture, as the gateway's framer reads them."""
    framer = MllpFramer()
    framer.receive_data(data)
    framer.close()
    payloads = []
    while (event := framer.next_event()) is not NEED_DATA:
        if isinstance(event, MllpMessage) and event.complete:
            payloads.append(event.payload)
    return payloads


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def _connection(config: GatewayConfig, name: str) -> ConnectionConfig:
    for connection in config.connections:
        if connection.name == name:
            return connection
    raise LisgwError(f"the demo configuration has no connection {name!r}")


def _tcp_port(config: GatewayConfig, name: str) -> int:
    tcp = _connection(config, name).tcp
    if tcp is None:
        raise LisgwError(f"the demo's {name} connection has no TCP port")
    return tcp.port


class _Demo:
    """One run of the scenario (module docstring)."""

    def __init__(
        self, reactor: Any, data_dir: Path, corpus: Path, echo: Callable[[str], None]
    ) -> None:
        self.reactor = reactor
        self.data_dir = data_dir
        self.corpus = corpus
        self.echo = echo
        self.his = HisSimulator(reactor, clock=reactor, host=HOST)
        self.tallies = {a.name: AnalyzerTally(a) for a in DEMO_ANALYZERS}
        self.gateway: Gateway | None = None
        self.pty: PtyMasterPort | None = None
        self.simulators: list[AnalyzerSimulator] = []

    def capture(self, analyzer: DemoAnalyzer) -> bytes:
        path = self.corpus / analyzer.capture
        if not path.is_file():
            raise LisgwError(f"the corpus capture {path} is missing")
        return path.read_bytes()

    async def run(self, timeout: float) -> DemoReport:
        for analyzer in DEMO_ANALYZERS:  # a missing capture is reported before anything starts
            self.capture(analyzer)
        his_port = await self.his.start()
        self.echo(f"HIS simulator listening on {HOST}:{his_port}")
        config = load_config(write_demo_config(self.data_dir, his_port))
        cobas = self._open_serial_line(config)
        self.gateway = Gateway(
            config,
            open_store(config, self.reactor),
            GatewayParts.load(config),
            reactor=self.reactor,
        )
        await self.gateway.start()
        self.echo(f"gateway ready, store {config.store_url}")
        for number, analyzer in enumerate(DEMO_ANALYZERS, 1):
            await self._send_order(analyzer, number)
        deadline = self.reactor.seconds() + timeout
        sending = [
            Deferred.fromCoroutine(self._astm_tcp(DEMO_ANALYZERS[0], config)),
            Deferred.fromCoroutine(self._astm_serial(DEMO_ANALYZERS[1], cobas)),
            Deferred.fromCoroutine(self._hl7(DEMO_ANALYZERS[2], config)),
        ]
        remaining = max(deadline - self.reactor.seconds(), 0.1)
        try:
            await gatherResults(sending, consumeErrors=True).addTimeout(remaining, self.reactor)
        except defer.TimeoutError:  # the report names what did not arrive
            self.echo(f"timed out after {timeout:g} s waiting for the analyzers")
        await self._wait_deliveries(deadline)
        return await self._report()

    def _open_serial_line(self, config: GatewayConfig) -> AnalyzerSimulator:
        simulator = AnalyzerSimulator(clock=self.reactor, name="c311")
        self.simulators.append(simulator)
        self.pty = open_pty(simulator, self.reactor)
        line = _connection(config, DEMO_ANALYZERS[1].name).serial
        if line is None:
            raise LisgwError("the demo's cobas c311 connection has no serial device")
        device = Path(line.device)
        device.unlink(missing_ok=True)
        device.symlink_to(self.pty.device)
        return simulator

    async def _send_order(self, analyzer: DemoAnalyzer, number: int) -> None:
        gateway = self.gateway
        port = 0 if gateway is None else gateway.listening_ports.get("his-orders", 0)
        client = await connect_mllp(
            TCP4ClientEndpoint(self.reactor, HOST, port), clock=self.reactor
        )
        try:
            reply = await client.request(order_message(analyzer, number), timeout=10)
        finally:
            await client.close()
        ack = read_ack(reply.payload)
        if ack.code == "AA":
            self.tallies[analyzer.name].orders += 1
        codes = ", ".join(analyzer.his_codes)
        self.echo(f"order sent: sample {analyzer.sample} ({codes}) for {analyzer.name}: {ack.code}")

    async def _astm_tcp(self, analyzer: DemoAnalyzer, config: GatewayConfig) -> None:
        simulator = AnalyzerSimulator(clock=self.reactor, name="XN-550")
        self.simulators.append(simulator)
        port = _tcp_port(config, analyzer.name)
        await TCP4ClientEndpoint(self.reactor, HOST, port).connect(simulator.factory())
        await simulator.when_connected()
        self.echo(f"analyzer connected: {analyzer.name} over TCP port {port}")
        await self._replay(analyzer, simulator)

    async def _astm_serial(self, analyzer: DemoAnalyzer, simulator: AnalyzerSimulator) -> None:
        gateway = self.gateway
        client = None if gateway is None else gateway.clients[0]
        for _ in range(100):  # the gateway opens the device asynchronously
            if client is None or getattr(client, "protocol", None) is not None:
                break
            await _sleep(self.reactor, _POLL)
        self.echo(f"analyzer connected: {analyzer.name} over serial line (pty)")
        await self._replay(analyzer, simulator)

    async def _replay(self, analyzer: DemoAnalyzer, simulator: AnalyzerSimulator) -> None:
        tally = self.tallies[analyzer.name]
        for message in capture_messages(self.capture(analyzer)):
            outcome = await simulator.send_message(message)
            if outcome.delivered:
                tally.messages += 1
                tally.results += sum(1 for r in message if r[:2] == b"R|")
                self.echo(f"results stored: {analyzer.name} sample {analyzer.sample}")
            else:
                self.echo(f"not stored: {analyzer.name}: {outcome.reason}")

    async def _hl7(self, analyzer: DemoAnalyzer, config: GatewayConfig) -> None:
        port = _tcp_port(config, analyzer.name)
        endpoint = TCP4ClientEndpoint(self.reactor, HOST, port)
        client = await connect_mllp(endpoint, clock=self.reactor)
        self.echo(f"analyzer connected: {analyzer.name} over MLLP port {port}")
        tally = self.tallies[analyzer.name]
        try:
            for payload in mllp_payloads(self.capture(analyzer))[:1]:
                ack = read_ack((await client.request(payload, timeout=10)).payload)
                if ack.code == "AA":
                    tally.messages += 1
                    tally.results += payload.count(b"\rOBX|")
                    self.echo(f"results stored: {analyzer.name} sample {analyzer.sample}")
                else:
                    self.echo(f"not stored: {analyzer.name}: {ack.code}")
        finally:
            await client.close()

    def _delivered_samples(self) -> set[str]:
        samples = set()
        for received in self.his.received:
            try:
                obr = parse_message(received.payload, lenient=True).segment("OBR")
            except CodecError:
                continue
            accepted = received.answer is AckMode.ACCEPT  # delivered: the HIS answered AA
            if obr is not None and accepted and received.message_type.startswith("ORU"):
                samples.add(obr.get(3))
        return samples

    async def _wait_deliveries(self, deadline: float) -> None:
        announced: set[str] = set()
        expected = {a.sample: a for a in DEMO_ANALYZERS}
        while True:
            for sample in sorted(self._delivered_samples() - announced):
                announced.add(sample)
                analyzer = expected.get(sample)
                if analyzer is not None:
                    self.tallies[analyzer.name].delivered += 1
                    self.echo(f"ORU delivered: {analyzer.name} sample {sample} to the HIS")
            if set(expected) <= announced or self.reactor.seconds() > deadline:
                return
            await _sleep(self.reactor, _POLL)

    async def _report(self) -> DemoReport:
        report = DemoReport(list(self.tallies.values()))
        if self.gateway is not None:
            dead = await self.gateway.store.run(outbox_rows, state=OutboxState.DEAD)
            report.dead_letters = len(dead)
            if dead:
                report.missing.append(f"{len(dead)} result message(s) dead-lettered")
        for tally in report.tallies:
            if tally.delivered == 0:
                report.missing.append(
                    f"{tally.analyzer.name}: no ORU^R01 for sample {tally.analyzer.sample} "
                    "accepted by the HIS"
                )
        return report

    async def stop(self) -> None:
        # The gateway first: it closes its lines, so that no analyzer hang-up looks like a fault.
        if self.gateway is not None:
            await self.gateway.stop()
        for simulator in self.simulators:
            await simulator.close()
        if self.pty is not None:
            self.pty.loseConnection()  # type: ignore[no-untyped-call]
            (self.data_dir / _SERIAL_LINK).unlink(missing_ok=True)  # the line is gone
        await self.his.stop()


async def run_demo(
    reactor: Any,
    data_dir: Path,
    *,
    corpus: Path | None = None,
    timeout: float = 60.0,
    echo: Callable[[str], None] = print,
) -> DemoReport:
    """Run the scenario in ``reactor`` with its files in ``data_dir``; the report."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    demo = _Demo(reactor, data_dir, corpus or default_corpus(), echo)
    try:
        return await demo.run(timeout)
    finally:
        await demo.stop()
