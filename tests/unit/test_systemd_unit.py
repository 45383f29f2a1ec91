"""systemd/lisgw.service: readiness, watchdog, a dedicated user, and its hardening.

The unit is read as systemd reads it (sections, repeated keys, an empty value resetting a
list) and its keys checked, wherever the tests run. Where ``systemd-analyze`` is installed,
its offline security review must also rate the unit's exposure at 2.0 or less (issue 6).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from lisgw.config import DEFAULT_DATA_DIR

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "lisgw.service"
Unit = dict[str, dict[str, list[str]]]


def read_unit(path: Path) -> Unit:
    """Section → key → values in order; an empty assignment clears the values before it."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    logical = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = logical + raw.strip()
        if line.endswith("\\"):  # a continuation line
            logical = line[:-1].rstrip() + " "
            continue
        logical = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            raise ValueError(f"{path}: not a unit file line: {line!r}")
        key, _, value = line.partition("=")
        # An empty assignment is kept as [""] (CapabilityBoundingSet= means "none").
        values = section.setdefault(key.strip(), [])
        if value.strip():
            values[:] = [*(v for v in values if v), value.strip()]
        else:
            values[:] = [""]
    return unit


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return read_unit(UNIT)["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values is not None and len(values) == 1, f"{key}: {values}"
    return values[0]


def words(service: dict[str, list[str]], key: str) -> list[str]:
    return [word for value in service.get(key, []) for word in value.split()]


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60, "m": 60, "h": 3600, "": 1}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*(ms|min|s|m|h|)", text):
        total += float(number) * units[unit]
    return total


def test_notify_readiness_and_watchdog(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    watchdog = seconds(one(service, "WatchdogSec"))
    assert 0 < watchdog <= 60
    assert one(service, "Restart") in ("on-failure", "on-abnormal", "always")  # a watchdog kill
    assert seconds(one(service, "TimeoutStopSec")) > watchdog  # room for a graceful stop


def test_it_runs_the_gateway_with_a_checked_configuration(service: dict[str, list[str]]) -> None:
    start = shlex.split(one(service, "ExecStart"))
    assert start[0].startswith("/") and start[1:3] == ["run", "--config"]
    check = shlex.split(one(service, "ExecStartPre"))
    assert check == [start[0], "config", "check", start[3]]


def test_a_dedicated_user_with_its_state_directory(service: dict[str, list[str]]) -> None:
    assert one(service, "User") == "lisgw" and one(service, "Group") == "lisgw"
    assert one(service, "DynamicUser") == "no"
    assert one(service, "StateDirectory") == "lisgw"
    # The configuration's default data directory is the state directory.
    assert Path("/var/lib") / one(service, "StateDirectory") == DEFAULT_DATA_DIR
    assert one(service, "WorkingDirectory") == str(DEFAULT_DATA_DIR)
    assert int(one(service, "UMask"), 8) & 0o007 == 0o007  # nothing for others


def test_serial_lines_through_the_dialout_group(service: dict[str, list[str]]) -> None:
    assert words(service, "SupplementaryGroups") == ["dialout"]
    assert one(service, "PrivateDevices") == "no"  # yes would hide /dev/tty*
    assert one(service, "DevicePolicy") == "closed"
    allowed = {tuple(value.split()) for value in service["DeviceAllow"]}
    assert allowed == {("char-ttyS", "rw"), ("char-ttyUSB", "rw"), ("char-ttyACM", "rw")}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateMounts", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictNamespaces", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("SystemCallArchitectures", "native"),
    ],
)
def test_hardening_option(service: dict[str, list[str]], key: str, value: str) -> None:
    assert one(service, key) == value


def test_network_and_system_calls(service: dict[str, list[str]]) -> None:
    assert sorted(words(service, "RestrictAddressFamilies")) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    filters = service["SystemCallFilter"]
    assert filters[0] == "@system-service"  # the allow list first …
    assert all(f.startswith("~") for f in filters[1:])  # … then only removals from it
    assert "@privileged" in words({"f": [f.lstrip("~") for f in filters[1:]]}, "f")
    # Nothing writable outside the state directory: no ReadWritePaths needed or wanted.
    assert "ReadWritePaths" not in service


def test_it_starts_at_boot() -> None:
    unit = read_unit(UNIT)
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in words(unit["Unit"], "Wants")


def test_the_reader_resets_lists_on_an_empty_assignment(tmp_path: Path) -> None:
    path = tmp_path / "x.service"
    path.write_text("[Service]\nDeviceAllow=a\nDeviceAllow=\nDeviceAllow=b \\\n  rw\n")
    assert read_unit(path) == {"Service": {"DeviceAllow": ["b rw"]}}
    path.write_text("[Service]\nCapabilityBoundingSet=CAP_KILL\nCapabilityBoundingSet=\n")
    assert read_unit(path) == {"Service": {"CapabilityBoundingSet": [""]}}


ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_rates_the_exposure_at_two_or_less() -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for lisgw\.service: ([0-9.]+)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout
    # Its verdict on each option, for the failure message when one regresses.
    failed = [line for line in done.stdout.splitlines() if line.startswith("✗")]
    assert not any("User=/DynamicUser=" in line for line in failed)
    assert not any("NoNewPrivileges=" in line for line in failed)
