"""Compiled driver profiles: field references turned into accessors, regexes compiled.

Layer: drivers (domain, pure). ``compile_profile`` takes a validated, merged profile from
``lisgw.drivers.schema`` and returns a ``CompiledProfile`` made of plain Python objects: the
engine never looks at YAML or at a dict while it normalizes a message.

Each field reference becomes an accessor of ``lisgw.drivers.accessors`` (``AstmRef``,
``Hl7Ref``; a list of references a ``RefChain``), which is where the reference semantics of
drivers/README.md are implemented; this module gathers them, per protocol, into
``FieldRules``, next to the identify regexes, transport and link settings, query and order
rules, the test-name map and the charset of the profile.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lisgw.astm.link import LinkOptions, LinkTimers
from lisgw.astm.records import Record
from lisgw.drivers.accessors import AstmRef, FieldRef, Hl7Ref, RefChain, composite_value
from lisgw.drivers.references import RefSpec, parse_reference
from lisgw.drivers.schema import MergedProfile
from lisgw.drivers.translit import transliterate
from lisgw.hl7.message import Segment
from lisgw.model import Kind

# The accessors (AstmRef … composite_value) live in lisgw.drivers.accessors; they are
# re-exported here, where the package and the engine import them.
__all__ = [
    "AstmRef",
    "Charset",
    "CompiledProfile",
    "FieldRef",
    "FieldRules",
    "Hl7Ref",
    "Identify",
    "OrderRules",
    "QueryRules",
    "RefChain",
    "SerialSettings",
    "Transport",
    "compile_profile",
    "composite_value",
]

T = TypeVar("T")


# Compiled profile -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identify:
    """Auto-detection rules: regexes on the sender, the header and any record's raw text."""

    sender: tuple[re.Pattern[str], ...]
    header: tuple[re.Pattern[str], ...]
    content: tuple[re.Pattern[str], ...]
    priority: int = 0

    def score(self, sender: str, header: str, contents: Sequence[str]) -> int:
        """Keys matched (every key given must match at least once), 0 when it does not match."""
        score = 0
        for patterns, texts in (
            (self.sender, (sender,)),
            (self.header, (header,)),
            (self.content, contents),
        ):
            if not patterns:
                continue
            if not any(p.search(text) for p in patterns for text in texts):
                return 0
            score += 1
        return score


@dataclass(frozen=True, slots=True)
class SerialSettings:
    baud: int = 9600
    data_bits: int = 8
    parity: str = "none"
    stop_bits: float = 1
    flow_control: str = "none"


@dataclass(frozen=True, slots=True)
class Transport:
    """Connection defaults for this analyzer (issue 6 applies them)."""

    serial: SerialSettings | None = None
    analyzer_role: str = "client"
    encoding: str | None = None


@dataclass(frozen=True, slots=True)
class Charset:
    """What the analyzer accepts; ``outgoing_text`` applies it to text sent to it."""

    encoding: str | None = None
    transliterate: str = "none"
    uppercase: bool = False


@dataclass(frozen=True, slots=True)
class QueryRules:
    form: str | None = None
    reply: str | None = None
    cancel: str | None = None


