"""``lisgw run`` over every analyzer transport, end to end, on SQLite and on PostgreSQL.

Each test starts the gateway as a subprocess (tests/system/conftest.py: ``start_gateway``)
with the HIS simulator (lisgw.sim.his) and analyzer simulators (lisgw.sim.analyzer) in the
test's reactor, replays a corpus capture (../shared/corpus, read at test time; the corpus
replaced its patient names: de-identified) and checks the ORU^R01 that reaches the HIS: the
sample (OBR-3) and one OBX per result, counted in the independent goldens of
tests/data/expected (written from the bytes, not by lisgw).

* ASTM over TCP with the analyzer as client (the gateway listens) and as server (the gateway
  connects, config ``tcp-client``);
* ASTM over a serial line: a pseudo-terminal pair, the gateway opening the slave by path
  (config ``device``) with every line setting from the configuration;
* HL7 over MLLP (Mindray BC-5130);
* two analyzers on one listener and one address, told apart by their sender names (H.5.1:
  ``XN-550`` and ``ABX``), one byte per write, and a third sender refused;
* serial robustness: the device is missing at start (the gateway starts and keeps retrying),
  appears (a symlink to a pty slave: results flow), is unplugged (the gateway reports it and
  retries), and comes back.

Results go out unsolicited (no orders): orders, downloads and queries are
tests/system/test_orders_flow.py's. Every wait is bounded; loopback only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial import unittest

from lisgw.his.ack import read_ack
from lisgw.hl7.message import Hl7Message, parse_message
from lisgw.sim.analyzer import AnalyzerSimulator, Faults, PtyMasterPort, capture_messages, open_pty
from lisgw.sim.his import AckMode, HisSimulator
from tests.system.conftest import (
    HOST,
    REACTOR,
    REPO,
    GatewayProcess,
    Workdir,
    corpus_file,
    eventually,
    free_port,
    query_store,
    send_to_gateway,
    start_gateway,
    start_his,
    store_url_of,
    within,
    workdir_and_store,
    write_config,
)
from tests.system.test_run import mllp_payloads

XN550 = "astm/sysmex_xn550/sysmex_xn550_cbc_results.bin"
PENTRA = "astm/horiba_pentra_xlr/horiba_pentra_xlr_cbc_diff_results.bin"
MINDRAY = "hl7/mindray_bc5130/mindray_bc5130_hl7_oru_r01_cbc.bin"
EXPECTED = REPO / "tests" / "data" / "expected"
OPENED = "ASTM %s: connected to"  # the gateway's link on a newly opened line
FAST_RECONNECT = {"initial": "100ms", "maximum": "500ms"}


def expected_specimen(capture: str, message: int = 0) -> tuple[str, int]:
    """The golden sample ID and result count of a capture's message (its one specimen)."""
    golden = json.loads((EXPECTED / capture).with_suffix(".json").read_text("utf-8"))
    (specimen,) = golden["messages"][message]["specimens"]
    return specimen["sample_id"], len(specimen["results"])


def oru_specimen(message: Hl7Message) -> tuple[str, int]:
    """OBR-3 (the sample) and the number of OBX of an ORU^R01 for one specimen."""
    obr = message.segment("OBR")
    assert obr is not None, "no OBR in the ORU^R01"
    return obr.get(3), len(list(message.segments("OBX")))


@dataclass
class Running:
    """One started gateway, its HIS simulator and its store."""

    gateway: GatewayProcess
    his: HisSimulator
    store_url: str
    workdir: Workdir

    def orus(self) -> dict[str, int]:
        """Sample → OBX count of every ORU^R01 the HIS accepted."""
        found: dict[str, int] = {}
        for received in self.his.received:
            assert received.message_type.startswith("ORU^R01"), received.message_type
            assert received.answer is AckMode.ACCEPT
            sample, count = oru_specimen(parse_message(received.payload))
            found[sample] = count
        return found

    def log_count(self, *words: str) -> int:
        return sum(all(w in line for w in words) for line in self.gateway.log_text().splitlines())


