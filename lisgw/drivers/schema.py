"""Driver profiles as data: read the YAML files, validate them, resolve their inheritance.

Layer: drivers (configuration), pure apart from reading the files it is given. YAML is parsed
here with ``yaml.safe_load`` and nowhere else; everything after this module works on plain
dicts and on the compiled objects of ``lisgw.drivers.compiled``.

Implements the profile schema of drivers/README.md (issue 4): every key, its type and its
allowed values; field references (``R.4``, ``O.3.2``, ``R.3.4+``, ``OBX-3.1``, ``SPM-2.1.1``)
checked against the protocol and, for ASTM, against the E1394 record layout of the protocol
definition; inheritance as a deep merge of mappings (lists and scalars replace). Every problem
in every file is collected and raised at once as ``ConfigError(problems)``, each naming the
file and the key path: ``drivers/foo.yaml: sample_id.fields[1]: "O.x.2" is not a field
reference (RECORD.FIELD[.COMPONENT])``.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lisgw.errors import ConfigError

__all__ = [
    "REFERENCE_KEYS",
    "MergedProfile",
    "ProfileSource",
    "RefSpec",
    "file_label",
    "key_order",
    "load_profiles",
    "parse_reference",
]

NAME = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
_PARENT = re.compile(r"([a-z0-9][a-z0-9-]*)(?:@([1-9][0-9]*))?\Z")
_ASTM_REF = re.compile(r"([A-Z])\.([1-9][0-9]*)(?:\.([1-9][0-9]*)(\+)?)?\Z")
_HL7_REF = re.compile(
    r"([A-Z][A-Z0-9]{2})-([1-9][0-9]*)(?:\.([1-9][0-9]*)(?:(\+)|\.([1-9][0-9]*))?)?\Z"
)
_HL7_CODE = re.compile(r"[A-Z0-9]{3}\Z")
PROTOCOLS = ("astm", "hl7", "other")
# yaml.safe_load's loader (plain data only, no Python objects), in C when libyaml is there:
# the catalogue is read at every start and by every `lisgw drivers` command.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Field references -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefSpec:
    """One parsed field reference. ``component`` 0 means the whole field."""

    text: str
    protocol: str
    source: str  # ASTM record type or HL7 segment name
    field: int
    component: int = 0
    subcomponent: int = 0
    first_from: bool = False  # `R.3.4+`: the first non-empty component from ``component`` on


def parse_reference(text: str, protocol: str) -> RefSpec:
    """Parse ``R.3.4+`` (ASTM) or ``OBX-3.1`` (HL7); ``ValueError`` says what is wrong."""
    if protocol == "astm":
        match = _ASTM_REF.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a field reference (RECORD.FIELD[.COMPONENT][+], e.g. R.4, "
                "O.3.2, R.3.4+)"
            )
        record, field, component, plus = match.groups()
        return RefSpec(text, protocol, record, int(field), int(component or 0), 0, bool(plus))
    match = _HL7_REF.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a field reference (SEGMENT-FIELD[.COMPONENT[.SUBCOMPONENT]], "
            "e.g. OBX-5, OBX-3.1, SPM-2.1.1, OBX-3.4+)"
        )
    segment, field, component, plus, sub = match.groups()
    return RefSpec(
        text, protocol, segment, int(field), int(component or 0), int(sub or 0), bool(plus)
    )


# Key paths that hold field references (one or a list), used by the checks and the compiler.
REFERENCE_KEYS: tuple[tuple[str, ...], ...] = (
    ("instrument", "name"),
    ("instrument", "software"),
    ("instrument", "serial"),
    ("sample_id", "fields"),
    ("test_code", "field"),
    ("test_code", "name"),
    ("value", "field"),
    ("units",),
    ("reference_range",),
    ("flags", "field"),
    ("status", "field"),
    ("completed_at", "field"),
    ("comment", "field"),
    ("qc", "action_code_field"),
    ("query", "sample_ids"),
    ("query", "tag"),
    ("orders", "sample_id_field"),
    ("orders", "priority_field"),
    ("orders", "test_field"),
)
_REQUIRED_REFERENCES = (("sample_id", "fields"), ("test_code", "field"), ("value", "field"))


# Schema nodes ---------------------------------------------------------------------------------


class _Node:
    """One key's rule. ``null`` is accepted unless ``nullable`` is false: it unsets the key."""

    nullable = True
    describe = "a value"

    def check(self, value: Any, path: str, problems: list[str]) -> None:
        if value is None:
            if not self.nullable:
                problems.append(f"{path}: must not be null")
            return
        self.check_value(value, path, problems)

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        raise NotImplementedError


def _shown(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f'"{value}"'


class _Str(_Node):
    describe = "a string"

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, str):
            problems.append(f"{path}: {_shown(value)} is not a string")