@dataclass(frozen=True, slots=True)
class OrderRules:
    """How to write orders for the analyzer (host → instrument)."""

    sample_id_fields: tuple[RefSpec, ...] = ()
    test_id_template: str = "{code}"
    priority_fields: tuple[RefSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class FieldRules(Generic[T]):
    """Where each normalized value is read, for one protocol."""

    instrument_name: RefChain[T]
    instrument_software: RefChain[T]
    instrument_serial: RefChain[T]
    sample_id: RefChain[T]
    sample_id_strip: str | None
    sample_id_pattern: re.Pattern[str] | None
    test_code: RefChain[T]
    test_name: RefChain[T]
    value: RefChain[T]
    decimal_comma: bool
    units: RefChain[T]
    reference_range: RefChain[T]
    flags: RefChain[T]
    flag_map: Mapping[str, str]
    status: RefChain[T]
    status_map: Mapping[str, str]
    completed_at: RefChain[T]
    comment: RefChain[T]
    qc_action: RefChain[T]
    qc_action_codes: frozenset[str]
    qc_id_patterns: tuple[re.Pattern[str], ...]
    qc_processing_ids: frozenset[str]
    qc_comment_patterns: tuple[re.Pattern[str], ...]
    query_ids: RefChain[T]
    query_tag: RefChain[T]
    order_tests: RefChain[T]


@dataclass(frozen=True, slots=True, eq=False)
class CompiledProfile:
    """A driver ready for the engine. ``data`` is the merged profile, for display only."""

    name: str
    version: int
    protocol: str
    title: str
    vendor: str
    models: tuple[str, ...]
    sources: tuple[str, ...]
    label: str
    chain: tuple[str, ...]
    data: Mapping[str, Any]
    identify: Identify | None
    transport: Transport
    link: LinkOptions | None
    unframed: bool
    records_lenient: bool
    not_mine: bool
    astm: FieldRules[Record] | None
    hl7: FieldRules[Segment] | None
    hl7_kinds: Mapping[str, Kind]
    query: QueryRules
    orders: OrderRules
    tests: Mapping[str, str]
    charset: Charset

    @property
    def key(self) -> str:
        """``name@version``: what a connection pins and what decoded messages carry."""
        return f"{self.name}@{self.version}"

    @property
    def generic(self) -> bool:
        """True for a fallback profile (no identify block): used when nothing else matches."""
        return self.identify is None

    def outgoing_text(self, text: str) -> str:
        """Text sent to the analyzer (patient names), in a form it accepts (``charset``)."""
        target = self.charset.transliterate
        if target == "none":
            return text.upper() if self.charset.uppercase else text
        return transliterate(
            text, "ascii" if target == "ascii" else "latin-1", self.charset.uppercase
        )


def _at(data: Mapping[str, Any], *path: str) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _patterns(value: Any, flags: int = 0) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(text, flags) for text in _texts(value))


def _code_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


class _Compiler:
    def __init__(self, data: Mapping[str, Any], protocol: str) -> None:
        self.data = data
        self.protocol = protocol

    def specs(self, *path: str) -> tuple[RefSpec, ...]:
        return tuple(parse_reference(t, self.protocol) for t in _texts(_at(self.data, *path)))

    def chain(self, *path: str) -> RefChain[Any]:
        kind: type[FieldRef[Any]] = AstmRef if self.protocol == "astm" else Hl7Ref
        return RefChain([kind(spec) for spec in self.specs(*path)])

    def rules(self) -> FieldRules[Any]:
        data, chain = self.data, self.chain
        pattern = _at(data, "sample_id", "pattern")
        return FieldRules(
            instrument_name=chain("instrument", "name"),
            instrument_software=chain("instrument", "software"),
            instrument_serial=chain("instrument", "serial"),
            sample_id=chain("sample_id", "fields"),
            sample_id_strip=_at(data, "sample_id", "strip"),
            sample_id_pattern=re.compile(pattern) if pattern else None,
            test_code=chain("test_code", "field"),
            test_name=chain("test_code", "name"),
            value=chain("value", "field"),
            decimal_comma=bool(_at(data, "value", "decimal_comma")),
            units=chain("units"),
            reference_range=chain("reference_range"),
            flags=chain("flags", "field"),
            flag_map=_code_map(_at(data, "flags", "map")),
            status=chain("status", "field"),
            status_map=_code_map(_at(data, "status", "map")),
            completed_at=chain("completed_at", "field"),
            comment=chain("comment", "field"),
            qc_action=chain("qc", "action_code_field"),
            qc_action_codes=frozenset(c.upper() for c in _texts(_at(data, "qc", "action_codes"))),
            qc_id_patterns=_patterns(_at(data, "qc", "sample_id_patterns"), re.IGNORECASE),
            qc_processing_ids=frozenset(
                c.upper() for c in _texts(_at(data, "qc", "processing_ids"))
            ),
            qc_comment_patterns=_patterns(_at(data, "qc", "comment_patterns"), re.IGNORECASE),
            query_ids=chain("query", "sample_ids"),
            query_tag=chain("query", "tag"),
            order_tests=chain("orders", "test_field"),
        )


