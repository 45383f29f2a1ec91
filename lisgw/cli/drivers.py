"""``lisgw drivers``: list, show and check the analyzer driver profiles.

Layer: interface. Loads the catalogue (``lisgw.drivers.Catalogue``) and prints it. ``check``
prints every problem of every file at once, each naming the file and the key path, and exits
with status 1 when there is any; ``show`` prints a driver as the engine sees it: the profile
merged with its parents, and its inheritance chain.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from lisgw.drivers import BUILTIN_DIRS, Catalogue, CompiledProfile, default_catalogue
from lisgw.drivers.catalogue import yaml_files
from lisgw.drivers.mapping import TestCodeMap
from lisgw.drivers.schema import MergedProfile, file_label, key_order
from lisgw.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def drivers_dir_option(command: F) -> F:
    """``--drivers-dir DIR`` (repeatable): extra profile directories after the built-in ones."""
    option = click.option(
        "--drivers-dir",
        "drivers_dirs",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Another directory of driver profiles (*.yaml), after the built-in ones. Repeatable.",
    )
    return option(command)


def load_catalogue(drivers_dirs: Sequence[Path], command: str) -> Catalogue:
    """The catalogue, or every problem on stderr and exit status 2."""
    try:
        return Catalogue.load(drivers_dirs) if drivers_dirs else default_catalogue()
    except ConfigError as error:
        for problem in error.problems:
            click.echo(f"lisgw {command}: {problem}", err=True)
        sys.exit(2)


@click.group()
def drivers() -> None:
    """Analyzer drivers: the YAML profiles that say how each analyzer writes its messages.

    Profiles live in drivers/*.yaml (one per analyzer family) and inherit the protocol
    definitions in protocols/*.yaml; drivers/README.md documents every key.

    \b
    Examples:
      lisgw drivers list
      lisgw drivers show sysmex-xn
      lisgw drivers check my-analyzer.yaml
    """


def _detection(driver: CompiledProfile) -> str:
    if driver.identify is None:
        return "fallback" if driver.generic and driver.name.endswith("-generic") else "pin only"
    keys = [
        key
        for key, patterns in (
            ("sender", driver.identify.sender),
            ("header", driver.identify.header),
            ("content", driver.identify.content),
        )
        if patterns
    ]
    return "+".join(keys)


@drivers.command("list")
@drivers_dir_option
def list_drivers(drivers_dirs: tuple[Path, ...]) -> None:
    """List every driver (all versions) and the protocol definitions.

    DETECT says how auto-detection recognises the analyzer: the identify keys the driver
    gives (sender, header, content), "fallback" for the generic drivers used when nothing
    else matches, "pin only" for a driver a connection must name.
    """
    catalogue = load_catalogue(drivers_dirs, "drivers list")
    rows = [("DRIVER", "PROTOCOL", "DETECT", "TITLE")]
    for driver in catalogue.drivers:
        protocol = f"{driver.protocol} (not mine)" if driver.not_mine else driver.protocol
        rows.append((driver.key, protocol, _detection(driver), driver.title))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )
    definitions = ", ".join(d.key for d in catalogue.definitions)
    click.echo(f"\nprotocol definitions: {definitions or 'none'}")


def _ordered(data: Mapping[str, Any]) -> dict[str, Any]:
    """The merged profile in the documented key order (schema order, then anything else)."""
    order = key_order()

    def arrange(mapping: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
        ranked = sorted(mapping, key=lambda k: keys.index(k) if k in keys else len(keys))
        return {k: mapping[k] for k in ranked}

    top = arrange(data, order[""])
    for key, value in top.items():
        if isinstance(value, Mapping) and key in order:
            top[key] = arrange(value, order[key])
    return top


def _show_header(merged: MergedProfile) -> list[str]:
    title = merged.data.get("title") or ""
    kind = "protocol definition" if merged.source.definition else "driver"
    lines = [f"# {merged.key} ({kind}){': ' + title if title else ''}"]
    lines.append("# inheritance: " + " ← ".join(s.key for s in merged.chain))
    for source in merged.chain:
        lines.append(f"#   {source.key}: {source.label}")
    lines.append("# merged: every key below is what the engine uses (parents' values included)")
    return lines


@drivers.command()
@click.argument("name")
@drivers_dir_option
@click.option("--full", is_flag=True, help="Include the E1394 record layout in a driver.")
def show(name: str, drivers_dirs: tuple[Path, ...], full: bool) -> None:
    """Print driver NAME[@VERSION] merged with its parents, as YAML, with its inheritance.

    Works for protocol definitions too (astm-e1394, hl7-v2, e1381). A driver's record
    layout (field names by position, from astm-e1394) is left out unless --full.
    """
    catalogue = load_catalogue(drivers_dirs, "drivers show")
    try:
        merged = catalogue.merged(name)
    except ConfigError as error:
        for problem in error.problems:
            click.echo(f"lisgw drivers show: {problem}", err=True)
        sys.exit(1)
    if merged is None:  # merged() raises rather than return None when required
        sys.exit(1)
    data = dict(merged.data)
    lines = _show_header(merged)
    if not (full or merged.source.definition) and data.pop("layout", None) is not None:
        lines.append("# layout: left out (--full shows it)")
    for line in lines:
        click.echo(line)
    text = yaml.safe_dump(
        _ordered(data),
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=None,
    )
    click.echo(text, nl=False)


def _check_test_codes(path: Path, catalogue: Catalogue) -> tuple[list[str], list[str]]:
    """Problems (unknown drivers) and notes (known test codes with no row) of a mapping file."""
    try:
        table = TestCodeMap.load(path)
    except ConfigError as error:
        return list(error.problems), []
    problems: list[str] = []
    notes: list[str] = []
    known = {driver.name: driver for driver in catalogue.drivers}
    for name in sorted(table.drivers):
        driver = known.get(name)
        if driver is None:
            problems.append(f"{file_label(path)}: {name}: no such driver in the catalogue")
            continue
        missing = [code for code in driver.tests if table.lookup(name, code) is None]
        if missing:
            notes.append(
                f"{name}: {len(missing)} known test code(s) unmapped: {', '.join(missing)}"
            )
    return problems, notes


@drivers.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@drivers_dir_option
@click.option(
    "--test-codes",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also check a test-code mapping table (analyzer code → HIS code, LOINC) against the "
    "catalogue, and list the codes each driver knows that it does not map.",
)
def check(files: tuple[Path, ...], drivers_dirs: tuple[Path, ...], test_codes: Path | None) -> None:
    """Validate profile FILES together with the catalogue they will join.

    Every problem is printed, each with its file and key path (`drivers/x.yaml:
    sample_id.fields[1]: …`); the exit status is 1 when there is any. A FILE that is already
    in the catalogue replaces itself. Without FILES, the whole catalogue is checked.

    \b
    Examples:
      lisgw drivers check drivers/sysmex-xn.yaml
      lisgw drivers check --drivers-dir /etc/lisgw/drivers
      lisgw drivers check --test-codes /etc/lisgw/test-codes.yaml
    """
    try:
        others = yaml_files([*BUILTIN_DIRS, *drivers_dirs])
    except ConfigError as error:
        others, problems = [], list(error.problems)
    else:
        problems = []
    mine = {f.resolve() for f in files}
    paths = [p for p in others if p.resolve() not in mine] + list(files)
    catalogue: Catalogue | None = None
    try:
        catalogue = Catalogue.from_files(paths)
    except ConfigError as error:
        problems.extend(error.problems)
    notes: list[str] = []
    if test_codes is not None and catalogue is not None:
        found, notes = _check_test_codes(test_codes, catalogue)
        problems.extend(found)
    for problem in problems:
        click.echo(problem)
    for note in notes:
        click.echo(f"note: {note}")
    if problems or catalogue is None:
        click.echo(f"{len(problems)} problem(s)")
        sys.exit(1)
    checked = ", ".join(file_label(f) for f in files) or f"{len(paths)} files"
    click.echo(f"ok: {checked} ({len(catalogue.drivers)} drivers in the catalogue)")
