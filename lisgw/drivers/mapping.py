"""The test-code mapping table: analyzer test codes ↔ HIS test codes (and LOINC).

Layer: domain (pure; reads one YAML file when asked, holds no other state). The routing core
uses ``lookup`` to name results for the HIS, ``reverse`` to write the analyzer's code into
downloaded orders, and ``unmapped`` to tell technicians which codes still need a row.

The file maps driver names to analyzer codes to rows (see config/test-codes.example.yaml)::

    sysmex-xn:
      WBC: {his: "HEM-WBC", loinc: "6690-2", name: "Leukocytes"}
      RBC: HEM-RBC                  # a bare string is the HIS code alone

Every scalar is read as the text written: ``685``, ``0675`` and ``NO`` are the codes "685",
"0675" and "NO", never the integers 685 and 445 (octal) or the boolean false YAML 1.1 would
make of them. Every problem in the file is reported at once (``ConfigError``), each naming the file
and the key path: duplicate keys, unknown keys, a missing ``his``, a LOINC code that is not
``NNNNNNN-N`` or whose check digit (LOINC's mod 10 algorithm) is wrong, and two analyzer
codes of one driver sharing a HIS code, which would make ``reverse`` ambiguous.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from lisgw.errors import ConfigError
from lisgw.yamltext import compose_file, node_data

_DRIVER_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]*")
_LOINC: Final = re.compile(r"([0-9]{1,7})-([0-9])", re.ASCII)
_PLAIN_KEY: Final = re.compile(r"[^\s.\"'\[\]]+")
_ROW_KEYS: Final = ("his", "loinc", "name")
_ROW_KEYS_TEXT: Final = ", ".join(_ROW_KEYS)


@dataclass(frozen=True, slots=True)
class MappedCode:
    """One row: ``analyzer_code`` of ``driver`` is ``his_code`` at the HIS."""

    driver: str
    analyzer_code: str
    his_code: str
    loinc: str = ""
    name: str = ""


class TestCodeMap:
    """Analyzer codes ↔ HIS codes, per driver. Build it with ``load`` or ``from_dict``."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, codes: Iterable[MappedCode], source: str = "<codes>") -> None:
        self.source = source
        self._codes = tuple(codes)
        self._by_code, self._by_his, problems = _index(self._codes, source)
        if problems:
            raise ConfigError(problems)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TestCodeMap:
        """Read and check a mapping file; ConfigError listing every problem in it."""
        source = os.fspath(path)
        root = compose_file(path)
        problems: list[str] = []
        data = node_data(root, source, problems, key_label=_key) if root is not None else None
        return cls._build(data, source, problems)

    @classmethod
    def from_dict(cls, data: object, source: str = "<dict>") -> TestCodeMap:
        """Check and build a map from already-parsed data (``{driver: {code: row}}``)."""
        return cls._build(data, source, [])

    @classmethod
    def _build(cls, data: object, source: str, problems: list[str]) -> TestCodeMap:
        codes = _rows(data, source, problems)
        problems.extend(_index(codes, source)[2])
        if problems:
            raise ConfigError(problems)
        return cls(codes, source)

    def lookup(self, driver: str, analyzer_code: str) -> MappedCode | None:
        """The row for a code as the analyzer sent it (exact, case-sensitive match)."""
        return self._by_code.get((driver, analyzer_code))

    def reverse(self, driver: str, his_code: str) -> MappedCode | None:
        """The row whose HIS code is ``his_code``: the analyzer code to order it with."""
        return self._by_his.get((driver, his_code))

    def unmapped(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str, int]]:
        """``(driver, code, occurrences)`` for each pair with no row, sorted by driver, code."""
        counts = Counter(pair for pair in pairs if pair not in self._by_code)
        return [(driver, code, n) for (driver, code), n in sorted(counts.items())]

    @property
    def drivers(self) -> frozenset[str]:
        """The driver names the table mentions (to check against the catalogue)."""
        return frozenset(code.driver for code in self._codes)

    def __iter__(self) -> Iterator[MappedCode]:
        return iter(self._codes)

    def __len__(self) -> int:
        return len(self._codes)

    def __repr__(self) -> str:
        return f"TestCodeMap({len(self._codes)} codes from {self.source})"


