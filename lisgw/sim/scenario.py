"""Simulation scenarios: which analyzers, which captures, what the HIS does, which faults.

Layer: simulator configuration (reads YAML, no I/O beyond that, no Twisted). A scenario file
(simulators/*.yaml; simulators/README.md is the reference) names the analyzers to simulate —
the gateway connection each plays, its protocol and transport, the capture it replays, the
sample whose orders the HIS sends first, the host query it sends, the faults on its wire —
and the HIS simulator's behaviour (ACK code, delay, down periods). lisgw.sim.runner plays it
against a gateway; ``lisgw demo`` also writes the gateway's configuration from it.

Loading reports every problem at once, as ``file: line N: key.path: problem`` (one
``ConfigError``), with the shared readers of lisgw.config_schema. A capture named by a
relative path is found beside the scenario file.

Scenarios are found like the driver catalogue (lisgw.drivers.catalogue): ``simulators/``
beside the package in a checkout, else ``<sys.prefix>/share/lisgw/simulators`` where a wheel
installs them (pyproject ``data-files``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from lisgw.config_schema import Problems, Section, WireProtocol, read_yaml, shown
from lisgw.errors import ConfigError
from lisgw.sim.analyzer import Faults
from lisgw.sim.his import AckMode

__all__ = [
    "SCENARIO_DIR",
    "DownPeriod",
    "HisBehaviour",
    "QueryForm",
    "Scenario",
    "ScenarioAnalyzer",
    "ScenarioTransport",
    "find_scenario",
    "load_scenario",
    "scenario_names",
]


class ScenarioTransport(StrEnum):
    """How the simulated analyzer reaches the gateway (the gateway's transport in brackets)."""

    TCP = "tcp"  # the analyzer connects (tcp-server); for HL7, an MLLP client
    TCP_LISTEN = "tcp-listen"  # the analyzer listens, the gateway connects (tcp-client)
    SERIAL = "serial"  # a pseudo-terminal; the gateway opens its slave side (serial)


class QueryForm(StrEnum):
    """The shape of an ASTM host query (lisgw.sim.analyzer.host_query_records)."""

    ASTM_Q = "astm-q"  # E1394 §12: Q.3 = ^sample
    ROCHE_TSREQ = "roche-tsreq"  # cobas: H.11 TSREQ^REAL, Q.3 = ^^sample


ORDER_KINDS: Final = ("ORM", "OML")
_ACKS: Final = {"AA": AckMode.ACCEPT, "AE": AckMode.ERROR, "AR": AckMode.REJECT}
_ACKS_SHOWN: Final = ("AA", "AE", "AR", "none")
_DAY: Final = 86400.0


@dataclass(frozen=True, slots=True)
class DownPeriod:
    """The HIS is unreachable from ``after`` seconds (since the run started) for ``duration``."""

    after: float
    duration: float


@dataclass(frozen=True, slots=True)
class HisBehaviour:
    """What the HIS simulator answers, how late, and when it is down."""

    ack: AckMode = AckMode.ACCEPT
    delay: float = 0.0
    down: tuple[DownPeriod, ...] = ()


@dataclass(frozen=True, slots=True)
class ScenarioAnalyzer:
    """One simulated analyzer (module docstring)."""

    connection: str
    label: str
    protocol: WireProtocol
    transport: ScenarioTransport
    capture: Path
    sample: str
    driver: str | None = None
    orders: tuple[str, ...] = ()
    order_kind: str = "ORM"
    query: QueryForm | None = None
    query_wait: float = 10.0
    repeat: int = 1
    sender: str = "SIM"
    faults: Faults = field(default_factory=Faults)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole scenario file: its analyzers, the HIS, and the demo's test-code table."""

    name: str
    source: Path
    description: str
    his: HisBehaviour
    analyzers: tuple[ScenarioAnalyzer, ...]
    test_codes: dict[str, dict[str, str]] = field(default_factory=dict)

    def analyzer(self, connection: str) -> ScenarioAnalyzer:
        """The analyzer playing ``connection``; ConfigError naming the known ones."""
        for analyzer in self.analyzers:
            if analyzer.connection == connection:
                return analyzer
        known = ", ".join(a.connection for a in self.analyzers)
        raise ConfigError([f"{self.source}: no analyzer plays {connection!r} (known: {known})"])


def _scenario_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2] / "simulators"
    installed = Path(sys.prefix) / "share" / "lisgw" / "simulators"
    for directory in (checkout, installed):
        if directory.is_dir():
            return directory
    return checkout  # reported missing, by name, when a scenario is looked up


SCENARIO_DIR: Final = _scenario_dir()


def scenario_names(directory: Path = SCENARIO_DIR) -> list[str]:
    """The shipped scenarios' names (their file names without ``.yaml``)."""
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))


def find_scenario(name: str, directory: Path = SCENARIO_DIR) -> Path:
    """A scenario by name (``demo``) or path (``./my.yaml``); ConfigError when missing."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") or "/" in name:
        if as_path.is_file():
            return as_path
        raise ConfigError([f"{name}: no such scenario file"])
    candidate = directory / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(scenario_names(directory)) or f"none: {directory} is missing"
    raise ConfigError([f"no scenario {name!r} in {directory} (known: {known})"])


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Read and check a scenario file; ConfigError with every problem."""
    path = find_scenario(str(name_or_path))
    problems = Problems(str(path))
    data = read_yaml(path, problems)
    top = Section(problems, data, "", ("scenario", "description", "his", "analyzers", "test_codes"))
    name = top.text("scenario", path.stem)
    his = _his(top.section("his", ("ack", "delay", "down")))
    analyzers = tuple(
        _analyzer(section, path.parent)
        for section in top.sections(
            "analyzers",
            (
                "connection", "label", "driver", "protocol", "transport", "capture", "sample",
                "orders", "order_kind", "query", "query_wait", "repeat", "sender", "faults",
            ),
        )
    )  # fmt: skip
    if data is not None and not analyzers:
        top.problem("analyzers", "missing: at least one analyzer")
    names = [a.connection for a in analyzers]
    for index, connection in enumerate(names):
        if connection and connection in names[:index]:
            problems.add(f"analyzers[{index}].connection", f'"{connection}" is given twice')
    codes = _test_codes(top)
    if problems.found:
        raise ConfigError(problems.found)
    description = top.text("description", "")
    return Scenario(name, path, " ".join(description.split()), his, analyzers, codes)