class _Bool(_Node):
    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, bool):
            problems.append(f"{path}: {_shown(value)} is not true or false")


class _Number(_Node):
    def __init__(self, minimum: float, *, integer: bool = False, nullable: bool = True) -> None:
        self.minimum = minimum
        self.integer = integer
        self.nullable = nullable

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        what = "an integer" if self.integer else "a number"
        kinds = int if self.integer else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            problems.append(f"{path}: {_shown(value)} is not {what}")
        elif value < self.minimum:
            problems.append(f"{path}: {value} is below {self.minimum:g}")


class _Enum(_Node):
    def __init__(self, *values: str | int | float) -> None:
        self.values = values

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if isinstance(value, bool) or value not in self.values:
            allowed = " | ".join(str(v) for v in self.values)
            problems.append(f"{path}: {_shown(value)} is not one of {allowed}")


class _Name(_Node):
    def __init__(self, *, nullable: bool = False) -> None:
        self.nullable = nullable

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, str) or not NAME.match(value):
            problems.append(
                f"{path}: {_shown(value)} is not a name (lower-case letters, digits and '-',"
                " starting with a letter or digit)"
            )


class _Parent(_Node):
    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, str) or not _PARENT.match(value):
            problems.append(f"{path}: {_shown(value)} is not a profile name (NAME or NAME@VERSION)")


class _Regex(_Node):
    def __init__(self, *, groups: int = 0) -> None:
        self.groups = groups

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, str):
            problems.append(f"{path}: {_shown(value)} is not a regular expression (a string)")
            return
        try:
            compiled = re.compile(value)
        except re.error as error:
            problems.append(f"{path}: {_shown(value)} is not a valid regular expression: {error}")
            return
        if compiled.groups < self.groups:
            problems.append(f"{path}: {_shown(value)} needs a group: the ID is group 1")


class _ListOf(_Node):
    """A list of items; a single item is accepted where ``single`` (it means a list of one)."""

    def __init__(self, item: _Node, *, single: bool = False, non_empty: bool = False) -> None:
        self.item = item
        self.single = single
        self.non_empty = non_empty

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if self.single and not isinstance(value, list):
            self.item.check(value, path, problems)
            return
        if not isinstance(value, list):
            problems.append(f"{path}: {_shown(value)} is not a list")
            return
        if self.non_empty and not value:
            problems.append(f"{path}: the list is empty")
        for index, item in enumerate(value):
            if item is None:
                problems.append(f"{path}[{index}]: must not be null")
            else:
                self.item.check(item, f"{path}[{index}]", problems)


class _CodeMap(_Node):
    """Code → text. Numeric codes written bare in YAML (`685: Glucose`) are accepted."""

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, dict):
            problems.append(f"{path}: {_shown(value)} is not a mapping of code to text")
            return
        for key, text in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                problems.append(
                    f"{path}: key {key!r} is not a code: quote it (YAML reads {key!r} unquoted)"
                )
            elif not isinstance(text, str):
                problems.append(f"{path}.{key}: {_shown(text)} is not a string")


class _Layout(_Node):
    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, dict):
            problems.append(f"{path}: {_shown(value)} is not a mapping of record type to names")
            return
        for record, names in value.items():
            if not isinstance(record, str) or not re.fullmatch(r"[A-Z]", record):
                problems.append(f"{path}: {record!r} is not a record type (one capital letter)")
            elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                problems.append(f"{path}.{record}: must be a list of field names")


class _Map(_Node):
    def __init__(self, children: Mapping[str, _Node], *, nullable: bool = True) -> None:
        self.children = dict(children)
        self.nullable = nullable

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, dict):
            problems.append(f"{path}: {_shown(value)} is not a mapping")
            return
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            node = self.children.get(key) if isinstance(key, str) else None
            if node is None:
                problems.append(f"{where}: unknown key{_did_you_mean(key, self.children)}")
            else:
                node.check(item, where, problems)