class _Transports:
    """The end-to-end tests, on the backend a subclass chooses."""

    backend = "sqlite"
    timeout = 90

    async def run_gateway(self, connections: list[dict[str, Any]]) -> Running:
        case: unittest.TestCase = self  # type: ignore[assignment]
        workdir, store_url = workdir_and_store(case, self.backend)
        his, his_port = await start_his(case)
        config = write_config(
            workdir.path,
            his_results_port=his_port,
            his_orders_port=free_port(),
            analyzer_port=free_port(),  # the harness's default analyzer: left idle here
            store_url=store_url,
            send_unsolicited=True,
            name="idle",
            extra_connections=connections,
        )
        gateway = await start_gateway(case, config, workdir)
        return Running(gateway, his, store_url_of(workdir.path, store_url), workdir)

    async def stop(self, running: Running, results: int) -> None:
        """SIGTERM after the deliveries are recorded; the outbox holds them as delivered."""
        await eventually(
            lambda: running.log_count("delivered") > 0, 10, "the delivery to be recorded"
        )
        assert await running.gateway.terminate() == 0, running.gateway.log_tail()
        delivered = query_store(
            running.store_url, "SELECT count(*) FROM outbox WHERE state = 'delivered'"
        )
        assert delivered == [(results,)], running.gateway.log_tail()

    async def send(
        self, simulator: AnalyzerSimulator, capture: str, sample: str | None = None
    ) -> None:
        """Send a capture's message; with ``sample``, under that sample ID (O.3) instead:
        the gateway drops an identical message sent again (content-derived identity)."""
        (records,) = capture_messages(corpus_file(capture))
        if sample is not None:
            records = tuple(_renamed(record, sample) for record in records)
        outcome = await within(simulator.send_message(records), 30, f"{capture} acknowledged")
        assert outcome.delivered, outcome.reason

    # -- ASTM over TCP, both roles ----------------------------------------------------------

    async def test_astm_tcp_server_role_analyzer_connects(self) -> None:
        port = free_port()
        running = await self.run_gateway([astm_server("xn-a", "sysmex-xn", port)])
        simulator = AnalyzerSimulator(clock=REACTOR, name="XN-550")
        await TCP4ClientEndpoint(REACTOR, HOST, port, timeout=5).connect(simulator.factory())
        await self.send(simulator, XN550)
        await within(running.his.wait_for(1), 30, "the ORU^R01 at the HIS")
        assert running.orus() == dict([expected_specimen(XN550)])
        await simulator.close()
        await self.stop(running, 1)

    async def test_astm_tcp_client_role_gateway_connects(self) -> None:
        simulator = AnalyzerSimulator(clock=REACTOR, name="XN-550")
        endpoint = TCP4ServerEndpoint(REACTOR, 0, interface=HOST)
        listening = await endpoint.listen(simulator.factory())
        self.addCleanup(listening.stopListening)  # type: ignore[attr-defined]
        client = {
            "name": "xn-b",
            "protocol": "astm",
            "driver": "sysmex-xn",
            "transport": "tcp-client",
            "host": HOST,
            "port": listening.getHost().port,
            "reconnect": FAST_RECONNECT,
        }
        running = await self.run_gateway([client])
        await within(simulator.when_connected(), 10, "the gateway to connect")
        await self.send(simulator, XN550)
        await within(running.his.wait_for(1), 30, "the ORU^R01 at the HIS")
        assert running.orus() == dict([expected_specimen(XN550)])
        await self.stop(running, 1)

    # -- ASTM over a serial line (pty) ------------------------------------------------------

    async def test_astm_over_a_pty_as_serial(self) -> None:
        simulator = AnalyzerSimulator(clock=REACTOR, name="XN-550")
        port = open_pty(simulator, REACTOR)
        self.addCleanup(port.loseConnection)
        running = await self.run_gateway([serial_connection("xn-c", port.device)])
        await eventually(lambda: running.log_count(OPENED % "xn-c") == 1, 10, "the gateway's open")
        await self.send(simulator, XN550)
        await within(running.his.wait_for(1), 30, "the ORU^R01 at the HIS")
        assert running.orus() == dict([expected_specimen(XN550)])
        await self.stop(running, 1)

    # -- HL7 over MLLP ----------------------------------------------------------------------

    async def test_hl7_over_mllp(self) -> None:
        port = free_port()
        mindray = {
            "name": "bc-5130",
            "protocol": "hl7",
            "driver": "mindray-bc",
            "transport": "tcp-server",
            "host": HOST,
            "port": port,
        }
        running = await self.run_gateway([mindray])
        payload = mllp_payloads(corpus_file(MINDRAY))[0]
        sent = parse_message(payload, lenient=True)
        ack = read_ack(await within(send_to_gateway(port, payload), 20, "the analyzer's ACK"))
        assert (ack.code, ack.control_id) == ("AA", sent.control_id), running.gateway.log_tail()
        await within(running.his.wait_for(1), 30, "the ORU^R01 at the HIS")
        assert running.orus() == dict([expected_specimen(MINDRAY)])
        await self.stop(running, 1)

    # -- two analyzers on one listener, told apart by sender name ---------------------------

    async def test_two_analyzers_one_listener_attributed_by_sender(self) -> None:
        port = free_port()
        xn = astm_server("xn-d", "sysmex-xn", port, senders=["XN-550"])
        pentra = astm_server("pentra", "horiba-pentra", port, senders=["ABX"])
        running = await self.run_gateway([xn, pentra])
        analyzers = []
        for name in ("XN-550", "ABX"):
            simulator = AnalyzerSimulator(
                clock=REACTOR, name=name, faults=Faults(one_byte_writes=True)
            )
            await TCP4ClientEndpoint(REACTOR, HOST, port, timeout=5).connect(simulator.factory())
            analyzers.append(simulator)
        await within(
            _gather(self.send(analyzers[0], XN550), self.send(analyzers[1], PENTRA)),
            40,
            "both captures acknowledged",
        )
        await within(running.his.wait_for(2), 30, "two ORU^R01 at the HIS")
        assert running.orus() == dict([expected_specimen(XN550), expected_specimen(PENTRA)])
        # A third sender on that address is no configured analyzer: refused, nothing kept.
        stranger = AnalyzerSimulator(clock=REACTOR, name="XP-100")
        await TCP4ClientEndpoint(REACTOR, HOST, port, timeout=5).connect(stranger.factory())
        refused = await within(
            stranger.send_message((b"H|\\^&|||XP-100^1", b"L|1")), 20, "the refusal"
        )
        assert not refused.delivered
        assert running.log_count("refused", "'XP-100'") == 1, running.gateway.log_tail()
        for simulator in analyzers:
            await simulator.close()
        await self.stop(running, 2)
        # Each message was stored under the connection its sender names.
        by_connection = query_store(
            running.store_url,
            "SELECT connection, sample_id FROM outbox ORDER BY connection",
        )
        assert by_connection == [
            ("pentra", expected_specimen(PENTRA)[0]),
            ("xn-d", expected_specimen(XN550)[0]),
        ]
        assert running.log_count("attributed by its sender 'XN-550'") == 1
        assert running.log_count("attributed by its sender 'ABX'") == 1

    # -- serial robustness ------------------------------------------------------------------

    async def test_serial_device_missing_then_plugged_then_unplugged(self) -> None:
        ports: list[PtyMasterPort] = []

        def unplug() -> None:
            while ports:
                ports.pop().loseConnection()

        self.addCleanup(unplug)
        workdir = Workdir()
        self.addCleanup(workdir.remove)
        device = workdir.path / "ttyLAB0"
        running = await self.run_gateway([serial_connection("xn-e", str(device))])
        # Started without its device: it says so and keeps retrying.
        await eventually(
            lambda: running.log_count("xn-e", "retrying in") >= 2, 10, "the open to be retried"
        )
        assert running.log_count(OPENED % "xn-e") == 0

        # The adapter is plugged in: the gateway opens it and results flow.
        simulator = AnalyzerSimulator(clock=REACTOR, name="XN-550")
        ports.append(open_pty(simulator, REACTOR))
        os.symlink(ports[-1].device, device)
        await eventually(lambda: running.log_count(OPENED % "xn-e") == 1, 10, "the open")
        await self.send(simulator, XN550)
        await within(running.his.wait_for(1), 30, "the ORU^R01 at the HIS")
        assert running.orus() == dict([expected_specimen(XN550)])

        # Unplugged: the line is reported lost and retried.
        unplug()
        device.unlink()
        await eventually(
            lambda: running.log_count("xn-e", "connection lost", "retrying in") >= 1,
            10,
            "the unplugged line to be reported",
        )
        # And plugged back: the next message goes through.
        simulator = AnalyzerSimulator(clock=REACTOR, name="XN-550")
        ports.append(open_pty(simulator, REACTOR))
        os.symlink(ports[-1].device, device)
        await eventually(lambda: running.log_count(OPENED % "xn-e") == 2, 10, "reopen")
        await self.send(simulator, XN550, sample="28")
        await within(running.his.wait_for(2), 30, "the second ORU^R01 at the HIS")
        sample, count = expected_specimen(XN550)
        assert running.orus() == {sample: count, "28": count}
        await self.stop(running, 2)


