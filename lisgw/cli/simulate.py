"""``lisgw simulate``: an analyzer, the HIS, or a whole scenario, from the command line.

Layer: interface (the top of the import graph). Field debugging without the real devices:
``simulate analyzer`` (lisgw.cli.simulate_analyzer) plays an instrument, ``simulate his``
plays the HIS (receives ORU^R01 and answers AA, AE, AR or nothing, slowly or after an
outage; sends ORM^O01 / OML^O21 orders), ``simulate scenario`` plays a scenario file
(lisgw.sim.runner) against a running gateway described by its configuration file.

Every command prints one line per event on stdout (samples, control IDs, counts, codes; no
patient data unless ``-v``), runs until done or Ctrl-C, then prints a summary. Exit status:
0 when everything asked for happened, 1 otherwise, 2 for a usage or configuration error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from lisgw.cli.simulate_analyzer import analyzer, host_port
from lisgw.errors import ConfigError, LisgwError

__all__ = ["run_in_reactor", "simulate"]


def run_in_reactor(
    main: Callable[[Any], Coroutine[Any, Any, int]], summary: Callable[[], None]
) -> int:
    """Run ``main(reactor)`` in the Twisted reactor until it returns or Ctrl-C stops the
    reactor; print ``summary()`` either way; the exit status."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    status = [1]

    def done(code: int) -> None:
        status[0] = code

    def failed(failure: Failure) -> None:
        error = failure.value
        if isinstance(error, ConfigError):
            click.echo("\n".join(error.problems), err=True)
            status[0] = 2
        elif isinstance(error, LisgwError | OSError | ConnectionError):
            click.echo(f"error: {error}", err=True)
        elif type(error).__module__.startswith("twisted.internet.error"):
            click.echo(f"error: {error}", err=True)  # ConnectionRefusedError and friends
        else:
            click.echo(f"failed:\n{failure.getTraceback()}", err=True)

    def begin() -> None:
        running = Deferred.fromCoroutine(main(reactor))
        running.addCallbacks(done, failed)
        running.addBoth(lambda _: reactor.stop() if reactor.running else None)

    reactor.callWhenRunning(begin)
    reactor.run()
    summary()
    return status[0]


@click.group()
def simulate() -> None:
    """Simulate an analyzer, the HIS, or a whole scenario against a gateway.

    \b
    Examples:
      lisgw simulate analyzer --connect 127.0.0.1:15001 --capture xn550.astm
      lisgw simulate analyzer --pty --query 0000000387 --query-form roche-tsreq
      lisgw simulate his --listen 12576 --ack AE --delay 2
      lisgw simulate his --send-order 127.0.0.1:12575 --sample S1 --test GLU
      lisgw simulate scenario demo --config config/lisgw.yaml
    """


simulate.add_command(analyzer)


@simulate.command()
@click.option(
    "--listen",
    "listen_port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Receive results (ORU^R01) on this port of --host (0: any free port).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--ack",
    type=click.Choice(["AA", "AE", "AR", "none"]),
    default="AA",
    show_default=True,
    help="What to answer each message (none: no answer at all).",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait before each answer (a slow HIS).",
)
@click.option(
    "--down",
    "down",
    multiple=True,
    metavar="AFTER:FOR",
    help="Go down AFTER seconds from start for FOR seconds (repeatable).",
)
@click.option(
    "--exit-after",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after receiving this many messages (default: run until Ctrl-C).",
)
@click.option(
    "--send-order",
    "order_to",
    metavar="HOST:PORT",
    default=None,
    help="Send an order to the gateway's HIS order listener at HOST:PORT.",
)
@click.option("--sample", "samples", multiple=True, help="Sample ID of the order (repeatable).")
@click.option("--test", "tests", multiple=True, help="HIS test code to order (repeatable).")
@click.option(
    "--kind",
    type=click.Choice(["ORM", "OML"]),
    default="ORM",
    show_default=True,
    help="ORM^O01 or OML^O21.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also print each message received.")
