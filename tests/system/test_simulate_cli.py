"""``lisgw simulate`` as subprocesses on 127.0.0.1: the HIS simulator against the MLLP
analyzer and the order sender, and a scenario and a querying analyzer against ``lisgw run``.

Every process is bounded (``within``) and killed in cleanup; ports are chosen by the
commands themselves (``--listen 0``, printed) or free ones written in the configuration.
The captures are those shipped in simulators/captures (provenance in its README).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial import unittest

from lisgw.sim.demo import write_demo_config
from lisgw.sim.scenario import load_scenario
from tests.system.conftest import (
    REACTOR,
    REPO,
    Workdir,
    eventually,
    free_port,
    start_gateway,
    within,
)

HL7_CAPTURE = REPO / "simulators" / "captures" / "mindray_bc5130_oru_r01_cbc.hl7"


class Cli(ProcessProtocol):
    """``python -m lisgw ARGS``: its output so far, and its exit code once ended."""

    def __init__(self, case: Any, *args: str) -> None:
        self.output = ""
        self.ended: Deferred[int | None] = Deferred()
        self.running = True
        self.process = REACTOR.spawnProcess(
            self, sys.executable, [sys.executable, "-m", "lisgw", *args], path=str(REPO),
            env=None,
        )  # fmt: skip
        case.addCleanup(self.kill)

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        value = reason.value
        code = value.exitCode if isinstance(value, ProcessDone | ProcessTerminated) else None
        self.ended.callback(code)

    async def exit_code(self, seconds: float = 60) -> int | None:
        code: int | None = await within(self.ended, seconds, "the command to exit")
        return code

    async def port(self) -> int:
        """The port the command says it listens on."""
        await eventually(lambda: "listening on 127.0.0.1:" in self.output, 30, "the port")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.output)
        assert match is not None, self.output
        return int(match.group(1))

    def kill(self) -> Deferred[None] | None:
        if not self.running:
            return None
        self.process.signalProcess("KILL")
        return self.ended.addBoth(lambda _: None)


class SimulateHisAndMllpAnalyzer(unittest.TestCase):
    async def test_his_answers_ae_to_the_mllp_analyzer_and_stops_after_one(self) -> None:
        his = Cli(self, "simulate", "his", "--listen", "0", "--ack", "AE", "--exit-after", "1")
        port = await his.port()
        analyzer = Cli(
            self, "simulate", "analyzer", "--mllp", f"127.0.0.1:{port}",
            "--capture", str(HL7_CAPTURE), "--linger", "0",
        )  # fmt: skip
        self.assertEqual(await analyzer.exit_code(), 1)  # not accepted
        self.assertIn("message 1: AE", analyzer.output)
        self.assertIn("summary: 1 message(s) sent, 0 acknowledged", analyzer.output)
        self.assertEqual(await his.exit_code(), 0)
        self.assertRegex(his.output, r"received ORU\^R01 control id 8 from 127\.0\.0\.1:\d+: "
                         r"sample 5, 29 OBX; answered AE")  # fmt: skip
        self.assertIn("summary: messages received: 1 (AE 1)", his.output)
        self.assertNotIn("DEMO^ANALYZER", his.output)  # no patient name without -v

    async def test_send_order_prints_the_ack(self) -> None:
        his = Cli(self, "simulate", "his", "--listen", "0", "--exit-after", "1")
        port = await his.port()
        sender = Cli(
            self, "simulate", "his", "--send-order", f"127.0.0.1:{port}",
            "--sample", "S-1", "--test", "GLU", "--test", "NA", "--kind", "OML",
        )  # fmt: skip
        self.assertEqual(await sender.exit_code(), 0)
        self.assertIn(
            f"order sent: OML sample S-1 (GLU, NA) to 127.0.0.1:{port}: AA", sender.output
        )
        self.assertEqual(await his.exit_code(), 0)
        self.assertIn("received OML^O21 control id OMLCLI0001", his.output)

    async def test_usage_errors_exit_2_with_the_reason(self) -> None:
        both = Cli(self, "simulate", "analyzer", "--pty", "--connect", "127.0.0.1:1")
        self.assertEqual(await both.exit_code(), 2)
        self.assertIn("give one of --connect, --listen, --serial, --pty, --mllp", both.output)
        unknown = Cli(self, "simulate", "analyzer", "--pty", "--scenario", "nope")
        self.assertEqual(await unknown.exit_code(), 2)
        self.assertIn("no scenario 'nope'", unknown.output)


class SimulateAgainstTheGateway(unittest.TestCase):
    async def test_scenario_then_a_querying_analyzer_against_lisgw_run(self) -> None:
        workdir = Workdir()
        self.addCleanup(workdir.remove)
        data = workdir.path / "data"
        data.mkdir()
        config = write_demo_config(data, free_port(), load_scenario("demo"))
        await start_gateway(self, config, workdir)

        scenario = Cli(
            self, "simulate", "scenario", "demo", "--config", str(config), "--timeout", "60"
        )
        self.assertEqual(await scenario.exit_code(90), 0, scenario.output)
        self.assertIn("host query answered: cobas-c311 sample CL-PL-24-0370", scenario.output)
        self.assertEqual(scenario.output.count("ORU delivered"), 3, scenario.output)
        self.assertIn("scenario OK", scenario.output)

        connections = yaml.safe_load(config.read_text("utf-8"))["connections"]
        xn_port = next(c["port"] for c in connections if c["name"] == "xn-550")
        analyzer = Cli(
            self, "simulate", "analyzer", "--connect", f"127.0.0.1:{xn_port}",
            "--query", "27", "--sender", "XN-550", "--linger", "0",
        )  # fmt: skip
        self.assertEqual(await analyzer.exit_code(), 0, analyzer.output)
        self.assertIn("query 27: answered, 1 order(s)", analyzer.output)
        self.assertIn("1 query(ies), 1 answered", analyzer.output)
