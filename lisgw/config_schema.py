"""The shape of the gateway configuration: its frozen dataclasses, and the typed YAML reader.

Layer: configuration (pure apart from reading the one file it is given; no clock, no logging).
``lisgw.config.load_config`` reads a file with ``read_yaml`` and ``Section`` and builds the
dataclasses defined here; the rules of each key live there, the meaning of each key in
config/README.md. ``GatewayConfig`` is what the services are given.

Reading: the file is composed with ``yaml.SafeLoader`` (plain data only) and turned into
dicts, lists and scalars here, keeping the line of every key and reporting duplicate keys,
which ``yaml.safe_load`` silently resolves to the last one. Scalars take their YAML 1.1 types
(``9600`` an integer, ``1.5`` a float, ``true`` a boolean, ``null`` nothing). A ``Section`` is
one mapping of the file: each getter checks one key and records a problem naming the file,
the line and the key path
(``config/lisgw.yaml: line 31: connections[1].port: 70000 is not a TCP port (1-65535)``);
keys nobody asked for are reported as unknown, with the closest known key. A getter always
returns a usable value (the default when the key is wrong), so that every problem of the file
is found in one pass.

Several analyzers may share one TCP listener (issue 6): a ``Listener`` attributes each
accepted connection by the peer's address (``peers``: addresses or networks) and, when that
leaves several candidates, by the sender name of its first message (ASTM H.5.1, HL7 MSH-3.1,
trimmed: ``senders``). ``load_config`` refuses listeners whose analyzers cannot be told apart.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Final

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from lisgw.astm.link import LinkTimers
from lisgw.routing import RoutingConfig
from lisgw.services.backoff import BackoffPolicy

__all__ = [
    "E1381_TIMERS",
    "Attribution",
    "ConnectionConfig",
    "GatewayConfig",
    "HisConfig",
    "HisOrders",
    "HisResults",
    "Limits",
    "Listener",
    "Network",
    "OrderMode",
    "Problems",
    "Reconnect",
    "Section",
    "SerialLine",
    "TcpEndpoint",
    "TimerOverrides",
    "TlsConfig",
    "TransportKind",
    "WireProtocol",
    "read_yaml",
]

_DURATION: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|d)\s*\Z")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
E1381_TIMERS: Final = (
    "reply_timeout",
    "frame_timeout",
    "host_contention_backoff",
    "instrument_contention_backoff",
    "busy_backoff",
    "interrupt_backoff",
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# The configuration ------------------------------------------------------------------------------


class TransportKind(StrEnum):
    TCP_SERVER = "tcp-server"  # the gateway listens, the analyzer connects
    TCP_CLIENT = "tcp-client"  # the gateway connects to the analyzer (or its serial server)
    SERIAL = "serial"


class WireProtocol(StrEnum):
    ASTM = "astm"  # E1381 framing, E1394 records
    HL7 = "hl7"  # HL7 v2 over MLLP


class OrderMode(StrEnum):
    """How orders reach the analyzer: sent when they arrive, asked for, both, or never."""

    BATCH = "batch"
    QUERY = "query"
    BOTH = "both"
    NONE = "none"

    @property
    def downloads(self) -> bool:
        """Orders are sent to the analyzer as they arrive from the HIS."""
        return self in (OrderMode.BATCH, OrderMode.BOTH)

    @property
    def answers_queries(self) -> bool:
        """The analyzer's host queries are answered with the orders stored for its samples."""
        return self in (OrderMode.QUERY, OrderMode.BOTH)


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    """The address a tcp-server binds (``0.0.0.0``: every interface) or a tcp-client dials.
    Port 0 (listeners only) picks a free port, for tests."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class SerialLine:
    """A serial device and its line settings (pyserial's names and values)."""

    device: str
    baud: int = 9600
    data_bits: int = 8
    parity: str = "none"  # none | even | odd | mark | space
    stop_bits: float = 1  # 1 | 1.5 | 2
    flow_control: str = "none"  # none | rtscts | xonxoff | dsrdtr

    def describe(self) -> str:
        """``/dev/ttyUSB0 9600 8N1``, as technicians write line settings."""
        stop = f"{self.stop_bits:g}"
        flow = "" if self.flow_control == "none" else f" {self.flow_control}"
        return f"{self.device} {self.baud} {self.data_bits}{self.parity[0].upper()}{stop}{flow}"


def _peer_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True, slots=True)
class Attribution:
    """Which accepted connections belong to a tcp-server connection: peers and sender names.

    Empty ``peers`` admits any address; empty ``senders`` any sender. On a listener of its
    own, the two are an allow-list.
    """

    peers: tuple[Network, ...] = ()
    senders: frozenset[str] = frozenset()

    def admits_peer(self, address: str) -> bool:
        if not self.peers:
            return True
        ip = _peer_ip(address)
        return ip is not None and any(ip in network for network in self.peers)

    def admits_sender(self, sender: str) -> bool:
        return not self.senders or sender.strip() in self.senders

    def distinct_from(self, other: Attribution) -> bool:
        """No connection can be admitted by both: disjoint peers, or disjoint senders."""
        peers_apart = bool(self.peers and other.peers) and not any(
            a.version == b.version and a.overlaps(b) for a in self.peers for b in other.peers
        )
        senders_apart = bool(self.senders and other.senders) and not (self.senders & other.senders)
        return peers_apart or senders_apart


