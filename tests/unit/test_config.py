"""The gateway configuration: lisgw.config.load_config, the shipped examples, `lisgw config`."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from lisgw.astm.link import LinkTimers
from lisgw.cli.config import config as config_command
from lisgw.config import (
    DEFAULT_DATA_DIR,
    Attribution,
    ConnectionConfig,
    GatewayConfig,
    Listener,
    OrderMode,
    TimerOverrides,
    TransportKind,
    WireProtocol,
    load_config,
)
from lisgw.drivers import Catalogue
from lisgw.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
HIS = """\
his:
  results: {host: 127.0.0.1, port: 2576}
"""
ASTM_SERVER = """\
  - name: xn
    protocol: astm
    transport: tcp-server
    port: 5001
"""


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems name files relative to the working directory: here, `lisgw.yaml`."""
    monkeypatch.chdir(tmp_path)


def write(directory: Path, text: str, name: str = "lisgw.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def minimal(directory: Path, connections: str = ASTM_SERVER, extra: str = "") -> Path:
    return write(directory, f"{extra}{HIS}connections:\n{connections}")


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def problem_about(path: Path, key: str) -> str:
    """The one problem naming ``key`` (a key path)."""
    found = [p for p in problems(path) if f": {key}: " in p]
    assert len(found) == 1, problems(path)
    return found[0]


# The shipped files ----------------------------------------------------------------------------


def test_the_demo_configuration_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # data_dir is relative to the working directory
    loaded = load_config(CONFIG_DIR / "lisgw.yaml")
    assert loaded.data_dir == tmp_path / "lisgw-data"
    assert loaded.store_url == f"sqlite:///{tmp_path}/lisgw-data/lisgw.sqlite"
    assert loaded.test_codes == CONFIG_DIR / "test-codes.example.yaml"
    assert loaded.his.profile_path == CONFIG_DIR / "his" / "hl7-v251.yaml"
    assert loaded.his.orders is not None and loaded.his.orders.host == "127.0.0.1"
    kinds = {(c.protocol, c.transport) for c in loaded.connections}
    assert kinds == {
        (WireProtocol.ASTM, TransportKind.TCP_SERVER),
        (WireProtocol.ASTM, TransportKind.SERIAL),
        (WireProtocol.HL7, TransportKind.TCP_SERVER),
    }
    for connection in loaded.connections:
        assert connection.driver is not None  # the demo pins every driver
        assert connection.time_zone == "Asia/Ho_Chi_Minh"
        if connection.tcp is not None:
            assert connection.tcp.host == "127.0.0.1"  # the demo listens on loopback only
    serial = next(c.serial for c in loaded.connections if c.serial is not None)
    assert serial.describe() == "./lisgw-data/cobas-c311.tty 9600 8N1"


def test_the_sqlite_production_example_loads() -> None:
    loaded = load_config(CONFIG_DIR / "production-sqlite.example.yaml")
    assert loaded.data_dir == DEFAULT_DATA_DIR
    assert loaded.store_url == "sqlite:////var/lib/lisgw/lisgw.sqlite"
    assert loaded.his.results.backoff.give_up_after == 72 * 3600
    assert {c.transport for c in loaded.connections} == set(TransportKind)
    shared = [listener for listener in loaded.listeners if len(listener.connections) > 1]
    assert [(s.port, [c.name for c in s.connections]) for s in shared] == [(5000, ["xn-1", "xn-2"])]
    assert shared[0].attribute("10.20.0.12") is loaded.connection("xn-2")
    assert shared[0].attribute("10.20.0.99") is None


def test_the_postgresql_example_needs_only_its_tls_files(tmp_path: Path) -> None:
    example = CONFIG_DIR / "production-postgresql.example.yaml"
    found = problems(example)
    assert len(found) == 3
    for problem, key in zip(found, ("cert", "key", "ca"), strict=True):
        assert re.search(
            rf": line \d+: his\.tls\.{key}: /etc/lisgw/tls/\S+ does not exist$", problem
        )
    # With the files in place (and the test-code table beside it), it loads.
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("lisgw.crt", "lisgw.key", "hospital-ca.crt"):
        (tls / name).write_text("PEM", encoding="utf-8")
    shutil.copy(CONFIG_DIR / "test-codes.example.yaml", tmp_path)
    text = example.read_text(encoding="utf-8").replace("/etc/lisgw/tls/", f"{tls}/")
    loaded = load_config(write(tmp_path, text))
    assert loaded.store_url.startswith("postgresql+psycopg://lisgw@/lisgw")
    assert loaded.his.tls is not None and loaded.his.tls.ca == tls / "hospital-ca.crt"
    assert loaded.his.profile_path.name == "hl7-v231.yaml"
    listener = next(lst for lst in loaded.listeners if lst.port == 5000)
    assert listener.for_peer("10.30.0.7") == listener.connections  # two candidates …
    assert listener.attribute("10.30.0.7") is None  # … until the first message says who
    assert listener.attribute("10.30.0.7", "ARCHITECT") is loaded.connection("architect")
    assert listener.attribute("10.30.0.7", "c311") is loaded.connection("cobas-c311")


# Defaults -------------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    loaded = load_config(
        minimal(
            tmp_path,
            ASTM_SERVER
            + """\
  - name: line
    protocol: astm
    transport: serial
    device: /dev/ttyUSB0
  - name: hl7
    protocol: hl7
    transport: tcp-client
    host: analyzer.lab.example
    port: 6000
""",
        )
    )
    assert loaded.data_dir == DEFAULT_DATA_DIR == Path("/var/lib/lisgw")
    assert loaded.store_url == "sqlite:////var/lib/lisgw/lisgw.sqlite"
    assert loaded.time_zone is None and loaded.test_codes is None
    assert loaded.routing.send_unsolicited is False
    assert loaded.his.profile == "hl7-v251" and loaded.his.profile_path.is_file()
    assert loaded.his.orders is None and loaded.his.tls is None
    assert loaded.his.results.ack_timeout == 30.0
    xn, line, hl7 = loaded.connections
    assert xn.tcp is not None and (xn.tcp.host, xn.tcp.port) == ("0.0.0.0", 5001)
    assert xn.driver is None and xn.orders is OrderMode.QUERY and xn.keepalive
    assert xn.encoding == "iso8859-1" and hl7.encoding == "utf-8"  # the generic drivers'
    assert xn.limits.max_connections == 2 and xn.limits.idle_timeout is None
    assert line.serial is not None and line.serial.describe() == "/dev/ttyUSB0 9600 8N1"
    assert line.tcp is None and hl7.serial is None
    assert hl7.reconnect.initial == 1.0 and hl7.reconnect.maximum == 60.0
    assert [(lst.port, lst.connections) for lst in loaded.listeners] == [(5001, (xn,))]