def _seconds_or_zero(section: Section, key: str, default: float, high: float) -> float:
    value = section.data.get(key)
    if value == 0 or (isinstance(value, str) and value.strip() in ("0", "0s", "0ms")):
        return 0.0
    seconds = section.duration(key, default, high=high)
    return default if seconds is None else seconds


def _his(section: Section) -> HisBehaviour:
    ack = section.choice("ack", _ACKS_SHOWN, "AA")
    down = []
    for period in section.sections("down", ("after", "for")):
        after = _seconds_or_zero(period, "after", 0.0, _DAY)
        if not period.given("for"):
            period.problem("for", "missing: how long the HIS stays down (e.g. 10s)")
        duration = period.duration("for", 1.0, high=_DAY) or 1.0
        down.append(DownPeriod(after, duration))
    return HisBehaviour(
        ack=_ACKS.get(ack, AckMode.SILENT),
        delay=_seconds_or_zero(section, "delay", 0.0, 3600.0),
        down=tuple(down),
    )


def _text_value(section: Section, key: str, what: str) -> str:
    """Text, or a number written without quotes (sample IDs such as ``27``)."""
    value = section.data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return section.required_text(key, what)


def _analyzer(section: Section, base: Path) -> ScenarioAnalyzer:
    connection = section.required_text("connection", "the gateway connection it plays")
    protocol = WireProtocol(section.choice("protocol", [p.value for p in WireProtocol], "astm"))
    transport = ScenarioTransport(
        section.choice("transport", [t.value for t in ScenarioTransport], "tcp")
    )
    if protocol is WireProtocol.HL7 and transport is not ScenarioTransport.TCP:
        section.problem("transport", f'"{transport}" with protocol hl7: only tcp (MLLP client)')
    capture = base / section.required_text("capture", "the capture file to replay")
    if section.given("capture") and not capture.is_file():
        section.problem("capture", f"{capture}: no such file")
    query_text = section.optional_text("query")
    query = None
    if query_text is not None and query_text != "none":
        forms = [f.value for f in QueryForm]
        if query_text not in forms:
            section.problem("query", f'"{query_text}" is not one of none | {" | ".join(forms)}')
        elif protocol is WireProtocol.HL7:
            section.problem("query", "host queries are sent by ASTM analyzers only")
        else:
            query = QueryForm(query_text)
    orders = tuple(code for _, code in section.texts("orders"))
    return ScenarioAnalyzer(
        connection=connection,
        label=section.text("label", connection),
        protocol=protocol,
        transport=transport,
        capture=capture,
        sample=_text_value(section, "sample", "the sample ID its capture reports"),
        driver=section.optional_text("driver"),
        orders=orders,
        order_kind=section.choice("order_kind", ORDER_KINDS, "ORM"),
        query=query,
        query_wait=section.duration("query_wait", 10.0, high=600.0) or 10.0,
        repeat=section.integer("repeat", 1, low=1, high=100000, what="a count"),
        sender=section.text("sender", "SIM"),
        faults=_faults(section.section("faults", _FAULT_KEYS), protocol),
    )


_FAULT_KEYS: Final = (
    "bad_checksum_frame",
    "drop_eot_after_message",
    "one_byte_writes",
    "stall_before_frame",
    "stall_seconds",
)


def _faults(section: Section, protocol: WireProtocol) -> Faults:
    if section.data and protocol is WireProtocol.HL7:
        section.problems.add(section.path, "faults act on the E1381 wire: ASTM analyzers only")
    index: dict[str, int | None] = {}
    for key in ("bad_checksum_frame", "drop_eot_after_message", "stall_before_frame"):
        number = section.integer(key, -1, low=0, high=10**6, what="a 0-based index")
        index[key] = None if number < 0 else number
    stall = _seconds_or_zero(section, "stall_seconds", 0.0, 3600.0)
    if index["stall_before_frame"] is not None and stall == 0:
        section.problem("stall_seconds", "missing: how long the stall lasts (e.g. 2s)")
    return Faults(
        bad_checksum_frame=index["bad_checksum_frame"],
        drop_eot_after_message=index["drop_eot_after_message"],
        one_byte_writes=section.boolean("one_byte_writes", False),
        stall_before_frame=index["stall_before_frame"],
        stall_seconds=stall,
    )


def _test_codes(top: Section) -> dict[str, dict[str, str]]:
    value = top.data.get("test_codes")
    if value is None:
        return {}
    if not isinstance(value, dict):
        top.problem("test_codes", f"{shown(value)} is not a mapping of driver: {{code: HIS code}}")
        return {}
    codes: dict[str, dict[str, str]] = {}
    for driver, table in value.items():
        if not isinstance(table, dict) or not all(
            isinstance(k, str | int) and isinstance(v, str) for k, v in table.items()
        ):
            top.problem(f"test_codes.{driver}", "not a mapping of analyzer code: HIS code")
            continue
        codes[str(driver)] = {str(k): v for k, v in table.items()}
    return codes