@dataclass(frozen=True, slots=True)
class TimerOverrides:
    """Timer values a connection sets; None keeps the driver's (E1381 defaults, seconds)."""

    reply_timeout: float | None = None
    frame_timeout: float | None = None
    host_contention_backoff: float | None = None
    instrument_contention_backoff: float | None = None
    busy_backoff: float | None = None
    interrupt_backoff: float | None = None
    ack_timeout: float | None = None  # HL7: how long to wait for the ACK to a sent order

    def applied_to(self, timers: LinkTimers) -> LinkTimers:
        """The driver's E1381 timers with this connection's overrides."""
        changed = {
            name: value for name in E1381_TIMERS if (value := getattr(self, name)) is not None
        }
        return replace(timers, **changed)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits. ``max_connections`` is for tcp-server connections: two lets an
    analyzer reconnect while its previous, half-open connection has not timed out yet."""

    max_connections: int = 2
    idle_timeout: float | None = None  # close after this long without a byte; None: never
    max_message_bytes: int = 16 << 20  # one session or MLLP message; beyond: refused


@dataclass(frozen=True, slots=True)
class Reconnect:
    """tcp-client and serial: retry delays, doubling from ``initial`` up to ``maximum``."""

    initial: float = 1.0
    maximum: float = 60.0


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """One analyzer connection (config/README.md, "connections")."""

    name: str
    transport: TransportKind
    protocol: WireProtocol
    driver: str | None  # "name" or "name@version"; None: detected from the first message
    tcp: TcpEndpoint | None  # tcp-server and tcp-client
    serial: SerialLine | None  # serial
    encoding: str
    time_zone: str | None  # IANA name the analyzer's local times are read in; None: no offset
    orders: OrderMode = OrderMode.QUERY
    timers: TimerOverrides = field(default_factory=TimerOverrides)
    limits: Limits = field(default_factory=Limits)
    reconnect: Reconnect = field(default_factory=Reconnect)
    keepalive: bool = True  # TCP keep-alive: find dead peers on quiet lines
    attribution: Attribution = field(default_factory=Attribution)

    def describe(self) -> str:
        """Where it is: ``listen 0.0.0.0:5001``, ``connect 10.0.0.5:4001``, the serial line."""
        if self.serial is not None:
            return self.serial.describe()
        if self.tcp is None:
            return "?"
        verb = "listen" if self.transport is TransportKind.TCP_SERVER else "connect"
        host = f"[{self.tcp.host}]" if ":" in self.tcp.host else self.tcp.host
        return f"{verb} {host}:{self.tcp.port}"


@dataclass(frozen=True, slots=True)
class Listener:
    """One TCP listener and the tcp-server connections it serves (one or several)."""

    host: str
    port: int
    protocol: WireProtocol
    connections: tuple[ConnectionConfig, ...]

    def for_peer(self, address: str) -> tuple[ConnectionConfig, ...]:
        """The connections an accepted peer may be: none means refuse it."""
        return tuple(c for c in self.connections if c.attribution.admits_peer(address))

    def attribute(self, address: str, sender: str | None = None) -> ConnectionConfig | None:
        """The one connection a peer is, once its ``sender`` is known (None: not yet known).

        None when no connection or several remain: refuse, or wait for the first message.
        A single candidate that lists senders is only attributed once its sender matches.
        """
        candidates = self.for_peer(address)
        if sender is not None:
            candidates = tuple(c for c in candidates if c.attribution.admits_sender(sender))
        elif any(c.attribution.senders for c in candidates):
            return None  # the sender decides: wait for the first message
        return candidates[0] if len(candidates) == 1 else None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS on both HIS links (PEM files), always mutual: the order listener presents ``cert``
    and demands a client certificate signed by ``ca``; the results link presents ``cert`` and
    checks the HIS's certificate against ``ca`` and its name against ``server_name``
    (default: ``his.results.host``). ``verify`` and ``require_client_cert`` are always true
    (the loader refuses false)."""

    cert: Path
    key: Path
    ca: Path | None
    verify: bool = True
    require_client_cert: bool = True
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class HisResults:
    """Results out: the gateway connects to the HIS's MLLP listener and sends ORU^R01."""

    host: str
    port: int
    ack_timeout: float = 30.0
    connect_timeout: float = 10.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)


