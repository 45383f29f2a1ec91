"""The routing core: analyzer results matched to HIS orders, QC kept apart, duplicates caught.

Layer: domain (pure). Imports the standard library, lisgw.model, lisgw.drivers.mapping and
lisgw.his.types; no clock, no I/O, no logging. The store supplies the open orders of a
message's samples and the identities it already holds; ``route`` says, for every result of
the message, what it is. ``route`` never raises on any message: whatever it is given, every
result comes out exactly once, in message order.

The rules (issue 5, "Routing core"), in the order they are applied to each result:

1. **duplicate** — its content identity (``result_identity``) is already stored (``known``)
   or an earlier result of the same message had it: a resent session, the same result twice.
   Never stored again, never delivered again.
2. **qc** — the specimen is a QC sample: never matched to a patient order, stored and
   reported as QC, never sent to the HIS.
3. **unmatched** — no order for the normalized sample ID, or a test code the mapping table
   does not know for the driver: into the review queue with the reason. Sent to the HIS
   anyway only when ``RoutingConfig.send_unsolicited`` is on.
4. **extra** — the sample has orders, the code is known, but no order asks for that test
   (a full blood count where the HIS ordered two parameters): kept with the reason, sent to
   the HIS when ``RoutingConfig.send_extra`` is on.
5. **matched** — an order of the sample asks for the test: ``order_placer`` names it. A
   result may complete part of an order; the store tracks which tests are done.

A result whose status means "correction" (``status_meaning`` "correction", or status ``C``
where the driver gives no meaning) is routed by the same rules with ``correction`` set: its
identity differs from the original's (the status is part of it), so it is delivered again,
as a correction. Corrections usually arrive after the order is complete, so the store passes
the orders of the sample that results may still be delivered against (open or completed, not
cancelled), not only open ones.

A message that ended without EOT (``incomplete``) holds no results: ``route`` returns an
empty outcome that says why.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Final

from lisgw.drivers.mapping import MappedCode, TestCodeMap
from lisgw.his.types import RoutedResult
from lisgw.model import NormalizedMessage, Result, Specimen

__all__ = [
    "MATCHES",
    "OpenOrder",
    "RoutingConfig",
    "RoutingOutcome",
    "driver_name",
    "is_correction",
    "message_identities",
    "normalize_sample_id",
    "result_identity",
    "route",
]

MATCHES = ("matched", "qc", "unmatched", "duplicate", "extra")
# Padding analyzers put around sample IDs: spaces (cobas c311 right-aligns them), tabs, NUL.
_PADDING = " \t\r\n\x00\u00a0"
_IDENTITY_VERSION = "lisgw-result-identity-1"


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """One test of a HIS order that results for ``sample_id`` may be delivered against.

    ``his_code`` is the HIS's test code; ``analyzer_code`` the code the analyzer on
    ``connection`` performs it as ('' when unknown), from the mapping table's ``reverse``.
    """

    placer: str
    sample_id: str
    his_code: str
    analyzer_code: str = ""
    connection: str = ""


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """What the HIS gets besides matched results (a connection's or the gateway's setting)."""

    send_unsolicited: bool = False  # unmatched patient results still go to the HIS
    send_extra: bool = True  # results of a sample with orders, for a test not ordered


@dataclass(frozen=True, slots=True)
class RoutingOutcome:
    """Every result of one message, routed, in message order.

    ``ignored`` says why a message gave no results at all ('' otherwise).
    """

    results: tuple[RoutedResult, ...]
    config: RoutingConfig = RoutingConfig()
    ignored: str = ""

    @property
    def to_deliver(self) -> tuple[RoutedResult, ...]:
        """The results the HIS is sent, in message order (see the module docstring)."""
        return tuple(r for r in self.results if self.delivers(r))

    @property
    def review(self) -> tuple[RoutedResult, ...]:
        """Unmatched patient results: the technicians' review queue, each with its reason."""
        return tuple(r for r in self.results if r.match == "unmatched")

    @property
    def new(self) -> tuple[RoutedResult, ...]:
        """Every result except duplicates: what the store records."""
        return tuple(r for r in self.results if r.match != "duplicate")

    def delivers(self, routed: RoutedResult) -> bool:
        """Whether this routed result is sent to the HIS under this outcome's config."""
        if routed.match == "matched":
            return True
        if routed.match == "extra":
            return self.config.send_extra
        if routed.match == "unmatched":
            return self.config.send_unsolicited
        return False  # duplicates are never sent twice, QC never goes to the HIS


