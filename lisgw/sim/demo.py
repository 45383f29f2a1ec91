"""The ``lisgw demo``: a gateway, the HIS simulator and the scenario's analyzers in one reactor.

Layer: simulator (Twisted), above lisgw.services.gateway; lisgw.cli.demo runs it. Nothing here
is new machinery: the gateway is ``lisgw.services.gateway.Gateway`` on its embedded SQLite
store, and the scenario (simulators/demo.yaml by default, lisgw.sim.scenario) is played by
lisgw.sim.runner: the HIS simulator, the orders, an ASTM analyzer over TCP, one over a
pseudo-terminal (the gateway opens it as its serial device), one HL7 analyzer over MLLP, and
the cobas c311's host query answered by the gateway's order download.

What the demo adds: a gateway configuration of the shape of config/lisgw.yaml written into
the data directory from the scenario (ports chosen free at run time, drivers and test codes
from the scenario), the gateway started in-process once the HIS listens and the serial lines
are plugged in, and the count of dead letters in its store at the end.

Everything the demo reads ships with lisgw (simulators/ and simulators/captures/ beside a
checkout, ``<prefix>/share/lisgw/simulators`` in an installed wheel): no corpus is needed.
The orders' patients are invented; progress lines name samples and counts, never patients.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml
from twisted.internet.task import deferLater

from lisgw.config import load_config
from lisgw.config_schema import TransportKind, WireProtocol
from lisgw.errors import LisgwError
from lisgw.services.gateway import Gateway, GatewayParts, open_store
from lisgw.sim.runner import ScenarioReport, ScenarioRun
from lisgw.sim.scenario import Scenario, ScenarioAnalyzer, ScenarioTransport, load_scenario
from lisgw.store.records import OutboxState
from lisgw.store.work import outbox_rows

__all__ = ["free_port", "run_demo", "write_demo_config"]

HOST: Final = "127.0.0.1"
_POLL: Final = 0.1
_LINE_WAIT: Final = 10.0  # seconds for the gateway's first open of a serial device


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _connection(analyzer: ScenarioAnalyzer, data_dir: Path) -> dict[str, Any]:
    """The gateway connection that ``analyzer`` plays, on a free port or a device link."""
    entry: dict[str, Any] = {"name": analyzer.connection, "protocol": analyzer.protocol.value}
    if analyzer.driver is not None:
        entry["driver"] = analyzer.driver
    if analyzer.transport is ScenarioTransport.SERIAL:
        entry.update(transport=TransportKind.SERIAL.value)
        entry.update(device=str(data_dir / f"{analyzer.connection}.tty"), baud=9600)
        entry["reconnect"] = {"initial": "200ms", "maximum": "2s"}
    else:
        server = analyzer.transport is ScenarioTransport.TCP
        kind = TransportKind.TCP_SERVER if server else TransportKind.TCP_CLIENT
        entry.update(transport=kind.value, host=HOST, port=free_port())
        if server and analyzer.protocol is WireProtocol.ASTM:
            entry["peers"] = [HOST]
        if not server:
            entry["reconnect"] = {"initial": "200ms", "maximum": "2s"}
    if analyzer.protocol is WireProtocol.HL7:
        entry["orders"] = "none"
    else:
        entry["orders"] = "query" if analyzer.query is not None else "both"
    return entry


def write_demo_config(data_dir: Path, his_port: int, scenario: Scenario) -> Path:
    """config/lisgw.yaml's shape for ``scenario``, in ``data_dir``, with free ports."""
    data: dict[str, Any] = {
        "data_dir": str(data_dir),
        "time_zone": "Asia/Ho_Chi_Minh",
        "routing": {"send_unsolicited": False},
        "his": {
            "profile": "hl7-v251",
            "results": {
                "host": HOST,
                "port": his_port,
                "ack_timeout": "10s",
                "connect_timeout": "2s",
                "backoff": {"base": "500ms", "cap": "2s"},
            },
            "orders": {"host": HOST, "port": free_port()},
        },
        "connections": [_connection(a, data_dir) for a in scenario.analyzers],
    }
    if scenario.test_codes:
        codes = data_dir / "test-codes.yaml"
        codes.write_text(yaml.safe_dump(scenario.test_codes, sort_keys=False), encoding="utf-8")
        data["test_codes"] = str(codes)
    path = data_dir / "lisgw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class _Demo:
    """One run of the demo (module docstring)."""

    def __init__(
        self, reactor: Any, data_dir: Path, scenario: Scenario, echo: Callable[[str], None]
    ) -> None:
        self.reactor = reactor
        self.data_dir = data_dir
        self.scenario = scenario
        self.echo = echo
        self.gateway: Gateway | None = None
        self.run: ScenarioRun | None = None

    async def play(self, timeout: float) -> ScenarioReport:
        config = load_config(write_demo_config(self.data_dir, free_port(), self.scenario))
        self.run = ScenarioRun(
            self.reactor, self.scenario, config, self.echo, line_ready=self._line_ready
        )
        await self.run.prepare()
        store = open_store(config, self.reactor)
        self.gateway = Gateway(config, store, GatewayParts.load(config), reactor=self.reactor)
        await self.gateway.start()
        self.echo(f"gateway ready, store {config.store_url}")
        report = await self.run.run(timeout)
        dead = await self.gateway.store.run(outbox_rows, state=OutboxState.DEAD)
        report.dead_letters = len(dead)
        if dead:
            report.missing.append(f"{len(dead)} result message(s) dead-lettered")
        return report

    async def _line_ready(self, analyzer: ScenarioAnalyzer) -> None:
        """Returns once the gateway opened the serial line ``analyzer`` plays."""
        gateway = self.gateway
        if gateway is None:
            raise LisgwError("the demo's gateway is not running")
        clients = [c for c in gateway.clients if c.name == analyzer.connection]
        if not clients:
            raise LisgwError(f"the demo's gateway has no line for {analyzer.connection}")
        deadline = self.reactor.seconds() + _LINE_WAIT
        while clients[0].protocol is None:  # the gateway opens the device asynchronously
            if self.reactor.seconds() > deadline:
                raise LisgwError(f"the gateway did not open the line of {analyzer.connection}")
            await deferLater(self.reactor, _POLL, lambda: None)

    async def stop(self) -> None:
        # The gateway first: it closes its lines, so that no analyzer hang-up looks like a fault.
        if self.gateway is not None:
            await self.gateway.stop()
        if self.run is not None:
            await self.run.stop()


async def run_demo(
    reactor: Any,
    data_dir: Path,
    *,
    scenario: str | Path = "demo",
    timeout: float = 60.0,
    echo: Callable[[str], None] = print,
) -> ScenarioReport:
    """Run the scenario with an in-process gateway whose files are in ``data_dir``."""
    loaded = load_scenario(scenario)  # its problems are reported before anything starts
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    demo = _Demo(reactor, data_dir, loaded, echo)
    try:
        return await demo.play(timeout)
    finally:
        await demo.stop()
