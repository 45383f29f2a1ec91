"""``lisgw simulate analyzer``: one simulated instrument (lisgw.sim.analyzer) on a real line.

Layer: interface. The instrument reaches the gateway over TCP (``--connect``, or
``--listen`` when the gateway connects to it), a serial device (``--serial``), a new
pseudo-terminal (``--pty``: its path is printed for the gateway's configuration), or MLLP
(``--mllp``, an HL7 instrument). It sends host queries (``--query``) and prints the orders the
gateway downloads in reply, replays a capture (``--capture``, or the analyzer of a scenario
file), with wire faults on demand, accepts order downloads at any time and prints them
(specimen IDs and test codes; the records themselves only with ``-v``: they hold patient
data), then stays on the line until Ctrl-C unless ``--linger`` says how long.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from lisgw.errors import ConfigError

__all__ = ["analyzer", "host_port"]

FAULTS = ("bad-checksum", "drop-eot", "one-byte-writes", "stall")


def host_port(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` of an option; click.BadParameter naming it otherwise."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint=option)
    return host, int(port)


@dataclass(slots=True)
class Plan:
    """What the simulated analyzer does (from the options, or a scenario's analyzer)."""

    capture: Path | None
    sample: str = ""
    queries: list[str] = field(default_factory=list)
    query_form: str = "astm-q"
    query_wait: float = 10.0
    repeat: int = 1
    sender: str = "SIM"
    faults: Any = None  # lisgw.sim.analyzer.Faults


@click.command()
@click.option("--connect", "connect_to", metavar="HOST:PORT", help="Connect to the gateway.")
@click.option(
    "--listen",
    "listen_port",
    type=click.IntRange(0, 65535),
    help="Listen on this port (0: any); the gateway connects (tcp-client).",
)
@click.option("--serial", "device", help="Open this serial device (e.g. /dev/ttyUSB0).")
@click.option(
    "--baud",
    type=click.IntRange(min=1),
    default=9600,
    show_default=True,
    help="Baud rate with --serial.",
)
@click.option("--pty", is_flag=True, help="Create a pseudo-terminal; print the gateway's end.")
@click.option("--mllp", "mllp_to", metavar="HOST:PORT", help="An HL7 analyzer: MLLP client.")
@click.option(
    "--capture",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Capture to replay: ASTM (.bin framed, .astm records) or HL7 (.bin, .hl7).",
)
@click.option(
    "--scenario",
    "scenario_name",
    help="Take capture, query, faults from an analyzer of this scenario.",
)
@click.option(
    "--analyzer",
    "analyzer_name",
    help="Which analyzer of --scenario (its connection name; default: the first).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=None,
    help="Replay the capture this many times (default 1).",
)
@click.option(
    "--query",
    "queries",
    multiple=True,
    metavar="SAMPLE",
    help="Ask for this sample's orders first (host query); repeatable.",
)
@click.option(
    "--query-form",
    type=click.Choice(["astm-q", "roche-tsreq"]),
    default=None,
    help="Query shape: E1394 Q record, or cobas TSREQ (default astm-q).",
)
@click.option(
    "--query-wait",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to wait for the reply to each query (default 10).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    type=click.Choice(FAULTS),
    help="Inject a wire fault: the first frame's checksum wrong, the first EOT "
    "dropped, one byte per write, a stall before the first frame (repeatable).",
)
@click.option(
    "--stall-seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Length of the stall fault.",
)
@click.option("--sender", default=None, help="Sender name in H.5 of queries (default SIM).")
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to stay on the line afterwards (default: until Ctrl-C).",
)
@click.option("-v", "--verbose", is_flag=True, help="Print downloaded records in full.")
def analyzer(
    connect_to: str | None, listen_port: int | None, device: str | None, baud: int, pty: bool,
    mllp_to: str | None, capture: Path | None, scenario_name: str | None,
    analyzer_name: str | None, repeat: int | None, queries: tuple[str, ...],
    query_form: str | None, query_wait: float | None, faults: tuple[str, ...],
    stall_seconds: float, sender: str | None, linger: float | None, verbose: bool,
) -> None:  # fmt: skip
    """Play an analyzer: queries, results, faults; print what the gateway downloads.

    \b
    Examples:
      lisgw simulate analyzer --connect 127.0.0.1:15001 \\
          --capture simulators/captures/sysmex_xn550_cbc_results.astm --linger 5
      lisgw simulate analyzer --connect 127.0.0.1:15001 --query 27 --linger 0
      lisgw simulate analyzer --pty --scenario demo --analyzer cobas-c311
      lisgw simulate analyzer --serial /dev/ttyUSB0 --capture run.bin --fault bad-checksum
      lisgw simulate analyzer --listen 4001 --capture run.bin --fault one-byte-writes
      lisgw simulate analyzer --mllp 127.0.0.1:15003 \\
          --capture simulators/captures/mindray_bc5130_oru_r01_cbc.hl7 --repeat 10
    """
    from lisgw.cli.simulate import run_in_reactor
    from lisgw.cli.simulate_line import AnalyzerCommand, Line

    lines = [x for x in (connect_to, listen_port, device, mllp_to) if x is not None]
    if len(lines) + pty != 1:
        raise click.UsageError("give one of --connect, --listen, --serial, --pty, --mllp")
    if mllp_to is not None and queries:
        raise click.UsageError("--query: host queries are ASTM (not with --mllp)")
    try:
        plan = _plan(scenario_name, analyzer_name, capture)
    except ConfigError as error:
        click.echo("\n".join(error.problems), err=True)
        sys.exit(2)
    _apply_options(plan, capture, repeat, queries, query_form, query_wait, sender)
    plan.faults = _faults(faults, stall_seconds, plan.faults)
    if plan.capture is None and not plan.queries and linger is not None and linger == 0:
        raise click.UsageError("nothing to do: give --capture, --scenario or --query")
    line = Line(
        connect=host_port(connect_to, "--connect") if connect_to else None,
        listen=listen_port,
        serial=device,
        baud=baud,
        pty=pty,
        mllp=host_port(mllp_to, "--mllp") if mllp_to else None,
    )
    command = AnalyzerCommand(line, plan, linger=linger, verbose=verbose)
    sys.exit(run_in_reactor(command.main, command.summary))