def normalize_sample_id(raw: str) -> str:
    """The sample ID as orders and results are matched on: padding trimmed, nothing else.

    Spaces, tabs, line breaks, NUL and no-break spaces around the ID go (cobas c311 sends
    right-aligned IDs). Leading zeros are significant: "0000000387" and "387" are two
    different barcodes (a barcode is text, and labs print zero-padded series), so they are
    kept. Case is kept too (Code 128 barcodes carry lower case). The drivers have already
    removed rack and position components.
    """
    return raw.strip(_PADDING)


# json.dumps(content, ensure_ascii=False, separators=(",", ":")), its encoder built once.
_IDENTITY_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def result_identity(connection: str, sample_id: str, result: Result) -> str:
    """The content identity of a result: sha256 hex of what makes it the same result.

    That is the connection, the normalized sample ID, the test, value, units, status and
    completion time: a resent session gives the same identities; a corrected result (status
    C) or a rerun (another time) gives a new one. Flags, ranges and comments are not part
    of it: the same measurement resent with a changed range is still the same result.
    """
    content = [
        _IDENTITY_VERSION,
        connection,
        normalize_sample_id(sample_id),
        result.test,
        result.value,
        result.units,
        result.status,
        result.completed_at,
    ]
    encoded = _IDENTITY_JSON.encode(content)
    return hashlib.sha256(encoded.encode("utf-8", errors="surrogatepass")).hexdigest()


def message_identities(message: NormalizedMessage, connection: str) -> list[str]:
    """``result_identity`` of every result of ``message``, in message order."""
    return [
        result_identity(connection, specimen.sample_id, result)
        for specimen, result in _results(message)
    ]


def is_correction(result: Result) -> bool:
    """Whether the analyzer sent this result as a correction of an earlier one."""
    if result.status_meaning:
        return result.status_meaning == "correction"
    return result.status.strip().upper() == "C"


def driver_name(driver: str) -> str:
    """The driver's name without its version ("sysmex-xn@1" → "sysmex-xn"): mapping key."""
    return driver.partition("@")[0]


def route(
    message: NormalizedMessage,
    *,
    connection: str,
    orders: Mapping[str, Sequence[OpenOrder]],
    codes: TestCodeMap | None,
    known: Set[str],
    config: RoutingConfig = RoutingConfig(),
    identities: Sequence[str] | None = None,
) -> RoutingOutcome:
    """Route every result of ``message`` (see the module docstring for the rules).

    ``orders`` maps sample IDs (normalized here, whatever the store used) to the order
    tests results may be delivered against; ``codes`` is the test-code mapping table (None:
    no table, results match on the order's analyzer code alone and no code is "unknown");
    ``known`` holds the identities already stored. ``identities``: the results'
    ``message_identities`` when the caller already computed them (else computed here).
    """
    if message.incomplete:
        return RoutingOutcome((), config, "incomplete transmission: its records are not results")
    if identities is None:
        identities = message_identities(message, connection)
    index = _index_orders(orders)
    router = _Router(connection, driver_name(message.driver), message.driver, codes, index)
    seen: set[str] = set(known)
    routed: list[RoutedResult] = []
    for (specimen, result), identity in zip(_results(message), identities, strict=True):
        item = router.route(specimen, result, identity, seen)
        seen.add(item.identity)
        routed.append(item)
    return RoutingOutcome(tuple(routed), config)


def _results(message: NormalizedMessage) -> Iterator[tuple[Specimen, Result]]:
    for specimen in message.specimens:
        for result in specimen.results:
            yield specimen, result


def _index_orders(orders: Mapping[str, Sequence[OpenOrder]]) -> dict[str, list[OpenOrder]]:
    index: dict[str, list[OpenOrder]] = {}
    for key, tests in orders.items():
        for test in tests:
            sample = normalize_sample_id(test.sample_id or key)
            index.setdefault(sample, []).append(test)
    return index