def _identify(data: Mapping[str, Any]) -> Identify | None:
    block = data.get("identify")
    if not isinstance(block, Mapping):
        return None
    identify = Identify(
        sender=_patterns(block.get("sender")),
        header=_patterns(block.get("header")),
        content=_patterns(block.get("content")),
        priority=int(block.get("priority") or 0),
    )
    return identify if identify.sender or identify.header or identify.content else None


def _transport(data: Mapping[str, Any]) -> Transport:
    serial = _at(data, "transport", "serial")
    settings = None
    if isinstance(serial, Mapping):
        given = {k: v for k, v in serial.items() if v is not None}
        settings = SerialSettings(**given)
    return Transport(
        serial=settings,
        analyzer_role=_at(data, "transport", "tcp", "analyzer_role") or "client",
        encoding=_at(data, "transport", "encoding"),
    )


def _block(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _link(data: Mapping[str, Any]) -> LinkOptions:
    block = _block(data, "link")
    timers = {k: float(v) for k, v in _block(block, "timers").items() if v is not None}
    options = {
        key: block[key]
        for key in (
            "lenient",
            "checksum_optional",
            "lf_separators",
            "strict_frame_numbers",
            "max_frame_size",
            "max_record_size",
            "max_retries",
        )
        if block.get(key) is not None
    }
    return LinkOptions(timers=LinkTimers(**timers), **options)


_KINDS = {
    "results": Kind.RESULTS,
    "query": Kind.QUERY,
    "query_cancel": Kind.QUERY_CANCEL,
    "orders": Kind.ORDERS,
}


def _hl7_kinds(data: Mapping[str, Any]) -> dict[str, Kind]:
    kinds: dict[str, Kind] = {}
    for name, kind in _KINDS.items():
        for code in _texts(_at(data, "messages", name)):
            kinds[code] = kind
    return kinds


def compile_profile(merged: MergedProfile) -> CompiledProfile:
    """Compile a validated driver (``schema.load_profiles`` has checked every value)."""
    data = merged.data
    protocol = str(data["protocol"])
    compiler = _Compiler(data, protocol)
    rules = compiler.rules() if protocol in ("astm", "hl7") else None
    charset = _block(data, "charset")
    return CompiledProfile(
        name=merged.source.name,
        version=merged.source.version,
        protocol=protocol,
        title=str(data.get("title") or ""),
        vendor=str(data.get("vendor") or ""),
        models=tuple(_texts(data.get("models"))),
        sources=tuple(_texts(data.get("sources"))),
        label=merged.source.label,
        chain=tuple(source.key for source in merged.chain),
        data=data,
        identify=_identify(data),
        transport=_transport(data),
        link=_link(data) if protocol == "astm" else None,
        unframed=bool(_at(data, "link", "unframed")),
        records_lenient=_at(data, "records", "lenient") is not False,
        not_mine=data.get("not_mine") is True,
        astm=rules if protocol == "astm" else None,
        hl7=rules if protocol == "hl7" else None,
        hl7_kinds=_hl7_kinds(data) if protocol == "hl7" else {},
        query=QueryRules(
            form=_at(data, "query", "form"),
            reply=_at(data, "query", "reply"),
            cancel=_at(data, "query", "cancel"),
        ),
        orders=OrderRules(
            sample_id_fields=compiler.specs("orders", "sample_id_field")
            if protocol != "other"
            else (),
            test_id_template=str(_at(data, "orders", "test_id_template") or "{code}"),
            priority_fields=compiler.specs("orders", "priority_field")
            if protocol != "other"
            else (),
        ),
        tests=_code_map(data.get("tests")),
        charset=Charset(
            encoding=charset.get("encoding"),
            transliterate=str(charset.get("transliterate") or "none"),
            uppercase=bool(charset.get("uppercase")),
        ),
    )
