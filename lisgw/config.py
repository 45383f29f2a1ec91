"""The gateway configuration: one YAML file read into frozen dataclasses, checked all at once.

Layer: configuration, above drivers, routing and the HIS profiles (whose loaders it calls to
check the files it names) and below services and the CLI. Pure apart from reading files: no
clock, no logging, no sockets. ``lisgw run --config FILE`` and ``lisgw config check FILE``
call ``load_config``; config/README.md documents every key, config/lisgw.yaml is the demo.
The dataclasses and the typed YAML reader are in ``lisgw.config_schema``.

``load_config`` reports every problem of the file in one ``ConfigError``, each naming the
file, the line and the key path: unknown keys, wrong types, ports, serial settings out of
range, unknown drivers (against the driver catalogue), unknown time zones, duplicate
connection names, listeners that collide or whose analyzers cannot be told apart, files that
do not exist, and the problems of the HIS profile and test-code table it names.

Paths: files the configuration *reads* (``his.profile``, ``test_codes``, ``drivers_dirs``,
``his.tls.*``) are relative to the configuration file's directory, so that a configuration
and its companions move together. ``data_dir`` and serial ``device`` are relative to the
working directory, like paths on a command line: ``lisgw demo`` keeps ./lisgw-data where it
runs. A serial device may be absent when the configuration is read (a USB adapter unplugged):
the serial service keeps retrying, so that is not a configuration error.
"""

from __future__ import annotations

import codecs
import ipaddress
import itertools
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from lisgw.config_schema import (
    E1381_TIMERS,
    Attribution,
    ConnectionConfig,
    GatewayConfig,
    HisConfig,
    HisOrders,
    HisResults,
    Limits,
    Listener,
    Network,
    OrderMode,
    Problems,
    Reconnect,
    Section,
    SerialLine,
    TcpEndpoint,
    TimerOverrides,
    TlsConfig,
    TransportKind,
    WireProtocol,
    read_yaml,
)
from lisgw.drivers import Catalogue, CompiledProfile, default_catalogue
from lisgw.drivers.compiled import SerialSettings
from lisgw.drivers.mapping import TestCodeMap
from lisgw.drivers.schema import file_label
from lisgw.drivers.schema_nodes import PARENT
from lisgw.drivers.timestamps import check_zone
from lisgw.errors import ConfigError
from lisgw.his.profile import HisProfile
from lisgw.routing import RoutingConfig
from lisgw.services.backoff import BackoffPolicy
from lisgw.store.database import default_url

__all__ = [
    "BUILTIN_HIS_DIRS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_HIS_PROFILE",
    "STANDARD_BAUDS",
    "Attribution",
    "ConnectionConfig",
    "GatewayConfig",
    "HisConfig",
    "HisOrders",
    "HisResults",
    "Limits",
    "Listener",
    "OrderMode",
    "Reconnect",
    "SerialLine",
    "TcpEndpoint",
    "TimerOverrides",
    "TlsConfig",
    "TransportKind",
    "WireProtocol",
    "load_config",
]

DEFAULT_DATA_DIR: Final = Path("/var/lib/lisgw")  # systemd's StateDirectory=lisgw
DEFAULT_HIS_PROFILE: Final = "hl7-v251"
# pyserial's SerialBase.BAUDRATES: the rates every platform it supports can set.
STANDARD_BAUDS: Final = (
    *(50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400),
    *(57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000),
    *(2000000, 2500000, 3000000, 3500000, 4000000),
)
_BAUD_TEXT: Final = "a standard baud rate (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 …)"
_PARITIES: Final = ("none", "even", "odd", "mark", "space")
_FLOW_CONTROLS: Final = ("none", "rtscts", "xonxoff", "dsrdtr")
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
# Names the HIS links may take in the store's connections table.
_RESERVED_NAMES: Final = frozenset({"his", "his-orders", "his-results", "auto"})
_HOSTNAME: Final = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)
_V4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_WILDCARDS: Final = frozenset({"0.0.0.0", "::"})
# E1381 and MLLP control bytes and record delimiters must stay single ASCII bytes.
_ASCII_PROBE: Final = "\x02\x03\x04\x05\x06\x0b\x15\x17\x1c\r\nH|\\^&MSH|^~\\&AZaz09"
_HOUR: Final = 3600.0
_DAY: Final = 86400.0