@dataclass(frozen=True, slots=True)
class HisOrders:
    """Orders in: the gateway listens; the HIS connects and sends ORM^O01 / OML^O21."""

    host: str
    port: int
    idle_timeout: float | None = 600.0
    max_message_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class HisConfig:
    """The HIS link. ``profile`` as written (a name or a path), ``profile_path`` its file."""

    profile: str
    profile_path: Path
    results: HisResults
    orders: HisOrders | None  # None: the HIS sends no orders
    tls: TlsConfig | None  # None: clear text, as most hospital networks still run HL7


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A whole configuration file, checked (``lisgw.config.load_config``)."""

    source: Path
    data_dir: Path
    store_url: str  # the SQLite file in data_dir unless the file names another store
    time_zone: str | None
    test_codes: Path | None
    drivers_dirs: tuple[Path, ...]
    routing: RoutingConfig
    his: HisConfig
    connections: tuple[ConnectionConfig, ...]
    listeners: tuple[Listener, ...]  # the tcp-server connections grouped by address

    def connection(self, name: str) -> ConnectionConfig:
        """The connection called ``name``; KeyError when there is none."""
        for connection in self.connections:
            if connection.name == name:
                return connection
        raise KeyError(name)


# Reading ----------------------------------------------------------------------------------------


class Problems:
    """Every problem of one file, each as ``file: line N: key.path: text``, in line order;
    problems of the files it names (HIS profile, test codes, drivers) follow."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.lines: dict[str, int] = {}
        self._entries: list[tuple[float, int, str]] = []

    def add(self, path: str, text: str, *, line: int | None = None) -> None:
        line = self._line(path) if line is None else line
        where = f"line {line}: " if line is not None else ""
        self._push(line or 0, f"{self.label}: {where}{path or 'top level'}: {text}")

    def whole_file(self, text: str) -> None:
        """A problem with the file itself (unreadable, not YAML)."""
        self._push(0, f"{self.label}: {text}")

    def extend(self, problems: Sequence[str]) -> None:
        """Problems another loader found in a file this one names, as it wrote them."""
        for problem in problems:
            self._push(math.inf, problem)

    @property
    def found(self) -> list[str]:
        ordered = sorted(self._entries, key=lambda entry: entry[:2])
        return list(dict.fromkeys(text for _, _, text in ordered))

    def _push(self, line: float, text: str) -> None:
        self._entries.append((line, len(self._entries), text))

    def _line(self, path: str) -> int | None:
        # A missing key is reported on the line of the mapping that lacks it.
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            cut = max(path.rfind("."), path.rfind("["))
            path = path[: max(cut, 0)]


def read_yaml(path: Path, problems: Problems) -> object:
    """The file's data (None when unreadable or not YAML, with the problem recorded)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problems.whole_file(f"cannot read: {error}")
        return None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error)
        problems.whole_file(f"{where}not valid YAML: {reason}")
        return None
    return None if root is None else _node_data(root, "", problems, SafeConstructor())


def _node_data(
    node: yaml.Node, path: str, problems: Problems, constructor: SafeConstructor
) -> object:
    problems.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.SequenceNode):
        return [
            _node_data(item, f"{path}[{index}]", problems, constructor)
            for index, item in enumerate(node.value)
        ]
    if isinstance(node, yaml.MappingNode):
        return _mapping_data(node, path, problems, constructor)
    try:
        return constructor.construct_object(node, deep=True)
    except ConstructorError as error:  # `!!python/…` tags and other non-data
        problems.add(path, f"not plain data: {error.problem}")
        return None


def _mapping_data(
    node: yaml.MappingNode, path: str, problems: Problems, constructor: SafeConstructor
) -> dict[str, object]:
    data: dict[str, object] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            problems.add(path, "a key must be text", line=line)
            continue
        key = str(key_node.value)
        child = f"{path}.{key}" if path else key
        if key in data:
            first = problems.lines.get(child, line)
            problems.add(child, f"duplicate key (first at line {first})", line=line)
            continue
        problems.lines[child] = line
        data[key] = _node_data(value_node, child, problems, constructor)
    return data


def shown(value: object) -> str:
    """A value as quoted in a problem."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