def test_serial_defaults_come_from_the_pinned_driver(tmp_path: Path) -> None:
    driver_dir = tmp_path / "drivers"
    driver_dir.mkdir()
    write(
        driver_dir,
        """\
        driver: acme-x
        version: 1
        inherits: astm-generic
        transport:
          serial: {baud: 19200, parity: even, data_bits: 7}
          encoding: cp1252
        """,
        "acme-x.yaml",
    )
    connection = """\
  - name: acme
    protocol: astm
    driver: acme-x@1
    transport: serial
    device: /dev/ttyS1
"""
    loaded = load_config(minimal(tmp_path, connection, "drivers_dirs: [drivers]\n"))
    acme = loaded.connection("acme")
    assert acme.serial is not None and acme.serial.describe() == "/dev/ttyS1 19200 7E1"
    assert acme.encoding == "cp1252"
    assert loaded.drivers_dirs == (driver_dir,)


def test_durations_take_units_and_timeouts_may_be_never(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        his:
          results:
            host: his.example
            port: 2576
            ack_timeout: 500ms
            backoff: {base: 2s, cap: 5m, give_up_after: 3d}
          orders: {port: 2575, idle_timeout: never}
        connections:
          - name: xn
            protocol: astm
            transport: tcp-server
            port: 5001
            timers: {reply_timeout: 20, frame_timeout: 1m}
            limits: {idle_timeout: 2h}
        """,
    )
    loaded = load_config(path)
    assert loaded.his.results.ack_timeout == 0.5
    assert loaded.his.results.backoff.cap == 300 and loaded.his.results.backoff.base == 2
    assert loaded.his.results.backoff.give_up_after == 3 * 86400
    assert loaded.his.orders is not None and loaded.his.orders.idle_timeout is None
    xn = loaded.connection("xn")
    assert xn.limits.idle_timeout == 7200
    timers = xn.timers.applied_to(LinkTimers())
    assert (timers.reply_timeout, timers.frame_timeout) == (20.0, 60.0)
    assert timers.busy_backoff == LinkTimers().busy_backoff


def test_relative_files_are_found_beside_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "etc"
    site.mkdir()
    shutil.copy(CONFIG_DIR / "test-codes.example.yaml", site / "codes.yaml")
    (site / "his").mkdir()
    shutil.copy(CONFIG_DIR / "his" / "hl7-v231.yaml", site / "his" / "my-his.yaml")
    path = write(
        site,
        f"data_dir: state\ntest_codes: codes.yaml\n{HIS}  profile: my-his\n"
        f"connections:\n{ASTM_SERVER}",
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config(os.path.relpath(path))
    assert loaded.test_codes == site / "codes.yaml"
    assert loaded.his.profile_path == site / "his" / "my-his.yaml"
    assert loaded.data_dir == elsewhere / "state"  # the working directory's
    assert loaded.source == path


# Problems -------------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        data_dir: 5
        colour: blue
        his:
          results: {host: his.example, port: 99999}
        connections:
          - name: xn
            protocol: astm
            transport: tcp-server
            port: 5001
            parity: even
          - name: xn
            protocol: astm
            transport: serial
            device: /dev/ttyS0
            baud: 9601
        """,
    )
    found = problems(path)
    assert found == [
        "lisgw.yaml: line 1: data_dir: 5 is not a non-empty string",
        "lisgw.yaml: line 2: colour: unknown key",
        "lisgw.yaml: line 4: his.results.port: 99999 is not a TCP port (1-65535)",
        "lisgw.yaml: line 10: connections[0].parity: only for serial connections "
        "(this one is tcp-server)",
        'lisgw.yaml: line 11: connections[1].name: "xn" is already used by connections[0]',
        "lisgw.yaml: line 15: connections[1].baud: 9601 is not a standard baud rate "
        "(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 …)",
    ]