def _plan(scenario_name: str | None, analyzer_name: str | None, capture: Path | None) -> Plan:
    if scenario_name is None:
        if analyzer_name is not None:
            raise click.UsageError("--analyzer needs --scenario")
        return Plan(capture)
    from lisgw.sim.scenario import load_scenario

    loaded = load_scenario(scenario_name)
    chosen = loaded.analyzer(analyzer_name) if analyzer_name else loaded.analyzers[0]
    return Plan(
        capture=chosen.capture,
        sample=chosen.sample,
        queries=[chosen.sample] if chosen.query is not None else [],
        query_form=chosen.query.value if chosen.query is not None else "astm-q",
        query_wait=chosen.query_wait,
        repeat=chosen.repeat,
        sender=chosen.sender,
        faults=chosen.faults,
    )


def _apply_options(
    plan: Plan,
    capture: Path | None,
    repeat: int | None,
    queries: Sequence[str],
    query_form: str | None,
    query_wait: float | None,
    sender: str | None,
) -> None:
    """Options given on the command line win over the scenario's."""
    if capture is not None:
        plan.capture = capture
    if repeat is not None:
        plan.repeat = repeat
    if queries:
        plan.queries = list(queries)
    if query_form is not None:
        plan.query_form = query_form
    if query_wait is not None:
        plan.query_wait = query_wait
    if sender is not None:
        plan.sender = sender


def _faults(names: Sequence[str], stall_seconds: float, base: Any) -> Any:
    from dataclasses import replace

    from lisgw.sim.analyzer import Faults

    faults = base if base is not None else Faults()
    if "bad-checksum" in names:
        faults = replace(faults, bad_checksum_frame=0)
    if "drop-eot" in names:
        faults = replace(faults, drop_eot_after_message=0)
    if "one-byte-writes" in names:
        faults = replace(faults, one_byte_writes=True)
    if "stall" in names:
        faults = replace(faults, stall_before_frame=0, stall_seconds=stall_seconds)
    return faults