def his(
    listen_port: int | None, host: str, ack: str, delay: float, down: tuple[str, ...],
    exit_after: int | None, order_to: str | None, samples: tuple[str, ...],
    tests: tuple[str, ...], kind: str, verbose: bool,
) -> None:  # fmt: skip
    """Play the HIS: receive ORU^R01 and answer, and/or send orders to the gateway.

    \b
    Examples:
      lisgw simulate his --listen 12576                       # accept every result
      lisgw simulate his --listen 12576 --ack none            # never answer
      lisgw simulate his --listen 12576 --delay 5 --down 30:60
      lisgw simulate his --send-order 127.0.0.1:12575 --sample S1 --test GLU --test NA
      lisgw simulate his --send-order 127.0.0.1:12575 --sample S2 --test K --kind OML
    """
    from lisgw.cli.simulate_his import HisCommand

    if listen_port is None and order_to is None:
        raise click.UsageError("give --listen PORT, --send-order HOST:PORT, or both")
    if order_to is not None and (not samples or not tests):
        raise click.UsageError("--send-order needs --sample and at least one --test")
    periods = [_down_period(text) for text in down]
    command = HisCommand(
        host=host, port=listen_port, ack=ack, delay=delay, down=periods,
        exit_after=exit_after, verbose=verbose,
    )  # fmt: skip
    target = host_port(order_to, "--send-order") if order_to is not None else None
    sys.exit(
        run_in_reactor(lambda r: command.main(r, target, samples, tests, kind), command.summary)
    )


def _down_period(text: str) -> tuple[float, float]:
    try:
        after, _, length = text.partition(":")
        period = float(after), float(length)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not AFTER:FOR (seconds)", param_hint="--down"
        ) from None
    if period[0] < 0 or period[1] <= 0:
        raise click.BadParameter(f"{text!r}: AFTER ≥ 0 and FOR > 0", param_hint="--down")
    return period


@simulate.command()
@click.argument("name")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The running gateway's configuration (where everything is).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for every result to reach the HIS simulator.",
)
def scenario(name: str, config_path: Path, timeout: float) -> None:
    """Play scenario NAME (simulators/NAME.yaml, or a file) against a running gateway.

    The HIS simulator listens where the configuration's his.results points (the gateway's
    HIS must be this simulator); orders go to his.orders; each analyzer reaches the
    connection of its name. A serial analyzer gets a pseudo-terminal linked at the
    connection's device path.

    \b
    Examples:
      lisgw run --config config/lisgw.yaml &
      lisgw simulate scenario demo --config config/lisgw.yaml
      lisgw simulate scenario faults --config config/lisgw.yaml --timeout 120
      lisgw simulate scenario ./my-lab.yaml --config /etc/lisgw/lisgw.yaml
    """
    from lisgw.config import load_config
    from lisgw.sim.runner import ScenarioReport, ScenarioRun
    from lisgw.sim.scenario import load_scenario

    try:
        loaded = load_scenario(name)
        config = load_config(config_path)
    except ConfigError as error:
        click.echo("\n".join(error.problems), err=True)
        sys.exit(2)
    runs: list[ScenarioRun] = []
    reports: list[ScenarioReport] = []

    async def main(reactor: Any) -> int:
        run = ScenarioRun(reactor, loaded, config, click.echo)
        runs.append(run)
        try:
            await run.prepare()
            report = await run.run(timeout)
        finally:
            await run.stop()
        reports.append(report)
        return 0 if report.ok else 1

    def summary() -> None:
        if reports:
            report = reports[0]
        elif runs:  # interrupted: what happened so far
            report = ScenarioReport(list(runs[0].tallies.values()), missing=["interrupted"])
        else:
            return
        click.echo("")
        click.echo(report.summary())
        click.echo("scenario OK" if report.ok else "scenario FAILED")

    sys.exit(run_in_reactor(main, summary))