def test_unknown_keys_suggest_the_closest_one(tmp_path: Path) -> None:
    path = minimal(tmp_path, ASTM_SERVER + "    time_zome: Europe/Paris\n")
    assert problem_about(path, "connections[0].time_zome").endswith(
        'unknown key (did you mean "time_zone"?)'
    )


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("port: '5001'", "port", '"5001" is not a TCP port'),
        ("port: true", "port", "True is not a TCP port"),
        ("port: 65536", "port", "65536 is not a TCP port (0-65535)"),
        ("host: 10.0.0.500", "host", '"10.0.0.500" is not an IP address to listen on'),
        ("host: localhost", "host", '"localhost" is not an IP address to listen on'),
        ("keepalive: 1", "keepalive", "1 is not true or false"),
        ("orders: sometimes", "orders", '"sometimes" is not one of batch | query | both | none'),
        ("driver: Sysmex XN", "driver", '"Sysmex XN" is not a driver'),
        ("driver: sysmex-zz", "driver", 'unknown driver "sysmex-zz" (known: '),
        ("driver: mindray-bc", "driver", "mindray-bc@1 speaks hl7, not astm"),
        ("driver: e1381", "driver", "e1381 is a protocol definition, not a driver"),
        ("encoding: klingon", "encoding", '"klingon" is not a known character encoding'),
        ("encoding: utf-16", "encoding", '"utf-16" does not keep ASCII control bytes'),
        ("time_zone: Mars/Olympus", "time_zone", "unknown time zone 'Mars/Olympus'"),
        ("name: XN", "name", '"XN" is not a name'),
        ("name: his", "name", '"his" is reserved'),
        ("peers: [10.0.0.300]", "peers[0]", '"10.0.0.300" is not an IP address or network'),
        ("senders: [' ']", "senders[0]", '" " is not a non-empty string'),
        ("timers: {ack_timeout: 5}", "timers.ack_timeout", "for hl7 connections"),
        ("timers: {reply_timeout: 0}", "timers.reply_timeout", "0 is not a duration above 0"),
        ("timers: {frame_timeout: 2h}", "timers.frame_timeout", "up to 3600 s"),
        ("limits: {max_connections: 0}", "limits.max_connections", "0 is not an integer (1-1000)"),
        ("limits: {max_message_bytes: 10}", "limits.max_message_bytes", "is not a size in bytes"),
        ("limits: {idle_timeout: soon}", "limits.idle_timeout", '"soon" is not a duration'),
        ("reconnect: {initial: 1}", "reconnect", "only for tcp-client and serial connections"),
        ("device: /dev/ttyS0", "device", "only for serial connections (this one is tcp-server)"),
        ("timers: [1]", "timers", "[1] is not a mapping"),
    ],
)
def test_a_bad_connection_key_is_named(tmp_path: Path, line: str, key: str, message: str) -> None:
    text = ASTM_SERVER.replace("    port: 5001\n", "") if key == "port" else ASTM_SERVER
    text = text.replace("  - name: xn\n", "  - name: xn\n" if key != "name" else "  -\n")
    path = minimal(tmp_path, f"{text}    {line}\n")
    assert message in problem_about(path, f"connections[0].{key}")


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("baud: 9601", "baud", "9601 is not a standard baud rate"),
        ("baud: fast", "baud", '"fast" is not a standard baud rate'),
        ("data_bits: 9", "data_bits", "9 is not a number of data bits (5-8)"),
        ("data_bits: 4", "data_bits", "4 is not a number of data bits (5-8)"),
        ("parity: yes", "parity", "True is not one of none | even | odd | mark | space"),
        ("parity: EVEN", "parity", '"EVEN" is not one of none | even'),
        ("stop_bits: 3", "stop_bits", "3 is not 1 | 1.5 | 2"),
        ("stop_bits: 1.25", "stop_bits", "1.25 is not 1 | 1.5 | 2"),
        ("flow_control: hardware", "flow_control", '"hardware" is not one of none | rtscts'),
        ("host: 10.0.0.1", "host", "only for tcp-server and tcp-client connections"),
        ("peers: [10.0.0.1]", "peers", "only for tcp-server connections"),
        ("limits: {max_connections: 3}", "limits.max_connections", "only for tcp-server"),
        ("reconnect: {initial: 10, maximum: 5}", "reconnect.maximum", "5 s is below initial"),
    ],
)
def test_serial_settings_out_of_range(tmp_path: Path, line: str, key: str, message: str) -> None:
    connection = (
        "  - name: line\n    protocol: astm\n    transport: serial\n    device: /dev/ttyS0\n"
    )
    path = minimal(tmp_path, f"{connection}    {line}\n")
    assert message in problem_about(path, f"connections[0].{key}")