def _index(
    codes: Iterable[MappedCode], source: str
) -> tuple[dict[tuple[str, str], MappedCode], dict[tuple[str, str], MappedCode], list[str]]:
    """Both lookup tables, and the rows that would make either ambiguous."""
    by_code: dict[tuple[str, str], MappedCode] = {}
    by_his: dict[tuple[str, str], MappedCode] = {}
    problems: list[str] = []
    for code in codes:
        path = _path(code.driver, code.analyzer_code)
        if (code.driver, code.analyzer_code) in by_code:
            problems.append(f"{source}: {path}: duplicate analyzer code")
        elif (code.driver, code.his_code) in by_his:
            first = by_his[code.driver, code.his_code]
            problems.append(
                f"{source}: {path}.his: {code.his_code!r} is already the HIS code of "
                f"{_path(first.driver, first.analyzer_code)}; order download could not "
                "choose between them"
            )
        else:
            by_code[code.driver, code.analyzer_code] = code
            by_his[code.driver, code.his_code] = code
    return by_code, by_his, problems


def is_valid_loinc(code: str) -> bool:
    """Whether ``code`` is ``NNNNNNN-N`` with the right LOINC check digit ("6690-2": yes)."""
    match = _LOINC.fullmatch(code)
    return match is not None and loinc_check_digit(match[1]) == int(match[2])


def loinc_check_digit(number: str) -> int:
    """LOINC's mod 10 check digit of the part before the hyphen (the Luhn algorithm)."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit // 10 + digit % 10
    return (10 - total % 10) % 10


def _rows(data: object, source: str, problems: list[str]) -> list[MappedCode]:
    if data is None:
        return []  # an empty file maps nothing
    if not isinstance(data, Mapping):
        problems.append(f"{source}: expected a mapping of driver names to test codes")
        return []
    codes: list[MappedCode] = []
    for driver, table in data.items():
        if not isinstance(driver, str) or not _DRIVER_NAME.fullmatch(driver):
            problems.append(f"{source}: {driver!r}: not a driver name ([a-z0-9][a-z0-9-]*)")
            continue
        if table is None:
            continue
        if not isinstance(table, Mapping):
            problems.append(f"{source}: {driver}: expected a mapping of analyzer test codes")
            continue
        for code, row in table.items():
            mapped = _row(driver, code, row, f"{source}: {_path(driver, str(code))}", problems)
            if mapped is not None:
                codes.append(mapped)
    return codes


def _row(
    driver: str, code: object, row: object, where: str, problems: list[str]
) -> MappedCode | None:
    if not isinstance(code, str):
        problems.append(f"{where}: an analyzer code must be text (quote it in YAML)")
        return None
    if not code or code != code.strip():
        problems.append(f"{where}: an analyzer code is not empty and has no surrounding spaces")
        return None
    if isinstance(row, str):
        row = {"his": row}
    if not isinstance(row, Mapping):
        problems.append(f"{where}: expected a HIS code or a mapping with keys {_ROW_KEYS_TEXT}")
        return None
    count = len(problems)
    for key in row:
        if key not in _ROW_KEYS:
            problems.append(f"{where}: unknown key {key!r} (expected {_ROW_KEYS_TEXT})")
    fields = {key: _text(row.get(key), f"{where}.{key}", problems) for key in _ROW_KEYS}
    if not fields["his"]:
        problems.append(f"{where}.his: missing: every analyzer code needs its HIS code")
    _check_loinc(fields["loinc"], f"{where}.loinc", problems)
    if len(problems) > count:
        return None
    return MappedCode(driver, code, fields["his"], fields["loinc"], fields["name"])


def _text(value: object, where: str, problems: list[str]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"{where}: {value!r} must be text (quote it in YAML)")
        return ""
    if value != value.strip():
        problems.append(f"{where}: {value!r} has surrounding spaces")
    return value.strip()


def _check_loinc(loinc: str, where: str, problems: list[str]) -> None:
    if not loinc:
        return
    match = _LOINC.fullmatch(loinc)
    if match is None:
        problems.append(f"{where}: {loinc!r} is not a LOINC code (1 to 7 digits, '-', 1 digit)")
    elif loinc_check_digit(match[1]) != int(match[2]):
        problems.append(
            f"{where}: {loinc!r} fails the LOINC check digit (for {match[1]} it is "
            f"{loinc_check_digit(match[1])}): a digit is mistyped"
        )


def _path(driver: str, code: str) -> str:
    return f"{driver}.{_key(code)}"


def _key(key: str) -> str:
    """A key as it appears in a key path, quoted when dots or spaces would make it unclear."""
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