def _did_you_mean(key: Any, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


_REFS = _ListOf(_Str(), single=True)
_REGEXES = _ListOf(_Regex(), single=True)
_STRS = _ListOf(_Str())

SCHEMA = _Map(
    {
        "driver": _Name(),
        "definition": _Name(),
        "version": _Number(1, integer=True, nullable=False),
        "title": _Str(),
        "inherits": _Parent(),
        "protocol": _Enum(*PROTOCOLS),
        "vendor": _Str(),
        "models": _STRS,
        "sources": _STRS,
        "identify": _Map(
            {
                "sender": _REGEXES,
                "header": _REGEXES,
                "content": _REGEXES,
                "priority": _Number(-1000, integer=True),
            }
        ),
        "transport": _Map(
            {
                "serial": _Map(
                    {
                        "baud": _Number(50, integer=True),
                        "data_bits": _Enum(5, 6, 7, 8),
                        "parity": _Enum("none", "even", "odd", "mark", "space"),
                        "stop_bits": _Enum(1, 1.5, 2),
                        "flow_control": _Enum("none", "rtscts", "xonxoff", "dsrdtr"),
                    }
                ),
                "tcp": _Map({"analyzer_role": _Enum("client", "server")}),
                "encoding": _Str(),
            }
        ),
        "link": _Map(
            {
                "lenient": _Bool(),
                "unframed": _Bool(),
                "checksum_optional": _Bool(),
                "lf_separators": _Bool(),
                "strict_frame_numbers": _Bool(),
                "max_frame_size": _Number(16, integer=True),
                "max_record_size": _Number(1, integer=True),
                "max_retries": _Number(1, integer=True),
                "timers": _Map(
                    {
                        name: _Number(0.001)
                        for name in (
                            "reply_timeout",
                            "frame_timeout",
                            "host_contention_backoff",
                            "instrument_contention_backoff",
                            "busy_backoff",
                            "interrupt_backoff",
                        )
                    }
                ),
            }
        ),
        "records": _Map({"lenient": _Bool()}),
        "layout": _Layout(),
        "messages": _Map({kind: _STRS for kind in ("results", "query", "query_cancel", "orders")}),
        "instrument": _Map({"name": _REFS, "software": _REFS, "serial": _REFS}),
        "sample_id": _Map(
            {"fields": _REFS, "strip": _Str(), "pattern": _Regex(groups=1)},
        ),
        "test_code": _Map({"field": _REFS, "name": _REFS}),
        "value": _Map({"field": _REFS, "decimal_comma": _Bool()}),
        "units": _REFS,
        "reference_range": _REFS,
        "flags": _Map({"field": _REFS, "map": _CodeMap()}),
        "status": _Map({"field": _REFS, "map": _CodeMap()}),
        "completed_at": _Map({"field": _REFS}),
        "comment": _Map({"field": _REFS}),
        "qc": _Map(
            {
                "action_code_field": _REFS,
                "action_codes": _STRS,
                "sample_id_patterns": _REGEXES,
                "processing_ids": _STRS,
                "comment_patterns": _REGEXES,
            }
        ),
        "query": _Map(
            {
                "form": _Enum(
                    "astm-q",
                    "roche-tsreq",
                    "erba-multi-tube",
                    "vitros",
                    "hl7-qbp-z03",
                    "hl7-qry",
                    "mindray",
                ),
                "sample_ids": _REFS,
                "tag": _REFS,
                "reply": _Enum(
                    "astm-orders", "roche-tsdwn", "hl7-rsp-k11", "hl7-qbp-z03-rsp", "none"
                ),
                "cancel": _Enum("hl7-qcn-j01", "astm-q-abort"),
            }
        ),
        "orders": _Map(
            {
                "sample_id_field": _REFS,
                "test_id_template": _Str(),
                "priority_field": _REFS,
                "test_field": _REFS,
            }
        ),
        "tests": _CodeMap(),
        "charset": _Map(
            {
                "encoding": _Str(),
                "transliterate": _Enum("ascii", "latin-1", "none"),
                "uppercase": _Bool(),
            }
        ),
        "not_mine": _Bool(),
    },
    nullable=False,
)


def key_order() -> dict[str, list[str]]:
    """The documented key order, top level and per block (for ``lisgw drivers show``)."""
    order: dict[str, list[str]] = {"": list(SCHEMA.children)}
    for key, node in SCHEMA.children.items():
        if isinstance(node, _Map):
            order[key] = list(node.children)
    return order


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
    has_driver, has_definition = "driver" in data, "definition" in data
    if has_driver == has_definition:
        problems.append(
            f"{label}: driver: a profile names itself with exactly one of `driver:` (analyzer "
            "drivers) or `definition:` (protocol definitions)"
        )
        return None
    if "version" not in data:
        problems.append(f"{label}: version: missing (a positive integer)")
        return None
    name, version = data["definition" if has_definition else "driver"], data["version"]
    if not (isinstance(name, str) and NAME.match(name)) or not isinstance(version, int):
        return None  # already reported by the schema
    return ProfileSource(name, version, has_definition, path, label, data)


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
        if not _PARENT.match(current.parent):
            return None  # reported by the schema
        parent = index.find(current.parent)
        if parent is None:
            known = ", ".join(sorted(index.latest)) or "none"
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
            for path in _REQUIRED_REFERENCES:
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
                        ("messages", kind), f"{_shown(code)} is not an MSH-9.1 code", f"[{index}]"
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