class Section:
    """One mapping of the file; its getters check a key each (module docstring).

    ``keys`` are the keys the mapping may have; any other is reported at construction.
    ``data`` None (the key is absent or null) reads as an empty mapping.
    """

    def __init__(self, problems: Problems, data: object, path: str, keys: Sequence[str]) -> None:
        self.problems = problems
        self.path = path
        self.data: dict[str, object] = {}
        if data is None:
            return
        if not isinstance(data, dict):
            self.problems.add(path, f"{shown(data)} is not a mapping (key: value lines)")
            return
        for key, value in data.items():
            if key in keys:
                self.data[key] = value
            else:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.problems.add(self.key_path(key), f"unknown key{hint}")

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, text: str) -> None:
        self.problems.add(self.key_path(key), text)

    def given(self, key: str) -> bool:
        """The key is present and not null."""
        return self.data.get(key) is not None

    def section(self, key: str, keys: Sequence[str]) -> Section:
        return Section(self.problems, self.data.get(key), self.key_path(key), keys)

    def sections(self, key: str, keys: Sequence[str]) -> list[Section]:
        """A list of mappings (an absent key is an empty list)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"{shown(value)} is not a list")
            return []
        return [
            Section(self.problems, item, f"{self.key_path(key)}[{index}]", keys)
            for index, item in enumerate(value)
        ]

    def texts(self, key: str) -> list[tuple[str, str]]:
        """A list of strings (a single string is a list of one), with each item's key path."""
        value = self.data.get(key)
        if value is None:
            return []
        is_list = isinstance(value, list)
        items = value if isinstance(value, list) else [value]
        found: list[tuple[str, str]] = []
        for index, item in enumerate(items):
            where = f"{self.key_path(key)}[{index}]" if is_list else self.key_path(key)
            if isinstance(item, str) and item.strip():
                found.append((where, item.strip()))
            else:
                self.problems.add(where, f"{shown(item)} is not a non-empty string")
        return found

    def optional_text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"{shown(value)} is not a non-empty string")
            return None
        return value.strip()

    def text(self, key: str, default: str) -> str:
        value = self.optional_text(key)
        return default if value is None else value

    def required_text(self, key: str, what: str) -> str:
        if key not in self.data or self.data[key] is None:
            self.problem(key, f"missing: {what}")
            return ""
        return self.text(key, "")

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or value not in choices:
            self.problem(key, f"{shown(value)} is not one of {' | '.join(choices)}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"{shown(value)} is not true or false")
            return default
        return value

    def integer(self, key: str, default: int, *, low: int, high: int, what: str = "") -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(key, f"{shown(value)} is not {what or 'an integer'} ({low}-{high})")
            return default
        return value

    def member(self, key: str, values: Sequence[float], default: float, *, what: str) -> float:
        """A number that must be one of ``values`` (baud rates, stop bits)."""
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value not in values:
            self.problem(key, f"{shown(value)} is not {what}")
            return default
        return value

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            self.problem(key, f"{shown(value)} is not a number from {low:g} to {high:g}")
            return default
        return float(value)

    def duration(
        self, key: str, default: float | None, *, high: float, never: bool = False
    ) -> float | None:
        """Seconds: a number, or text with a unit (``500ms``, ``30s``, ``5m``, ``72h``, ``3d``).

        Must be above zero and at most ``high`` seconds; null keeps the default. Where
        ``never`` is allowed (timeouts that may be switched off), ``never`` gives None.
        """
        value = self.data.get(key)
        if value is None:
            return default
        if never and value == "never":
            return None
        seconds = _seconds(value)
        if seconds is None or not 0 < seconds <= high:
            self.problem(
                key,
                f"{shown(value)} is not a duration above 0 and up to {high:g} s (a number of "
                "seconds, or text such as 500ms, 30s, 5m, 72h, 3d)",
            )
            return default
        return seconds


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is not None:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return None
