"""HIS profiles: how one hospital's HIS fills HL7 v2, read from YAML and checked all at once.

Layer: configuration (pure: reads one YAML file when asked; no clock, no logging). The HIS
bridge reads inbound orders (lisgw.his.orders) and writes results (lisgw.his.results) through
a ``HisProfile``. Shipped profiles: config/his/hl7-v251.yaml and config/his/hl7-v231.yaml.

Hospitals run HIS products that put the same things in different places (issue 5): the
specimen barcode in SPM-2 (v2.5+), OBR-3, OBR-2 or ORC-2; the patient identifier in the
first PID-3 repetition or in the one whose type (PID-3.5) is MR. A profile names each place
with a field reference ``SEGMENT-FIELD[.COMPONENT[.SUBCOMPONENT]]`` (lisgw.drivers.references)
or a list of them, tried in order until one is not empty. A whole field (``PID-5``) means its
first component, except for ``patient_name``, whose XPN components are all read.

Layout (every key but ``version`` is optional; the defaults are plain HL7)::

    name: hl7-v251
    version: "2.5.1"               # 2.5.1 | 2.5 | 2.3.1: inbound is accepted in any 2.x
    encoding: utf-8                # bytes both ways (a Python codec, ASCII-compatible)
    character_set: UNICODE UTF-8   # MSH-18 of our messages, table 0211 ('' = none)
    unencodable: transliterate     # text the encoding cannot carry: transliterate | error
    sending: {application: LISGW, facility: LAB}       # MSH-3/4 of results
    receiving: {application: HIS, facility: HOSPITAL}  # MSH-5/6 of results
    results:
      per: specimen                # one ORU^R01 per specimen, or per order
      coding_system: L             # OBX-3.3 for HIS codes
      analyzer_coding_system: 99LIS  # OBX-3.3 for unmapped analyzer codes (HL7 99zzz: local)
    orders:
      sample_id: [SPM-2.1, OBR-3.1, ORC-2.1]
      placer: [ORC-2.1, OBR-2.1]
      filler: [ORC-3.1, OBR-3.1]
      patient_id: PID-3.1
      patient_id_type: ""          # pick the PID-3 repetition with this PID-3.5 ('' = first)
      patient_name: PID-5
      test_code: OBR-4.1
      test_name: OBR-4.2
      priority: [TQ1-9.1, ORC-7.6, OBR-27.6]
      ordered_at: [ORC-9.1, OBR-6.1]

Every problem of a file is reported in one ``ConfigError``, each naming the file, the line
and the key path: unknown keys (with the closest known one), duplicate keys, values of the
wrong type, versions, encodings and character sets that do not exist or disagree, modes,
field references that do not parse or name a segment the version does not have (SPM and TQ1
are v2.5+).
"""

from __future__ import annotations

import codecs
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from lisgw.drivers.references import RefSpec, parse_reference
from lisgw.errors import ConfigError
from lisgw.hl7.message import charset_for_msh18
from lisgw.yamltext import compose_file, node_data

__all__ = [
    "HIS_VERSIONS",
    "RESULT_MODES",
    "HisProfile",
    "OrderFields",
    "load_his_profile",
]

HIS_VERSIONS: Final = ("2.5.1", "2.5", "2.3.1")  # lisgw.hl7.build ORU versions, minus none
RESULT_MODES: Final = ("specimen", "order")
UNENCODABLE: Final = ("transliterate", "error")
_ORDER_SEGMENTS: Final = frozenset({"PID", "PV1", "ORC", "TQ1", "OBR", "SPM"})
_V25_SEGMENTS: Final = frozenset({"TQ1", "SPM"})
_DEFAULT_CHARSETS: Final = {"utf-8": "UNICODE UTF-8", "iso8859-1": "8859/1", "ascii": ""}
# MLLP framing bytes and the HL7 delimiters must be single ASCII bytes in the encoding.
_ASCII_PROBE: Final = "MSH|^~\\&\r\x0b\x1cAZaz09"


@dataclass(frozen=True, slots=True)
class OrderFields:
    """Where each value of an inbound order lives: references tried in order."""

    sample_id: tuple[RefSpec, ...]
    placer: tuple[RefSpec, ...]
    filler: tuple[RefSpec, ...]
    patient_id: tuple[RefSpec, ...]
    patient_name: tuple[RefSpec, ...]
    test_code: tuple[RefSpec, ...]
    test_name: tuple[RefSpec, ...]
    priority: tuple[RefSpec, ...]
    ordered_at: tuple[RefSpec, ...]
    patient_id_type: str = ""


def _refs(*texts: str) -> tuple[RefSpec, ...]:
    return tuple(parse_reference(text, "hl7") for text in texts)