@dataclass(frozen=True, slots=True)
class _Verdict:
    match: str
    reason: str = ""
    order: OpenOrder | None = None


class _Router:
    """Routes the results of one message; holds what every result of it shares."""

    def __init__(
        self,
        connection: str,
        mapping_driver: str,
        driver: str,
        codes: TestCodeMap | None,
        orders: dict[str, list[OpenOrder]],
    ) -> None:
        self.connection = connection
        self.mapping_driver = mapping_driver
        self.driver = driver
        self.codes = codes
        self.orders = orders
        self._positions: dict[str, dict[tuple[str, str], list[int]]] = {}

    def route(
        self, specimen: Specimen, result: Result, identity: str, seen: set[str]
    ) -> RoutedResult:
        sample_id = normalize_sample_id(specimen.sample_id)
        mapped = self._lookup(result.test)
        verdict = self._verdict(specimen, sample_id, result, mapped, identity in seen)
        his_code = mapped.his_code if mapped is not None else ""
        if not his_code and verdict.order is not None:
            his_code = verdict.order.his_code
        return RoutedResult(
            connection=self.connection,
            driver=self.driver,
            sample_id=sample_id,
            qc=specimen.qc,
            result=result,
            his_code=his_code,
            loinc=mapped.loinc if mapped is not None else "",
            identity=identity,
            match=verdict.match,
            reason=verdict.reason,
            order_placer=verdict.order.placer if verdict.order is not None else "",
            correction=is_correction(result),
        )

    def _lookup(self, test: str) -> MappedCode | None:
        if self.codes is None:
            return None
        return self.codes.lookup(self.mapping_driver, test)

    def _verdict(
        self,
        specimen: Specimen,
        sample_id: str,
        result: Result,
        mapped: MappedCode | None,
        duplicate: bool,
    ) -> _Verdict:
        if duplicate:
            return _Verdict("duplicate", "same content as a result already received")
        if specimen.qc:
            return _Verdict("qc", "QC sample: never matched to patient orders")
        tests = self.orders.get(sample_id, []) if sample_id else []
        order = self._order_test(sample_id, tests, result.test, mapped)
        if order is not None:
            return _Verdict("matched", order=order)
        reasons = []
        if not sample_id:
            reasons.append("no sample ID")
        elif not tests:
            reasons.append(f"no order for sample {sample_id!r}")
        if self.codes is not None and mapped is None:
            reasons.append(f"unknown test code {result.test!r} for driver {self.mapping_driver!r}")
        if reasons:
            return _Verdict("unmatched", "; ".join(reasons))
        return _Verdict("extra", f"test {result.test!r} not ordered for sample {sample_id!r}")

    def _order_test(
        self, sample_id: str, tests: Sequence[OpenOrder], test: str, mapped: MappedCode | None
    ) -> OpenOrder | None:
        """The order test this result completes: the HIS code, else the analyzer code.

        An order test queued for this connection wins over one queued for another analyzer
        (the same test may be done on two analyzers); otherwise the first in the store's
        order.
        """
        if not tests:
            return None
        by_code = self._codes_of(sample_id, tests)
        at = set(by_code.get(("his", mapped.his_code), ())) if mapped is not None else set()
        if test:
            at.update(by_code.get(("analyzer", test), ()))
        candidates = [tests[i] for i in sorted(at)]
        for candidate in candidates:
            if candidate.connection == self.connection:
                return candidate
        return candidates[0] if candidates else None

    def _codes_of(
        self, sample_id: str, tests: Sequence[OpenOrder]
    ) -> dict[tuple[str, str], list[int]]:
        """Positions in ``tests`` (the sample's order tests) by HIS code and by analyzer
        code, built once per sample (a CBC has ≈ 40 results against ≈ 40 order tests: no
        scan per result)."""
        found = self._positions.get(sample_id)
        if found is None:
            found = {}
            for i, t in enumerate(tests):
                found.setdefault(("his", t.his_code), []).append(i)
                if t.analyzer_code != "":
                    found.setdefault(("analyzer", t.analyzer_code), []).append(i)
            self._positions[sample_id] = found
        return found
