"""Driver profiles as data: read the YAML files, validate them, resolve their inheritance.

Layer: drivers (configuration), pure apart from reading the files it is given. YAML is parsed
here with ``yaml.safe_load`` and nowhere else; everything after this module works on plain
dicts and on the compiled objects of ``lisgw.drivers.compiled``.

Implements the profile schema of drivers/README.md (issue 4): every key, its type and its
allowed values (the rules are in ``lisgw.drivers.schema_nodes``); field references (``R.4``,
``O.3.2``, ``R.3.4+``, ``OBX-3.1``, ``SPM-2.1.1``, parsed by ``lisgw.drivers.references``)
checked against the protocol and, for ASTM, against the E1394 record layout of the protocol
definition; inheritance as a deep merge of mappings (lists and scalars replace). Every problem
in every file is collected and raised at once as ``ConfigError(problems)``, each naming the
file and the key path: ``drivers/foo.yaml: sample_id.fields[1]: "O.x.2" is not a field
reference (RECORD.FIELD[.COMPONENT])``.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lisgw.drivers.references import RefSpec, parse_reference
from lisgw.drivers.schema_nodes import (
    NAME,
    PARENT,
    PROTOCOLS,
    REFERENCE_KEYS,
    REQUIRED_REFERENCES,
    SCHEMA,
    key_order,
    shown,
)
from lisgw.errors import ConfigError

# The key tables, ``key_order``, ``RefSpec`` and ``parse_reference`` live in schema_nodes and
# references; they are re-exported here, where the CLI and the tests import them.
__all__ = [
    "NAME",
    "PROTOCOLS",
    "REFERENCE_KEYS",
    "SCHEMA",
    "MergedProfile",
    "ProfileSource",
    "RefSpec",
    "file_label",
    "key_order",
    "load_profiles",
    "parse_reference",
]

_HL7_CODE = re.compile(r"[A-Z0-9]{3}\Z")
# yaml.safe_load's loader (plain data only, no Python objects), in C when libyaml is there:
# the catalogue is read at every start and by every `lisgw drivers` command.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Files ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileSource:
    """One YAML file as written: a driver (``driver:``) or a protocol definition."""

    name: str
    version: int
    definition: bool
    path: Path
    label: str
    data: Mapping[str, Any]

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def parent(self) -> str | None:
        parent = self.data.get("inherits")
        return parent if isinstance(parent, str) else None


@dataclass(frozen=True, slots=True)
class MergedProfile:
    """A profile with its parents merged in. ``chain`` starts with the profile itself."""

    source: ProfileSource
    chain: tuple[ProfileSource, ...]
    data: Mapping[str, Any]

    @property
    def key(self) -> str:
        return self.source.key


def file_label(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _read(path: Path, problems: list[str]) -> ProfileSource | None:
    label = file_label(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problems.append(f"{label}: cannot read: {error}")
        return None
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error)
        problems.append(f"{label}: {where}not valid YAML: {reason}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{label}: a profile is a YAML mapping (key: value lines)")
        return None
    found: list[str] = []
    SCHEMA.check(data, "", found)
    problems.extend(f"{label}: {problem}" for problem in found)
    return _identity(path, label, data, problems)


def _identity(
    path: Path, label: str, data: dict[str, Any], problems: list[str]
) -> ProfileSource | None:
    """The file's name@version. A missing or bad one is reported and replaced by a placeholder
    (the load fails anyway) so that inheritance and field checks still run: every problem in
    a file is reported at once, not one stage at a time."""
    has_driver, has_definition = "driver" in data, "definition" in data
    if has_driver == has_definition:
        problems.append(
            f"{label}: driver: a profile names itself with exactly one of `driver:` (analyzer "
            "drivers) or `definition:` (protocol definitions)"
        )
    if "version" not in data:
        problems.append(f"{label}: version: missing (a positive integer)")
    name, version = data.get("definition" if has_definition else "driver"), data.get("version")
    if not (isinstance(name, str) and NAME.match(name)):
        name = _placeholder_name(path)  # a bad name was reported by the schema
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        version = 1  # likewise
    return ProfileSource(name, version, has_definition, path, label, data)


def _placeholder_name(path: Path) -> str:
    """A name no valid profile can have (it starts with '-'), unique per file."""
    return f"-invalid-{path.resolve()}"


# Inheritance ----------------------------------------------------------------------------------


class _Index:
    def __init__(self, sources: Sequence[ProfileSource], problems: list[str]) -> None:
        self.by_key: dict[str, ProfileSource] = {}
        self.latest: dict[str, ProfileSource] = {}
        for source in sources:
            other = self.by_key.get(source.key)
            if other is not None:
                problems.append(
                    f"{source.label}: driver: {source.key} is already defined in {other.label}"
                )
                continue
            self.by_key[source.key] = source
            best = self.latest.get(source.name)
            if best is None or source.version > best.version:
                self.latest[source.name] = source

    def find(self, reference: str) -> ProfileSource | None:
        if "@" in reference:
            return self.by_key.get(reference)
        return self.latest.get(reference)


def _chain(
    source: ProfileSource, index: _Index, problems: list[str]
) -> tuple[ProfileSource, ...] | None:
    chain = [source]
    seen = {source.key}
    current = source
    while current.parent is not None:
        if not PARENT.match(current.parent):
            return None  # reported by the schema
        parent = index.find(current.parent)
        if parent is None:
            known = ", ".join(sorted(k for k in index.latest if not k.startswith("-"))) or "none"
            problems.append(
                f'{current.label}: inherits: unknown parent "{current.parent}" (known: {known})'
            )
            return None
        if parent.key in seen:
            cycle = " → ".join([*(s.key for s in chain), parent.key])
            problems.append(f"{source.label}: inherits: inheritance cycle {cycle}")
            return None
        chain.append(parent)
        seen.add(parent.key)
        current = parent
    return tuple(chain)


def deep_merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; lists, scalars and null in ``child`` replace."""
    merged = dict(base)
    for key, value in child.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def _merged_data(chain: Sequence[ProfileSource]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for source in reversed(chain):
        own = {
            k: v for k, v in source.data.items() if k not in ("inherits", "definition", "driver")
        }
        data = deep_merge(data, own)
    head = chain[0]
    identity: dict[str, Any] = {"definition" if head.definition else "driver": head.name}
    if head.parent is not None:
        identity["inherits"] = head.parent
    return {**identity, **data}


# Checks on the merged profile -------------------------------------------------------------------


def _get(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _has(data: Mapping[str, Any], path: Sequence[str]) -> bool:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return False
        value = value[key]
    return True


class _Checker:
    """Checks that need the whole chain; each problem names the file that set the key."""

    def __init__(self, merged: MergedProfile) -> None:
        self.merged = merged
        self.problems: list[str] = []

    def origin(self, path: Sequence[str]) -> str:
        for source in self.merged.chain:
            if _has(source.data, path):
                return source.label
        return self.merged.source.label

    def report(self, path: Sequence[str], message: str, suffix: str = "") -> None:
        self.problems.append(f"{self.origin(path)}: {'.'.join(path)}{suffix}: {message}")

    def run(self) -> list[str]:
        data = self.merged.data
        protocol = data.get("protocol")
        if protocol is None:
            self.report(("protocol",), "missing: set astm, hl7 or other here or in a parent")
            return self.problems
        if protocol not in PROTOCOLS:
            return self.problems  # reported by the schema
        if self._protocol_switched():
            return self.problems  # every reference would be reported again: once is enough
        self._check_blocks(protocol)
        if protocol != "other":
            self._check_references(protocol)
        return self.problems

    def _protocol_switched(self) -> bool:
        stated = [(s, s.data.get("protocol")) for s in self.merged.chain if s.data.get("protocol")]
        # A child may become `other` (a not-mine payload); astm and hl7 never mix.
        for (child, mine), (_, theirs) in itertools.pairwise(stated):
            if {mine, theirs} == {"astm", "hl7"}:
                self.problems.append(
                    f'{child.label}: protocol: "{mine}" contradicts the parent\'s "{theirs}"'
                )
                return True
        return False

    def _check_blocks(self, protocol: str) -> None:
        data = self.merged.data
        for key in ("link", "records", "layout"):
            if protocol == "hl7" and data.get(key) is not None:
                self.report((key,), "ASTM only (this profile's protocol is hl7)")
        if protocol == "astm" and data.get("messages") is not None:
            self.report(("messages",), "HL7 only (this profile's protocol is astm)")
        not_mine = data.get("not_mine") is True
        if protocol == "other" and not not_mine:
            self.report(("not_mine",), "protocol other is only for not-mine payloads: set true")
        if not_mine and protocol != "other":
            self.report(("not_mine",), "a not-mine profile must say protocol: other")
        if not_mine and not (
            _get(data, ("identify", "content")) or _get(data, ("identify", "header"))
        ):
            self.report(("identify",), "a not-mine profile needs identify.content or header")
        self._check_messages()
        if not self.merged.source.definition and protocol in ("astm", "hl7"):
            for path in REQUIRED_REFERENCES:
                block = data.get(path[0])
                if block is None or (isinstance(block, dict) and not block.get(path[1])):
                    self.problems.append(
                        f"{self.merged.source.label}: {'.'.join(path)}: missing (inherit "
                        "astm-generic / hl7-generic or set it)"
                    )

    def _check_messages(self) -> None:
        messages = self.merged.data.get("messages")
        if not isinstance(messages, dict):
            return
        seen: dict[str, str] = {}
        for kind, codes in messages.items():
            for index, code in enumerate(codes if isinstance(codes, list) else []):
                if not isinstance(code, str) or not _HL7_CODE.match(code):
                    self.report(
                        ("messages", kind), f"{shown(code)} is not an MSH-9.1 code", f"[{index}]"
                    )
                elif code in seen and seen[code] != kind:
                    self.report(
                        ("messages", kind),
                        f"{code} is already a {seen[code]} message",
                        f"[{index}]",
                    )
                else:
                    seen[code] = kind

    def _check_references(self, protocol: str) -> None:
        layout = self.merged.data.get("layout") if protocol == "astm" else None
        for path in REFERENCE_KEYS:
            value = _get(self.merged.data, path)
            items = value if isinstance(value, list) else [value]
            for index, text in enumerate(items):
                if not isinstance(text, str):
                    continue
                suffix = f"[{index}]" if isinstance(value, list) else ""
                try:
                    spec = parse_reference(text, protocol)
                except ValueError as error:
                    self.report(path, str(error), suffix)
                    continue
                if isinstance(layout, dict):
                    self._check_layout(spec, layout, path, suffix)

    def _check_layout(
        self, spec: RefSpec, layout: Mapping[str, Any], path: Sequence[str], suffix: str
    ) -> None:
        names = layout.get(spec.source)
        if not isinstance(names, list):
            known = ", ".join(sorted(k for k in layout if isinstance(k, str)))
            self.report(
                path,
                f'"{spec.text}": record type {spec.source} is not in the layout ({known})',
                suffix,
            )
            return
        open_ended = bool(names) and str(names[-1]).endswith("...")
        if spec.field > len(names) and not open_ended:
            self.report(
                path,
                f'"{spec.text}": the {spec.source} record has {len(names)} fields in the layout',
                suffix,
            )


# Entry point ----------------------------------------------------------------------------------


def load_profiles(paths: Iterable[Path]) -> list[MergedProfile]:
    """Read, validate and merge every file; raise ``ConfigError`` listing every problem."""
    problems: list[str] = []
    sources = [s for s in (_read(Path(p), problems) for p in paths) if s is not None]
    index = _Index(sources, problems)
    merged: list[MergedProfile] = []
    for source in sources:
        if index.by_key.get(source.key) is not source:
            continue  # a duplicate, reported
        chain = _chain(source, index, problems)
        if chain is None:
            continue
        profile = MergedProfile(source, chain, _merged_data(chain))
        problems.extend(_Checker(profile).run())
        merged.append(profile)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return merged
