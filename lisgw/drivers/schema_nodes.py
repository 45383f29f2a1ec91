"""The driver profile schema as data: one rule per key, and the key tables built on it.

Layer: drivers (configuration), pure: no I/O, no YAML. ``lisgw.drivers.schema`` runs
``SCHEMA.check`` on every file it reads and uses the key tables for the checks that need the
merged profile; ``lisgw drivers show`` orders keys by ``key_order``.

Implements the key list of drivers/README.md (issue 4): every key, its type and its allowed
values, nested as the blocks are (``link.timers.reply_timeout``); ``null`` unsets an inherited
key unless the rule says otherwise. Unknown keys are reported with the closest known one.
Each problem is one string naming the key path: ``sample_id.pattern: "(" is not a valid
regular expression: ...``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "NAME",
    "PARENT",
    "PROTOCOLS",
    "REFERENCE_KEYS",
    "REQUIRED_REFERENCES",
    "SCHEMA",
    "key_order",
    "shown",
]

NAME = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
PARENT = re.compile(r"([a-z0-9][a-z0-9-]*)(?:@([1-9][0-9]*))?\Z")
PROTOCOLS = ("astm", "hl7", "other")


# Key tables -----------------------------------------------------------------------------------

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
REQUIRED_REFERENCES = (("sample_id", "fields"), ("test_code", "field"), ("value", "field"))


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


def shown(value: Any) -> str:
    """A value as quoted in a problem: strings in double quotes, anything else as its repr."""
    return repr(value) if not isinstance(value, str) else f'"{value}"'


class _Str(_Node):
    describe = "a string"

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, str):
            problems.append(f"{path}: {shown(value)} is not a string")


class _Bool(_Node):
    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, bool):
            problems.append(f"{path}: {shown(value)} is not true or false")


class _Number(_Node):
    def __init__(self, minimum: float, *, integer: bool = False, nullable: bool = True) -> None:
        self.minimum = minimum
        self.integer = integer
        self.nullable = nullable

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        what = "an integer" if self.integer else "a number"
        kinds = int if self.integer else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            problems.append(f"{path}: {shown(value)} is not {what}")
        elif value < self.minimum:
            problems.append(f"{path}: {value} is below {self.minimum:g}")


class _Enum(_Node):
    def __init__(self, *values: str | int | float) -> None:
        self.values = values

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if isinstance(value, bool) or value not in self.values:
            allowed = " | ".join(str(v) for v in self.values)
            problems.append(f"{path}: {shown(value)} is not one of {allowed}")


class _Name(_Node):
    def __init__(self, *, nullable: bool = False) -> None:
        self.nullable = nullable

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, str) or not NAME.match(value):
            problems.append(
                f"{path}: {shown(value)} is not a name (lower-case letters, digits and '-',"
                " starting with a letter or digit)"
            )


class _Parent(_Node):
    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, str) or not PARENT.match(value):
            problems.append(f"{path}: {shown(value)} is not a profile name (NAME or NAME@VERSION)")


class _Regex(_Node):
    def __init__(self, *, groups: int = 0) -> None:
        self.groups = groups

    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, str):
            problems.append(f"{path}: {shown(value)} is not a regular expression (a string)")
            return
        try:
            compiled = re.compile(value)
        except re.error as error:
            problems.append(f"{path}: {shown(value)} is not a valid regular expression: {error}")
            return
        if compiled.groups < self.groups:
            problems.append(f"{path}: {shown(value)} needs a group: the ID is group 1")


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
            problems.append(f"{path}: {shown(value)} is not a list")
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
            problems.append(f"{path}: {shown(value)} is not a mapping of code to text")
            return
        for key, text in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                problems.append(
                    f"{path}: key {key!r} is not a code: quote it (YAML reads {key!r} unquoted)"
                )
            elif not isinstance(text, str):
                problems.append(f"{path}.{key}: {shown(text)} is not a string")


class _Layout(_Node):
    def check_value(self, value: Any, path: str, problems: list[str]) -> None:
        if not isinstance(value, dict):
            problems.append(f"{path}: {shown(value)} is not a mapping of record type to names")
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
            problems.append(f"{path}: {shown(value)} is not a mapping")
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
                    "astm-orders",
                    "roche-tsdwn",
                    "hl7-rsp-k11",
                    "hl7-qbp-z03-rsp",
                    "hl7-dsr-q03",
                    "none",
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
