"""The driver catalogue: every profile loaded and compiled once, looked up and auto-detected.

Layer: drivers (configuration in, compiled profiles out). ``Catalogue.load`` reads the
protocol definitions (protocols/*.yaml) and the drivers (drivers/*.yaml) of the repository,
plus any extra directories a site adds, through ``lisgw.drivers.schema``; every problem in
every file is raised at once as one ``ConfigError``. After loading, nothing reads YAML again.

Detection (drivers/README.md, "Detection"): a connection that pins no driver is given the one
that best matches its first message. A driver's ``identify`` block gives regexes on the sender
(ASTM H.5.1, HL7 MSH-3.1, trimmed), on the raw header (H record, MSH segment) and on the raw
text of any record or segment. A driver matches when each key it gives has a matching regex;
its score is the number of keys given; the highest score wins, then the highest ``priority``,
then the first name in alphabetical order. Only the latest version of each driver takes part.
When nothing matches, the protocol's generic driver (``astm-generic``, ``hl7-generic``) is used.
Bytes that are neither ASTM nor HL7 are offered to the ``not_mine`` drivers (``identify.header``
on their first line, ``identify.content`` on the whole payload).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from lisgw.astm.message import AstmMessage
from lisgw.drivers.compiled import CompiledProfile, compile_profile
from lisgw.drivers.schema import MergedProfile, load_profiles
from lisgw.errors import ConfigError
from lisgw.hl7.message import Hl7Message

__all__ = ["BUILTIN_DIRS", "Catalogue", "default_catalogue", "yaml_files"]


def _builtin_dirs() -> tuple[Path, ...]:
    """Where the shipped catalogue is: beside the package in a checkout (editable installs,
    tests), in ``<prefix>/share/lisgw`` for an installed wheel (pyproject's data-files).
    Protocol definitions come first: drivers inherit them."""
    checkout = Path(__file__).resolve().parents[2]
    installed = Path(sys.prefix) / "share" / "lisgw"
    for root in (checkout, installed):
        if (root / "protocols").is_dir() and (root / "drivers").is_dir():
            return (root / "protocols", root / "drivers")
    return (checkout / "protocols", checkout / "drivers")  # reported missing when loaded


BUILTIN_DIRS: tuple[Path, ...] = _builtin_dirs()
GENERIC = {"astm": "astm-generic", "hl7": "hl7-generic"}


def yaml_files(directories: Iterable[Path]) -> list[Path]:
    """The *.yaml files of each directory, in name order; ConfigError for a missing one."""
    files: list[Path] = []
    problems: list[str] = []
    for directory in directories:
        if not directory.is_dir():
            problems.append(f"{directory}: not a directory of driver profiles")
            continue
        files.extend(sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")))
    if problems:
        raise ConfigError(problems)
    return files


class Catalogue:
    """Compiled drivers by ``name@version``, protocol definitions kept for display."""

    def __init__(self, merged: Sequence[MergedProfile]) -> None:
        self._merged = {profile.key: profile for profile in merged}
        drivers = [compile_profile(p) for p in merged if not p.source.definition]
        drivers.sort(key=lambda d: (d.name, d.version))
        self._drivers = {driver.key: driver for driver in drivers}
        self._latest: dict[str, CompiledProfile] = {}
        for driver in drivers:  # sorted by version: the last one wins
            self._latest[driver.name] = driver
        self._candidates = {
            protocol: sorted(
                (
                    d
                    for d in self._latest.values()
                    if d.protocol == protocol and d.identify is not None
                ),
                key=lambda d: d.name,
            )
            for protocol in ("astm", "hl7", "other")
        }

    # Construction.

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> Catalogue:
        """Load exactly these files (protocol definitions and drivers)."""
        return cls(load_profiles(paths))

    @classmethod
    def load(cls, extra_dirs: Sequence[Path] = (), *, builtin: bool = True) -> Catalogue:
        """The repository's protocols/ and drivers/ (unless ``builtin`` is false), then each
        extra directory's *.yaml files. A site's profile may add a new version of a built-in
        driver; the same ``name@version`` twice is an error."""
        directories = [*(BUILTIN_DIRS if builtin else ()), *extra_dirs]
        return cls.from_files(yaml_files(directories))

    # Lookup.

    @property
    def drivers(self) -> tuple[CompiledProfile, ...]:
        """Every driver, every version, by name then version."""
        return tuple(self._drivers.values())

    @property
    def definitions(self) -> tuple[MergedProfile, ...]:
        """The protocol definitions (protocols/*.yaml), by name."""
        found = (p for p in self._merged.values() if p.source.definition)
        return tuple(sorted(found, key=lambda p: p.key))

    def get(self, reference: str) -> CompiledProfile:
        """``name`` (its latest version) or ``name@version``; ``ConfigError`` when unknown."""
        driver = self._drivers.get(reference) if "@" in reference else self._latest.get(reference)
        if driver is not None:
            return driver
        merged = self.merged(reference, required=False)
        if merged is not None and merged.source.definition:
            raise ConfigError([f"{reference} is a protocol definition, not a driver: pin a driver"])
        known = ", ".join(sorted(self._latest)) or "none"
        raise ConfigError([f'unknown driver "{reference}" (known: {known})'])

    def merged(self, reference: str, *, required: bool = True) -> MergedProfile | None:
        """The merged profile (driver or definition) for ``lisgw drivers show``."""
        if "@" in reference:
            found = self._merged.get(reference)
        else:
            versions = [p for p in self._merged.values() if p.source.name == reference]
            found = max(versions, key=lambda p: p.source.version) if versions else None
        if found is None and required:
            known = ", ".join(sorted({p.source.name for p in self._merged.values()}))
            raise ConfigError([f'unknown driver or definition "{reference}" (known: {known})'])
        return found

    def fallback(self, protocol: str) -> CompiledProfile:
        """The generic driver of a protocol, used when no other driver matches."""
        name = GENERIC.get(protocol)
        driver = self._latest.get(name) if name is not None else None
        if driver is None:
            raise ConfigError([f"the catalogue has no generic driver for {protocol!r} ({name})"])
        return driver

    # Detection.

    def detect(self, message: AstmMessage | Hl7Message) -> CompiledProfile:
        """The driver for a connection whose first decoded message is ``message``."""
        if isinstance(message, Hl7Message):
            msh = message.msh
            sender, header = msh.get(3).strip(), msh.raw
            contents = [segment.raw for segment in message]
            protocol = "hl7"
        else:
            first = message.header
            sender = first.component(5).strip() if first is not None else ""
            header = (first.raw or "") if first is not None else ""
            contents = [record.raw or "" for record in message.records]
            protocol = "astm"
        best = self._best(protocol, sender, header, contents)
        return best if best is not None else self.fallback(protocol)

    def detect_payload(self, data: bytes) -> CompiledProfile | None:
        """The not-mine driver that recognises a payload that is neither ASTM nor HL7."""
        text = data.decode("latin-1")
        first_line = text.lstrip("\r\n").splitlines()[0] if text.strip("\r\n") else ""
        return self._best("other", "", first_line, [text])

    def _best(
        self, protocol: str, sender: str, header: str, contents: Sequence[str]
    ) -> CompiledProfile | None:
        best: CompiledProfile | None = None
        best_rank = (0, 0)
        for driver in self._candidates.get(protocol, ()):
            identify = driver.identify
            if identify is None:
                continue
            score = identify.score(sender, header, contents)
            # Candidates are in name order, so on a full tie the first name stays.
            if score and (score, identify.priority) > best_rank:
                best, best_rank = driver, (score, identify.priority)
        return best


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    """The repository's catalogue, loaded and compiled once per process."""
    return Catalogue.load()
