"""Domain types shared by the routing core, the HIS bridge and the store.

Layer: domain (pure). Imports nothing but the standard library and lisgw.model. The HIS
bridge turns inbound ORM^O01 / OML^O21 orders into ``HisOrder`` (lisgw.his.orders); the
routing core (lisgw.routing) turns analyzer results into ``RoutedResult``; the store keeps
both and the outbox delivers routed results as ORU^R01 (lisgw.his.results).

Patient data (``HisOrder.patient_id``, ``patient_name``) is never logged at INFO.
"""

from __future__ import annotations

from dataclasses import dataclass

from lisgw.model import Result

__all__ = ["HisOrder", "OrderedTest", "RoutedResult"]


@dataclass(frozen=True, slots=True)
class OrderedTest:
    """One test of a HIS order, by the HIS's code (OBR-4.1 by default)."""

    his_code: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class HisOrder:
    """One order from the HIS, read through a HIS profile (lisgw.his.profile).

    ``control`` is "new", "cancel" or "change" (from ORC-1: NW; CA, DC; XO, RP). A change
    carries the order's tests as they now are. A cancel may carry no tests: the whole order.
    ``patient_name`` is the XPN components ``family^given^middle`` (trailing empty ones
    dropped), HL7 escapes decoded, in Unicode.
    """

    control: str
    placer: str
    filler: str
    sample_id: str
    patient_id: str
    patient_name: str
    tests: tuple[OrderedTest, ...]
    priority: str = ""
    ordered_at: str = ""


@dataclass(frozen=True, slots=True)
class RoutedResult:
    """One analyzer result after routing (lisgw.routing.route).

    ``match`` is "matched", "qc", "unmatched", "duplicate" or "extra"; ``reason`` says why a
    result is unmatched, extra or a duplicate ('' when matched). ``identity`` is the content
    identity (lisgw.routing.result_identity). ``order_placer`` is the order the result
    completes ('' unless matched). ``correction`` is set for result status C.
    """

    connection: str
    driver: str
    sample_id: str
    qc: bool
    result: Result
    his_code: str
    loinc: str
    identity: str
    match: str
    reason: str
    order_placer: str = ""
    correction: bool = False