_TOP_KEYS: Final = (
    *("data_dir", "store", "time_zone", "test_codes", "drivers_dirs", "routing", "his"),
    "connections",
)
_HIS_KEYS: Final = ("profile", "results", "orders", "tls")
_RESULTS_KEYS: Final = ("host", "port", "ack_timeout", "connect_timeout", "backoff")
_BACKOFF_KEYS: Final = ("base", "factor", "cap", "jitter", "give_up_after")
_ORDERS_KEYS: Final = ("host", "port", "idle_timeout", "max_message_bytes")
_TLS_KEYS: Final = ("cert", "key", "ca", "verify", "require_client_cert", "server_name")
_SERIAL_KEYS: Final = ("device", "baud", "data_bits", "parity", "stop_bits", "flow_control")
_CONNECTION_KEYS: Final = (
    *("name", "transport", "protocol", "driver", "host", "port", "peers", "senders"),
    *_SERIAL_KEYS,
    *("encoding", "time_zone", "orders", "timers", "limits", "reconnect", "keepalive"),
)
_LIMIT_KEYS: Final = ("max_connections", "idle_timeout", "max_message_bytes")
_TIMER_KEYS: Final = (*E1381_TIMERS, "ack_timeout")


def _builtin_his_dirs() -> tuple[Path, ...]:
    """Where the shipped HIS profiles are: config/his in a checkout, ``<prefix>/share/lisgw/
    config/his`` for an installed wheel (as the driver catalogue, lisgw.drivers.catalogue)."""
    checkout = Path(__file__).resolve().parents[1] / "config" / "his"
    installed = Path(sys.prefix) / "share" / "lisgw" / "config" / "his"
    return (checkout, installed)


BUILTIN_HIS_DIRS: Final = _builtin_his_dirs()


def load_config(
    path: str | os.PathLike[str], *, catalogue: Catalogue | None = None
) -> GatewayConfig:
    """Read and check a configuration file; ``ConfigError`` listing every problem in it.

    ``catalogue`` checks the drivers connections pin; by default the built-in catalogue plus
    the file's ``drivers_dirs``.
    """
    source = Path(os.path.abspath(path))
    problems = Problems(file_label(source))
    data = read_yaml(source, problems)
    if data is None and problems.found:  # unreadable, or not YAML: nothing more to check
        raise ConfigError(problems.found)
    config = _Builder(source, problems, catalogue).gateway(data)
    if problems.found:
        raise ConfigError(problems.found)
    return config