def test_required_connection_keys(tmp_path: Path) -> None:
    path = minimal(tmp_path, "  - {}\n  - {name: c, protocol: astm, transport: tcp-client}\n")
    found = problems(path)
    assert any("connections[0].name: missing" in p for p in found)
    assert any("connections[0].transport: missing: one of tcp-server" in p for p in found)
    assert any("connections[0].protocol: missing: one of astm | hl7" in p for p in found)
    assert any("connections[1].host: missing" in p for p in found)
    assert any("connections[1].port: missing: the analyzer's port" in p for p in found)
    # An unknown transport is reported once, not with the keys it would need.
    assert not any("connections[0].port" in p for p in found)


def test_a_missing_his_and_no_connections(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "time_zone: Europe/Paris\n"))
    assert found == [
        "lisgw.yaml: line 1: connections: missing: one entry per analyzer connection",
        "lisgw.yaml: line 1: his.results.host: missing: the HIS's address for results",
        "lisgw.yaml: line 1: his.results.port: missing: the HIS's MLLP port for results",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("his: [1]\n", "lisgw.yaml: line 1: his: [1] is not a mapping"),
        ("connections: {a: 1}\n", "lisgw.yaml: line 1: connections: {'a': 1} is not a list"),
        ("[1, 2]\n", "lisgw.yaml: line 1: top level: [1, 2] is not a mapping"),
        ("a: [\n", "lisgw.yaml: line 2: not valid YAML: expected the node content"),
        ("a: !!python/name:os.system x\n", "lisgw.yaml: line 1: a: not plain data"),
        ("time_zone: UTC\ntime_zone: Asia/Tokyo\n", "lisgw.yaml: line 2: time_zone: duplicate key"),
    ],
)
def test_file_level_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert any(p.startswith(message) for p in problems(write(tmp_path, text)))