_DEFAULT_REFS: Final[dict[str, tuple[str, ...]]] = {
    "sample_id": ("SPM-2.1", "OBR-3.1", "ORC-2.1"),
    "placer": ("ORC-2.1", "OBR-2.1"),
    "filler": ("ORC-3.1", "OBR-3.1"),
    "patient_id": ("PID-3.1",),
    "patient_name": ("PID-5",),
    "test_code": ("OBR-4.1",),
    "test_name": ("OBR-4.2",),
    "priority": ("TQ1-9.1", "ORC-7.6", "OBR-27.6"),
    "ordered_at": ("ORC-9.1", "OBR-6.1"),
}
# The sample ID falls back to the placer order number: HISs that label tubes with their order
# number send no other. v2.3.1 has no SPM or TQ1: the barcode is in OBR-3 or OBR-2, the
# priority in ORC-7/OBR-27.
_DEFAULT_REFS_V231: Final[dict[str, tuple[str, ...]]] = {
    **_DEFAULT_REFS,
    "sample_id": ("OBR-3.1", "OBR-2.1", "ORC-2.1"),
    "priority": ("ORC-7.6", "OBR-27.6"),
}


@dataclass(frozen=True, slots=True)
class HisProfile:
    """One HIS's HL7 conventions (module docstring). Build with ``load`` or ``from_dict``."""

    version: str
    orders: OrderFields
    name: str = ""
    encoding: str = "utf-8"
    character_set: str = "UNICODE UTF-8"
    unencodable: str = "transliterate"
    results_per: str = "specimen"
    coding_system: str = "L"
    analyzer_coding_system: str = "99LIS"
    sending_application: str = "LISGW"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    source: str = field(default="<profile>", compare=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HisProfile:
        """Read and check a profile file; ConfigError listing every problem in it."""
        source = os.fspath(path)
        root = compose_file(path)
        problems: list[str] = []
        lines: dict[str, int] = {}
        data = node_data(root, source, problems, lines=lines) if root is not None else None
        return _Checker(source, problems, lines).profile(data)

    @classmethod
    def from_dict(cls, data: object, source: str = "<dict>") -> HisProfile:
        """Check and build a profile from already-parsed data."""
        return _Checker(source, [], {}).profile(data)

    @classmethod
    def plain(cls, version: str = "2.5.1") -> HisProfile:
        """The plain HL7 profile of a version: every default (module docstring)."""
        return cls.from_dict({"version": version}, f"<plain HL7 {version}>")

    @property
    def modern(self) -> bool:
        """v2.5 or later: SPM, TQ1 and OBX-18 exist."""
        return self.version != "2.3.1"


def load_his_profile(path: str | os.PathLike[str]) -> HisProfile:
    """``HisProfile.load``, as a function."""
    return HisProfile.load(path)


_TOP_KEYS: Final = (
    "name",
    "version",
    "encoding",
    "character_set",
    "unencodable",
    "sending",
    "receiving",
    "results",
    "orders",
)
_PARTY_KEYS: Final = ("application", "facility")
_RESULT_KEYS: Final = ("per", "coding_system", "analyzer_coding_system")
_ORDER_KEYS: Final = (*_DEFAULT_REFS, "patient_id_type")


class _Checker:
    """Collects every problem of one profile, each with its file, line and key path."""

    def __init__(self, source: str, problems: list[str], lines: Mapping[str, int]) -> None:
        self.source = source
        self.problems = problems  # found while reading the YAML (duplicate keys)
        self.found: list[tuple[int, str]] = []
        self.lines = lines

    def problem(self, path: str, text: str) -> None:
        line = self.lines.get(path)
        where = f"line {line}: " if line is not None else ""
        self.found.append((line or 0, f"{self.source}: {where}{path or 'top level'}: {text}"))

    def profile(self, data: object) -> HisProfile:
        if data is not None and not isinstance(data, Mapping):
            self.problem("", f"expected a mapping with keys {', '.join(_TOP_KEYS)}")
            raise ConfigError(self.problems + [text for _, text in self.found])
        top = self.mapping(data, "", _TOP_KEYS)
        version = self.version(top)
        encoding = self.encoding(top)
        sending = self.mapping(top.get("sending"), "sending", _PARTY_KEYS)
        receiving = self.mapping(top.get("receiving"), "receiving", _PARTY_KEYS)
        results = self.mapping(top.get("results"), "results", _RESULT_KEYS)
        orders = self.orders(self.mapping(top.get("orders"), "orders", _ORDER_KEYS), version)
        profile = HisProfile(
            version=version,
            orders=orders,
            name=self.text(top, "name", ""),
            encoding=encoding or "utf-8",
            character_set=self.character_set(top, encoding),
            unencodable=self.choice(top, "unencodable", UNENCODABLE),
            results_per=self.choice(results, "results.per", RESULT_MODES),
            coding_system=self.text(results, "results.coding_system", "L"),
            analyzer_coding_system=self.text(results, "results.analyzer_coding_system", "99LIS"),
            sending_application=self.text(sending, "sending.application", "LISGW"),
            sending_facility=self.text(sending, "sending.facility", ""),
            receiving_application=self.text(receiving, "receiving.application", ""),
            receiving_facility=self.text(receiving, "receiving.facility", ""),
            source=self.source,
        )
        if self.problems or self.found:
            # In file order: the reader fixes a file from top to bottom.
            found = [text for _, text in sorted(self.found, key=lambda item: item[0])]
            raise ConfigError(self.problems + found)
        return profile

    def mapping(self, data: object, path: str, keys: Sequence[str]) -> Mapping[str, object]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.problem(path, f"expected a mapping with keys {', '.join(keys)}")
            return {}
        for key in data:
            if key not in keys:
                close = difflib.get_close_matches(str(key), keys, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                child = f"{path}.{key}" if path else str(key)
                self.problem(child, f"unknown key{hint}; expected one of {', '.join(keys)}")
        return {key: value for key, value in data.items() if key in keys}

    def text(self, data: Mapping[str, object], path: str, default: str) -> str:
        key = path.rpartition(".")[2]
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problem(path, f"expected text, got {type(value).__name__}")
            return default
        return value.strip()

    def choice(self, data: Mapping[str, object], path: str, choices: Sequence[str]) -> str:
        value = self.text(data, path, choices[0])
        if value not in choices:
            self.problem(path, f"{value!r} is not one of {', '.join(choices)}")
            return choices[0]
        return value

    def version(self, top: Mapping[str, object]) -> str:
        if top.get("version") is None:
            self.problem("version", f"missing: the HL7 version ({', '.join(HIS_VERSIONS)})")
            return HIS_VERSIONS[0]
        return self.choice(top, "version", HIS_VERSIONS)

    def encoding(self, top: Mapping[str, object]) -> str | None:
        """The codec's name, or None when it is unknown (then nothing is checked against it)."""
        name = self.text(top, "encoding", "utf-8")
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            self.problem("encoding", f"{name!r} is not a known character encoding")
            return None
        try:
            ascii_safe = _ASCII_PROBE.encode(name) == _ASCII_PROBE.encode("ascii")
        except UnicodeError:
            ascii_safe = False
        if not ascii_safe:
            self.problem("encoding", f"{name!r} does not keep ASCII and MLLP bytes as they are")
        return codec

    def character_set(self, top: Mapping[str, object], codec: str | None) -> str:
        if top.get("character_set") is None:
            return _DEFAULT_CHARSETS.get(codec or "", "")
        value = self.text(top, "character_set", "")
        if not value:
            return ""
        named = charset_for_msh18(value)
        if named is None:
            self.problem("character_set", f"{value!r} is not an HL7 table 0211 value lisgw knows")
        elif codec is not None and codecs.lookup(named).name != codec:
            self.problem("character_set", f"{value!r} names {named}, but encoding is {codec}")
        return value

    def orders(self, data: Mapping[str, object], version: str) -> OrderFields:
        defaults = _DEFAULT_REFS_V231 if version == "2.3.1" else _DEFAULT_REFS
        refs = {
            key: self.refs(data.get(key), f"orders.{key}", version, texts)
            for key, texts in defaults.items()
        }
        for ref in refs["patient_name"]:
            if ref.component:
                self.problem("orders.patient_name", f"{ref.text!r}: name the whole XPN field")
        id_type = self.text(data, "orders.patient_id_type", "")
        return OrderFields(**refs, patient_id_type=id_type)

    def refs(
        self, value: object, path: str, version: str, default: tuple[str, ...]
    ) -> tuple[RefSpec, ...]:
        if value is None:
            return _refs(*default)
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts:
            self.problem(path, "expected a field reference or a non-empty list of them")
            return _refs(*default)
        found: list[RefSpec] = []
        for index, text in enumerate(texts):
            where = path if isinstance(value, str) else f"{path}[{index}]"
            ref = self.ref(text, where, version)
            if ref is not None:
                found.append(ref)
        return tuple(found)

    def ref(self, text: object, path: str, version: str) -> RefSpec | None:
        if not isinstance(text, str):
            self.problem(path, "a field reference is text, e.g. OBR-3.1")
            return None
        try:
            ref = parse_reference(text.strip(), "hl7")
        except ValueError as error:
            self.problem(path, str(error))
            return None
        if ref.source not in _ORDER_SEGMENTS:
            allowed = ", ".join(sorted(_ORDER_SEGMENTS))
            self.problem(path, f"{text!r}: orders are read from {allowed}, not {ref.source}")
            return None
        if version == "2.3.1" and ref.source in _V25_SEGMENTS:
            self.problem(path, f"{text!r}: {ref.source} does not exist in HL7 2.3.1")
            return None
        return ref
