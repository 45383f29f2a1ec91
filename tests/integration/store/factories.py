"""Small builders for the store tests: messages, orders, routed outcomes, outbox payloads.

Sample IDs, patients and values here are invented: no patient data from the corpus.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa

from lisgw.drivers.mapping import TestCodeMap
from lisgw.his.types import HisOrder, OrderedTest
from lisgw.model import Kind, NormalizedMessage, Protocol, Result, Specimen
from lisgw.routing import (
    RoutingConfig,
    RoutingOutcome,
    normalize_sample_id,
    result_identity,
    route,
)
from lisgw.store import work
from lisgw.store.records import (
    Direction,
    MessageRecord,
    OutboxPayload,
    OutboxRow,
    QueueTarget,
    RoutedSaved,
)

NOW = 1_000_000.0
DEFAULT_CONFIG = RoutingConfig()
CONNECTION = "xn-1"
DRIVER = "sysmex-xn@1"
CODES = TestCodeMap.from_dict(
    {
        "sysmex-xn": {
            "WBC": {"his": "HEM-WBC", "loinc": "6690-2"},
            "RBC": {"his": "HEM-RBC", "loinc": "789-8"},
            "HGB": {"his": "HEM-HGB"},
            "PLT": {"his": "HEM-PLT"},
        }
    }
)
ROUTES = {
    "HEM-WBC": (QueueTarget(CONNECTION, "WBC"),),
    "HEM-RBC": (QueueTarget(CONNECTION, "RBC"),),
    "HEM-HGB": (QueueTarget(CONNECTION, "HGB"), QueueTarget("xn-2", "HGB")),
}


def result(
    test: str, value: str = "5.0", *, status: str = "F", at: str = "2024-01-02T03:04:05"
) -> Result:
    return Result(test=test, value=value, units="10*3/uL", status=status, completed_at=at)


def results_message(sample_id: str, *results: Result, qc: bool = False) -> NormalizedMessage:
    return NormalizedMessage(
        protocol=Protocol.ASTM,
        kind=Kind.RESULTS,
        specimens=(Specimen(sample_id=sample_id, qc=qc, results=results),),
        driver=DRIVER,
    )


def his_order(placer: str, sample_id: str, *codes: str, control: str = "new") -> HisOrder:
    return HisOrder(
        control=control,
        placer=placer,
        filler="",
        sample_id=sample_id,
        patient_id="P-0001",
        patient_name="DOE^JANE",
        tests=tuple(OrderedTest(code, code.lower()) for code in codes),
        priority="R",
        ordered_at="20240102030000",
    )


def store_message(
    conn: sa.Connection, message: NormalizedMessage, now: float = NOW
) -> MessageRecord:
    return work.save_message(
        conn,
        b"\x02raw frame bytes\x03",
        direction=Direction.IN,
        protocol=str(message.protocol),
        kind=str(message.kind),
        now=now,
        connection=CONNECTION,
        driver=message.driver,
        normalized=message,
    )


def payloads_for(outcome: RoutingOutcome) -> list[OutboxPayload]:
    """One payload per sample for the results the outcome delivers (as the bridge does)."""
    by_sample: dict[str, list[str]] = {}
    placers: dict[str, str] = {}
    for routed in outcome.to_deliver:
        by_sample.setdefault(routed.sample_id, []).append(routed.identity)
        placers.setdefault(routed.sample_id, routed.order_placer)
    return [
        payload(sample, identities, placers[sample]) for sample, identities in by_sample.items()
    ]


def payload(sample_id: str, identities: Sequence[str], placer: str = "") -> OutboxPayload:
    identity = hashlib.sha256("\n".join(sorted(identities)).encode()).hexdigest()
    return OutboxPayload(
        identity=identity,
        sample_id=sample_id,
        control_id=identity[:20],
        payload=f"MSH|^~\\&|LISGW||HIS||{sample_id}\r".encode(),
        result_identities=tuple(identities),
        order_placer=placer,
        connection=CONNECTION,
    )


def route_and_save(
    conn: sa.Connection,
    message: NormalizedMessage,
    *,
    now: float = NOW,
    config: RoutingConfig = DEFAULT_CONFIG,
) -> tuple[RoutingOutcome, RoutedSaved]:
    """What the result pipeline does with one message, as one unit of work."""
    stored = store_message(conn, message, now)
    sample_ids = [normalize_sample_id(s.sample_id) for s in message.specimens]
    identities = [
        result_identity(CONNECTION, specimen.sample_id, r)
        for specimen in message.specimens
        for r in specimen.results
    ]
    outcome = route(
        message,
        connection=CONNECTION,
        orders=work.open_orders_for(conn, sample_ids),
        codes=CODES,
        known=work.known_identities(conn, identities),
        config=config,
    )
    saved = work.save_routed_results(conn, stored.id, outcome, payloads_for(outcome), now)
    return outcome, saved


def fill_outbox(conn: sa.Connection, samples: Sequence[str], now: float = NOW) -> list[OutboxRow]:
    """One outbox row per entry of ``samples`` (repeats make several rows for one sample)."""
    stored = store_message(conn, results_message("none"), now)
    payloads = [payload(sample, [f"{sample}-{n}"]) for n, sample in enumerate(samples)]
    saved = work.save_routed_results(conn, stored.id, RoutingOutcome(()), payloads, now)
    return list(saved.outbox)