def astm_server(
    name: str, driver: str, port: int, *, senders: list[str] | None = None
) -> dict[str, Any]:
    connection: dict[str, Any] = {
        "name": name,
        "protocol": "astm",
        "driver": driver,
        "transport": "tcp-server",
        "host": HOST,
        "port": port,
        "peers": [HOST],
    }
    if senders is not None:
        connection["senders"] = senders
    return connection


def serial_connection(name: str, device: str) -> dict[str, Any]:
    """An ASTM analyzer on a serial line, every line setting written out (a pty ignores the
    rate and framing, but the gateway must accept and apply them)."""
    return {
        "name": name,
        "protocol": "astm",
        "driver": "sysmex-xn",
        "transport": "serial",
        "device": device,
        "baud": 19200,
        "data_bits": 8,
        "parity": "none",
        "stop_bits": 1,
        "flow_control": "none",
        "reconnect": FAST_RECONNECT,
    }


def _renamed(record: bytes, sample: str) -> bytes:
    """An O record with O.3's sample ID (first component, right-aligned) replaced."""
    if not record.startswith(b"O|"):
        return record
    fields = record.split(b"|")
    components = fields[3].split(b"^")
    components[2] = sample.encode().rjust(len(components[2]))
    fields[3] = b"^".join(components)
    return b"|".join(fields)


async def _gather(*waiting: Any) -> list[Any]:
    return await gatherResults([ensureDeferred(w) for w in waiting], consumeErrors=True)


class TestTransportsOnSqlite(_Transports, unittest.TestCase):
    backend = "sqlite"


class TestTransportsOnPostgresql(_Transports, unittest.TestCase):
    backend = "postgresql"
