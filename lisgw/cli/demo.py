"""``lisgw demo``: the gateway, the HIS simulator and three simulated analyzers in one process.

Layer: interface (the top of the import graph). Runs lisgw.sim.demo in the Twisted reactor:
one progress line per event on stdout, a summary table at the end; exit status 0 when every
expected ORU^R01 reached the HIS simulator and every host query was answered within
``--timeout``, 1 otherwise (with what is missing). The gateway's own log lines (warnings and
above) go to stderr. The scenario and its captures ship with lisgw: no corpus is needed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from twisted.logger import LogLevel

from lisgw.cli.run import start_logging
from lisgw.errors import LisgwError

__all__ = ["demo"]


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo keeps its config, SQLite store and serial device link "
    "(default: a temporary directory, removed at the end unless --keep).",
)
@click.option("--keep", is_flag=True, help="Keep the temporary data directory.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for every result to reach the HIS simulator.",
)
@click.option(
    "--scenario",
    default="demo",
    show_default=True,
    help="The scenario to play: a name from simulators/ (demo, faults) or a YAML file.",
)
def demo(data_dir: Path | None, keep: bool, timeout: float, scenario: str) -> None:
    """Run a demo: HIS orders in, three analyzers report, results out to the HIS.

    \b
    Starts, in this one process: the HIS simulator, the gateway on SQLite, a Sysmex XN-550
    (ASTM over TCP), a Roche cobas c311 (ASTM over a serial pseudo-terminal, asking for its
    orders by host query) and a Mindray BC-5130 (HL7 over MLLP), as simulators/demo.yaml says.

    \b
    Examples:
      lisgw demo
      lisgw demo --data-dir ./lisgw-data --keep
      lisgw demo --scenario faults         # checksum errors, stalls, a HIS outage
    """
    temporary = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="lisgw-demo-")) if data_dir is None else data_dir
    start_logging(sys.stderr, "text", LogLevel.warn)
    from twisted.internet import reactor

    status = [1]
    try:
        _run(reactor, directory, timeout, scenario, status)
    finally:
        if temporary and not keep:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            click.echo(f"data kept in {directory}")
    sys.exit(status[0])


def _run(reactor: Any, directory: Path, timeout: float, scenario: str, status: list[int]) -> None:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from lisgw.sim.demo import run_demo
    from lisgw.sim.runner import ScenarioReport

    def echo(line: str) -> None:
        click.echo(line)

    def done(report: ScenarioReport) -> None:
        click.echo("")
        click.echo(report.summary())
        click.echo("demo OK" if report.ok else "demo FAILED")
        status[0] = 0 if report.ok else 1

    def failed(failure: Failure) -> None:
        if isinstance(failure.value, LisgwError | OSError):
            click.echo(f"demo failed: {failure.value}", err=True)
        else:
            click.echo(f"demo failed:\n{failure.getTraceback()}", err=True)
        status[0] = 1

    def begin() -> None:
        running = Deferred.fromCoroutine(
            run_demo(reactor, directory, scenario=scenario, timeout=timeout, echo=echo)
        )
        running.addCallbacks(done, failed)
        running.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(begin)
    reactor.run()