def _unmapped(network: Network) -> Network:
    """``::ffff:10.0.0.0/120`` as ``10.0.0.0/24``: peers are compared as IPv4 (Attribution)."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_V4_MAPPED):
        address = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((address, network.prefixlen - 96))
    return network


class _Builder:
    """Builds the configuration section by section; every problem goes to ``problems``."""

    def __init__(self, source: Path, problems: Problems, catalogue: Catalogue | None) -> None:
        self.source = source
        self.base = source.parent
        self.problems = problems
        self.catalogue = catalogue

    # Top level -------------------------------------------------------------------------------

    def gateway(self, data: object) -> GatewayConfig:
        top = Section(self.problems, data, "", _TOP_KEYS)
        data_dir = self.data_dir(top)
        drivers_dirs = tuple(self.existing(top, "drivers_dirs", directory=True))
        self.load_catalogue(drivers_dirs)
        time_zone = self.zone(top, "time_zone")
        routing = top.section("routing", ("send_unsolicited", "send_extra"))
        entries = [
            (section.path, self.connection(section, time_zone))
            for section in top.sections("connections", _CONNECTION_KEYS)
        ]
        if not entries and "connections" not in top.data:
            top.problem("connections", "missing: one entry per analyzer connection")
        his = self.his(top.section("his", _HIS_KEYS))
        self.check_unique(entries)
        return GatewayConfig(
            source=self.source,
            data_dir=data_dir,
            store_url=self.store_url(top.section("store", ("url",)), data_dir),
            time_zone=time_zone,
            test_codes=self.test_codes(top),
            drivers_dirs=drivers_dirs,
            routing=RoutingConfig(
                send_unsolicited=routing.boolean("send_unsolicited", False),
                send_extra=routing.boolean("send_extra", True),
            ),
            his=his,
            connections=tuple(connection for _, connection in entries),
            listeners=self.listeners(entries, his),
        )

    def data_dir(self, top: Section) -> Path:
        text = top.optional_text("data_dir")
        return Path(os.path.abspath(os.path.expanduser(text))) if text else DEFAULT_DATA_DIR

    def store_url(self, store: Section, data_dir: Path) -> str:
        url = store.optional_text("url")
        if url is None:
            return default_url(data_dir)
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            store.problem("url", "not a database URL (sqlite:///FILE, postgresql+psycopg://…)")
            return url
        if backend not in ("sqlite", "postgresql"):
            store.problem("url", f"{backend} is not supported: use sqlite or postgresql")
        return url

    def load_catalogue(self, drivers_dirs: Sequence[Path]) -> None:
        if self.catalogue is not None:
            return
        try:
            self.catalogue = Catalogue.load(drivers_dirs) if drivers_dirs else default_catalogue()
        except ConfigError as error:
            self.problems.extend(error.problems)

    def zone(self, section: Section, key: str) -> str | None:
        name = section.optional_text(key)
        if name is not None:
            try:
                check_zone(name)
            except ConfigError as error:
                section.problem(key, error.problems[0])
        return name

    def file(self, where: str, text: str) -> Path | None:
        """A file or directory the configuration reads, relative to its own directory."""
        path = self.base / os.path.expanduser(text)
        if not path.exists():
            self.problems.add(where, f"{path} does not exist")
            return None
        return path

    def existing(self, section: Section, key: str, *, directory: bool) -> list[Path]:
        found: list[Path] = []
        for where, text in section.texts(key):
            path = self.file(where, text)
            if path is not None and path.is_dir() != directory:
                kind = "a directory" if directory else "a file"
                self.problems.add(where, f"{path} is not {kind}")
            elif path is not None:
                found.append(path)
        return found

    def one_file(self, section: Section, key: str) -> Path | None:
        if not section.given(key):
            return None
        found = self.existing(section, key, directory=False)
        return found[0] if found else None

    def test_codes(self, top: Section) -> Path | None:
        path = self.one_file(top, "test_codes")
        if path is None:
            return None
        try:
            table = TestCodeMap.load(file_label(path))
        except ConfigError as error:
            self.problems.extend(error.problems)
            return path
        if self.catalogue is not None:
            known = {driver.name for driver in self.catalogue.drivers}
            for name in sorted(table.drivers - known):
                top.problem("test_codes", f"{file_label(path)}: {name}: no such driver")
        return path

    # HIS --------------------------------------------------------------------------------------

    def his(self, his: Section) -> HisConfig:
        profile = his.text("profile", DEFAULT_HIS_PROFILE)
        results = his.section("results", _RESULTS_KEYS)
        orders = his.section("orders", _ORDERS_KEYS) if his.given("orders") else None
        tls = his.section("tls", _TLS_KEYS) if his.given("tls") else None
        host = results.required_text("host", "the HIS's address for results")
        return HisConfig(
            profile=profile,
            profile_path=self.his_profile(his, profile),
            results=HisResults(
                host=self.host(results, "host", host, listen=False),
                port=self.port(results, listen=False, what="the HIS's MLLP port for results"),
                ack_timeout=results.duration("ack_timeout", 30.0, high=_HOUR) or 30.0,
                connect_timeout=results.duration("connect_timeout", 10.0, high=_HOUR) or 10.0,
                backoff=self.backoff(results.section("backoff", _BACKOFF_KEYS)),
            ),
            orders=self.his_orders(orders) if orders is not None else None,
            tls=self.tls(tls) if tls is not None else None,
        )

    def his_profile(self, his: Section, profile: str) -> Path:
        if "/" in profile or profile.endswith((".yaml", ".yml")):
            candidates = [self.base / os.path.expanduser(profile)]
        else:
            dirs = (self.base / "his", *BUILTIN_HIS_DIRS)
            candidates = [directory / f"{profile}.yaml" for directory in dirs]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            looked = ", ".join(str(c) for c in candidates)
            his.problem("profile", f'no HIS profile "{profile}" (looked for {looked})')
            return candidates[0]
        try:
            HisProfile.load(file_label(path))  # its problems name the file as ours do
        except ConfigError as error:
            self.problems.extend(error.problems)
        return path

    def backoff(self, section: Section) -> BackoffPolicy:
        default = BackoffPolicy()
        try:
            return BackoffPolicy(
                base=section.duration("base", default.base, high=_DAY) or default.base,
                factor=section.number("factor", default.factor, low=1.0, high=10.0),
                cap=section.duration("cap", default.cap, high=_DAY) or default.cap,
                jitter=section.number("jitter", default.jitter, low=0.0, high=0.9),
                give_up_after=section.duration(
                    "give_up_after", default.give_up_after, high=365 * _DAY
                )
                or default.give_up_after,
            )
        except ConfigError as error:
            for problem in error.problems:
                key, _, text = problem.partition(": ")
                self.problems.add(f"{section.path}.{key.removeprefix('backoff.')}", text)
            return default

    def his_orders(self, orders: Section) -> HisOrders:
        host = orders.text("host", "0.0.0.0")
        return HisOrders(
            host=self.host(orders, "host", host, listen=True),
            port=self.port(orders, listen=True, what="the port the HIS sends orders to"),
            idle_timeout=orders.duration("idle_timeout", 600.0, high=_DAY, never=True),
            max_message_bytes=orders.integer(
                "max_message_bytes", 1 << 20, low=1024, high=1 << 30, what="a size in bytes"
            ),
        )

    def tls(self, tls: Section) -> TlsConfig:
        verify = tls.boolean("verify", True)
        require_client_cert = tls.boolean("require_client_cert", True)
        # lisgw.transports.tls always runs mutual TLS with verification: a setting that
        # turned it off would be silently ignored, so it is refused instead.
        for key, value in (("verify", verify), ("require_client_cert", require_client_cert)):
            if not value:
                tls.problem(key, "false is not supported: the HIS link always verifies both ends")
        for key, what in (("cert", "our certificate (PEM)"), ("key", "its private key (PEM)")):
            if not tls.given(key):
                tls.problem(key, f"missing: {what}")
        if not tls.given("ca"):
            tls.problem("ca", "missing: the CA certificates (PEM) to check the HIS against")
        return TlsConfig(
            cert=self.one_file(tls, "cert") or Path(),
            key=self.one_file(tls, "key") or Path(),
            ca=self.one_file(tls, "ca"),
            verify=verify,
            require_client_cert=require_client_cert,
            server_name=tls.optional_text("server_name"),
        )

    # Connections ------------------------------------------------------------------------------

    def connection(self, s: Section, default_zone: str | None) -> ConnectionConfig:
        name = s.required_text("name", "the connection's name, e.g. cobas-e411")
        if name and not _NAME.match(name):
            s.problem("name", f'"{name}" is not a name (lower-case letters, digits, - and _)')
        elif name in _RESERVED_NAMES:
            s.problem("name", f'"{name}" is reserved (the HIS links use it)')
        # A missing or unknown transport or protocol is reported once; the checks that
        # depend on it are skipped rather than reported against a guess.
        transport_given = self.required_choice(s, "transport", TransportKind)
        protocol_given = self.required_choice(s, "protocol", WireProtocol)
        transport = TransportKind(transport_given or TransportKind.TCP_SERVER)
        protocol = WireProtocol(protocol_given or WireProtocol.ASTM)
        driver, profile = self.driver(s, protocol, checked=protocol_given is not None)
        tcp: TcpEndpoint | None = None
        serial: SerialLine | None = None
        if transport_given is not None:
            self.misplaced(s, transport)
            if transport is TransportKind.SERIAL:
                serial = self.serial(s, profile)
            else:
                tcp = self.tcp(s, transport)
        orders = OrderMode(s.choice("orders", tuple(OrderMode), OrderMode.QUERY.value))
        if orders.downloads and protocol_given == WireProtocol.HL7:
            # Batch download is built for ASTM lines (E1381 sender role) only: an HL7 line
            # would accept the setting and never send an order, so it is refused here.
            s.problem(
                "orders",
                f"{orders.value!r}: batch download is for ASTM analyzers; an HL7 analyzer gets "
                "its orders by host query (QBP/QRY): use 'query' or 'none'",
            )
        return ConnectionConfig(
            name=name,
            transport=transport,
            protocol=protocol,
            driver=driver,
            tcp=tcp,
            serial=serial,
            encoding=self.encoding(s, profile, protocol),
            time_zone=self.zone(s, "time_zone") if s.given("time_zone") else default_zone,
            orders=orders,
            timers=self.timers(
                s.section("timers", _TIMER_KEYS), protocol if protocol_given else None
            ),
            limits=self.limits(s.section("limits", _LIMIT_KEYS), transport),
            reconnect=self.reconnect(s.section("reconnect", ("initial", "maximum"))),
            keepalive=s.boolean("keepalive", True),
            attribution=Attribution(peers=self.peers(s), senders=self.senders(s)),
        )

    def required_choice(
        self, s: Section, key: str, choices: type[TransportKind | WireProtocol]
    ) -> str | None:
        """The value, or None when it is missing or not one of ``choices`` (reported)."""
        values = tuple(choices)
        if not s.given(key):
            s.problem(key, f"missing: one of {' | '.join(values)}")
            return None
        value = s.choice(key, values, "")
        return value or None

    def driver(
        self, s: Section, protocol: WireProtocol, *, checked: bool
    ) -> tuple[str | None, CompiledProfile | None]:
        reference = s.text("driver", "auto")
        fallback = self.fallback(protocol)
        if reference == "auto":
            return None, fallback
        if not PARENT.match(reference):
            s.problem("driver", f'"{reference}" is not a driver (NAME, NAME@VERSION or auto)')
            return reference, fallback
        if self.catalogue is None:
            return reference, fallback  # the catalogue's own problems are reported
        try:
            profile = self.catalogue.get(reference)
        except ConfigError as error:
            s.problem("driver", error.problems[0])
            return reference, fallback
        if checked and profile.protocol != protocol:
            s.problem("driver", f"{profile.key} speaks {profile.protocol}, not {protocol}")
        return reference, profile

    def fallback(self, protocol: WireProtocol) -> CompiledProfile | None:
        try:
            return self.catalogue.fallback(protocol) if self.catalogue is not None else None
        except ConfigError:
            return None

    def misplaced(self, s: Section, transport: TransportKind) -> None:
        serial = transport is TransportKind.SERIAL
        server = transport is TransportKind.TCP_SERVER
        for keys, allowed, where in (
            (_SERIAL_KEYS, serial, "serial"),
            (("host", "port", "keepalive"), not serial, "tcp-server and tcp-client"),
            (("peers", "senders"), server, "tcp-server"),
            (("reconnect",), not server, "tcp-client and serial"),
        ):
            for key in keys:
                if s.given(key) and not allowed:
                    s.problem(key, f"only for {where} connections (this one is {transport})")

    def tcp(self, s: Section, transport: TransportKind) -> TcpEndpoint:
        listen = transport is TransportKind.TCP_SERVER
        if listen:
            host = s.text("host", "0.0.0.0")
        else:
            host = s.required_text("host", "the analyzer's (or its serial server's) address")
        what = "the port analyzers connect to" if listen else "the analyzer's port"
        return TcpEndpoint(self.host(s, "host", host, listen=listen), self.port(s, listen, what))

    def host(self, s: Section, key: str, host: str, *, listen: bool) -> str:
        if not host:
            return host
        try:
            return str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            pass
        if listen:
            s.problem(key, f'"{host}" is not an IP address to listen on (0.0.0.0: every one)')
        elif not _HOSTNAME.match(host):
            s.problem(key, f'"{host}" is not a host name or IP address')
        return host

    def port(self, s: Section, listen: bool, what: str) -> int:
        if not s.given("port"):
            s.problem("port", f"missing: {what}")
            return 0
        # Port 0 asks the system for a free port: tests listen there, nobody connects to it.
        low = 0 if listen else 1
        return s.integer("port", 0, low=low, high=65535, what="a TCP port")

    def serial(self, s: Section, profile: CompiledProfile | None) -> SerialLine:
        default = (profile.transport.serial if profile else None) or SerialSettings()
        device = s.required_text("device", "the serial device, e.g. /dev/ttyUSB0")
        baud = s.member("baud", STANDARD_BAUDS, default.baud, what=_BAUD_TEXT)
        stop_bits = s.member("stop_bits", (1, 1.5, 2), default.stop_bits, what="1 | 1.5 | 2")
        return SerialLine(
            device=os.path.expanduser(device),
            baud=int(baud),
            data_bits=s.integer(
                "data_bits", default.data_bits, low=5, high=8, what="a number of data bits"
            ),
            parity=s.choice("parity", _PARITIES, default.parity),
            stop_bits=stop_bits,
            flow_control=s.choice("flow_control", _FLOW_CONTROLS, default.flow_control),
        )

    def encoding(self, s: Section, profile: CompiledProfile | None, protocol: WireProtocol) -> str:
        driver_default = profile.transport.encoding if profile is not None else None
        default = driver_default or ("latin-1" if protocol is WireProtocol.ASTM else "utf-8")
        name = s.text("encoding", default)
        try:
            codec = codecs.lookup(name).name
            safe = _ASCII_PROBE.encode(codec) == _ASCII_PROBE.encode("ascii")
        except LookupError:
            s.problem("encoding", f'"{name}" is not a known character encoding')
            return default
        except UnicodeError:
            safe = False
        if not safe:
            s.problem("encoding", f'"{name}" does not keep ASCII control bytes as they are')
        return codec

    def timers(self, timers: Section, protocol: WireProtocol | None) -> TimerOverrides:
        values: dict[str, float | None] = {}
        for key in _TIMER_KEYS:
            values[key] = timers.duration(key, None, high=_HOUR)
            e1381 = key in E1381_TIMERS
            if protocol and values[key] is not None and e1381 != (protocol is WireProtocol.ASTM):
                only = "an E1381 timer, for astm" if e1381 else "for hl7"
                timers.problem(key, f"{only} connections (this one speaks {protocol})")
        return TimerOverrides(**values)

    def limits(self, limits: Section, transport: TransportKind) -> Limits:
        if limits.given("max_connections") and transport is not TransportKind.TCP_SERVER:
            limits.problem("max_connections", "only for tcp-server connections")
        return Limits(
            max_connections=limits.integer("max_connections", 2, low=1, high=1000),
            idle_timeout=limits.duration("idle_timeout", None, high=7 * _DAY, never=True),
            max_message_bytes=limits.integer(
                "max_message_bytes", 16 << 20, low=1024, high=1 << 30, what="a size in bytes"
            ),
        )

    def reconnect(self, reconnect: Section) -> Reconnect:
        initial = reconnect.duration("initial", 1.0, high=_HOUR) or 1.0
        maximum = reconnect.duration("maximum", 60.0, high=_DAY) or 60.0
        if maximum < initial:
            reconnect.problem("maximum", f"{maximum:g} s is below initial ({initial:g} s)")
        return Reconnect(initial, maximum)

    def peers(self, s: Section) -> tuple[Network, ...]:
        found: list[Network] = []
        for where, text in s.texts("peers"):
            try:
                found.append(_unmapped(ipaddress.ip_network(text, strict=False)))
            except ValueError:
                self.problems.add(where, f'"{text}" is not an IP address or network (10.0.0.0/24)')
        return tuple(found)

    def senders(self, s: Section) -> frozenset[str]:
        return frozenset(text for _, text in s.texts("senders"))

    # Across connections -----------------------------------------------------------------------

    def check_unique(self, entries: Sequence[tuple[str, ConnectionConfig]]) -> None:
        seen: dict[tuple[str, str], str] = {}
        for path, c in entries:
            keys = [("name", c.name)] if c.name else []
            if c.serial is not None and c.serial.device:
                keys.append(("device", os.path.normpath(c.serial.device)))
            if c.transport is TransportKind.TCP_CLIENT and c.tcp is not None:
                keys.append(("host", f"{c.tcp.host.lower()}:{c.tcp.port}"))
            for key, value in keys:
                first = seen.setdefault((key, value), path)
                if first != path:
                    self.problems.add(f"{path}.{key}", f'"{value}" is already used by {first}')

    def listeners(
        self, entries: Sequence[tuple[str, ConnectionConfig]], his: HisConfig
    ) -> tuple[Listener, ...]:
        bound: list[tuple[str, str, int, ConnectionConfig | None]] = []
        if his.orders is not None:
            bound.append(("his.orders", his.orders.host, his.orders.port, None))
        for path, c in entries:
            if c.transport is TransportKind.TCP_SERVER and c.tcp is not None:
                bound.append((path, c.tcp.host, c.tcp.port, c))
        groups: dict[tuple[str, int, str], list[tuple[str, ConnectionConfig]]] = {}
        for (first, host1, port1, c1), (path, host2, port2, c2) in itertools.combinations(bound, 2):
            if port1 != port2 or port1 == 0 or not (host1 == host2 or {host1, host2} & _WILDCARDS):
                continue
            if c1 is None or c2 is None or host1 != host2:
                self.problems.add(
                    f"{path}.port",
                    f"{host2}:{port2} collides with {first} ({host1}:{port1}); analyzers share "
                    "a listener only with the same host and port",
                )
            else:
                self.shared(first, c1, path, c2)
        for path, c in entries:
            if c.transport is TransportKind.TCP_SERVER and c.tcp is not None:
                key = (c.tcp.host, c.tcp.port, path if c.tcp.port == 0 else "")
                groups.setdefault(key, []).append((path, c))
        return tuple(
            Listener(host, port, members[0][1].protocol, tuple(c for _, c in members))
            for (host, port, _), members in groups.items()
        )

    def shared(self, first: str, c1: ConnectionConfig, path: str, c2: ConnectionConfig) -> None:
        """Two tcp-server connections on one listener: one protocol, told apart."""
        where = f"{c2.tcp.host}:{c2.tcp.port}" if c2.tcp else "?"
        if c1.protocol != c2.protocol:
            self.problems.add(
                f"{path}.protocol",
                f"shares {where} with {first}, which speaks {c1.protocol}: one protocol per port",
            )
        if not c1.attribution.distinct_from(c2.attribution):
            self.problems.add(
                f"{path}.port",
                f"shares {where} with {first} and the two cannot be told apart: give both "
                "peers that do not overlap, or both senders that differ",
            )