def test_an_unreadable_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "absent.yaml")[0].endswith(
        f"cannot read: [Errno 2] No such file or directory: '{tmp_path}/absent.yaml'"
    )


def test_his_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        his:
          profile: hl7-v999
          results: {host: "his host", port: 0, ack_timeout: -1, backoff: {base: 10m, cap: 1m}}
          orders: {host: his.example, port: 2575, max_message_bytes: 1}
          tls: {cert: a.pem, verify: false, server_name: 5}
        connections: []
        """,
    )
    found = "\n".join(problems(path))
    assert 'his.profile: no HIS profile "hl7-v999" (looked for ' in found
    assert f"{tmp_path}/his/hl7-v999.yaml" in found  # beside the configuration first
    assert 'his.results.host: "his host" is not a host name or IP address' in found
    assert "his.results.port: 0 is not a TCP port (1-65535)" in found
    assert "his.results.ack_timeout: -1 is not a duration above 0" in found
    assert "his.results.backoff.cap: must be at least backoff.base, not 60.0" in found
    assert 'his.orders.host: "his.example" is not an IP address to listen on' in found
    assert "his.orders.max_message_bytes: 1 is not a size in bytes (1024-1073741824)" in found
    assert f"his.tls.cert: {tmp_path}/a.pem does not exist" in found
    assert "his.tls.key: missing: its private key (PEM)" in found
    # require_client_cert (default true) still needs the CA.
    assert "his.tls.ca: missing: the CA certificates (PEM)" in found
    assert "his.tls.server_name: 5 is not a non-empty string" in found


def test_tls_cannot_be_switched_to_no_verification(tmp_path: Path) -> None:
    """The HIS link always runs mutual TLS: turning a check off is refused, not ignored."""
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("PEM", encoding="utf-8")
    extra = "    tls: {cert: cert.pem, key: key.pem, verify: false, require_client_cert: false}\n"
    text = HIS.replace("his:\n", "his:\n" + extra.replace("    ", "  ", 1))
    found = problems(write(tmp_path, f"{text}connections:\n{ASTM_SERVER}"))
    assert any("his.tls.verify: false is not supported" in p for p in found)
    assert any("his.tls.require_client_cert: false is not supported" in p for p in found)
    assert any("his.tls.ca: missing" in p for p in found)


def test_the_his_profile_and_test_codes_are_checked_too(tmp_path: Path) -> None:
    (tmp_path / "his").mkdir()
    write(tmp_path / "his", "version: '9.9'\nresults: {per: patient}\n", "broken.yaml")
    write(tmp_path, "sysmex-xn:\n  WBC: {his: HEM-WBC}\nno-such-analyzer:\n  X: Y\n", "codes.yaml")
    text = minimal(tmp_path, extra="test_codes: codes.yaml\n").read_text(encoding="utf-8")
    found = problems(write(tmp_path, text.replace("his:\n", "his:\n  profile: broken\n")))
    assert "lisgw.yaml: line 1: test_codes: codes.yaml: no-such-analyzer: no such driver" in found
    # The profile's own problems, named as its loader names them, after the file's own.
    assert found[-2].startswith("his/broken.yaml: line 1: version: '9.9' is not one of")
    assert found[-1].startswith("his/broken.yaml: line 2: results.per: 'patient' is not")


def test_missing_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    path = minimal(tmp_path, extra="test_codes: nope.yaml\ndrivers_dirs: [nodir, a-file]\n")
    found = problems(path)
    assert f"lisgw.yaml: line 1: test_codes: {tmp_path}/nope.yaml does not exist" in found
    assert f"lisgw.yaml: line 2: drivers_dirs[0]: {tmp_path}/nodir does not exist" in found
    assert f"lisgw.yaml: line 2: drivers_dirs[1]: {tmp_path}/a-file is not a directory" in found


def test_a_missing_serial_device_is_not_a_problem(tmp_path: Path) -> None:
    connection = "  - {name: s, protocol: astm, transport: serial, device: /dev/ttyUSB97}\n"
    assert load_config(minimal(tmp_path, connection)).connection("s").serial is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://lisgw@db/lisgw", "mysql is not supported: use sqlite or postgresql"),
        ("not a url", "store.url: not a database URL (sqlite:///FILE, postgresql"),
    ],
)
def test_store_urls(tmp_path: Path, url: str, message: str) -> None:
    path = minimal(tmp_path, extra=f"store: {{url: '{url}'}}\n")
    assert message in problem_about(path, "store.url")


def test_store_url_is_kept(tmp_path: Path) -> None:
    url = "postgresql+psycopg://lisgw@db.example:5432/lisgw"
    assert load_config(minimal(tmp_path, extra=f"store: {{url: '{url}'}}\n")).store_url == url


# Ports and listeners --------------------------------------------------------------------------


def server(name: str, port: int, *extra: str, host: str = "0.0.0.0", protocol: str = "astm") -> str:
    lines = [
        f"  - name: {name}",
        f"    protocol: {protocol}",
        "    transport: tcp-server",
        f"    host: {host}",
        f"    port: {port}",
        *(f"    {line}" for line in extra),
    ]
    return "\n".join(lines) + "\n"


def test_two_analyzers_on_one_port_must_be_told_apart(tmp_path: Path) -> None:
    path = minimal(tmp_path, server("a", 5000) + server("b", 5000))
    message = problem_about(path, "connections[1].port")
    assert message.endswith(
        "shares 0.0.0.0:5000 with connections[0] and the two cannot be told apart: give both "
        "peers that do not overlap, or both senders that differ"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["peers: [10.0.0.0/24]"], ["peers: [10.0.0.200]"]),  # overlapping networks
        (["peers: [10.0.0.1]"], ["senders: [XN-550]"]),  # one by address, one by name
        (["senders: [XN-550, XN-1000]"], ["senders: [XN-1000]"]),
        (["peers: ['::ffff:10.0.0.1']"], ["peers: [10.0.0.0/24]"]),  # the same, mapped
    ],
)
def test_attribution_that_cannot_decide(
    tmp_path: Path, first: list[str], second: list[str]
) -> None:
    path = minimal(tmp_path, server("a", 5000, *first) + server("b", 5000, *second))
    assert "cannot be told apart" in problem_about(path, "connections[1].port")


def test_attribution_that_decides(tmp_path: Path) -> None:
    connections = (
        server("a", 5000, "peers: [10.0.0.0/25]")
        + server("b", 5000, "peers: [10.0.0.128/25]")
        + server("c", 5001, "peers: [10.0.1.5]", "senders: [XN-550]")
        + server("d", 5001, "peers: [10.0.1.5]", "senders: [c311]")
        + server("e", 5002, "peers: ['2001:db8::/64']")
        + server("f", 5002, "peers: [10.0.2.0/24]")
    )
    loaded = load_config(minimal(tmp_path, connections))
    by_port = {listener.port: listener for listener in loaded.listeners}
    assert sorted(by_port) == [5000, 5001, 5002]
    assert by_port[5000].attribute("10.0.0.130") is loaded.connection("b")
    assert by_port[5000].attribute("::ffff:10.0.0.5") is loaded.connection("a")
    assert by_port[5000].attribute("192.168.1.1") is None and not by_port[5000].for_peer("x")
    assert by_port[5001].attribute("10.0.1.5") is None
    assert by_port[5001].attribute("10.0.1.5", "  c311 ") is loaded.connection("d")
    assert by_port[5001].attribute("10.0.1.5", "XN-1000") is None
    assert by_port[5002].attribute("2001:db8::7") is loaded.connection("e")


def test_a_single_listener_with_senders_waits_for_the_sender(tmp_path: Path) -> None:
    loaded = load_config(minimal(tmp_path, server("a", 5000, "senders: [XN-550]")))
    (listener,) = loaded.listeners
    assert listener.attribute("10.1.1.1") is None
    assert listener.attribute("10.1.1.1", "XN-550") is loaded.connection("a")
    assert listener.attribute("10.1.1.1", "XN-551") is None


def test_port_collisions(tmp_path: Path) -> None:
    his_orders = HIS + "  orders: {port: 2575}\n"
    connections = (
        server("a", 2575)  # the HIS order listener's port
        + server("b", 5000, "peers: [10.0.0.1]")
        + server("c", 5000, "peers: [10.0.0.2]", host="10.0.0.9")  # wildcard vs one address
        + server("d", 5001, "peers: [10.0.0.1]")
        + server("e", 5001, "peers: [10.0.0.2]", protocol="hl7")
        + server("f", 5002, host="10.0.0.8")
        + server("g", 5002, host="10.0.0.9")  # two addresses, one port: fine
        + server("h", 0)
        + server("i", 0)  # port 0: each its own free port
    )
    path = write(tmp_path, f"{his_orders}connections:\n{connections}")
    found = problems(path)
    assert [re.sub(r"^lisgw.yaml: line \d+: ", "", p) for p in found] == [
        "connections[0].port: 0.0.0.0:2575 collides with his.orders (0.0.0.0:2575); analyzers "
        "share a listener only with the same host and port",
        "connections[2].port: 10.0.0.9:5000 collides with connections[1] (0.0.0.0:5000); "
        "analyzers share a listener only with the same host and port",
        "connections[4].protocol: shares 0.0.0.0:5001 with connections[3], which speaks astm: "
        "one protocol per port",
    ]


def test_tcp_clients_and_serial_devices_are_not_shared(tmp_path: Path) -> None:
    connections = """\
  - {name: a, protocol: astm, transport: tcp-client, host: Analyzer.example, port: 4001}
  - {name: b, protocol: astm, transport: tcp-client, host: analyzer.example, port: 4001}
  - {name: c, protocol: astm, transport: tcp-client, host: analyzer.example, port: 4002}
  - {name: d, protocol: astm, transport: serial, device: /dev/ttyS0}
  - {name: e, protocol: astm, transport: serial, device: /dev//ttyS0}
"""
    found = problems(minimal(tmp_path, connections))
    assert [re.sub(r"^lisgw.yaml: line \d+: ", "", p) for p in found] == [
        'connections[1].host: "analyzer.example:4001" is already used by connections[0]',
        'connections[4].device: "/dev/ttyS0" is already used by connections[3]',
    ]


def test_batch_download_on_an_hl7_line_is_refused(tmp_path: Path) -> None:
    """Batch download is built for ASTM lines only: an HL7 line asking for it would never
    get an order, so the configuration says so instead of accepting it."""
    connections = """\
  - {name: a, protocol: hl7, transport: tcp-client, host: 10.0.0.5, port: 4001, orders: batch}
  - {name: b, protocol: hl7, transport: tcp-client, host: 10.0.0.6, port: 4001, orders: both}
  - {name: c, protocol: hl7, transport: tcp-client, host: 10.0.0.7, port: 4001, orders: query}
  - {name: d, protocol: astm, transport: tcp-client, host: 10.0.0.8, port: 4001, orders: batch}
"""
    found = problems(minimal(tmp_path, connections))
    assert [re.sub(r"^lisgw.yaml: line \d+: ", "", p) for p in found] == [
        f"connections[{i}].orders: '{mode}': batch download is for ASTM analyzers; an HL7 "
        "analyzer gets its orders by host query (QBP/QRY): use 'query' or 'none'"
        for i, mode in ((0, "batch"), (1, "both"))
    ]


# The dataclasses ------------------------------------------------------------------------------


def test_order_modes() -> None:
    assert [m.downloads for m in OrderMode] == [True, False, True, False]
    assert [m.answers_queries for m in OrderMode] == [False, True, True, False]


def test_timer_overrides_keep_what_they_do_not_set() -> None:
    timers = TimerOverrides(busy_backoff=3.0).applied_to(LinkTimers(reply_timeout=9.0))
    assert timers == LinkTimers(reply_timeout=9.0, busy_backoff=3.0)


def test_attribution_distinctness_is_symmetric() -> None:
    net = ipaddress.ip_network
    cases = [
        (Attribution(), Attribution(), False),
        (Attribution(peers=(net("10.0.0.1"),)), Attribution(peers=(net("10.0.0.2"),)), True),
        (Attribution(peers=(net("10.0.0.1"),)), Attribution(peers=(net("::1"),)), True),
        (Attribution(senders=frozenset({"A"})), Attribution(senders=frozenset({"B"})), True),
        (Attribution(senders=frozenset({"A"})), Attribution(), False),
    ]
    for one, two, distinct in cases:
        assert one.distinct_from(two) is distinct and two.distinct_from(one) is distinct


def test_connection_descriptions(tmp_path: Path) -> None:
    loaded = load_config(
        minimal(
            tmp_path,
            server("v6", 5000, host="'::'")
            + "  - {name: c, protocol: hl7, transport: tcp-client, host: 10.0.0.5, port: 4001}\n"
            + "  - {name: s, protocol: astm, transport: serial, device: /dev/ttyS0, baud: 19200,"
            " parity: odd, stop_bits: 1.5, flow_control: rtscts}\n",
        )
    )
    assert [c.describe() for c in loaded.connections] == [
        "listen [::]:5000",
        "connect 10.0.0.5:4001",
        "/dev/ttyS0 19200 8O1.5 rtscts",
    ]


def test_a_given_catalogue_is_used(tmp_path: Path) -> None:
    catalogue = Catalogue.load()
    connection = ASTM_SERVER + "    driver: sysmex-xn@1\n"
    loaded = load_config(minimal(tmp_path, connection), catalogue=catalogue)
    assert loaded.connection("xn").driver == "sysmex-xn@1"
    with pytest.raises(KeyError):
        loaded.connection("nope")


def test_the_configuration_is_frozen(tmp_path: Path) -> None:
    loaded = load_config(minimal(tmp_path))
    assert isinstance(loaded, GatewayConfig)
    connection: ConnectionConfig = loaded.connections[0]
    listener: Listener = loaded.listeners[0]
    with pytest.raises(AttributeError):
        connection.name = "other"  # type: ignore[misc]
    assert listener.connections == (connection,)


# `lisgw config check` -------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(config_command, list(args))
    return result.exit_code, result.output


def test_check_prints_a_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run("check", str(CONFIG_DIR / "lisgw.yaml"))
    assert code == 0, out
    assert out.startswith(f"ok: {CONFIG_DIR / 'lisgw.yaml'}\n")
    assert f"store:       sqlite:///{tmp_path}/lisgw-data/lisgw.sqlite" in out
    assert "HIS link:    results to 127.0.0.1:12576, orders received on 127.0.0.1:12575" in out
    rows = out.split("connections: 3\n")[1].splitlines()
    assert rows[0].split() == ["NAME", "PROTOCOL", "DRIVER", "TRANSPORT", "ORDERS", "WHERE"]
    assert rows[1].split() == [
        "xn-550",
        "astm",
        "sysmex-xn",
        "tcp-server",
        "both",
        "listen",
        "127.0.0.1:15001",
    ]


def test_check_hides_a_store_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://lisgw:s3cret@db.example/lisgw"
    code, out = run("check", str(minimal(tmp_path, extra=f"store: {{url: '{url}'}}\n")))
    assert code == 0 and "s3cret" not in out and "lisgw:***@db.example" in out


def test_check_lists_every_problem_and_fails(tmp_path: Path) -> None:
    path = minimal(tmp_path, server("a", 5000) + server("b", 5000), "colour: blue\n")
    code, out = run("check", str(path))
    assert code == 1
    lines = out.splitlines()
    assert lines[-1] == "2 problem(s)"
    assert lines[0].endswith("line 1: colour: unknown key")
    assert "cannot be told apart" in lines[1]


def test_check_help_has_examples() -> None:
    code, out = run("--help")
    assert code == 0 and "Examples:" in out and "lisgw config check config/lisgw.yaml" in out
    code, out = run("check", "--help")
    assert code == 0 and "Examples:" in out
