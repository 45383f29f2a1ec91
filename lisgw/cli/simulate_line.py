"""The running part of ``lisgw simulate analyzer``: open the line, query, replay, print.

Layer: interface (Twisted side of lisgw.cli.simulate_analyzer). ASTM lines carry an
``AnalyzerSimulator`` (real E1381, faults on its wire); an MLLP line carries an MLLP client
that sends each HL7 message and prints the ACK code. Downloads are printed as they arrive,
as specimen IDs and test codes (lisgw.sim.runner.download_summary), the records themselves
only when verbose. Exit status 1 when a message was not acknowledged or a query got no reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from lisgw.his.ack import read_ack
from lisgw.sim.analyzer import AnalyzerSimulator, PtyMasterPort, open_pty
from lisgw.sim.captures import read_astm_messages, read_hl7_messages
from lisgw.sim.runner import download_summary
from lisgw.transports.mllp import connect_mllp
from lisgw.transports.serial import SerialEndpoint, SerialSettings

if TYPE_CHECKING:
    from lisgw.cli.simulate_analyzer import Plan

__all__ = ["AnalyzerCommand", "Line"]

_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Line:
    """Exactly one of these is set (checked by the command)."""

    connect: tuple[str, int] | None = None
    listen: int | None = None
    serial: str | None = None
    baud: int = 9600
    pty: bool = False
    mllp: tuple[str, int] | None = None


class AnalyzerCommand:
    """One ``simulate analyzer`` run: the line, the plan, what happened."""

    def __init__(self, line: Line, plan: Plan, *, linger: float | None, verbose: bool) -> None:
        self.line = line
        self.plan = plan
        self.linger = linger
        self.verbose = verbose
        self.simulator: AnalyzerSimulator | None = None
        self.sent = 0
        self.acknowledged = 0
        self.queries_answered = 0
        self.downloads = 0
        self._pty: PtyMasterPort | None = None
        self._port: IListeningPort | None = None
        self._waiting: Deferred[tuple[bytes, ...]] | None = None

    async def main(self, reactor: Any) -> int:
        try:
            if self.line.mllp is not None:
                status = await self._hl7(reactor, *self.line.mllp)
            else:
                status = await self._astm(reactor)
            if self.linger is None:
                click.echo("on the line; Ctrl-C to stop")
                await Deferred()  # until Ctrl-C stops the reactor
            elif self.linger > 0:
                await deferLater(reactor, self.linger, lambda: None)
            return status
        finally:
            await self._close()

    async def _astm(self, reactor: Any) -> int:
        plan = self.plan
        messages = read_astm_messages(plan.capture) if plan.capture is not None else []
        simulator = AnalyzerSimulator(clock=reactor, name=plan.sender, faults=plan.faults)
        self.simulator = simulator
        await self._open(reactor, simulator)
        self._watch(simulator)
        status = 0
        for sample in plan.queries:
            status |= await self._query(reactor, simulator, sample)
        for _ in range(plan.repeat if messages else 0):
            for number, message in enumerate(messages, 1):
                self.sent += 1
                dropped = simulator.plan.eots_dropped
                outcome = await simulator.send_message(message)
                results = sum(1 for r in message if r[:2] == b"R" + message[0][1:2])
                if simulator.plan.eots_dropped > dropped:
                    click.echo(f"message {number}: sent without EOT (fault): incomplete")
                elif outcome.delivered:
                    self.acknowledged += 1
                    click.echo(f"message {number}: acknowledged ({results} results)")
                else:
                    status = 1
                    click.echo(f"message {number}: not acknowledged: {outcome.reason}")
        return status

    async def _open(self, reactor: Any, simulator: AnalyzerSimulator) -> None:
        line = self.line
        if line.connect is not None:
            host, port = line.connect
            await TCP4ClientEndpoint(reactor, host, port, timeout=10).connect(simulator.factory())
            await simulator.when_connected()
            click.echo(f"connected to {host}:{port}")
        elif line.listen is not None:
            endpoint = TCP4ServerEndpoint(reactor, line.listen, interface="127.0.0.1")  # type: ignore[no-untyped-call]
            self._port = await endpoint.listen(simulator.factory())  # type: ignore[no-untyped-call]
            bound = getattr(self._port.getHost(), "port", line.listen)
            click.echo(f"listening on 127.0.0.1:{bound}; waiting for the gateway")
            await simulator.when_connected()
            click.echo("gateway connected")
        elif line.serial is not None:
            settings = SerialSettings(device=line.serial, baudrate=line.baud)
            await SerialEndpoint(reactor, settings).connect(simulator.factory())
            click.echo(f"serial line {line.serial} open at {line.baud} baud")
        else:
            self._pty = open_pty(simulator, reactor)
            click.echo(f"pty ready: configure the gateway's serial device as {self._pty.device}")

    def _watch(self, simulator: AnalyzerSimulator) -> None:
        def downloaded(records: tuple[bytes, ...]) -> None:
            self.downloads += 1
            samples, tests = download_summary(records)
            click.echo(
                f"download: {len(records)} records, {len(samples)} order(s), specimen(s) "
                f"{', '.join(samples) or '-'}, tests {', '.join(tests) or '-'}"
            )
            if self.verbose:
                for record in records:
                    click.echo("  " + record.decode("latin-1"))
            self._watch(simulator)

        def stopped(failure: Failure) -> None:
            failure.trap(CancelledError)  # type: ignore[no-untyped-call]

        self._waiting = simulator.next_download()
        self._waiting.addCallback(downloaded).addErrback(stopped)

    async def _query(self, reactor: Any, simulator: AnalyzerSimulator, sample: str) -> int:
        before = len(simulator.downloads)
        outcome = await simulator.send_host_query([sample], self.plan.query_form)
        if not outcome.delivered:
            click.echo(f"query {sample}: not acknowledged: {outcome.reason}")
            return 1
        click.echo(f"query {sample}: sent ({self.plan.query_form})")
        deadline = reactor.seconds() + self.plan.query_wait
        while len(simulator.downloads) == before and reactor.seconds() < deadline:
            await deferLater(reactor, _POLL, lambda: None)
        if len(simulator.downloads) == before:
            click.echo(f"query {sample}: no reply within {self.plan.query_wait:g} s")
            return 1
        samples, tests = download_summary(simulator.downloads[before])
        self.queries_answered += 1
        click.echo(
            f"query {sample}: answered, {len(samples)} order(s), tests {', '.join(tests) or '-'}"
        )
        return 0

    async def _hl7(self, reactor: Any, host: str, port: int) -> int:
        plan = self.plan
        if plan.capture is None:
            click.echo("nothing to send: give --capture or --scenario")
            return 1
        messages = read_hl7_messages(plan.capture)
        client = await connect_mllp(
            TCP4ClientEndpoint(reactor, host, port, timeout=10), clock=reactor
        )
        click.echo(f"connected to {host}:{port} (MLLP)")
        status = 0
        try:
            for _ in range(plan.repeat):
                for number, payload in enumerate(messages, 1):
                    self.sent += 1
                    ack = read_ack((await client.request(payload, timeout=30)).payload)
                    reason = f" ({ack.text})" if ack.text else ""
                    click.echo(f"message {number}: {ack.code}{reason}")
                    if ack.accepted:
                        self.acknowledged += 1
                    else:
                        status = 1
        finally:
            await client.close()
        return status

    async def _close(self) -> None:
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        if self.simulator is not None:
            await self.simulator.close()
        if self._port is not None:
            await maybeDeferred(self._port.stopListening)
        if self._pty is not None:
            self._pty.loseConnection()  # type: ignore[no-untyped-call]

    def summary(self) -> None:
        click.echo(
            f"summary: {self.sent} message(s) sent, {self.acknowledged} acknowledged; "
            f"{len(self.plan.queries)} query(ies), {self.queries_answered} answered; "
            f"{self.downloads} download(s)"
        )
